//! Readahead for sequential reads: when a handle reads on from where it
//! left off, the chunks of the next `WINDOW` bytes are loaded (read,
//! decompressed, hash-checked once) into the store's cache by worker
//! threads, so that the disk, the decoding and the kernel's copies of one
//! file overlap instead of taking turns. The pack pages of what such a
//! handle has read leave the page cache behind it, in runs of `DROP_STEP`
//! (each drop is a round of every CPU's page lists, so not one per chunk),
//! whoever loaded them: under load the reader loads many chunks itself.

use crate::ids::{ObjectId, PackNo};
use crate::store::{Access, ObjectStore};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// How far ahead of a sequential reader chunks are loaded.
pub const WINDOW: u64 = 4 << 20;

/// A read this close to where the last one ended still counts as
/// sequential (the kernel's readahead requests arrive out of order).
const SLACK: u64 = 2 << 20;

/// Whether a read at `off` goes on from a read that ended at `next`.
fn follows(off: u64, next: u64) -> bool {
    off + SLACK >= next && off <= next + SLACK
}

/// Chunks waiting for a worker, at most (more are not asked for).
const QUEUE: usize = 256;

/// A sequential reader's pack pages are dropped in runs of this many bytes.
const DROP_STEP: u64 = 8 << 20;

/// Records this close to each other are one run of a pack (a file's
/// chunks lie in order, with other files' records between).
const DROP_GAP: u64 = 1 << 20;

/// The run of pack bytes a handle has read and not dropped yet.
#[derive(Default)]
struct Behind {
    run: Option<(PackNo, u64, u64)>,
    /// The chunk added last: a chunk that spans several reads is looked
    /// up once, not at every read.
    last: Option<ObjectId>,
}

/// Pack bytes to drop from the page cache: `pack`, `start..end`.
type Run = (PackNo, u64, u64);

impl Behind {
    /// Adds a record that was read at `start..end` of `pack`; the runs
    /// now due to be dropped go to `due`.
    fn add(&mut self, (pack, start, end): Run, due: &mut Vec<Run>) {
        match &mut self.run {
            Some((p, s, e)) if *p == pack && start >= *s && start <= *e + DROP_GAP => {
                *e = (*e).max(end);
            }
            _ => {
                due.extend(self.run.take());
                self.run = Some((pack, start, end));
            }
        }
        if let Some((_, s, e)) = self.run
            && e - s >= DROP_STEP
        {
            due.extend(self.run.take());
        }
    }
}

pub struct Readahead {
    tx: Mutex<Option<SyncSender<ObjectId>>>,
    /// Ids queued or being loaded.
    queued: Arc<Mutex<HashSet<ObjectId>>>,
    /// Per handle: (where its next sequential read starts, how far
    /// chunks were asked for).
    handles: Mutex<HashMap<u64, (u64, u64)>>,
    /// Per sequentially reading handle: pack bytes read, not dropped yet.
    behind: Mutex<HashMap<u64, Behind>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Readahead {
    /// `workers` threads loading into `store`'s cache (none: readahead off).
    pub fn new(store: &Arc<ObjectStore>, workers: usize) -> Readahead {
        let queued: Arc<Mutex<HashSet<ObjectId>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::sync_channel::<ObjectId>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..workers {
            let (store, rx, queued) = (Arc::downgrade(store), rx.clone(), queued.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("revfs-readahead-{i}"))
                .spawn(move || {
                    loop {
                        let next = lock(&rx).recv();
                        let Ok(id) = next else { return };
                        // The store went away: nothing more to load.
                        let Some(store) = store.upgrade() else { return };
                        // A failure is the reader's to report, when it reads.
                        let _ = store.get(&id);
                        lock(&queued).remove(&id);
                    }
                });
            started += usize::from(spawned.is_ok());
        }
        Readahead {
            tx: Mutex::new((started > 0).then_some(tx)),
            queued,
            handles: Mutex::new(HashMap::new()),
            behind: Mutex::new(HashMap::new()),
        }
    }

    /// How a read of handle `fh` at `off` should reach the packs: a
    /// handle's first read, or one on from where its last ended, is
    /// sequential (the kernel reads ahead in the packs for it); one that
    /// jumped is random.
    pub fn access(&self, fh: u64, off: u64) -> Access {
        let next = lock(&self.handles).get(&fh).map_or(0, |h| h.0);
        if follows(off, next) {
            Access::Sequential
        } else {
            Access::Random
        }
    }

    /// A read of handle `fh` at `off` that ended at `end`: the range to
    /// load ahead, when the handle reads sequentially.
    pub fn after_read(&self, fh: u64, off: u64, end: u64) -> Option<(u64, u64)> {
        let mut h = lock(&self.handles);
        let (next, asked) = h.get(&fh).copied().unwrap_or((0, 0));
        let sequential = follows(off, next);
        let from = asked.max(end);
        let to = end + WINDOW;
        h.insert(
            fh,
            (
                end.max(next),
                if sequential { to.max(asked) } else { asked },
            ),
        );
        (sequential && from < to).then_some((from, to))
    }

    /// Asks the workers for `ids` not cached yet (dropped when they are busy).
    pub fn load(&self, store: &ObjectStore, ids: impl IntoIterator<Item = ObjectId>) {
        let tx = lock(&self.tx).clone();
        let Some(tx) = tx else { return };
        for id in ids {
            if store.is_cached(&id) || !lock(&self.queued).insert(id) {
                continue;
            }
            if let Err(TrySendError::Full(id) | TrySendError::Disconnected(id)) = tx.try_send(id) {
                lock(&self.queued).remove(&id);
                return;
            }
        }
    }

    /// Handle `fh`, reading sequentially, has read the chunks `ids`: their
    /// pack pages go, a run at a time (see [`ObjectStore::drop_pages`]).
    pub fn read_behind(&self, store: &ObjectStore, fh: u64, ids: &[ObjectId]) {
        let mut due = Vec::new();
        {
            let mut behind = lock(&self.behind);
            let b = behind.entry(fh).or_default();
            for id in ids {
                if b.last == Some(*id) {
                    continue;
                }
                b.last = Some(*id);
                if let Ok(Some(at)) = store.record_range(id) {
                    b.add(at, &mut due);
                }
            }
        }
        // Out of the lock: a drop waits on every CPU's page lists, and
        // other handles' reads need not wait for that.
        for (pack, start, end) in due {
            store.drop_pages(pack, start, end);
        }
    }

    /// The handle is closed.
    pub fn forget(&self, store: &ObjectStore, fh: u64) {
        lock(&self.handles).remove(&fh);
        let run = lock(&self.behind).remove(&fh).and_then(|b| b.run);
        if let Some((pack, start, end)) = run {
            store.drop_pages(pack, start, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::db::Db;
    use crate::ids::ObjectKind;
    use std::time::{Duration, Instant};

    #[test]
    fn a_readers_records_are_dropped_in_runs_of_a_step() {
        let (mut b, mut due) = (Behind::default(), Vec::new());
        let p = PackNo(1);
        // Records in order, with small gaps: one run, due at DROP_STEP.
        let mut at = 0;
        while at + (1 << 20) < DROP_STEP {
            b.add((p, at, at + (1 << 20) - 100), &mut due);
            at += 1 << 20;
        }
        assert!(due.is_empty(), "{due:?}");
        b.add((p, at, at + (1 << 20)), &mut due);
        assert_eq!(due, [(p, 0, DROP_STEP)]);
        // A jump past DROP_GAP, or another pack, ends the run there.
        due.clear();
        b.add((p, 1 << 30, (1 << 30) + 10), &mut due);
        b.add(
            (p, (3 << 30) + DROP_GAP, (3 << 30) + DROP_GAP + 10),
            &mut due,
        );
        b.add((PackNo(2), 0, 10), &mut due);
        assert_eq!(
            due,
            [
                (p, 1 << 30, (1 << 30) + 10),
                (p, (3 << 30) + DROP_GAP, (3 << 30) + DROP_GAP + 10)
            ]
        );
        assert_eq!(b.run, Some((PackNo(2), 0, 10)));
    }

    #[test]
    fn only_sequential_reads_ask_for_the_window_ahead_and_once() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::temporary().unwrap());
        let store = Arc::new(ObjectStore::open(tmp.path(), db, false).unwrap());
        let r = Readahead::new(&store, 0);
        // From the start: the window after the read.
        assert_eq!(
            r.after_read(1, 0, 128 << 10),
            Some((128 << 10, (128 << 10) + WINDOW))
        );
        // On from there: only what was not asked for yet.
        let end = 256 << 10;
        assert_eq!(
            r.after_read(1, 128 << 10, end),
            Some(((128 << 10) + WINDOW, end + WINDOW))
        );
        // A jump far away (a random read) asks for nothing...
        assert_eq!(r.after_read(1, 900 << 20, (900 << 20) + 4096), None);
        // ...another handle has its own position; a closed one starts over.
        assert!(r.after_read(2, 0, 4096).is_some());
        r.forget(&store, 1);
        assert!(r.after_read(1, 0, 4096).is_some());
    }

    #[test]
    fn the_workers_load_what_is_asked_into_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::temporary().unwrap());
        let store = Arc::new(ObjectStore::open(tmp.path(), db, false).unwrap());
        let ids: Vec<ObjectId> = (0..20u8)
            .map(|i| store.put(ObjectKind::Chunk, &[i; 5000]).unwrap())
            .collect();
        assert!(ids.iter().all(|id| !store.is_cached(id)));
        let r = Readahead::new(&store, 2);
        r.load(&store, ids.clone());
        let start = Instant::now();
        while !ids.iter().all(|id| store.is_cached(id)) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "not loaded in 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
