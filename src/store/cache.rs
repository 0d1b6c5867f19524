//! Decoded objects kept in memory, bounded by their bytes: a read of a
//! cached chunk skips the disk, the decoding and the hash check; a delta's
//! bases stay here while the chunks next to it are rebuilt from them.

use crate::ids::ObjectId;
use lru::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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

/// Objects being loaded now: a second reader of one waits for the first
/// instead of reading and decoding it again (a reader that catches up
/// with readahead asks for the chunk a worker is loading; a chunk of an
/// old version may be a chain of deltas, several times a chunk's work).
#[derive(Default)]
pub struct InFlight {
    loading: Mutex<HashMap<ObjectId, Arc<Flight>>>,
}

#[derive(Default)]
struct Flight {
    done: Mutex<bool>,
    cv: Condvar,
}

/// How long a reader waits for another's load before it loads itself.
const WAIT: Duration = Duration::from_secs(30);

/// The loader's turn: ends the flight (and wakes the waiters) when dropped.
pub struct Loading<'a> {
    of: &'a InFlight,
    id: ObjectId,
    flight: Arc<Flight>,
}

impl InFlight {
    /// Some: the caller loads `id` (and puts it in the cache before the
    /// guard drops). None: another thread was loading it and is done (or
    /// took too long): look in the cache, and load it there is nothing.
    pub fn begin(&self, id: &ObjectId) -> Option<Loading<'_>> {
        let other = {
            let mut m = self.loading.lock().unwrap_or_else(|p| p.into_inner());
            match m.get(id) {
                Some(f) => f.clone(),
                None => {
                    let flight = Arc::new(Flight::default());
                    m.insert(*id, flight.clone());
                    return Some(Loading {
                        of: self,
                        id: *id,
                        flight,
                    });
                }
            }
        };
        let done = other.done.lock().unwrap_or_else(|p| p.into_inner());
        let _ = other.cv.wait_timeout_while(done, WAIT, |d| !*d);
        None
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.of
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        *self.flight.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.flight.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_loader_of_an_object_waits_for_the_first() {
        let f = Arc::new(InFlight::default());
        let id = ObjectId([7; 32]);
        let first = f.begin(&id).expect("the first loads");
        let f2 = f.clone();
        let waiter = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            (f2.begin(&id).is_none(), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        drop(first);
        let (waited, took) = waiter.join().unwrap();
        assert!(waited && took >= Duration::from_millis(150), "{took:?}");
        // Done: the next one loads again.
        assert!(f.begin(&id).is_some());
    }

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
