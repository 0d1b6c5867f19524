//! Piece tables: the BLAKE3 chaining values of a raw chunk's 16 KiB
//! pieces. A chunk's id is the root of its BLAKE3 tree, and every piece
//! is a subtree of that tree, so a random read of part of a chunk can
//! read just the pieces that hold it and check each against the table,
//! the table against the id: a 4 KiB read of a 64 KiB chunk reads 16 or
//! 32 KiB of its pack instead of all of it, and hashes as much.
//!
//! A table is a pure function of the chunk's bytes and checked against
//! the id at every use, so one that is stale, left behind or damaged is
//! never believed: the read falls back to the whole chunk. Only plain
//! stores have them (an encrypted store seals every record whole).

use super::{ObjectStore, lock, pack};
use crate::catalog::db::{Batch, IndexEntry};
use crate::crypto::Crypto;
use crate::error::Result;
use crate::format::{CODEC_RAW, CODEC_RAW_COLD};
use crate::ids::{ObjectId, ObjectKind};
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// The bytes of a piece (a power of two of BLAKE3's 1 KiB chunks).
pub const PIECE: usize = 16 << 10;
const CV_LEN: usize = 32;

/// Whether a chunk of `len` bytes has a table: it has more than one piece.
pub fn worth(len: usize) -> bool {
    len > PIECE
}

/// Whether an object of `kind` and `len` bytes gets a table when its
/// record is raw: a chunk of more than one piece in a plain store.
pub fn kept(crypto: &Crypto, kind: ObjectKind, len: usize) -> bool {
    kind == ObjectKind::Chunk && !crypto.is_encrypted() && worth(len)
}

/// Whether a record of `codec` holds the chunk's bytes as they are (and
/// not sealed): the records a piece can be read from.
pub fn is_raw(codec: u8) -> bool {
    matches!(codec, CODEC_RAW | CODEC_RAW_COLD)
}

/// The table to keep for object `id` of `kind`, stored in a record of
/// `codec` as the (checked) bytes `raw`: a plain store's raw chunk of more
/// than one piece has one.
pub fn table_for(crypto: &Crypto, kind: ObjectKind, codec: u8, raw: &[u8]) -> Option<Vec<u8>> {
    (is_raw(codec) && kept(crypto, kind, raw.len())).then(|| hash(raw).1)
}

/// The pieces of a chunk of `len` bytes.
fn count(len: usize) -> usize {
    len.div_ceil(PIECE)
}

/// The chaining value of piece `i` of a chunk (`bytes`: all of it that
/// the chunk has, `PIECE` bytes but for the last).
pub fn piece_cv(i: usize, bytes: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset((i * PIECE) as u64);
    h.update(bytes);
    h.finalize_non_root()
}

/// The id (plain BLAKE3) of a chunk of more than one piece and its
/// table, in one pass over the bytes.
pub fn hash(data: &[u8]) -> (ObjectId, Vec<u8>) {
    debug_assert!(worth(data.len()));
    let mut table = Vec::with_capacity(count(data.len()) * CV_LEN);
    for (i, p) in data.chunks(PIECE).enumerate() {
        table.extend_from_slice(&piece_cv(i, p));
    }
    let cvs = cvs(&table);
    (ObjectId(*root(&cvs, data.len() as u64).as_bytes()), table)
}

/// Whether `table` is the table of the `len`-byte chunk `id`.
pub fn matches(table: &[u8], len: usize, id: &ObjectId) -> bool {
    worth(len)
        && table.len() == count(len) * CV_LEN
        && root(&cvs(table), len as u64).as_bytes() == &id.0
}

/// Entry `i` of a table that [`matches`] its chunk.
pub fn entry(table: &[u8], i: usize) -> Option<&[u8]> {
    table.get(i * CV_LEN..(i + 1) * CV_LEN)
}

fn cvs(table: &[u8]) -> Vec<ChainingValue> {
    table
        .chunks_exact(CV_LEN)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect()
}

/// The root of the tree over `cvs` (the pieces of `len` bytes, more
/// than one): BLAKE3 splits a run of bytes at the largest power of two
/// of its 1 KiB chunks below its length, a multiple of `PIECE` whenever
/// the run is longer than one piece.
fn root(cvs: &[ChainingValue], len: u64) -> blake3::Hash {
    let (l, r) = halves(cvs, len);
    merge_subtrees_root(&l, &r, Mode::Hash)
}

fn node(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (l, r) = halves(cvs, len);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

fn halves(cvs: &[ChainingValue], len: u64) -> (ChainingValue, ChainingValue) {
    let left = left_subtree_len(len);
    let k = (left / PIECE as u64) as usize;
    (node(&cvs[..k], left), node(&cvs[k..], len - left))
}

impl ObjectStore {
    /// Copies the bytes at `at` of chunk `id` into all of `dst` from only
    /// the pieces that hold them, each checked against the chunk's table;
    /// false (nothing read) where that cannot be done: a chunk without a
    /// table or one that does not match it, a record that is not raw in a
    /// local pack, a read of more than half the chunk (then it is read
    /// whole and cached), or a piece that fails its check (then the whole
    /// read says what is wrong, and heals it where it can).
    pub(super) fn copy_pieces(&self, id: &ObjectId, at: usize, dst: &mut [u8]) -> bool {
        if self.remote.is_some() || dst.is_empty() {
            return false;
        }
        let Ok(Some(e)) = self.locate(id) else {
            return false;
        };
        let len = e.raw_len as usize;
        let end = at.saturating_add(dst.len());
        if e.kind != ObjectKind::Chunk || !is_raw(e.codec) || !worth(len) || end > len {
            return false;
        }
        let (first, last) = (at / PIECE, (end - 1) / PIECE);
        let (from, to) = (first * PIECE, ((last + 1) * PIECE).min(len));
        if 2 * (to - from) > len {
            return false;
        }
        let table = lock(&self.tables).get(id).cloned();
        let Some(table) = table.or_else(|| self.db.pieces(id).ok().flatten()) else {
            return false;
        };
        if !matches(&table, len, id) {
            tracing::warn!("chunk {id}: its piece table does not match it; reading it whole");
            return false;
        }
        let Some(bytes) = self.read_span(&e, from, to - from) else {
            return false;
        };
        let good = (first..=last).all(|i| {
            let piece = &bytes[i * PIECE - from..((i + 1) * PIECE).min(len) - from];
            entry(&table, i) == Some(&piece_cv(i, piece)[..])
        });
        if !good {
            tracing::warn!("chunk {id}: a piece read fails its check; reading the chunk whole");
            return false;
        }
        dst.copy_from_slice(&bytes[at - from..end - from]);
        crate::metrics::Stats::add(&self.stats.piece_reads, 1);
        true
    }

    /// Puts into `b` the table of object `id` at `e` (its checked bytes
    /// `raw`) when it should have one and has none that matches: chunks
    /// stored before tables were kept, or whose table was damaged, get
    /// theirs when a verify pass reads them.
    pub fn mend_table(
        &self,
        b: &mut Batch,
        id: &ObjectId,
        e: &IndexEntry,
        raw: &[u8],
    ) -> Result<()> {
        // The bytes were hashed once by their read: a table already there
        // is checked by its merge alone, and only a missing or wrong one
        // costs a second pass.
        if is_raw(e.codec)
            && kept(self.db.crypto(), e.kind, raw.len())
            && self
                .db
                .pieces(id)?
                .is_none_or(|old| !matches(&old, raw.len(), id))
        {
            b.put_pieces(id, &hash(raw).1);
        }
        Ok(())
    }

    /// `n` bytes from `from` of the raw record at `e`: past the page cache
    /// when none of them is in it. None where the read fails.
    fn read_span(&self, e: &IndexEntry, from: usize, n: usize) -> Option<Vec<u8>> {
        let f = self.reader(e.pack).ok()?;
        let at = e.offset + from as u64;
        let path = pack::pack_path(&self.dir, e.pack);
        self.read_direct(&f, &path, at, &mut [], n)
            .or_else(|| f.read_at(at, n).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::db::{Batch, Db};
    use crate::store::Access;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// `copy_out` of `n` bytes at `at` as a random read.
    fn read(
        store: &ObjectStore,
        id: &ObjectId,
        at: usize,
        n: usize,
    ) -> crate::error::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        store
            .copy_out(id, at, &mut buf, Access::Random)
            .map(|()| buf)
    }

    #[test]
    fn a_random_read_takes_only_its_pieces_and_never_serves_a_damaged_one() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::temporary().unwrap());
        let store = ObjectStore::open(tmp.path(), db.clone(), false).unwrap();
        let pieces = || store.stats.piece_reads.load(Ordering::Relaxed);
        let data = noise(4 * PIECE + 5000);
        let id = store.put(ObjectKind::Chunk, &data).unwrap();
        // Pending: the table is the store's own until the commit.
        assert_eq!(
            read(&store, &id, 20_000, 4096).unwrap(),
            data[20_000..24_096]
        );
        assert_eq!(pieces(), 1);
        store.sync().unwrap();
        let mut b = Batch::default();
        let index = store.pending();
        store.index_into(&mut b, &index);
        db.apply(b).unwrap();
        store.published(index.iter().map(|(id, _)| *id));
        assert!(db.pieces(&id).unwrap().is_some());
        // Across two pieces, and the last, short one.
        for at in [PIECE - 100, 4 * PIECE + 900] {
            assert_eq!(read(&store, &id, at, 4096).unwrap(), data[at..at + 4096]);
        }
        assert_eq!(pieces(), 3);
        // More than half of it: read whole (and cached).
        assert_eq!(read(&store, &id, 0, 3 * PIECE).unwrap(), data[..3 * PIECE]);
        assert_eq!(pieces(), 3);
        assert!(store.is_cached(&id));
        lock(&store.cache).remove(&id);

        // A table that does not match the chunk is not believed.
        let mut b = Batch::default();
        b.put_pieces(&id, &[7u8; 5 * 32]);
        db.apply(b).unwrap();
        assert_eq!(
            read(&store, &id, 40_000, 4096).unwrap(),
            data[40_000..44_096]
        );
        assert_eq!(pieces(), 3);
        lock(&store.cache).remove(&id);
        // A verify pass that reads the chunk mends its table (and leaves a
        // good one as it is).
        let e = store.locate(&id).unwrap().unwrap();
        let mut b = Batch::default();
        store.mend_table(&mut b, &id, &e, &data).unwrap();
        db.apply(b).unwrap();
        assert_eq!(db.pieces(&id).unwrap(), Some(hash(&data).1));
        let mut b = Batch::default();
        store.mend_table(&mut b, &id, &e, &data).unwrap();
        assert!(b.is_empty());
        assert_eq!(
            read(&store, &id, 40_000, 4096).unwrap(),
            data[40_000..44_096]
        );
        assert_eq!(pieces(), 4);

        // One byte of piece 1 damaged in the pack: a read of it is an
        // error (the whole chunk fails its id), one of piece 3 is served.
        let path = pack::pack_path(tmp.path(), e.pack);
        let mut pack_bytes = std::fs::read(&path).unwrap();
        pack_bytes[e.offset as usize + PIECE + 10] ^= 0x20;
        std::fs::write(&path, &pack_bytes).unwrap();
        assert!(read(&store, &id, PIECE + 8, 16).is_err());
        assert_eq!(
            read(&store, &id, 3 * PIECE, 4096).unwrap(),
            data[3 * PIECE..3 * PIECE + 4096]
        );
        assert_eq!(pieces(), 5);
        // A prune's sweep of the chunk drops its table with it.
        let mut b = Batch::default();
        b.del_index(&id);
        db.apply(b).unwrap();
        assert!(db.pieces(&id).unwrap().is_none());
    }

    #[test]
    fn a_table_roots_at_the_chunks_plain_blake3_for_every_length_and_checks_each_piece() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 2654435761) as u8).collect();
        for len in [
            PIECE + 1,
            2 * PIECE - 1,
            2 * PIECE,
            2 * PIECE + 1,
            3 * PIECE,
            4 * PIECE,
            4 * PIECE + 1024,
            5 * PIECE + 7,
            65_536 + 12_345,
            256 << 10,
            262_143,
        ] {
            let d = &data[..len];
            let (id, table) = hash(d);
            assert_eq!(id.0, *blake3::hash(d).as_bytes(), "len {len}");
            assert!(matches(&table, len, &id), "len {len}");
            for (i, p) in d.chunks(PIECE).enumerate() {
                assert_eq!(
                    entry(&table, i),
                    Some(&piece_cv(i, p)[..]),
                    "len {len} piece {i}"
                );
            }
            // Any changed entry, a table of another length, another id: refused.
            for bit in [0, 8 * CV_LEN - 1, table.len() * 8 - 1] {
                let mut t = table.clone();
                t[bit / 8] ^= 1 << (bit % 8);
                assert!(!matches(&t, len, &id), "len {len} bit {bit}");
            }
            assert!(!matches(&table[..table.len() - CV_LEN], len, &id));
            assert!(!matches(&table, len + PIECE, &id));
            let mut other = id;
            other.0[0] ^= 1;
            assert!(!matches(&table, len, &other));
        }
        assert!(!worth(PIECE) && worth(PIECE + 1));
        assert!(!matches(
            &[],
            PIECE,
            &ObjectId(*blake3::hash(&data[..PIECE]).as_bytes())
        ));
    }
}
