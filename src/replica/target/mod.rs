//! Where a replica lives: a directory (another disk, NFS, CephFS) or an S3
//! bucket, behind one interface. Names are `/`-separated paths relative to
//! the replica's root (`packs/N.pack`, `heads/SEQ.head`, ...).
//!
//! Durability promise of every `put_*`: when it returns Ok, the object is
//! durable at the target under its name (a directory: written to a
//! temporary name, fsynced, renamed, directory fsynced; S3: the server
//! answered the PUT, or the multipart upload's completion, with success).
//! A reader sees either no object or all of it, never a part.

mod dir;
mod s3;

pub use dir::DirTarget;
pub use s3::{S3Config, S3Target};

use crate::error::Result;
use crate::ids::PackNo;
use crate::store::pack;
use std::fs::File;
use std::sync::Arc;

pub trait Target: Send + Sync {
    /// What to call the target in messages (a path, or s3://BUCKET/PREFIX).
    fn describe(&self) -> String;

    /// Creates `name` holding `len` bytes of `src` from `offset`, never
    /// replacing another object: Ok when it was created, or when `name`
    /// already holds exactly those bytes (a retry of an earlier put of
    /// ours); an error when it holds anything else.
    fn put_immutable(&self, name: &str, src: &File, offset: u64, len: u64) -> Result<()>;

    /// Creates or replaces `name` with `bytes`; readers see the old or the
    /// new bytes.
    fn put_replace(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// The bytes of `name`, or None when there is no such object.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// `len` bytes of `name` from `offset` (an error when there are fewer).
    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;

    /// Every object whose name starts with `prefix`: (name, size), sorted
    /// by name.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;

    /// Removes `name`; a missing object is no error. Not durable until
    /// [`Target::sync_dir`] of its directory returns (a directory target).
    fn delete(&self, name: &str) -> Result<()>;

    /// Makes the deletions under directory `dir` durable (fsync of a
    /// directory; nothing to do on S3, where a delete is durable at once).
    fn sync_dir(&self, _dir: &str) -> Result<()> {
        Ok(())
    }

    /// Removes what an interrupted put of an earlier process left (a
    /// directory's temporary files; S3 keeps no partial objects).
    fn clean(&self) {}

    /// The directory, for a directory target.
    fn local_dir(&self) -> Option<&std::path::Path> {
        None
    }
}

pub use crate::config::is_s3;

/// The target `spec` names: `s3://BUCKET/PREFIX` (configured by the
/// standard AWS environment, see [`S3Target::new`]) or a directory.
pub fn open(spec: &str) -> Result<Arc<dyn Target>> {
    if is_s3(spec) {
        Ok(Arc::new(S3Target::new(spec)?))
    } else {
        Ok(Arc::new(DirTarget::new(spec.into())))
    }
}

/// `len` bytes of pack `no` from `at`, from the whole pack or from the
/// part that holds them (parts start at record boundaries, so a record
/// is in one part).
pub fn read_pack_range(t: &dyn Target, no: PackNo, at: u64, len: usize) -> Result<Vec<u8>> {
    if let Ok(b) = t.get_range(&format!("packs/{}", pack::pack_name(no)), at, len) {
        return Ok(b);
    }
    for (name, size) in t.list(&format!("packs/{}", pack::part_prefix(no)))? {
        let start = pack::parse_name(name.rsplit('/').next().unwrap_or(&name)).and_then(|p| p.1);
        if let Some(start) = start
            && start <= at
            && at + len as u64 <= start + size
        {
            return t.get_range(&name, at - start, len);
        }
    }
    Err(crate::error::Error::Store(format!(
        "{}: pack {:016x} holds no bytes at {at}",
        t.describe(),
        no.0
    )))
}

/// Reads `len` bytes of `src` from `offset` (the bytes a put sends).
fn read_range(src: &File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    std::os::unix::fs::FileExt::read_exact_at(src, &mut buf, offset)?;
    Ok(buf)
}
