//! Chunking of sequential writes as they arrive.
//!
//! Training jobs write checkpoints front to back. While a file's writes
//! arrive in order at its end, their bytes go straight into the chunker and
//! the pack (hashing and lz4 cost about a third of a millisecond per MiB
//! here, see `examples/hot_path.rs`) instead of into a staging file: the
//! data is written to disk once, and `close()` only cuts the last partial
//! chunk. Cut points are exactly those of chunking the whole file, because
//! a cut is taken only once a full `MAX_CHUNK` window is buffered (as
//! `StreamCDC` does).

use crate::chunker::MAX_CHUNK;
use crate::error::{Error, Result};
use crate::format::Extent;
use crate::ids::ObjectKind;
use crate::manifest::{Builder, Content};
use crate::store::ObjectStore;

pub struct Stream {
    /// File offset where the stream began (an extent boundary of the base).
    pub start: u64,
    /// The base before `start`, then the chunks cut so far: the file's
    /// manifest tree, built as the bytes arrive (memory stays one node a
    /// level however long the file grows).
    tree: Builder,
    /// `buf[head..]` are the bytes after the cut, not yet chunked; the
    /// consumed front is dropped once per write, not once per chunk.
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
        Ok(Some(Stream {
            start,
            tree,
            buf: Vec::with_capacity(MAX_CHUNK * 2),
            head: 0,
        }))
    }

    /// Objects the stream's tree refers to so far (see `Builder::refs`).
    pub fn refs(&self, out: &mut Vec<(crate::ids::ObjectId, ObjectKind)>) {
        self.tree.refs(out);
    }

    /// The offset the next sequential write must have.
    pub fn pos(&self) -> u64 {
        self.tree.pos() + self.pending().len() as u64
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Takes the bytes of a write at `pos()`; stores every full chunk.
    pub fn feed(&mut self, store: &ObjectStore, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
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

    /// Chunks what is left; returns the whole file's content.
    pub fn finish(mut self, store: &ObjectStore) -> Result<Content> {
        while !self.pending().is_empty() {
            let len = store.chunker().first_cut(self.pending());
            self.store_chunk(store, len)?;
        }
        self.tree.finish(store)
    }

    /// Copies stream bytes at file offset `pos` into `dst`; returns how many.
    pub fn read(&self, store: &ObjectStore, pos: u64, dst: &mut [u8]) -> Result<usize> {
        let cut_end = self.tree.pos();
        if pos >= cut_end {
            let at = (pos - cut_end) as usize;
            let pending = self.pending();
            let n = dst.len().min(pending.len().saturating_sub(at));
            dst[..n].copy_from_slice(&pending[at..at + n]);
            return Ok(n);
        }
        let Some((start, Extent::Chunk { id, len })) = self.tree.extent_at(store, pos)? else {
            return Err(Error::corrupt("stream", "hole in a stream"));
        };
        let at = (pos - start) as usize;
        let n = dst.len().min(len as usize - at);
        store.copy_out(&id, at, &mut dst[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
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
}
