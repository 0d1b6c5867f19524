//! A bounded disk cache of the blocks of remote objects (a bucket mount's
//! pack bytes): `BLOCK`-aligned pieces of immutable objects, one file
//! each, evicted least recently used once the cache holds more than its
//! size. What it holds is the bucket's bytes (ciphertext for an
//! encrypted store), and every record read from it is hash-checked, so a
//! damaged block costs a fetch, never wrong data. The directory is locked
//! while a mount uses it.

use crate::error::{Error, Result};
use lru::LruCache;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The unit of fetching and caching: one ranged GET.
pub const BLOCK: u64 = 4 << 20;

/// The smallest cache that still holds what one read spans.
pub const MIN_SIZE: u64 = 4 * BLOCK;

pub struct BlockCache {
    dir: PathBuf,
    /// Mixed into block names: one directory may serve several replicas.
    scope: String,
    max: u64,
    state: Mutex<State>,
    _lock: File,
}

struct State {
    /// File name -> size, least recently used first.
    lru: LruCache<String, u64>,
    bytes: u64,
}

impl BlockCache {
    /// Opens (making it) the cache in `dir`, at most `max` bytes; blocks
    /// an earlier mount left there are kept, oldest evicted first.
    pub fn open(dir: &Path, max: u64, scope: &str) -> Result<BlockCache> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Error::io_at(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(Error::io_at(&lock_path))?;
        if !crate::sys::try_lock(&lock) {
            return Err(Error::Store(format!(
                "{}: cache in use by another revfs mount; give this one its own --cache-dir",
                dir.display()
            )));
        }
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir).map_err(Error::io_at(dir))? {
            let e = e.map_err(Error::io_at(dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(m) = e.metadata() else { continue };
            if name.starts_with(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            } else if name.ends_with(".blk") && m.is_file() {
                found.push((m.modified().ok(), name, m.len()));
            }
        }
        found.sort();
        let mut state = State {
            lru: LruCache::unbounded(),
            bytes: 0,
        };
        for (_, name, len) in found {
            state.lru.put(name, len);
            state.bytes += len;
        }
        let cache = BlockCache {
            dir: dir.to_path_buf(),
            scope: scope.to_string(),
            max: max.max(MIN_SIZE),
            state: Mutex::new(state),
            _lock: lock,
        };
        cache.evict();
        Ok(cache)
    }

    /// Bytes the cache holds.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `len` bytes of `object` (of `size` bytes) from `offset`, from the
    /// cached blocks, fetching the missing ones with
    /// `fetch(object, block offset, block length)`.
    pub fn read(
        &self,
        object: &str,
        size: u64,
        offset: u64,
        len: usize,
        fetch: impl Fn(&str, u64, usize) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let end = offset + len as u64;
        if end > size {
            return Err(Error::Store(format!(
                "{object}: {len} bytes at {offset} are past its end ({size})"
            )));
        }
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while at < end {
            let block = at / BLOCK;
            let b_start = block * BLOCK;
            let b_len = (size - b_start).min(BLOCK);
            let upto = end.min(b_start + b_len);
            let piece = self.read_block(
                object,
                block,
                b_start,
                b_len,
                at - b_start,
                upto - at,
                &fetch,
            )?;
            out.extend_from_slice(&piece);
            at = upto;
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn read_block(
        &self,
        object: &str,
        block: u64,
        b_start: u64,
        b_len: u64,
        from: u64,
        n: u64,
        fetch: &impl Fn(&str, u64, usize) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let key = format!("{}\0{object}", self.scope);
        let name = format!("{}-{block:08x}.blk", blake3::hash(key.as_bytes()).to_hex());
        let path = self.dir.join(&name);
        let cached = self.lock().lru.get(&name).copied() == Some(b_len);
        if cached {
            let mut buf = vec![0u8; n as usize];
            // Evicted since the look (or damaged): fetched again below.
            if let Ok(f) = File::open(&path)
                && f.read_exact_at(&mut buf, from).is_ok()
            {
                return Ok(buf);
            }
        }
        let bytes = fetch(object, b_start, b_len as usize)?;
        if bytes.len() as u64 != b_len {
            return Err(Error::Store(format!(
                "{object}: got {} bytes of block {block}, wanted {b_len}",
                bytes.len()
            )));
        }
        // A cache that cannot be written still serves the read.
        if let Err(e) = self.keep(&name, &bytes) {
            tracing::warn!("cache {}: {e}", self.dir.display());
        }
        Ok(bytes[from as usize..(from + n) as usize].to_vec())
    }

    /// Stores a fetched block (temporary name, then rename) and evicts
    /// beyond the size. Not fsynced: a block lost in a crash is fetched again.
    fn keep(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".tmp-{}-{name}", std::process::id()));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(name))?;
        {
            let mut s = self.lock();
            if let Some(old) = s.lru.put(name.to_string(), bytes.len() as u64) {
                s.bytes -= old;
            }
            s.bytes += bytes.len() as u64;
        }
        self.evict();
        Ok(())
    }

    fn evict(&self) {
        let mut s = self.lock();
        while s.bytes > self.max {
            let Some((name, len)) = s.lru.pop_lru() else {
                break;
            };
            s.bytes -= len;
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn reads_across_blocks_stay_within_the_size_and_refetch_after_eviction() {
        let tmp = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(6 * BLOCK) as usize)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let fetches = AtomicUsize::new(0);
        let fetch = |_: &str, at: u64, n: usize| {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok(data[at as usize..at as usize + n].to_vec())
        };
        let c = BlockCache::open(tmp.path(), MIN_SIZE, "s").unwrap();
        let size = data.len() as u64;
        // A read that spans two blocks.
        let at = BLOCK - 100;
        assert_eq!(
            c.read("o", size, at, 300, fetch).unwrap(),
            &data[at as usize..at as usize + 300]
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Cached: no fetch.
        c.read("o", size, at, 300, fetch).unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Every block once: the cache stays at its size.
        for b in 0..6 {
            c.read("o", size, b * BLOCK, 10, fetch).unwrap();
        }
        assert!(c.bytes() <= MIN_SIZE, "{}", c.bytes());
        // Block 0 was evicted: fetched again, still right.
        let before = fetches.load(Ordering::SeqCst);
        assert_eq!(c.read("o", size, 0, 10, fetch).unwrap(), &data[..10]);
        assert_eq!(fetches.load(Ordering::SeqCst), before + 1);
        // Past the end is an error, not a panic.
        assert!(c.read("o", size, size - 5, 10, fetch).is_err());
        drop(c);
        // Reopened: what is on disk counts, and a second user is refused.
        let c = BlockCache::open(tmp.path(), MIN_SIZE, "s").unwrap();
        assert!(c.bytes() > 0 && c.bytes() <= MIN_SIZE);
        assert!(BlockCache::open(tmp.path(), MIN_SIZE, "s").is_err());
    }
}
