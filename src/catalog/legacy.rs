//! Stores of format 9 and older keep their catalog in a sled database
//! (`STORE/meta`). sled spent ~200 µs of CPU a created file on its own io
//! threads; format 10 keeps the same keys and values in fjall
//! (`STORE/catalog`). This moves an old catalog across once, when the
//! store is first opened by this build, as one crash-safe step: the copy is
//! built beside (`catalog.new`), made durable, renamed into place, and only
//! then is the old one removed. A crash at any point leaves either the old
//! catalog alone (the next open starts over) or the new one in place (the
//! next open removes what is left of the old).

use super::db::{config, damaged, format_record, open_partition};
use crate::crashpoint::crash_point;
use crate::error::{Error, Result};
use std::path::Path;

/// The directory of a sled catalog (format 9 and older).
pub const SLED_DIR: &str = "meta";

/// Keys copied per batch of the move.
const BATCH: usize = 10_000;

/// Moves the sled catalog of `store` to `dest` (the fjall catalog's
/// directory) if the store still has one; nothing if it has not.
pub fn move_to_lsm(store: &Path, dest: &Path) -> Result<()> {
    let old = store.join(SLED_DIR);
    if dest.exists() {
        if old.exists() {
            // Moved before a crash that came ahead of the removal.
            finish(store, &old)?;
        }
        return Ok(());
    }
    if !old.exists() {
        return Ok(());
    }
    let tmp = store.join(format!("{}.new", super::db::CATALOG_DIR));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(Error::io_at(&tmp))?;
    }
    let n = copy(&old, &tmp)?;
    crash_point("catalog:copied");
    std::fs::rename(&tmp, dest).map_err(Error::io_at(dest))?;
    crate::sys::sync_dir(store)?;
    crash_point("catalog:renamed");
    finish(store, &old)?;
    tracing::info!(
        "catalog moved from sled ({}) to {} ({n} keys)",
        old.display(),
        dest.display()
    );
    Ok(())
}

/// After the new catalog is in place: raises the config's format version
/// (a revfs that reads only format 9 would find no catalog and must refuse
/// the store, not offer to recover it), then removes the old catalog.
fn finish(store: &Path, old: &Path) -> Result<()> {
    let (version, cfg) = crate::config::Config::read(store)?;
    if version < crate::format::FORMAT_VERSION {
        cfg.write(store)?;
    }
    crash_point("catalog:config-raised");
    std::fs::remove_dir_all(old).map_err(Error::io_at(old))
}

/// Copies every key of the sled database at `old` into a new fjall
/// catalog at `tmp`, durably; the number of keys.
fn copy(old: &Path, tmp: &Path) -> Result<u64> {
    let sled = sled::Config::new()
        .path(old)
        .cache_capacity(64 << 20)
        .open()
        .map_err(|e| damaged(old, e))?;
    let (fkey, _) = format_record();
    match sled.get(&fkey).map_err(|e| damaged(old, e))? {
        Some(v) => {
            crate::format::check_magic(&v, crate::format::META_MAGIC, "metadata database")?;
        }
        None => {
            return Err(Error::Store(format!(
                "{}: metadata database is damaged or not a revfs catalog (no format \
                 record); run `revfs recover` from a replica",
                old.display()
            )));
        }
    }
    let ks = config(tmp).open()?;
    let part = open_partition(&ks)?;
    let mut n = 0u64;
    let mut batch = ks.batch();
    let mut in_batch = 0;
    for kv in sled.iter() {
        let (k, v) = kv.map_err(|e| damaged(old, e))?;
        batch.insert(&part, k.to_vec(), v.to_vec());
        in_batch += 1;
        n += 1;
        if in_batch == BATCH {
            std::mem::replace(&mut batch, ks.batch()).commit()?;
            in_batch = 0;
        }
    }
    batch.commit()?;
    ks.persist(fjall::PersistMode::SyncAll)?;
    Ok(n)
}
