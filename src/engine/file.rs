//! The content of one open regular file: its last recorded version (a
//! manifest) overlaid with the bytes written since, which sit in an
//! anonymous staging file at their own offsets, or, while writes arrive in
//! order at the end of the file, in a [`Stream`] that chunks them at once.
//! Any other change first folds the stream into the base (its chunks become
//! base extents), so the staging path never sees streamed bytes.
//!
//! Recording a version ([`FileState::record`]) reuses every unchanged base
//! extent, and every unchanged subtree of the base's manifest tree, and
//! re-chunks only around the changes, stopping where the chunker's cuts
//! meet the old extent boundaries again, so an append to a large file
//! costs the appended bytes plus about one chunk, and an edit in the middle
//! the chunks around it and one manifest node per tree level. Regions
//! never written and beyond the old content are holes: they read as zeros
//! and are stored as hole extents, taking no space.

use super::stream::Stream;
use crate::error::{Error, Result};
use crate::format::{Extent, Time};
use crate::ids::{ObjectId, ObjectKind};
use crate::manifest::{Builder, Content};
use crate::store::{Access, ObjectStore};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Disjoint, non-adjacent half-open ranges.
#[derive(Default, Debug, Clone)]
pub struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with every range that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// Drops everything at or beyond `at`.
    pub fn clip(&mut self, at: u64) {
        let beyond: Vec<u64> = self.0.range(at..).map(|(s, _)| *s).collect();
        for s in beyond {
            self.0.remove(&s);
        }
        if let Some((_, e)) = self.0.range_mut(..at).next_back()
            && *e > at
        {
            *e = at;
        }
    }

    /// Takes `[start, end)` out (ranges across its ends are cut).
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let over: Vec<(u64, u64)> = self
            .0
            .range(..end)
            .rev()
            .take_while(|(_, e)| **e > start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in over {
            self.0.remove(&s);
            if s < start {
                self.0.insert(s, start);
            }
            if e > end {
                self.0.insert(end, e);
            }
        }
    }

    pub fn first(&self) -> Option<u64> {
        self.0.keys().next().copied()
    }

    /// Bytes in all the ranges.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The range containing `pos`, or the start of the next one.
    fn at(&self, pos: u64) -> Result<(u64, u64), Option<u64>> {
        if let Some((s, e)) = self.0.range(..=pos).next_back()
            && *e > pos
        {
            return Ok((*s, *e));
        }
        Err(self.0.range(pos..).next().map(|(s, _)| *s))
    }
}

/// What the bytes at a position are.
enum Piece {
    /// Up to `end`, from the stream.
    Streamed(u64),
    /// Up to `end`, from the staging file.
    Staged(u64),
    /// Up to `end`, from the base's chunk `id`, which starts at `start`.
    Base { end: u64, start: u64, id: ObjectId },
    /// Up to `end`, zeros.
    Zero(u64),
}

pub struct FileState {
    base: Content,
    /// Base bytes at or beyond this offset read as zeros (after a truncate).
    base_limit: u64,
    pub size: u64,
    written: RangeSet,
    /// Ranges punched out (`fallocate`): zeros, unless written since.
    zeroed: RangeSet,
    staging: Option<Staging>,
    stream: Option<Stream>,
    /// Something changed since the last recorded version.
    pub dirty: bool,
    /// Time of the last data change not yet in the inode (mtime and ctime).
    pub mtime: Option<Time>,
    /// Bytes the last `record` fed to the chunker (what a version cost).
    pub last_chunked: u64,
}

impl FileState {
    pub fn new(base: Content) -> FileState {
        let size = base.size();
        FileState {
            base,
            base_limit: size,
            size,
            written: RangeSet::default(),
            zeroed: RangeSet::default(),
            staging: None,
            stream: None,
            dirty: false,
            mtime: None,
            last_chunked: 0,
        }
    }

    /// Bytes written to the staging file since the last version: what the
    /// next `record` stores as new chunks (with a chunk or two around each
    /// run).
    pub fn staged(&self) -> u64 {
        self.written.bytes()
    }

    /// Bytes in chunk extents of the last recorded version (for st_blocks).
    /// Objects this state refers to that no catalog record may hold yet:
    /// the base content it reads through and the stream's open tree.
    pub fn refs(&self, out: &mut Vec<(ObjectId, ObjectKind)>) {
        out.extend(self.base.id().map(|id| (id, ObjectKind::Manifest)));
        if let Some(s) = &self.stream {
            s.refs(out);
        }
    }

    pub fn allocated(&self) -> u64 {
        self.base.allocated()
    }

    fn piece(&self, store: &ObjectStore, pos: u64, access: Access) -> Result<Piece> {
        if let Some(s) = &self.stream
            && pos >= s.start
        {
            // The stream is the end of the file.
            return Ok(Piece::Streamed(s.pos().min(self.size)));
        }
        let next_staged = match self.written.at(pos) {
            Ok((_, e)) => return Ok(Piece::Staged(e.min(self.size))),
            Err(next) => next.unwrap_or(u64::MAX).min(self.size),
        };
        let next_zeroed = match self.zeroed.at(pos) {
            Ok((_, e)) => return Ok(Piece::Zero(e.min(next_staged))),
            Err(next) => next.unwrap_or(u64::MAX),
        };
        if pos < self.base_limit
            && let Some((start, x)) = self.base.extent_for(store, pos, access)?
        {
            let end = (start + x.len())
                .min(self.base_limit)
                .min(next_staged)
                .min(next_zeroed);
            return Ok(match x {
                Extent::Hole { .. } => Piece::Zero(end),
                Extent::Chunk { id, .. } => Piece::Base { end, start, id },
            });
        }
        Ok(Piece::Zero(next_staged))
    }

    /// The stored chunks that hold bytes `from..to`, in order (what a
    /// readahead loads); staged, streamed and zero ranges have none.
    pub fn chunks_in(&self, store: &ObjectStore, from: u64, to: u64) -> Result<Vec<ObjectId>> {
        let (mut out, mut pos, to) = (Vec::new(), from, to.min(self.size));
        while pos < to {
            let end = match self.piece(store, pos, Access::Sequential)? {
                Piece::Base { end, id, .. } => {
                    out.push(id);
                    end
                }
                Piece::Streamed(e) | Piece::Staged(e) | Piece::Zero(e) => e,
            };
            if end <= pos {
                break;
            }
            pos = end;
        }
        Ok(out)
    }

    /// Reads up to `buf.len()` bytes at `off`; returns how many (0 at EOF).
    /// `access` says how stored chunks are read from their packs.
    pub fn read_into(
        &self,
        store: &ObjectStore,
        off: u64,
        buf: &mut [u8],
        access: Access,
    ) -> Result<usize> {
        let end = self.size.min(off.saturating_add(buf.len() as u64));
        let mut pos = off;
        while pos < end {
            let dst = &mut buf[(pos - off) as usize..(end - off) as usize];
            pos +=
                self.read_piece(store, self.piece(store, pos, access)?, pos, dst, access)? as u64;
        }
        Ok((end.saturating_sub(off)) as usize)
    }

    /// Copies bytes of `piece` (what is at `pos`) into `dst`, at most to
    /// the piece's end; returns how many.
    fn read_piece(
        &self,
        store: &ObjectStore,
        piece: Piece,
        pos: u64,
        dst: &mut [u8],
        access: Access,
    ) -> Result<usize> {
        let upto = |e: u64| dst.len().min((e - pos) as usize);
        Ok(match piece {
            Piece::Streamed(e) => {
                let n = upto(e);
                let s = self.stream.as_ref().expect("streamed piece");
                s.read(store, pos, &mut dst[..n])?
            }
            Piece::Staged(e) => {
                let n = upto(e);
                let f = self.staging.as_ref().ok_or_else(|| {
                    Error::corrupt("staging file", "written range without staging file")
                })?;
                f.read_at(&mut dst[..n], pos)?;
                n
            }
            Piece::Base { end: e, start, id } => {
                let n = upto(e);
                store.copy_out(&id, (pos - start) as usize, &mut dst[..n], access)?;
                n
            }
            Piece::Zero(e) => {
                let n = upto(e);
                dst[..n].fill(0);
                n
            }
        })
    }

    pub fn write(
        &mut self,
        store: &std::sync::Arc<ObjectStore>,
        staging_dir: &Path,
        off: u64,
        data: &[u8],
    ) -> Result<()> {
        let end = off.checked_add(data.len() as u64).ok_or(Error::TooBig)?;
        if end > i64::MAX as u64 {
            return Err(Error::TooBig);
        }
        if self.stream.as_ref().is_some_and(|s| s.pos() != off) {
            self.fold(store)?;
        }
        if self.stream.is_none()
            && self.written.first().is_none()
            && self.zeroed.first().is_none()
            && off == self.size
            && off <= self.base_limit
        {
            // Everything before is unchanged base content: stream from
            // here when it ends on an extent boundary.
            self.stream = Stream::new(store, &self.base, off)?;
        }
        if let Some(s) = &mut self.stream {
            s.feed(store, data)?;
            self.size = end;
            self.dirty = true;
            self.mtime = Some(Time::now());
            return Ok(());
        }
        if self.staging.is_none() {
            self.staging = Some(Staging::new(staging_dir, store.crypto().is_encrypted())?);
        }
        let f = self.staging.as_ref().expect("created above");
        f.write_at(data, off)?;
        self.written.insert(off, end);
        self.size = self.size.max(end);
        self.dirty = true;
        self.mtime = Some(Time::now());
        Ok(())
    }

    /// Turns the stream into the base (its tree is the file's content
    /// now). Nothing is recorded.
    fn fold(&mut self, store: &ObjectStore) -> Result<()> {
        let Some(s) = &mut self.stream else {
            return Ok(());
        };
        let base = s.finish(store)?;
        self.stream = None;
        let size = self.size;
        *self = FileState {
            mtime: self.mtime,
            dirty: self.dirty,
            staging: self.staging.take(),
            written: std::mem::take(&mut self.written),
            zeroed: std::mem::take(&mut self.zeroed),
            ..FileState::new(base)
        };
        debug_assert_eq!(self.size, size);
        Ok(())
    }

    /// Sets the size (and the data-change time); a no-op size keeps the
    /// state clean so that it records no new version.
    pub fn truncate(&mut self, store: &ObjectStore, size: u64) -> Result<()> {
        self.mtime = Some(Time::now());
        if size == self.size {
            return Ok(());
        }
        self.fold(store)?;
        if size < self.size {
            self.written.clip(size);
            self.zeroed.clip(size);
            self.base_limit = self.base_limit.min(size);
        }
        self.size = size;
        self.dirty = true;
        Ok(())
    }

    /// Makes bytes `from..to` (within the size) read as zeros: a punched
    /// hole (`fallocate`), stored as a hole extent by the next `record`.
    pub fn zero(&mut self, store: &ObjectStore, from: u64, to: u64) -> Result<()> {
        let to = to.min(self.size);
        if from >= to {
            return Ok(());
        }
        self.fold(store)?;
        self.written.remove(from, to);
        self.zeroed.insert(from, to);
        self.dirty = true;
        self.mtime = Some(Time::now());
        Ok(())
    }

    /// Where the next byte at or after `pos` that differs from the base
    /// is (`size` when none): a written byte, or the end of the base.
    fn next_change(&self, pos: u64) -> u64 {
        let next = |r: &RangeSet| match r.at(pos) {
            Ok(_) => pos,
            Err(next) => next.unwrap_or(u64::MAX),
        };
        next(&self.written)
            .min(next(&self.zeroed))
            .min(self.base_limit)
            .min(self.size)
    }

    /// Whether a base extent starts at `pos` and is unchanged as a whole
    /// (its bytes can be reused as they are).
    fn reusable_at(&self, store: &ObjectStore, pos: u64) -> Result<bool> {
        Ok(match self.base.extent_at(store, pos)? {
            Some((start, x)) => start == pos && pos + x.len() <= self.next_change(pos),
            None => false,
        })
    }

    /// Chunks what changed into the store and builds the new manifest tree;
    /// returns its root. The state then reads from that version alone.
    ///
    /// Unchanged base content is reused as it is, whole subtrees at a time;
    /// the chunker starts at the extent holding a changed byte and stops at
    /// the first cut that falls on an old extent boundary followed by an
    /// unchanged extent (content-defined chunking resynchronizes there:
    /// going on would cut exactly the old extents again). So a small edit
    /// anywhere in a large file costs the chunks around it and a path of
    /// manifest nodes, and scattered edits that around each.
    pub fn record(&mut self, store: &ObjectStore) -> Result<Option<ObjectId>> {
        self.fold(store)?;
        let mut tree = Builder::default();
        let mut pos = 0;
        let mut chunked = 0;
        while pos < self.size {
            let change = self.next_change(pos);
            if change > pos {
                let to_is_end = change == self.size && self.size == self.base.size();
                let reached = tree.push_old(store, &self.base, pos, change, to_is_end)?;
                if reached > pos {
                    pos = reached;
                    continue;
                }
            }
            if let Piece::Zero(e) = self.piece(store, pos, Access::Sequential)? {
                tree.push(store, Extent::Hole { len: e - pos })?;
                pos = e;
                continue;
            }
            // A run of data up to the next zero region, chunked until the
            // cuts meet the old extents again.
            let reader = RunReader {
                state: self,
                store,
                pos,
            };
            let mut cut = pos;
            store.chunker().chunk_until(reader, |chunk| {
                let id = store.put(ObjectKind::Chunk, chunk)?;
                let len = chunk.len() as u64;
                tree.push(store, Extent::Chunk { len, id })?;
                cut += len;
                Ok(!self.reusable_at(store, cut)?)
            })?;
            if cut == pos {
                return Err(Error::corrupt(
                    "file content",
                    "no bytes to chunk in a data run",
                ));
            }
            chunked += cut - pos;
            pos = cut;
        }
        let content = tree.finish(store)?;
        let id = content.id();
        *self = FileState {
            mtime: self.mtime,
            staging: self.staging.take(),
            last_chunked: chunked,
            ..FileState::new(content)
        };
        if let Some(f) = &mut self.staging {
            // Frees the staged bytes; the file is reused for the next writes.
            f.reset()?;
        }
        Ok(id)
    }
}

/// The staging file of one file's writes: an unlinked temporary file,
/// its bytes under a keystream with a key only this process holds in an
/// encrypted store (a new key each time it is emptied, so a later
/// version's bytes never share the keystream of an earlier one's).
struct Staging {
    file: File,
    scratch: Option<crate::crypto::Scratch>,
}

impl Staging {
    fn new(dir: &Path, encrypted: bool) -> Result<Staging> {
        Ok(Staging {
            file: anonymous_file(dir)?,
            scratch: encrypted.then(crate::crypto::Scratch::new).transpose()?,
        })
    }

    fn write_at(&self, data: &[u8], off: u64) -> Result<()> {
        match &self.scratch {
            None => self.file.write_all_at(data, off)?,
            Some(s) => {
                let mut b = data.to_vec();
                s.apply(off, &mut b);
                self.file.write_all_at(&b, off)?;
            }
        }
        Ok(())
    }

    fn read_at(&self, dst: &mut [u8], off: u64) -> Result<()> {
        self.file.read_exact_at(dst, off)?;
        if let Some(s) = &self.scratch {
            s.apply(off, dst);
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<()> {
        self.file.set_len(0)?;
        if self.scratch.is_some() {
            self.scratch = Some(crate::crypto::Scratch::new()?);
        }
        Ok(())
    }
}

/// An unlinked temporary file: it vanishes with the process, even on a crash.
fn anonymous_file(dir: &Path) -> Result<File> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(Error::io_at(&path))?;
    std::fs::remove_file(&path).map_err(Error::io_at(&path))?;
    Ok(f)
}

/// Reads the merged view from `pos` in large blocks, for the chunker, up
/// to the next region of zeros (which becomes a hole) or the end.
struct RunReader<'a> {
    state: &'a FileState,
    store: &'a ObjectStore,
    pos: u64,
}

impl RunReader<'_> {
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.pos >= self.state.size {
            return Ok(0);
        }
        let piece = self.state.piece(self.store, self.pos, Access::Sequential)?;
        if let Piece::Zero(_) = piece {
            return Ok(0);
        }
        let got = self
            .state
            .read_piece(self.store, piece, self.pos, buf, Access::Sequential)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Read for RunReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read_some(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::chunker::{self, tests::bytes};
    use std::sync::Arc;

    fn extents(store: &ObjectStore, st: &FileState) -> Vec<Extent> {
        let mut out = Vec::new();
        if let Some(id) = st.base.id() {
            crate::manifest::walk(store, id, |v| {
                if let crate::manifest::Visit::Extent(x) = v {
                    out.push(*x);
                }
                Ok(true)
            })
            .unwrap();
        }
        out
    }

    fn lengths(store: &ObjectStore, st: &FileState) -> Vec<usize> {
        extents(store, st)
            .iter()
            .map(|x| x.len() as usize)
            .collect()
    }

    /// Scattered edits re-chunk only around each edit, and the result is
    /// exactly what chunking the whole new content from scratch gives.
    #[test]
    fn record_resynchronizes_after_each_edit() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(crate::catalog::db::Db::temporary().unwrap());
        let packs = tmp.path().join("packs");
        std::fs::create_dir(&packs).unwrap();
        let store = Arc::new(ObjectStore::open(&packs, db, false).unwrap());
        let mut content = bytes(1, 24 << 20);
        let mut st = FileState::new(Content::default());
        st.write(&store, tmp.path(), 0, &content).unwrap();
        st.record(&store).unwrap();
        let base = lengths(&store, &st);
        assert_eq!(base, chunker::chunk_lengths(&content));
        let puts_before = store.pending().len();
        // Three 4 KiB edits far apart, one straddling an old boundary.
        let b1 = base.iter().take(40).sum::<usize>() as u64;
        for (i, off) in [100u64, b1 - 2000, 20 << 20].into_iter().enumerate() {
            let data = bytes(10 + i as u64, 4096);
            st.write(&store, tmp.path(), off, &data).unwrap();
            content[off as usize..off as usize + 4096].copy_from_slice(&data);
        }
        st.record(&store).unwrap();
        assert_eq!(lengths(&store, &st), chunker::chunk_lengths(&content));
        let new_chunks = store.pending().len() - puts_before;
        assert!(
            new_chunks <= 3 * 4,
            "{new_chunks} new chunks for 3 small edits"
        );
        // Each edit cost the chunks around it, not the rest of the file.
        assert!(
            st.last_chunked <= 3 * 4 * chunker::MAX_CHUNK as u64,
            "{} bytes chunked for 3 small edits",
            st.last_chunked
        );
        let mut back = vec![0u8; content.len()];
        st.read_into(&store, 0, &mut back, Access::Sequential)
            .unwrap();
        assert!(back == content);
        // An edit right at the end, and a truncate + extend (a hole).
        st.write(&store, tmp.path(), content.len() as u64 - 10, b"0123456789")
            .unwrap();
        let n = content.len();
        content[n - 10..].copy_from_slice(b"0123456789");
        st.truncate(&store, (n - 100_000) as u64).unwrap();
        st.truncate(&store, n as u64 + 50_000).unwrap();
        st.record(&store).unwrap();
        content.truncate(n - 100_000);
        let data_lens = chunker::chunk_lengths(&content);
        let got = lengths(&store, &st);
        assert_eq!(&got[..got.len() - 1], &data_lens[..]);
        assert!(matches!(
            extents(&store, &st).last(),
            Some(Extent::Hole { len: 150_000 })
        ));
    }

    #[test]
    fn rangeset_merges_and_clips() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 30);
        assert_eq!(r.0.iter().collect::<Vec<_>>(), vec![(&10, &40)]);
        r.insert(50, 60);
        r.clip(55);
        assert_eq!(r.0.iter().collect::<Vec<_>>(), vec![(&10, &40), (&50, &55)]);
        r.clip(5);
        assert!(r.0.is_empty());
        r.insert(10, 40);
        r.insert(50, 60);
        r.remove(20, 55);
        assert_eq!(r.0.iter().collect::<Vec<_>>(), vec![(&10, &20), (&55, &60)]);
        r.remove(0, 100);
        assert!(r.0.is_empty());
    }

    /// A punched range reads as zeros at once, is a hole extent of exactly
    /// that range in the next version (no chunk bytes), and a write into
    /// it afterwards wins; a write before it is punched away.
    #[test]
    fn a_punched_range_is_zeros_and_a_hole_in_the_next_version() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(crate::catalog::db::Db::temporary().unwrap());
        let packs = tmp.path().join("packs");
        std::fs::create_dir(&packs).unwrap();
        let store = Arc::new(ObjectStore::open(&packs, db, false).unwrap());
        let mut content = bytes(3, 8 << 20);
        let mut st = FileState::new(Content::default());
        st.write(&store, tmp.path(), 0, &content).unwrap();
        st.record(&store).unwrap();
        // Written, then punched: the punch wins.
        st.write(&store, tmp.path(), (3 << 20) + 5, b"gone")
            .unwrap();
        st.zero(&store, 2 << 20, 6 << 20).unwrap();
        content[2 << 20..6 << 20].fill(0);
        // Punched, then written: the write wins.
        st.write(&store, tmp.path(), 4 << 20, b"kept").unwrap();
        content[4 << 20..(4 << 20) + 4].copy_from_slice(b"kept");
        let mut back = vec![0u8; content.len()];
        st.read_into(&store, 0, &mut back, Access::Sequential)
            .unwrap();
        assert!(back == content, "before the record");
        st.record(&store).unwrap();
        st.read_into(&store, 0, &mut back, Access::Sequential)
            .unwrap();
        assert!(back == content, "after the record");
        let holes: Vec<(u64, u64)> = {
            let mut at = 0;
            let mut out = Vec::new();
            for x in extents(&store, &st) {
                if let Extent::Hole { len } = x {
                    out.push((at, len));
                }
                at += x.len();
            }
            out
        };
        assert_eq!(
            holes,
            vec![(2 << 20, 2 << 20), ((4 << 20) + 4, (2 << 20) - 4)]
        );
        assert!(st.allocated() <= (4 << 20) + 2 * chunker::MAX_CHUNK as u64 + 4);
    }
}
