//! The durable-flush watermark: a small file beside the catalog
//! (`STORE/catalog.durable`) that says how many flushes of the catalog
//! reached the disk. fjall's journal recovery cuts a journal at the first
//! record it cannot decode and opens with what came before: a flipped bit
//! in the middle of the journal would silently roll the catalog back to an
//! older state (files that lose their committed content). Every flush
//! writes its number into the catalog first and into this file after it is
//! durable; a catalog that holds a smaller number than the file was rolled
//! back, and is refused instead of served.
//!
//! The file is 24 bytes: "RVFSDURA", u64 LE flush number, the first 8
//! bytes of BLAKE3 of the 16 before. It is overwritten in place without an
//! fsync: a lost or torn write only makes the check weaker (an unreadable
//! file is ignored with a warning), never a false alarm, since the number
//! it holds is always one the catalog already made durable.

use crate::error::{Error, Result};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RVFSDURA";

/// The watermark file of the catalog at `catalog`.
pub fn path_of(catalog: &Path) -> PathBuf {
    catalog.with_extension("durable")
}

fn encode(n: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&n.to_le_bytes());
    let h = blake3::hash(&b[..16]);
    b[16..].copy_from_slice(&h.as_bytes()[..8]);
    b
}

/// The flush number in the file at `path`: 0 when there is none (a new
/// store, or one of format 9 or older); None when it cannot be read.
pub fn read(path: &Path) -> Option<u64> {
    let b = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(0),
        Err(_) => return None,
    };
    let n = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
    (b.len() == 24 && b[..] == encode(n)[..]).then_some(n)
}

/// Records that flush `n` is durable.
pub fn write(path: &Path, n: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(Error::io_at(path))?;
    f.write_all_at(&encode(n), 0).map_err(Error::io_at(path))
}

/// Refuses a catalog that holds flush `held` when the file says `n`
/// reached the disk.
pub fn check(catalog: &Path, held: u64) -> Result<()> {
    let file = path_of(catalog);
    match read(&file) {
        None => {
            tracing::warn!(
                "{}: unreadable; the catalog's rollback check is skipped this time",
                file.display()
            );
            Ok(())
        }
        Some(n) if held < n => Err(Error::Store(format!(
            "{}: the metadata database lost writes that were durable (it holds flush \
             {held}, the store reached {n}): its journal is damaged; run `revfs recover` \
             from a replica",
            catalog.display()
        ))),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_reads_back_and_any_damage_reads_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let cat = dir.path().join("catalog");
        let p = path_of(&cat);
        assert_eq!(read(&p), Some(0));
        write(&p, 41).unwrap();
        write(&p, 42).unwrap();
        assert_eq!(read(&p), Some(42));
        assert!(check(&cat, 42).is_ok() && check(&cat, 43).is_ok());
        let e = check(&cat, 41).unwrap_err().to_string();
        assert!(e.contains("lost writes") && e.contains("recover"), "{e}");
        let good = std::fs::read(&p).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 1;
            std::fs::write(&p, &bad).unwrap();
            assert_eq!(read(&p), None, "byte {i}");
            assert!(check(&cat, 0).is_ok());
        }
        std::fs::write(&p, &good[..10]).unwrap();
        assert_eq!(read(&p), None);
    }
}
