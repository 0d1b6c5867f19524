//! A replica in a directory, with plain POSIX calls only: every file is
//! written under a temporary name, fsynced, renamed into place and its
//! directory fsynced; a published file is never changed in place.

use super::Target;
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub struct DirTarget {
    root: PathBuf,
}

impl DirTarget {
    pub fn new(root: PathBuf) -> DirTarget {
        DirTarget { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes `name` the safe way (temp, fsync, rename, fsync dir) with
    /// what `fill` writes.
    fn publish(
        &self,
        name: &str,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<()> {
        crate::sys::publish(&self.path(name), fill)
    }
}

impl Target for DirTarget {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn put_immutable(&self, name: &str, src: &File, offset: u64, len: u64) -> Result<()> {
        let dst = self.path(name);
        if dst.exists() {
            let have = std::fs::read(&dst).map_err(Error::io_at(&dst))?;
            let want = super::read_range(src, offset, len).map_err(Error::Io)?;
            if have == want {
                return Ok(());
            }
            return Err(Error::Store(format!(
                "{}: holds other bytes than this store's; refusing to replace it",
                dst.display()
            )));
        }
        self.publish(name, |f| {
            let mut s = src.try_clone()?;
            s.seek(std::io::SeekFrom::Start(offset))?;
            let n = std::io::copy(&mut s.take(len), f)?;
            if n != len {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            Ok(())
        })
    }

    fn put_replace(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.publish(name, |f| f.write_all(bytes))
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.path(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::IoAt { path: p, source: e }),
        }
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.path(name);
        let f = File::open(&p).map_err(Error::io_at(&p))?;
        super::read_range(&f, offset, len as u64).map_err(Error::io_at(&p))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        // The directory part of the prefix, then a name filter.
        let (dir, start) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let d = self.root.join(dir);
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::IoAt { path: d, source: e }),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(Error::io_at(&d))?;
            let n = e.file_name().to_string_lossy().into_owned();
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() || n.starts_with(".tmp-") || !n.starts_with(start) {
                continue;
            }
            let name = if dir.is_empty() {
                n
            } else {
                format!("{dir}/{n}")
            };
            out.push((name, m.len()));
        }
        out.sort();
        Ok(out)
    }

    fn sync_dir(&self, dir: &str) -> Result<()> {
        let d = self.root.join(dir);
        if !d.exists() {
            // Never made (an older replica has no index/): nothing to sync.
            return Ok(());
        }
        crate::sys::sync_dir(&d)
    }

    fn clean(&self) {
        for sub in ["packs", "index", "heads", "names", "pruned", ""] {
            let Ok(rd) = std::fs::read_dir(self.root.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    match std::fs::remove_file(e.path()) {
                        Ok(()) => tracing::info!("removed {}", e.path().display()),
                        Err(err) => tracing::warn!("{}: {err}", e.path().display()),
                    }
                }
            }
        }
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let p = self.path(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::IoAt { path: p, source: e }),
        }
    }
}
