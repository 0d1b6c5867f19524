//! A bounded disk cache of the blocks of remote objects (a bucket mount's
//! pack bytes): `BLOCK`-aligned pieces of immutable objects, one file
//! each, evicted least recently used once the cache holds more than its
//! size. What it holds is the bucket's bytes (ciphertext for an
//! encrypted store), and every record read from it is hash-checked, so a
//! damaged block costs a fetch, never wrong data. The directory is locked
//! while a mount uses it.

use crate::error::{Error, Result};
use lru::LruCache;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The unit of fetching and caching: one ranged GET.
pub const BLOCK: u64 = 4 << 20;

/// The smallest cache that still holds what one read spans.
pub const MIN_SIZE: u64 = 4 * BLOCK;

pub struct BlockCache {
    dir: PathBuf,
    /// Signalled when a block finishes loading.
    loaded: Condvar,
    /// Makes temporary names unique within the process.
    tmp_seq: AtomicU64,
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
    /// Blocks being fetched now (a second reader waits for the first).
    loading: HashSet<String>,
}

/// What a reader of a block is to do.
enum Claim {
    /// Read it from its file.
    Cached,
    /// Fetch it (this reader is the one loading it).
    Load,
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
            loading: HashSet::new(),
        };
        for (_, name, len) in found {
            state.lru.put(name, len);
            state.bytes += len;
        }
        let cache = BlockCache {
            dir: dir.to_path_buf(),
            scope: scope.to_string(),
            loaded: Condvar::new(),
            tmp_seq: AtomicU64::new(0),
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
        // Evicted between the look and the read (or damaged): look again.
        for _ in 0..3 {
            if let Claim::Cached = self.claim(&name, b_len) {
                let mut buf = vec![0u8; n as usize];
                if let Ok(f) = File::open(&path)
                    && f.read_exact_at(&mut buf, from).is_ok()
                {
                    return Ok(buf);
                }
                continue;
            }
            let got = fetch(object, b_start, b_len as usize).and_then(|bytes| {
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
                Ok(bytes)
            });
            self.lock().loading.remove(&name);
            self.loaded.notify_all();
            return got.map(|b| b[from as usize..(from + n) as usize].to_vec());
        }
        let bytes = fetch(object, b_start, b_len as usize)?;
        Ok(bytes[from as usize..(from + n) as usize].to_vec())
    }

    /// Whether block `name` is cached; if not, and no one is fetching it,
    /// this reader is to (one GET per block, however many wait for it).
    fn claim(&self, name: &str, len: u64) -> Claim {
        let mut s = self.lock();
        loop {
            if s.lru.get(name).copied() == Some(len) {
                return Claim::Cached;
            }
            if s.loading.insert(name.to_string()) {
                return Claim::Load;
            }
            let (g, waited) = self
                .loaded
                .wait_timeout(s, Duration::from_secs(60))
                .unwrap_or_else(|e| e.into_inner());
            s = g;
            if waited.timed_out() {
                // The other fetch hangs: fetch it here too.
                return Claim::Load;
            }
        }
    }

    /// Stores a fetched block (temporary name, then rename) and evicts
    /// beyond the size. Not fsynced: a block lost in a crash is fetched again.
    fn keep(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{seq}-{name}", std::process::id()));
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

    #[test]
    fn readers_of_one_block_at_once_share_one_fetch() {
        let tmp = tempfile::tempdir().unwrap();
        let c = BlockCache::open(tmp.path(), MIN_SIZE, "s").unwrap();
        let fetches = AtomicUsize::new(0);
        let fetch = |_: &str, _: u64, n: usize| {
            fetches.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(100));
            Ok(vec![7u8; n])
        };
        std::thread::scope(|sc| {
            for i in 0..4u64 {
                let (c, fetch) = (&c, &fetch);
                sc.spawn(move || {
                    assert_eq!(c.read("o", BLOCK, i * 10, 5, fetch).unwrap(), [7u8; 5]);
                });
            }
        });
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}
