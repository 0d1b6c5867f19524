//! `revfs recover REPLICA NEWSTORE`: a complete, writable store built from
//! a replica alone, from any state the replicator leaves behind (sealed
//! packs, any number of parts of an unsealed pack, a part cut short,
//! objects that no head names yet).
//!
//! Steps, each safe to interrupt:
//! 1. NEWSTORE (missing, or an empty directory) gets the marker file
//!    `.revfs-recovering`, created exclusively and flock'ed: everything in
//!    a directory with that marker and no `revfs.conf` was made by a
//!    recover, so a second run removes it and starts over, and a recover
//!    that fails removes it (and NEWSTORE, if it made it).
//! 2. Every record of every replica pack is read once and hash-checked;
//!    good records are written in order to a pack of the same number
//!    (byte-identical to the primary's unless records were damaged or
//!    missing) under a temporary name, fsynced, renamed, and indexed.
//! 3. The catalog is rebuilt from the newest complete commit (see
//!    `import`) and flushed.
//! 4. `revfs.conf` is written last (temp, fsync, rename, fsync dir): from
//!    then on NEWSTORE is a store. The marker is removed after it.

use super::import::{self, Check, Imported};
use crate::catalog::db::{Batch, Db, IndexEntry};
use crate::config::{CONF_FILE, Config};
use crate::error::{Error, Result};
use crate::format::{PACK_HEADER_LEN, RECORD_HEADER_LEN};
use crate::store::pack::{self, PackReader};
use crate::store::{check_record_alone, pieces};
use crate::sys::sync_dir;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The marker of a directory that a recover is building (or left behind).
pub const MARKER: &str = ".revfs-recovering";

/// Rebuilds a store in `new` from `replica` (a directory or
/// s3://BUCKET/PREFIX); `progress(done, total)` in bytes.
pub fn recover(replica: &Path, new: &Path, mut progress: impl FnMut(u64, u64)) -> Result<Imported> {
    if super::target::is_s3(&replica.to_string_lossy()) {
        return recover_s3(replica, new, &mut progress);
    }
    let (_, cfg) = Config::read(replica)?;
    if cfg.role.as_deref() != Some(super::ROLE_REPLICA) {
        return Err(Error::Store(format!(
            "{}: not a replica (no replica marker); a store can be mounted as it is",
            replica.display()
        )));
    }
    // The passphrase first: a wrong one leaves nothing behind.
    let crypto = crate::crypto::slots::unlock(replica, cfg.cipher.as_deref())?;
    let target = Target::prepare(new)?;
    let out = build(replica, new, cfg, crypto, &mut progress)?;
    target.finish()?;
    Ok(out)
}

/// Where a recover from S3 puts what it downloads, inside NEWSTORE (so a
/// killed recover's rerun, or a failed one, removes it with the rest).
pub const DOWNLOAD: &str = ".replica-download";

/// Recover from an S3 replica: its config and keys first (a wrong
/// passphrase makes nothing), then every object into NEWSTORE/DOWNLOAD,
/// then the same rebuild as from a directory.
fn recover_s3(spec: &Path, new: &Path, progress: &mut impl FnMut(u64, u64)) -> Result<Imported> {
    let t = super::target_of(spec)?;
    let (cfg, crypto, _) = super::remote::open_config(&*t, spec)?;
    let target = Target::prepare(new)?;
    let dl = new.join(DOWNLOAD);
    download(&*t, &dl, progress)?;
    crate::crashpoint::crash_point("recover:downloaded");
    let out = build(&dl, new, cfg, crypto, progress)?;
    std::fs::remove_dir_all(&dl).map_err(Error::io_at(&dl))?;
    target.finish()?;
    Ok(out)
}

/// Every object of `t` into the directory `dst`, in pieces of 8 MiB.
fn download(
    t: &dyn super::target::Target,
    dst: &Path,
    progress: &mut impl FnMut(u64, u64),
) -> Result<()> {
    let all = t.list("")?;
    let total: u64 = all.iter().map(|o| o.1).sum();
    let mut done = 0;
    for (name, size) in all {
        let path = dst.join(&name);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(Error::io_at(d))?;
        }
        let mut f = File::create(&path).map_err(Error::io_at(&path))?;
        let mut at = 0;
        while at < size {
            let n = (size - at).min(8 << 20);
            let b = t.get_range(&name, at, n as usize)?;
            f.write_all(&b).map_err(Error::io_at(&path))?;
            at += n;
            done += n;
            progress(done, total);
        }
    }
    for sub in ["packs", "heads", "names", "pruned"] {
        std::fs::create_dir_all(dst.join(sub)).map_err(Error::io_at(dst))?;
    }
    Ok(())
}

fn build(
    replica: &Path,
    new: &Path,
    cfg: Config,
    crypto: crate::crypto::Crypto,
    progress: &mut impl FnMut(u64, u64),
) -> Result<Imported> {
    let mut out = Imported::default();
    let dst = new.join("packs");
    std::fs::create_dir(&dst).map_err(Error::io_at(&dst))?;
    if crypto.is_encrypted() {
        crate::crypto::slots::KeyFile::read(replica)?.write(new)?;
    }
    let db = Arc::new(Db::open_store(new, true, crypto)?);
    copy_packs(&replica.join("packs"), &dst, &db, &mut out, progress)?;
    crate::crashpoint::crash_point("recover:packs-copied");
    let store = Arc::new(crate::store::ObjectStore::open(&dst, db.clone(), true)?);
    let meta = super::target::DirTarget::new(replica.to_path_buf());
    import::import(&meta, store, &db, Check::Complete, &mut out)?;
    drop(db);
    crate::crashpoint::crash_point("recover:catalog-built");
    let cfg = Config {
        role: None,
        replica: None,
        ..cfg
    };
    cfg.write(new)?;
    crate::crashpoint::crash_point("recover:config-written");
    Ok(out)
}

/// Copies the hash-checked records of every replica pack into `dst` and
/// indexes them in `db`.
fn copy_packs(
    src: &Path,
    dst: &Path,
    db: &Db,
    out: &mut Imported,
    progress: &mut impl FnMut(u64, u64),
) -> Result<()> {
    let mut readers = Vec::new();
    for no in pack::list_packs(src)? {
        readers.push((no, PackReader::open(src, no)?));
    }
    let total: u64 = readers
        .iter()
        .flat_map(|(_, r)| r.runs())
        .map(|&(s, e)| e - s)
        .sum();
    let mut done = 0;
    for (no, r) in readers {
        let src_path = pack::pack_path(src, no);
        let name = pack::pack_name(no);
        let tmp = dst.join(format!(".tmp-{name}"));
        let mut w = std::io::BufWriter::with_capacity(
            4 << 20,
            File::create(&tmp).map_err(Error::io_at(&tmp))?,
        );
        let io = |e: std::io::Error| Error::IoAt {
            path: tmp.clone(),
            source: e,
        };
        w.write_all(&crate::format::pack_header()).map_err(io)?;
        let mut at = PACK_HEADER_LEN;
        let mut b = Batch::default();
        for (h, payload) in r.scan()? {
            let e = IndexEntry::of_record(no, payload, &h);
            let hdr_at = payload - RECORD_HEADER_LEN as u64;
            let len = h.record_len();
            let checked = r
                .read_at(hdr_at, len)
                .map_err(Error::io_at(&src_path))
                .and_then(|rec| {
                    check_record_alone(db.crypto(), &rec, &src_path, &h.id, &e).map(|_| rec)
                });
            match checked {
                Ok(rec) => {
                    w.write_all(&rec).map_err(io)?;
                    let raw = &rec[RECORD_HEADER_LEN..];
                    if let Some(t) = pieces::table_for(db.crypto(), h.kind, h.codec, raw) {
                        b.put_pieces(&h.id, &t);
                    }
                    b.put_index(
                        &h.id,
                        &IndexEntry {
                            offset: at + RECORD_HEADER_LEN as u64,
                            ..e
                        },
                    );
                    at += rec.len() as u64;
                    out.objects += 1;
                }
                Err(err) => {
                    tracing::warn!("not recovered: {err}");
                    out.corrupt_records += 1;
                }
            }
            done += len as u64;
            progress(done.min(total), total);
        }
        let f = w.into_inner().map_err(|e| Error::IoAt {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io)?;
        drop(f);
        let path = pack::pack_path(dst, no);
        std::fs::rename(&tmp, &path).map_err(Error::io_at(&path))?;
        db.apply(b)?;
        out.packs += 1;
        crate::crashpoint::crash_point("recover:pack-copied");
    }
    sync_dir(dst)
}

/// The directory being recovered into; everything in it is removed
/// unless `finish` is reached.
struct Target {
    dir: PathBuf,
    created: bool,
    /// The flock'ed marker; held until the end.
    marker: Option<File>,
}

impl Target {
    fn prepare(new: &Path) -> Result<Target> {
        let dir = std::path::absolute(new).map_err(Error::io_at(new))?;
        let created = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Store(format!(
                    "{}: parent directory does not exist",
                    dir.display()
                )));
            }
            Err(e) => {
                return Err(Error::IoAt {
                    path: dir,
                    source: e,
                });
            }
        };
        if !dir.is_dir() {
            return Err(Error::Store(format!("{}: not a directory", dir.display())));
        }
        // A config beside a marker is an interrupted recover (killed after
        // writing the config, its last step, before dropping the marker):
        // started over below. A config alone is a finished store.
        if dir.join(CONF_FILE).exists() && !dir.join(MARKER).exists() {
            return Err(Error::Store(format!(
                "{}: already a revfs store; recover into a new directory",
                dir.display()
            )));
        }
        let mut t = Target {
            dir,
            created,
            marker: None,
        };
        let marker_path = t.dir.join(MARKER);
        let fresh = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker_path);
        let mut marker = match fresh {
            Ok(f) => {
                // The marker must be the only entry: refuse a directory
                // that held anything else (it is left as it was).
                let others = entries(&t.dir)?.into_iter().any(|p| p != marker_path);
                if others {
                    let _ = std::fs::remove_file(&marker_path);
                    t.created = false;
                    return Err(Error::Store(format!(
                        "{}: exists and is not empty; recover into a new directory",
                        t.dir.display()
                    )));
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&marker_path)
                    .map_err(Error::io_at(&marker_path))?;
                if !crate::sys::try_lock(&f) {
                    // Not ours to clean: leave everything as it is.
                    t.created = false;
                    return Err(Error::Store(format!(
                        "{}: another revfs recover is writing there",
                        t.dir.display()
                    )));
                }
                tracing::warn!(
                    "{}: removing what an interrupted recover left there; starting over",
                    t.dir.display()
                );
                t.clear(false)?;
                f
            }
            Err(e) => {
                return Err(Error::IoAt {
                    path: marker_path,
                    source: e,
                });
            }
        };
        if !crate::sys::try_lock(&marker) {
            return Err(Error::Store(format!(
                "{}: another revfs recover is writing there",
                t.dir.display()
            )));
        }
        let _ = writeln!(marker, "revfs recover, pid {}", std::process::id());
        marker.sync_all().map_err(Error::io_at(&marker_path))?;
        sync_dir(&t.dir)?;
        t.marker = Some(marker);
        Ok(t)
    }

    /// Removes everything in the directory but (unless `all`) the marker.
    fn clear(&self, all: bool) -> Result<()> {
        let marker = self.dir.join(MARKER);
        for p in entries(&self.dir)? {
            if p == marker && !all {
                continue;
            }
            let r = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(Error::io_at(&p))?;
        }
        Ok(())
    }

    /// The store is complete (its config is written): drop the marker.
    fn finish(mut self) -> Result<()> {
        let marker = self.dir.join(MARKER);
        std::fs::remove_file(&marker).map_err(Error::io_at(&marker))?;
        self.marker = None;
        self.created = false;
        sync_dir(&self.dir)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // No marker: finished, or never ours to clean.
        if self.marker.is_some()
            && let Err(e) = self.clear(true)
        {
            tracing::warn!("cleaning up {}: {e}", self.dir.display());
        }
        if self.created {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::read_dir(dir)
        .map_err(Error::io_at(dir))?
        .map(|e| e.map(|e| e.path()).map_err(Error::io_at(dir)))
        .collect()
}
