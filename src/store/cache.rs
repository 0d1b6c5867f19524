//! Decoded objects kept in memory, bounded by their bytes: a read of a
//! cached chunk skips the disk, the decoding and the hash check; a delta's
//! bases stay here while the chunks next to it are rebuilt from them.

use crate::ids::ObjectId;
use lru::LruCache;
use std::sync::Arc;

/// What the cache holds when not told otherwise: 1/32 of the machine's
/// memory, between 32 MiB and 256 MiB.
pub fn default_bytes() -> u64 {
    let total = crate::sys::memory_bytes().unwrap_or(4 << 30);
    (total / 32).clamp(32 << 20, 256 << 20)
}

pub struct Cache {
    lru: LruCache<ObjectId, Arc<Vec<u8>>>,
    bytes: u64,
    limit: u64,
}

impl Cache {
    pub fn new(limit: u64) -> Cache {
        Cache {
            lru: LruCache::unbounded(),
            bytes: 0,
            limit,
        }
    }

    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
        self.shrink();
    }

    pub fn get(&mut self, id: &ObjectId) -> Option<Arc<Vec<u8>>> {
        self.lru.get(id).cloned()
    }

    pub fn remove(&mut self, id: &ObjectId) {
        if let Some(v) = self.lru.pop(id) {
            self.bytes -= v.len() as u64;
        }
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.lru.contains(id)
    }

    pub fn put(&mut self, id: ObjectId, data: Arc<Vec<u8>>) {
        let n = data.len() as u64;
        if n > self.limit {
            return;
        }
        if let Some(old) = self.lru.put(id, data) {
            self.bytes -= old.len() as u64;
        }
        self.bytes += n;
        self.shrink();
    }

    fn shrink(&mut self) {
        while self.bytes > self.limit {
            match self.lru.pop_lru() {
                Some((_, v)) => self.bytes -= v.len() as u64,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_holds_at_most_its_bytes_newest_first() {
        let mut c = Cache::new(10);
        let id = |b: u8| ObjectId([b; 32]);
        c.put(id(1), Arc::new(vec![0; 4]));
        c.put(id(2), Arc::new(vec![0; 4]));
        assert!(c.get(&id(1)).is_some());
        c.put(id(3), Arc::new(vec![0; 4]));
        // 2 was the least recently used.
        assert!(!c.contains(&id(2)) && c.contains(&id(1)) && c.contains(&id(3)));
        c.put(id(4), Arc::new(vec![0; 11]));
        assert!(!c.contains(&id(4)));
        c.set_limit(4);
        assert_eq!(c.bytes, 4);
    }
}
