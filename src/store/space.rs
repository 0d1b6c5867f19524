//! The free space new data must leave on the packs' filesystem (the
//! reserve: room for a prune to repack on a disk that writes filled), and
//! the wait of a write that finds the disk short while the daemon's prune
//! loop is freeing history: history never makes a write fail, even when
//! the writer outruns the loop (it looks at the disk once a second; a
//! checkpoint save writes hundreds of MB a second).

use crate::error::{Error, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The longest a write waits for the prune loop to free space.
pub const ROOM_WAIT: Duration = Duration::from_secs(20);
/// How often a waiting write looks at the free space again.
const ROOM_POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Space {
    /// Free bytes that new data leaves (0: none).
    reserve: AtomicU64,
    /// Bytes that may still be appended before the free space is looked
    /// at again (half the room above the reserve at the last look), so
    /// the write path does not make a statvfs call per chunk.
    room: AtomicU64,
    /// Whether a prune loop is freeing space that a write can wait for
    /// (set by the daemon; cleared while its rounds free nothing).
    freeing: AtomicBool,
    /// Whether a write is waiting for room now (the loop looks sooner).
    wanted: AtomicBool,
    /// Bytes a prune's copies have taken for themselves ([`Space::hold`]):
    /// new data leaves them free too, so that a save and a repack at the
    /// same time do not both count on the same free bytes.
    held: AtomicU64,
}

/// Bytes held for a prune's copies, given back when it drops.
pub struct Hold<'a> {
    space: &'a Space,
    bytes: u64,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.space.held.fetch_sub(self.bytes, Relaxed);
    }
}

impl Space {
    /// Keeps `bytes` free: new file data (chunks) gets ENOSPC below that;
    /// metadata and a prune's copies may use it.
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Relaxed);
    }

    /// Takes `bytes` on the filesystem of `dir` for a prune's copies, if
    /// they fit with half the reserve left over: the catalog's room (a
    /// disk filled to the last byte fails its journal, and then every
    /// write). None when they do not fit now.
    pub fn hold(&self, dir: &Path, bytes: u64) -> Option<Hold<'_>> {
        let free = crate::sys::fs_space(dir).map_or(u64::MAX, |s| s.1);
        let taken = self.held.load(Relaxed) + self.reserve.load(Relaxed) / 2;
        if bytes.saturating_add(taken) > free {
            return None;
        }
        self.held.fetch_add(bytes, Relaxed);
        // Writes look at the disk again, with the hold counted.
        self.room.store(0, Relaxed);
        Some(Hold { space: self, bytes })
    }

    pub fn set_freeing(&self, on: bool) {
        self.freeing.store(on, Relaxed);
    }

    /// Whether a write waits for room now.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Relaxed)
    }

    /// ENOSPC when appending `len` bytes would leave less free space on
    /// the filesystem of `dir` than the reserve.
    pub fn check(&self, dir: &Path, len: u64) -> Result<()> {
        if self.reserve.load(Relaxed) == 0
            || self
                .room
                .fetch_update(Relaxed, Relaxed, |r| r.checked_sub(len))
                .is_ok()
        {
            return Ok(());
        }
        if self.look(dir, len) {
            Ok(())
        } else {
            Err(Error::IoAt {
                path: dir.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            })
        }
    }

    /// Looks at the free space: whether `len` bytes fit above the reserve
    /// and the holds (and takes them from the room it sets).
    fn look(&self, dir: &Path, len: u64) -> bool {
        let want = self.reserve.load(Relaxed) + self.held.load(Relaxed);
        match crate::sys::fs_space(dir) {
            Some((_, free)) if free < want.saturating_add(len) => {
                self.room.store(0, Relaxed);
                false
            }
            Some((_, free)) => {
                self.room.store((free - want - len) / 2, Relaxed);
                true
            }
            None => true,
        }
    }

    /// Waits, at most [`ROOM_WAIT`], while `len` bytes would not fit above
    /// the reserve and the prune loop is freeing space. It must be called
    /// with no lock held that a prune takes (a file's state): the caller's
    /// put then fits, or fails with ENOSPC as it would have.
    pub fn wait_for_room(&self, dir: &Path, len: u64) {
        if self.reserve.load(Relaxed) == 0 || self.room.load(Relaxed) >= len {
            return;
        }
        let until = Instant::now() + ROOM_WAIT;
        let mut waited = false;
        while !self.look(dir, len) {
            if !self.freeing.load(Relaxed) || Instant::now() >= until {
                break;
            }
            waited = true;
            if !self.wanted.swap(true, Relaxed) {
                tracing::info!("the disk is short of space: writes wait for the prune loop");
            }
            std::thread::sleep(ROOM_POLL);
        }
        if waited {
            self.wanted.store(false, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_for_a_prunes_copies_is_room_that_new_data_leaves_free() {
        let dir = tempfile::tempdir().unwrap();
        let free = crate::sys::fs_space(dir.path()).unwrap().1;
        let s = Space::default();
        s.set_reserve(free / 4);
        assert!(s.check(dir.path(), free / 2).is_ok());
        let hold = s.hold(dir.path(), free / 2).unwrap();
        // The room seen before the hold is forgotten: the same write no
        // longer fits above the reserve and the hold, a small one does.
        assert!(s.check(dir.path(), free / 2).is_err());
        assert!(s.check(dir.path(), free / 100).is_ok());
        assert!(s.hold(dir.path(), free / 2).is_none(), "held twice");
        drop(hold);
        assert!(s.check(dir.path(), free / 2).is_ok());
    }
}
