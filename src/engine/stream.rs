//! Chunking of sequential writes as they arrive.
//!
//! Training jobs write checkpoints front to back. While a file's writes
//! arrive in order at its end, their bytes go straight into the chunker and
//! the pack instead of into a staging file: the data is written to disk
//! once, and `close()` only cuts the last partial chunk. Cut points are
//! exactly those of chunking the whole file, because a cut is taken only
//! once a full `MAX_CHUNK` window is buffered (as `StreamCDC` does).
//!
//! The cutting, hashing and compressing (most of the write path's CPU:
//! 24 %, 10 % and 8 % of the daemon's samples ingesting the benchmark
//! workload) run on a worker of [`Pool`], one stream at a time in order,
//! so the FUSE thread answers a write as soon as its bytes are buffered
//! and the writer's next bytes arrive while the last ones are chunked.
//! At most `AHEAD` bytes wait for the worker; a write beyond that waits
//! for it. Everything that needs the chunks (a read, the references a
//! prune marks, the version a commit records) first waits until the
//! worker is done with what was fed, so commits and their durability are
//! those of chunking in line. After a worker's failure (a full disk) the
//! bytes stay buffered, and every write stores in line, failing as it
//! would have, until the chunks can be stored.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::pool::Pool;
use crate::chunker::MAX_CHUNK;
use crate::error::{Error, Result};
use crate::format::Extent;
use crate::ids::ObjectKind;
use crate::manifest::{Builder, Content};
use crate::store::{Access, ObjectStore};

/// Bytes fed that may wait for the worker before a write waits too.
const AHEAD: usize = 8 << 20;

/// Room at the front of the bytes fed while the worker runs, for the
/// tail it leaves (see `Work::take_in`).
const ROOM: usize = MAX_CHUNK;

/// The most bytes a stream holds that a worker has yet to store (beyond
/// those of the write at hand): what a write must find room on the disk
/// for, besides its own, before its bytes are buffered. A write that
/// waited only for its own bytes would leave the worker to find the disk
/// full and fail at once, where the write would have waited for the
/// prune loop to free history.
pub const MOST_UNSTORED: usize = AHEAD + 2 * MAX_CHUNK;

pub struct Stream {
    /// File offset where the stream began (an extent boundary of the base).
    pub start: u64,
    /// The offset the next sequential write must have.
    pos: u64,
    core: Arc<Core>,
}

struct Core {
    state: Mutex<State>,
    /// Signalled when the worker hands the work back or takes bytes in.
    changed: Condvar,
}

struct State {
    /// `None` while a worker has it.
    work: Option<Work>,
    /// Bytes fed while the worker had the work, after `ROOM` bytes of
    /// room (empty when none were); they follow the work's bytes.
    incoming: Vec<u8>,
    /// Whether a worker failed to store chunks (a full disk): writes then
    /// store them in line until that succeeds.
    failed: bool,
}

struct Work {
    /// The base before `start`, then the chunks cut so far: the file's
    /// manifest tree, built as the bytes arrive (memory stays one node a
    /// level however long the file grows).
    tree: Builder,
    /// `buf[head..]` are the bytes after the cut, not yet chunked; the
    /// consumed front is dropped once per batch, not once per chunk.
    buf: Vec<u8>,
    head: usize,
}

impl Stream {
    /// A stream that goes on from `base`'s content before `start`; `None`
    /// when `start` is not where an extent of `base` ends.
    pub fn new(store: &ObjectStore, base: &Content, start: u64) -> Result<Option<Stream>> {
        let mut tree = Builder::default();
        if tree.push_old(store, base, 0, start, false)? != start {
            return Ok(None);
        }
        let work = Work {
            tree,
            buf: Vec::with_capacity(MAX_CHUNK * 2),
            head: 0,
        };
        Ok(Some(Stream {
            start,
            pos: start,
            core: Arc::new(Core {
                state: Mutex::new(State {
                    work: Some(work),
                    incoming: Vec::new(),
                    failed: false,
                }),
                changed: Condvar::new(),
            }),
        }))
    }

    /// Objects the stream's tree refers to so far (see `Builder::refs`);
    /// waits for the worker, so chunks it put are in the tree.
    pub fn refs(&self, out: &mut Vec<(crate::ids::ObjectId, ObjectKind)>) {
        let st = self.core.idle();
        st.work.as_ref().expect("idle").tree.refs(out);
    }

    /// The offset the next sequential write must have.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Takes the bytes of a write at `pos()`; full chunks are stored by a
    /// worker (or by the next call that needs them).
    pub fn feed(&mut self, store: &Arc<ObjectStore>, data: &[u8]) -> Result<()> {
        let core = &self.core;
        let mut st = core.lock();
        while st.work.is_none() && st.incoming.len() >= ROOM + AHEAD {
            st = core.wait(st);
        }
        if st.failed {
            // Until its chunks can be stored again (the disk has room),
            // every write tries in line and fails as writing in line
            // does: one write(2) comes as many FUSE writes, and if only
            // the first after a failure failed, the writer would get a
            // short count each time and never the error.
            while st.work.is_none() {
                st = core.wait(st);
            }
            st.settle(store)?;
        }
        self.pos += data.len() as u64;
        let State { work, incoming, .. } = &mut *st;
        let Some(w) = work else {
            if incoming.is_empty() {
                incoming.resize(ROOM, 0);
            }
            incoming.extend_from_slice(data);
            return Ok(());
        };
        w.buf.extend_from_slice(data);
        if w.pending().len() >= MAX_CHUNK {
            let w = st.work.take().expect("checked above");
            drop(st);
            let (core, store) = (core.clone(), store.clone());
            Pool::shared().run(move || core.drive(&store, w));
        }
        Ok(())
    }

    /// Chunks what is left; returns the whole file's content. On an error
    /// the stream keeps its bytes (a later call tries again).
    pub fn finish(&mut self, store: &ObjectStore) -> Result<Content> {
        let mut st = self.core.settled(store)?;
        let w = st.work.as_mut().expect("idle");
        while !w.pending().is_empty() {
            let len = store.chunker().first_cut(w.pending());
            w.store_chunk(store, len)?;
        }
        w.tree.finish(store)
    }

    /// Copies stream bytes at file offset `pos` into `dst`; returns how many.
    pub fn read(&self, store: &ObjectStore, pos: u64, dst: &mut [u8]) -> Result<usize> {
        let st = self.core.idle();
        let w = st.work.as_ref().expect("idle");
        let cut_end = w.tree.pos();
        if pos >= cut_end {
            let mut at = (pos - cut_end) as usize;
            let mut n = 0;
            let fed = st.incoming.get(ROOM..).unwrap_or_default();
            for part in [w.pending(), fed] {
                if at >= part.len() {
                    at -= part.len();
                    continue;
                }
                let k = (dst.len() - n).min(part.len() - at);
                dst[n..n + k].copy_from_slice(&part[at..at + k]);
                n += k;
                at = 0;
            }
            return Ok(n);
        }
        let Some((start, Extent::Chunk { id, len })) = w.tree.extent_at(store, pos)? else {
            return Err(Error::corrupt("stream", "hole in a stream"));
        };
        let at = (pos - start) as usize;
        let n = dst.len().min(len as usize - at);
        store.copy_out(&id, at, &mut dst[..n], Access::Sequential)?;
        Ok(n)
    }
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        super::lock(&self.state)
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// The state once no worker has the work.
    fn idle(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        while st.work.is_none() {
            st = self.wait(st);
        }
        st
    }

    /// The state with every full chunk of what was fed stored.
    fn settled(&self, store: &ObjectStore) -> Result<MutexGuard<'_, State>> {
        let mut st = self.idle();
        st.settle(store)?;
        Ok(st)
    }

    /// A worker's turn: chunks the work's full windows, then those of
    /// bytes fed meanwhile, until less than a window is left.
    fn drive(&self, store: &ObjectStore, mut w: Work) {
        loop {
            let r = w.cut_full(store);
            let mut st = self.lock();
            if let Err(e) = r {
                tracing::debug!("a chunking worker failed: {e}");
                st.failed = true;
            } else {
                w.take_in(&mut st.incoming);
                if w.pending().len() >= MAX_CHUNK {
                    drop(st);
                    self.changed.notify_all();
                    continue;
                }
            }
            st.work = Some(w);
            drop(st);
            self.changed.notify_all();
            return;
        }
    }
}

impl State {
    /// Stores every full chunk of what was fed, in line (no worker has
    /// the work). A worker's failure is cleared only once this succeeds:
    /// a commit that settles an open file meanwhile (a space prune
    /// commits just then) must not take the writer's error.
    fn settle(&mut self, store: &ObjectStore) -> Result<()> {
        let w = self.work.as_mut().expect("idle");
        w.take_in(&mut self.incoming);
        w.cut_full(store)?;
        self.failed = false;
        Ok(())
    }
}

impl Work {
    fn pending(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Appends the bytes fed meanwhile after the work's own. They are not
    /// copied: the work's tail (less than a window once its full windows
    /// are cut) goes into the room left before them, and the buffers
    /// change places.
    fn take_in(&mut self, incoming: &mut Vec<u8>) {
        if incoming.len() <= ROOM {
            return;
        }
        let tail = self.buf.len() - self.head;
        if tail > ROOM {
            self.buf.extend_from_slice(&incoming[ROOM..]);
        } else {
            incoming[ROOM - tail..ROOM].copy_from_slice(self.pending());
            std::mem::swap(&mut self.buf, incoming);
            self.head = ROOM - tail;
        }
        incoming.clear();
    }

    /// Stores every chunk that a full window cuts.
    fn cut_full(&mut self, store: &ObjectStore) -> Result<()> {
        while self.pending().len() >= MAX_CHUNK {
            let len = store.chunker().first_cut(&self.pending()[..MAX_CHUNK]);
            self.store_chunk(store, len)?;
        }
        self.buf.drain(..self.head);
        self.head = 0;
        Ok(())
    }

    fn store_chunk(&mut self, store: &ObjectStore, len: usize) -> Result<()> {
        let id = store.put(ObjectKind::Chunk, &self.pending()[..len])?;
        // All or nothing: when a node of the tree cannot be stored, the
        // extent is not in it and the bytes stay for the next try.
        self.tree.push(
            store,
            Extent::Chunk {
                len: len as u64,
                id,
            },
        )?;
        self.head += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Access;

    #[test]
    fn cuts_match_chunking_the_whole_buffer() {
        // The same rule as StreamCDC: one cut per full MAX_CHUNK window.
        let mut x = 99u64;
        let data: Vec<u8> = (0..3_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let mut lens = Vec::new();
        let mut buf: &[u8] = &data;
        while !buf.is_empty() {
            let window = &buf[..buf.len().min(super::MAX_CHUNK)];
            let n = crate::chunker::Chunker::new(&crate::crypto::Crypto::plain()).first_cut(window);
            lens.push(n);
            buf = &buf[n..];
        }
        assert_eq!(lens, crate::chunker::chunk_lengths(&data));
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn store() -> (tempfile::TempDir, std::sync::Arc<crate::store::ObjectStore>) {
        let tmp = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(crate::catalog::db::Db::temporary().unwrap());
        let store = crate::store::ObjectStore::open(tmp.path(), db, false).unwrap();
        (tmp, std::sync::Arc::new(store))
    }

    fn read_back(s: &super::Stream, store: &crate::store::ObjectStore, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut pos = 0;
        while pos < len {
            let n = s.read(store, pos as u64, &mut out[pos..]).unwrap();
            assert!(n > 0, "no progress at {pos}");
            pos += n;
        }
        out
    }

    #[test]
    fn bytes_chunked_by_the_workers_read_back_and_finish_as_chunking_in_line_does() {
        let (_tmp, store) = store();
        let data = noise(9_000_000, 7);
        let base = crate::manifest::Content::default();
        let mut s = super::Stream::new(&store, &base, 0).unwrap().unwrap();
        let mut fed = 0;
        let mut sizes = [1usize, 4096, 131_072, 1 << 20, 777_777, 3]
            .into_iter()
            .cycle();
        while fed < data.len() {
            let n = sizes.next().unwrap().min(data.len() - fed);
            s.feed(&store, &data[fed..fed + n]).unwrap();
            fed += n;
            assert_eq!(s.pos(), fed as u64);
            if fed % 7 == 0 {
                // A read in the middle of the stream sees every byte fed.
                assert_eq!(read_back(&s, &store, fed), &data[..fed]);
            }
        }
        let mut refs = Vec::new();
        s.refs(&mut refs);
        assert!(
            refs.len() > 10,
            "the tree holds the chunks cut: {}",
            refs.len()
        );
        assert_eq!(read_back(&s, &store, data.len()), data);
        let content = s.finish(&store).unwrap();
        assert_eq!(content.size(), data.len() as u64);
        let mut whole = vec![0u8; data.len()];
        let mut pos = 0;
        while pos < data.len() {
            let (start, x) = content.extent_at(&store, pos as u64).unwrap().unwrap();
            let crate::format::Extent::Chunk { id, len } = x else {
                panic!("a hole in streamed content")
            };
            assert_eq!(start, pos as u64);
            store
                .copy_out(
                    &id,
                    0,
                    &mut whole[pos..pos + len as usize],
                    Access::Sequential,
                )
                .unwrap();
            pos += len as usize;
        }
        assert_eq!(whole, data);
        // Cut exactly where chunking the whole file cuts.
        let mut lens = Vec::new();
        let mut at = 0u64;
        while at < data.len() as u64 {
            let (_, x) = content.extent_at(&store, at).unwrap().unwrap();
            lens.push(x.len() as usize);
            at += x.len();
        }
        assert_eq!(lens, crate::chunker::chunk_lengths(&data));
    }

    #[test]
    fn a_full_disk_under_a_worker_fails_every_write_until_there_is_room_and_no_byte_is_lost() {
        let (tmp, store) = store();
        let data = noise(4_000_000, 11);
        let base = crate::manifest::Content::default();
        let mut s = super::Stream::new(&store, &base, 0).unwrap().unwrap();
        s.feed(&store, &data[..1 << 20]).unwrap();
        let _ = read_back(&s, &store, 1); // the worker is done with it
        // Every chunk put from now on finds the disk short of its reserve.
        let free = crate::sys::fs_space(tmp.path()).unwrap().1;
        store.space.set_reserve(free * 2);
        s.feed(&store, &data[1 << 20..3 << 20]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let err = loop {
            // The worker's failure comes back at a later call.
            match s.feed(&store, &[]) {
                Err(e) => break e,
                Ok(()) => {
                    assert!(std::time::Instant::now() < deadline, "no error in 20 s");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        };
        assert_eq!(err.errno(), libc::ENOSPC, "{err}");
        // While the disk stays short every write fails, as in line: a
        // write(2) the kernel sends as many FUSE writes gets the error,
        // not a short count each time. A commit settling the stream
        // meanwhile fails too, and leaves the failure for the writer.
        for _ in 0..3 {
            let err = s
                .feed(&store, &data[3 << 20..(3 << 20) + 4096])
                .unwrap_err();
            assert_eq!(err.errno(), libc::ENOSPC, "{err}");
        }
        let err = s.finish(&store).err().expect("the commit fails too");
        assert_eq!(err.errno(), libc::ENOSPC, "{err}");
        let err = s.feed(&store, &[]).unwrap_err();
        assert_eq!(err.errno(), libc::ENOSPC, "{err}");
        // Nothing is lost: the bytes read back, and once there is room
        // the same stream finishes with all of them.
        assert_eq!(read_back(&s, &store, 3 << 20), &data[..3 << 20]);
        store.space.set_reserve(0);
        s.feed(&store, &data[3 << 20..]).unwrap();
        let content = s.finish(&store).unwrap();
        assert_eq!(content.size(), data.len() as u64);
    }
}
