//! Pack index objects: `index/NAME.idx` beside each replica pack or part
//! `packs/NAME`, listing the record headers it holds and where, so that a
//! read-only mount of a bucket builds its object index from a few small
//! GETs instead of reading every pack. Shipped (replaced) just before the
//! object it describes; a reader uses one only when it covers exactly the
//! object's bytes, and otherwise scans the object. The headers are the
//! same bytes the pack holds in the clear (a sealed record's header is its
//! associated data), so an index tells nothing the pack does not.
//!
//! Layout: magic `RVFSIDX1`, u64 start, u64 end (the pack bytes the
//! object holds), u32 count, then per record its payload offset (u64) and
//! its header (`RECORD_HEADER_LEN` bytes); little-endian.

use crate::error::{Error, Result};
use crate::format::{PACK_HEADER_LEN, RECORD_HEADER_LEN, RecordHeader};
use std::fs::File;
use std::os::unix::fs::FileExt;

const MAGIC: &[u8; 8] = b"RVFSIDX1";
const ENTRY_LEN: usize = 8 + RECORD_HEADER_LEN;

/// The index object's name for the replica object `packs/NAME`.
pub fn index_name(object: &str) -> String {
    let base = object.rsplit('/').next().unwrap_or(object);
    format!("index/{base}.idx")
}

/// The records of a pack object: its byte range of the pack and every
/// record (header, payload offset) in it.
#[derive(Debug, PartialEq, Eq)]
pub struct PackIndex {
    pub start: u64,
    pub end: u64,
    pub records: Vec<(RecordHeader, u64)>,
}

impl PackIndex {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(28 + self.records.len() * ENTRY_LEN);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.start.to_le_bytes());
        b.extend_from_slice(&self.end.to_le_bytes());
        b.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for (h, at) in &self.records {
            b.extend_from_slice(&at.to_le_bytes());
            b.extend_from_slice(&h.encode());
        }
        b
    }

    pub fn decode(b: &[u8], name: &str) -> Result<PackIndex> {
        let bad = |why: &str| Error::corrupt(format!("pack index {name}"), why.to_string());
        if b.len() < 28 || &b[..8] != MAGIC {
            return Err(bad("not a pack index"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let (start, end) = (u64_at(8), u64_at(16));
        let n = u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")) as usize;
        if b.len() != 28 + n * ENTRY_LEN {
            return Err(bad("length does not match its record count"));
        }
        let mut records = Vec::with_capacity(n);
        for e in b[28..].chunks_exact(ENTRY_LEN) {
            let at = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
            let h = RecordHeader::decode(&e[8..])?;
            let inside = at >= start + RECORD_HEADER_LEN as u64
                && at
                    .checked_add(h.stored_len as u64)
                    .is_some_and(|x| x <= end);
            if !inside {
                return Err(bad("a record outside the object"));
            }
            records.push((h, at));
        }
        Ok(PackIndex {
            start,
            end,
            records,
        })
    }

    /// The index of bytes `start..end` of the local pack file `f`: a whole
    /// pack (start 0) or a part, which starts at a record boundary.
    pub fn of_file(f: &File, start: u64, end: u64) -> std::io::Result<PackIndex> {
        let mut at = start.max(PACK_HEADER_LEN);
        let mut records = Vec::new();
        let mut hdr = [0u8; RECORD_HEADER_LEN];
        while at + RECORD_HEADER_LEN as u64 <= end {
            f.read_exact_at(&mut hdr, at)?;
            let Ok(h) = RecordHeader::decode(&hdr) else {
                break;
            };
            let payload = at + RECORD_HEADER_LEN as u64;
            if payload + h.stored_len as u64 > end {
                break;
            }
            records.push((h, payload));
            at = payload + h.stored_len as u64;
        }
        Ok(PackIndex {
            start,
            end,
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ObjectId, ObjectKind};

    #[test]
    fn round_trip_and_damage_is_refused() {
        let h = RecordHeader {
            kind: ObjectKind::Chunk,
            codec: 1,
            raw_len: 10,
            stored_len: 8,
            id: ObjectId([7; 32]),
        };
        let idx = PackIndex {
            start: 0,
            end: 16 + 44 + 8,
            records: vec![(h, 60)],
        };
        let b = idx.encode();
        assert_eq!(PackIndex::decode(&b, "x").unwrap(), idx);
        assert!(PackIndex::decode(&b[..b.len() - 1], "x").is_err());
        let mut short = idx.encode();
        short[16] = 10; // end before the record's end
        assert!(PackIndex::decode(&short, "x").is_err());
        assert_eq!(index_name("packs/00ab.pack"), "index/00ab.pack.idx");
    }
}
