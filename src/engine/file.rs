//! The content of one open regular file: its last recorded version (a
//! manifest) overlaid with the bytes written since, which sit in an
//! anonymous staging file at their own offsets, or, while writes arrive in
//! order at the end of the file, in a [`Stream`] that chunks them at once.
//! Any other change first folds the stream into the base (its chunks become
//! base extents), so the staging path never sees streamed bytes.
//!
//! Recording a version ([`FileState::record`]) reuses every unchanged base
//! extent and re-chunks only around the changes, stopping where the
//! chunker's cuts meet the old extent boundaries again, so an append to a
//! large file costs the appended bytes plus about one chunk, and an edit
//! in the middle the chunks around it. Regions never written and beyond the old content are
//! holes: they read as zeros and are stored as hole extents, taking no space.

use super::stream::Stream;
use crate::chunker;
use crate::error::{Error, Result};
use crate::format::{Extent, Manifest, Time};
use crate::ids::{ObjectId, ObjectKind};
use crate::store::ObjectStore;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

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

    pub fn first(&self) -> Option<u64> {
        self.0.keys().next().copied()
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
    /// Up to `end`, from base extent `idx`.
    Base(u64, usize),
    /// Up to `end`, zeros.
    Zero(u64),
}

pub struct FileState {
    base: Arc<Manifest>,
    /// Start offset of each base extent.
    starts: Vec<u64>,
    /// Base bytes at or beyond this offset read as zeros (after a truncate).
    base_limit: u64,
    pub size: u64,
    written: RangeSet,
    staging: Option<File>,
    stream: Option<Stream>,
    /// Something changed since the last recorded version.
    pub dirty: bool,
    /// Time of the last data change not yet in the inode (mtime and ctime).
    pub mtime: Option<Time>,
    /// Bytes the last `record` fed to the chunker (what a version cost).
    pub last_chunked: u64,
}

impl FileState {
    pub fn new(base: Arc<Manifest>) -> FileState {
        let mut starts = Vec::with_capacity(base.extents.len());
        let mut off = 0;
        for x in &base.extents {
            starts.push(off);
            off += x.len();
        }
        FileState {
            base,
            starts,
            base_limit: off,
            size: off,
            written: RangeSet::default(),
            staging: None,
            stream: None,
            dirty: false,
            mtime: None,
            last_chunked: 0,
        }
    }

    fn piece(&self, pos: u64) -> Piece {
        if let Some(s) = &self.stream
            && pos >= s.start
        {
            // The stream is the end of the file.
            return Piece::Streamed(s.pos().min(self.size));
        }
        let next_staged = match self.written.at(pos) {
            Ok((_, e)) => return Piece::Staged(e.min(self.size)),
            Err(next) => next.unwrap_or(u64::MAX).min(self.size),
        };
        if pos < self.base_limit {
            let idx = self.starts.partition_point(|s| *s <= pos) - 1;
            let ext_end = self.starts[idx] + self.base.extents[idx].len();
            let end = ext_end.min(self.base_limit).min(next_staged);
            return match self.base.extents[idx] {
                Extent::Hole { .. } => Piece::Zero(end),
                Extent::Chunk { .. } => Piece::Base(end, idx),
            };
        }
        Piece::Zero(next_staged)
    }

    /// Reads up to `buf.len()` bytes at `off`; returns how many (0 at EOF).
    pub fn read_into(&self, store: &ObjectStore, off: u64, buf: &mut [u8]) -> Result<usize> {
        let end = self.size.min(off.saturating_add(buf.len() as u64));
        let mut pos = off;
        while pos < end {
            let dst = &mut buf[(pos - off) as usize..];
            let n = match self.piece(pos) {
                Piece::Streamed(e) => {
                    let n = (e.min(end) - pos) as usize;
                    let s = self.stream.as_ref().expect("streamed piece");
                    s.read(store, pos, &mut dst[..n])?
                }
                Piece::Staged(e) => {
                    let n = (e.min(end) - pos) as usize;
                    let f = self.staging.as_ref().ok_or_else(|| {
                        Error::corrupt("staging file", "written range without staging file")
                    })?;
                    f.read_exact_at(&mut dst[..n], pos)?;
                    n
                }
                Piece::Base(e, idx) => {
                    let n = (e.min(end) - pos) as usize;
                    let Extent::Chunk { id, .. } = self.base.extents[idx] else {
                        unreachable!("Base pieces are chunks")
                    };
                    let data = store.get(&id)?;
                    let at = (pos - self.starts[idx]) as usize;
                    let src = data.get(at..at + n).ok_or_else(|| {
                        Error::corrupt(format!("chunk {id}"), "shorter than its extent")
                    })?;
                    dst[..n].copy_from_slice(src);
                    n
                }
                Piece::Zero(e) => {
                    let n = (e.min(end) - pos) as usize;
                    dst[..n].fill(0);
                    n
                }
            };
            pos += n as u64;
        }
        Ok((end.saturating_sub(off)) as usize)
    }

    pub fn write(
        &mut self,
        store: &ObjectStore,
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
        if self.stream.is_none() && self.can_stream_at(off) {
            self.stream = Some(Stream::new(off));
        }
        if let Some(s) = &mut self.stream {
            s.feed(store, data)?;
            self.size = end;
            self.dirty = true;
            self.mtime = Some(Time::now());
            return Ok(());
        }
        if self.staging.is_none() {
            self.staging = Some(anonymous_file(staging_dir)?);
        }
        let f = self.staging.as_ref().expect("created above");
        f.write_all_at(data, off)?;
        self.written.insert(off, end);
        self.size = self.size.max(end);
        self.dirty = true;
        self.mtime = Some(Time::now());
        Ok(())
    }

    /// Whether a write at `off` can start a stream: everything before it
    /// is unchanged base content ending on an extent boundary.
    fn can_stream_at(&self, off: u64) -> bool {
        let base_end = self
            .starts
            .last()
            .map_or(0, |s| s + self.base.extents.last().map_or(0, Extent::len));
        self.written.first().is_none()
            && off == self.size
            && off <= self.base_limit
            && (off == base_end || self.starts.binary_search(&off).is_ok())
    }

    /// Turns the stream into base extents: chunks its tail and makes the
    /// base "prefix + stream". Nothing is recorded.
    fn fold(&mut self, store: &ObjectStore) -> Result<()> {
        let Some(s) = self.stream.take() else {
            return Ok(());
        };
        let start = s.start;
        let mut extents: Vec<Extent> = self
            .base
            .extents
            .iter()
            .zip(&self.starts)
            .take_while(|(x, at)| **at + x.len() <= start)
            .map(|(x, _)| *x)
            .collect();
        extents.extend(s.finish(store)?);
        let manifest = Arc::new(Manifest { extents });
        let size = self.size;
        *self = FileState {
            mtime: self.mtime,
            dirty: self.dirty,
            staging: self.staging.take(),
            written: std::mem::take(&mut self.written),
            ..FileState::new(manifest)
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
            self.base_limit = self.base_limit.min(size);
        }
        self.size = size;
        self.dirty = true;
        Ok(())
    }

    /// Where the next byte at or after `pos` that differs from the base
    /// is (`size` when none): a written byte, or the end of the base.
    fn next_change(&self, pos: u64) -> u64 {
        let written = match self.written.at(pos) {
            Ok(_) => pos,
            Err(next) => next.unwrap_or(u64::MAX),
        };
        written.min(self.base_limit).min(self.size)
    }

    /// The index of the base extent starting at `pos` when that whole
    /// extent is unchanged (its bytes can be reused as they are).
    fn reusable_at(&self, pos: u64) -> Option<usize> {
        let idx = self.starts.binary_search(&pos).ok()?;
        let end = pos + self.base.extents[idx].len();
        (end <= self.next_change(pos)).then_some(idx)
    }

    /// Chunks what changed into the store and returns the new manifest.
    /// The state then reads from that manifest alone.
    ///
    /// Unchanged base extents are reused as they are; the chunker starts at
    /// the extent holding a changed byte and stops at the first cut that
    /// falls on an old extent boundary followed by an unchanged extent
    /// (content-defined chunking resynchronizes there: going on would cut
    /// exactly the old extents again). So a small edit anywhere in a large
    /// file costs the chunks around it, and scattered edits the chunks
    /// around each.
    pub fn record(&mut self, store: &ObjectStore) -> Result<Arc<Manifest>> {
        self.fold(store)?;
        let mut extents = Vec::new();
        let mut pos = 0;
        let mut chunked = 0;
        while pos < self.size {
            if let Some(idx) = self.reusable_at(pos) {
                let x = self.base.extents[idx];
                match x {
                    Extent::Hole { len } => push_hole(&mut extents, len),
                    Extent::Chunk { .. } => extents.push(x),
                }
                pos += x.len();
                continue;
            }
            if let Piece::Zero(e) = self.piece(pos) {
                push_hole(&mut extents, e - pos);
                pos = e;
                continue;
            }
            // A run of data up to the next zero region.
            let mut run_end = pos;
            while run_end < self.size {
                match self.piece(run_end) {
                    Piece::Zero(_) => break,
                    Piece::Staged(e) | Piece::Base(e, _) | Piece::Streamed(e) => run_end = e,
                }
            }
            let reader = RunReader {
                state: self,
                store,
                pos,
                end: run_end,
            };
            let mut cut = pos;
            chunker::chunk_until(reader, |chunk| {
                let id = store.put(ObjectKind::Chunk, chunk)?;
                extents.push(Extent::Chunk {
                    len: chunk.len() as u64,
                    id,
                });
                cut += chunk.len() as u64;
                // Resynchronized: the old extents from here on are reused.
                Ok(self.reusable_at(cut).is_none())
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
        let manifest = Arc::new(Manifest { extents });
        *self = FileState {
            mtime: self.mtime,
            staging: self.staging.take(),
            last_chunked: chunked,
            ..FileState::new(manifest.clone())
        };
        if let Some(f) = &self.staging {
            // Frees the staged bytes; the file is reused for the next writes.
            f.set_len(0)?;
        }
        Ok(manifest)
    }
}

/// Stores a manifest; an empty file has none.
pub fn store_manifest(store: &ObjectStore, m: &Manifest) -> Result<Option<ObjectId>> {
    if m.extents.is_empty() {
        return Ok(None);
    }
    store.put(ObjectKind::Manifest, &m.encode()).map(Some)
}

/// Bytes held in data extents (for st_blocks).
pub fn allocated(m: &Manifest) -> u64 {
    m.extents
        .iter()
        .filter(|x| matches!(x, Extent::Chunk { .. }))
        .map(Extent::len)
        .sum()
}

fn push_hole(extents: &mut Vec<Extent>, len: u64) {
    if let Some(Extent::Hole { len: l }) = extents.last_mut() {
        *l += len;
    } else {
        extents.push(Extent::Hole { len });
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

/// Reads the merged view over [pos, end) in large blocks, for the chunker.
struct RunReader<'a> {
    state: &'a FileState,
    store: &'a ObjectStore,
    pos: u64,
    end: u64,
}

impl Read for RunReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min((self.end - self.pos) as usize);
        let got = self
            .state
            .read_into(self.store, self.pos, &mut buf[..n])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::chunker::tests::bytes;

    fn lengths(m: &Manifest) -> Vec<usize> {
        m.extents.iter().map(|x| x.len() as usize).collect()
    }

    /// Scattered edits re-chunk only around each edit, and the result is
    /// exactly what chunking the whole new content from scratch gives.
    #[test]
    fn record_resynchronizes_after_each_edit() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(crate::catalog::db::Db::temporary().unwrap());
        let packs = tmp.path().join("packs");
        std::fs::create_dir(&packs).unwrap();
        let store = ObjectStore::open(&packs, db, false).unwrap();
        let mut content = bytes(1, 24 << 20);
        let mut st = FileState::new(Arc::new(Manifest::default()));
        st.write(&store, tmp.path(), 0, &content).unwrap();
        let base = st.record(&store).unwrap();
        assert_eq!(lengths(&base), chunker::chunk_lengths(&content));
        let puts_before = store.pending().len();
        // Three 4 KiB edits far apart, one straddling an old boundary.
        let b1 = lengths(&base).iter().take(40).sum::<usize>() as u64;
        for (i, off) in [100u64, b1 - 2000, 20 << 20].into_iter().enumerate() {
            let data = bytes(10 + i as u64, 4096);
            st.write(&store, tmp.path(), off, &data).unwrap();
            content[off as usize..off as usize + 4096].copy_from_slice(&data);
        }
        let m = st.record(&store).unwrap();
        assert_eq!(lengths(&m), chunker::chunk_lengths(&content));
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
        st.read_into(&store, 0, &mut back).unwrap();
        assert!(back == content);
        // An edit right at the end, and a truncate + extend (a hole).
        st.write(&store, tmp.path(), content.len() as u64 - 10, b"0123456789")
            .unwrap();
        let n = content.len();
        content[n - 10..].copy_from_slice(b"0123456789");
        st.truncate(&store, (n - 100_000) as u64).unwrap();
        st.truncate(&store, n as u64 + 50_000).unwrap();
        let m = st.record(&store).unwrap();
        content.truncate(n - 100_000);
        let data_lens = chunker::chunk_lengths(&content);
        let got = lengths(&m);
        assert_eq!(&got[..got.len() - 1], &data_lens[..]);
        assert!(matches!(
            m.extents.last(),
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
    }
}
