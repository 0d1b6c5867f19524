//! The on-disk format of a revfs store: the one canonical byte-level spec.
//!
//! # Conventions
//! All integers in file and value encodings are **little-endian**; integers in
//! catalog *keys* are **big-endian** so that byte order is numeric order. A
//! `Time` is `secs: i64` (since the Unix epoch, may be negative) followed by
//! `nanos: u32` (< 10^9), 12 bytes. `Opt<Id>` is one tag byte (0 = none,
//! 1 = some) followed, when 1, by a 32-byte [`ObjectId`]. `Bytes16`/`Bytes32`
//! are a u16/u32 length followed by that many bytes.
//!
//! # Store layout (format version 5)
//! ```text
//! STORE/revfs.conf          config: magic, version, JSON body (below)
//! STORE/keys                (encrypted stores) key slots, JSON (below)
//! STORE/packs/NNNNNNNNNNNNNNNN.pack   append-only packs of objects (hex pack number)
//! STORE/catalog/            the catalog (+ object index): a fjall LSM tree, one
//!                           partition "c" (format 10; before, a sled database
//!                           in STORE/meta/, moved here at the first open)
//! STORE/staging/            scratch: data written but not yet recorded;
//!                           emptied at every mount (never durable, no format)
//! STORE/lock                scratch: flock(2) held by the one process that
//!                           has the store open; holds its pid as text
//! STORE/daemon.sock         scratch: the running daemon's control socket
//! ```
//!
//! ## `revfs.conf`
//! ```text
//! offset size  field
//! 0      8     magic  "RVFSCONF"
//! 8      4     format version (u32 LE) = 10 (1 to 9 are read too)
//! 12     ..    UTF-8 JSON object: {"store_id": hex string,
//!              "created": RFC 3339, "id_key": null,
//!              "cipher": null | "aes-256-gcm+blake3" (encrypted),
//!              "replica": null | path, "retention": null | policy
//!              (`retention::Policy`), "prune_interval_secs": null | f64,
//!              "replica_delete_after_secs": null | f64}
//! ```
//! A reader refuses a version greater than [`FORMAT_VERSION`] with a message
//! that names both versions. Unknown JSON keys are ignored (forward room).
//!
//! ## Pack files
//! ```text
//! offset size  field
//! 0      8     magic "RVFSPACK"
//! 8      4     format version (u32 LE) = 9 (1 to 8 are read too; the
//!              pack layout is the same in all nine)
//! 12     4     reserved, 0
//! 16     ..    object records, back to back
//! ```
//! Object record (44-byte header then payload):
//! ```text
//! 0      1     kind: 1 chunk, 2 manifest, 3 tree, 4 commit
//! 1      1     codec: 0 raw, 1 lz4 block (lz4_flex, raw length known);
//!              format 5: 2 sealed raw, 3 sealed lz4 (below); format 6
//!              (cold records, recoded when their pack is repacked;
//!              `store::codec`): 4 zstd frame, 8 zstd of the bytes as 2
//!              byte planes (bytes 0, 2, 4, ... then 1, 3, 5, ...; an odd
//!              tail byte last), 12 zstd of 4 byte planes, 16 raw (zstd
//!              did not shrink it); format 7: 32 a delta record (below);
//!              each + 2 when sealed; others reserved
//! 2      2     reserved, 0
//! 4      4     raw length (u32 LE): bytes after decoding
//! 8      4     stored length (u32 LE): payload bytes that follow
//! 12     32    object id: BLAKE3 of the raw bytes (chunks) or of
//!              kind byte || raw bytes (other kinds); keyed BLAKE3 (the
//!              store's id key) in an encrypted store
//! 44     ..    payload
//! ```
//! A sealed payload (codec 2, 3; only in encrypted stores, where every
//! record is sealed) is
//! ```text
//! 0      16    salt
//! 16     n     AES-256-GCM ciphertext of the raw or lz4 bytes (n of them)
//! 16+n   16    GCM tag
//! ```
//! under the key BLAKE3-keyed(record key, salt) with a zero nonce, and the
//! 44-byte record header as associated data (`crypto` module docs: the
//! keys, why a key never seals two messages). Stored length = n + 32.
//!
//! A delta record (codec 32, format 7; `store::delta`) holds a chunk as
//! the XOR of its bytes with bytes of other chunks, its bases (a version
//! of a checkpoint against an older whole version of it, its key: nearly
//! the same floats; stores of the first releases with it planned each
//! version against the next, which reads the same). Its payload (sealed like any other in an encrypted store):
//! ```text
//! 0      16    check: the first 16 bytes of BLAKE3 of the rest of the payload
//! 16     1     codec of the residual: 4, 8, 12 or 16 (as above) in the
//!              low 5 bits; in the high 3 bits (format 11, zero before) how
//!              the residual is made (`store::residual`): 0 XOR, 1-2 the
//!              zigzag difference of 2-byte elements starting at byte 0-1
//!              of the chunk, 3-6 of 4-byte elements starting at byte 0-3
//! 17     1     n: segments, 1 to 32
//! 18     40n   n x (32 base chunk id, all zeros for "no base";
//!              u32 LE start in the base; u32 LE length)
//! 18+40n ..    the residual, encoded by its codec: the chunk's bytes XOR
//!              (or minus, elementwise) the segments' bytes, which follow
//!              one another and cover the chunk exactly (a "no base"
//!              segment lays zeros)
//! ```
//! The raw length in the header is the chunk's; the id is checked against
//! the rebuilt bytes, and the check lets a record be checked on its own
//! (a replica's scan, recover) without its bases.
//! Packs are only appended to. A process never appends to a pack it did not
//! create in this session: after a crash the tail of the last pack may be
//! torn, but nothing references a torn record (see ordering). A pack is
//! *sealed* when it reaches [`PACK_TARGET_SIZE`] or when the store closes;
//! a sealed pack never changes, which is what lets a replica copy it once.
//!
//! ## Object payloads (the raw bytes of each kind)
//! Manifest nodes (kind 2): the content of one file version is a tree of
//! them, its root the inode's content (`manifest` module docs: how nodes are
//! cut, so that one content always makes the same tree). A leaf lists
//! extents that cover its part of the file in order:
//! ```text
//! u8 version = 1, u32 count, count × extent:
//!   u8 tag (0 hole, 1 chunk), u64 length, [32-byte chunk id if tag = 1]
//! ```
//! An inner node (format 3) lists its subtrees in order, each a node one
//! level down (a leaf is level 0):
//! ```text
//! u8 version = 2, u8 level (>= 1), u32 count (>= 1), count × child:
//!   u64 length (file bytes under it), u64 data (of those, bytes in chunk
//!   extents), 32-byte node id
//! ```
//! A small file is one leaf, as in formats 1 and 2.
//! Tree (one directory), entries sorted by name bytes:
//! ```text
//! u8 version = 1, u32 count, count × entry:
//!   Bytes16 name, u64 ino, Node
//! ```
//! A directory of more than `dirtree::SPLIT` entries (format 11) is stored
//! as pieces, each a version-1 tree of consecutive entries, and a tree of
//! version 2 that lists them in order (its pieces may be version-2 trees
//! again, for the longest listings; `dirtree` module docs: where pieces are
//! cut, so that one listing always makes the same pieces):
//! ```text
//! u8 version = 2, u32 count (>= 1), count × piece:
//!   32-byte tree id, u64 entries (under that piece, >= 1)
//! ```
//! Commit (the root directory's own attributes ride along, since no
//! tree holds them; its `content` is the root tree):
//! ```text
//! u8 version = 1, u64 seq, Time time, Opt<Id> parent, Id root tree, Node root
//! ```
//! A commit made where a training checkpoint completed (format 9) is
//! version 2: the same, then the checkpoints it completes
//! (`engine::checkpoints`), paths relative to the root, `/`-separated:
//! ```text
//! u32 count, count × (Bytes16 checkpoint directory, Bytes16 what marked it:
//!   the marker file, or the directory renamed into place)
//! ```
//! Node (the attributes and content of one inode, shared by trees and the catalog):
//! ```text
//! u8 file type (1 reg, 2 dir, 3 symlink, 4 fifo, 5 socket, 6 chr, 7 blk)
//! u16 permission bits (mode & 0o7777), u32 uid, u32 gid, u32 nlink,
//! u64 size, u64 allocated (bytes held in data extents, for st_blocks),
//! Time atime, Time mtime, Time ctime, u32 rdev,
//! Opt<Id> content (file: manifest, none when empty; dir: tree at the last commit),
//! Bytes32 symlink target (empty for other types),
//! u16 xattr count, count × (Bytes16 name, Bytes32 value)
//! ```
//!
//! ## The catalog (`STORE/catalog`)
//! One ordered key space (fjall partition "c"; the same keys and values as
//! the sled tree of formats 1-9); the first key byte says what a key is:
//! ```text
//! key                                  value
//! "F" "format"                         "RVFSMETA" u32 LE catalog layout = 2
//! "i" ino:u64BE                        u8 version=1, Node, u32 n, n × u64 parent ino
//! "d" parent:u64BE name                u64 LE child ino, u8 file type
//! "v" ino:u64BE vseq:u64BE             Version: u8 version=1, Time time, u64 size,
//!                                      Time mtime, Opt<Id> manifest, u8 flags
//!                                      (bit0 fsync), u64 commit seq that holds it
//! "c" seq:u64BE                        Id commit object, Time time
//! "o" id[32]                           IndexEntry: u64 pack, u64 payload offset,
//!                                      u32 stored len, u32 raw len, u8 kind, u8 codec
//! "y" dir:u64BE                        empty: directory changed since the last commit
//! "z" ino:u64BE                        empty: nlink 0 but still open (orphan)
//! "n" name (UTF-8)                     u64 LE commit seq of a named snapshot
//! "h" blake3(path)[32] seq:u64BE       PathVersion (layout 2): u8 version=1, Time
//!                                      commit time, u64 size, Opt<Id> manifest: the
//!                                      content commit `seq` holds at that path, when
//!                                      it differs from the commit before (path is
//!                                      relative to the root, `/`-separated)
//! "m" name                             counters: "next_ino", "next_pack",
//!                                      "next_vseq" (u64 LE), "head" (u64 LE seq);
//!                                      layout 2: "commits", "versions",
//!                                      "logical_bytes", "chunks", "chunk_bytes";
//!                                      format 4: "stored_added" (stored bytes ever
//!                                      added), "replica_deletions" (last record no.);
//!                                      "next_pack" is kept by prune
//! "g" bucket:u64BE                     (format 4) u64 LE "stored_added" at the end of
//!                                      that 300 s bucket: growth samples, 8 days
//! "k" seq:u64BE                        (format 9) the checkpoints commit `seq`
//!                                      completes, as in the commit object (u32
//!                                      count, count × 2 Bytes16): an index of the
//!                                      commits, rebuilt from them by recover
//! "r" no:u64BE                         (format 4) ReplicaDeletion: u8 version=1, Time,
//!                                      u32 n, n x u64 commit seq, u32 m, m x u64 pack:
//!                                      what one prune step dropped, until the replica
//!                                      takes it (`replica` module docs)
//! ```
//!
//! In an encrypted store (format 5) every value but "F" is sealed as a
//! record payload is (salt, AES-256-GCM ciphertext, tag) under the
//! metadata key, with the stored key as associated data; and the keys that
//! hold a name hold a keyed hash KH(scope, name) = BLAKE3-keyed(names key,
//! u64 LE len(scope) || scope || name) instead:
//! ```text
//! "d" parent:u64BE KH("d" parent, name)   Bytes16 name, then the plain value
//! "n" KH("n", name)                       Bytes16 name, then the plain value
//! "h" KH("h", blake3(path)) seq:u64BE     the plain value
//! ```
//! (a directory is listed in keyed-hash order and sorted by name on read).
//! Numbers in keys (inodes, commits, packs, counters' names) stay plain.
//!
//! ## `keys` (encrypted stores)
//! ```text
//! {"version": 1, "slots": [{"id": u32, "created": RFC 3339,
//!   "kdf": "argon2id", "m_kib": u32, "t_cost": u32, "p_cost": u32,
//!   "salt": hex (16 bytes), "wrapped": hex (48 bytes)}, ...]}
//! ```
//! `wrapped` is the 32-byte master key sealed with AES-256-GCM, zero
//! nonce, under argon2id(passphrase, salt, m_kib, t_cost, p_cost; 32
//! bytes, version 0x13), with "revfs key slot v1" || id || m_kib ||
//! t_cost || p_cost (u32 LE each) as associated data; then the 16-byte
//! tag. Every other key is derived from the master key
//! (`crypto` module docs). Written atomically (temp, fsync, rename).
//!
//! ## Replicas
//! A replica directory holds the same pack format plus immutable head and
//! name files instead of a catalog; its layout is specified in
//! `replica` (module docs). Its catalog is rebuilt from the packs.
//!
//! # Write ordering (why a crash never leaves a dangling reference)
//! 1. Objects are appended to the open pack as data arrives (no reference yet).
//! 2. A group commit (every interval while anything changed, and at once on
//!    fsync) first `fdatasync`s the pack (and fsyncs `packs/` when the pack
//!    file is new), and only then writes, in one atomic catalog batch, the index
//!    entries of the new objects, the inode records that point at them, the
//!    version records, the new trees and the commit; then `flush`es the catalog
//!    (fsync of fjall's journal).
//! 3. Metadata that references no new object (mkdir, rename, chmod...) goes
//!    to the catalog directly (each batch written to fjall's journal at once);
//!    the journal recovers to a prefix of its batches, so after a
//!    crash the tree is the state of some instant with each file holding its
//!    last committed content.
//!
//! # Assumptions about the disk
//! `fdatasync` on a file and `fsync` on a directory make their data durable
//! (as on ext4/xfs with barriers); a write may be torn at any byte after
//! the last sync; fjall's journal (checksummed batches, a torn tail cut off
//! at recovery) is crash-safe as its docs promise.
//!
//! # Room for what comes next (no store rewrite needed)
//! * Garbage collection (format 4, `retention::prune`): objects are found
//!   only through the index, so a repack copies live records into the open
//!   pack, switches the index entries in one batch, then deletes old packs.
//! * Replication: sealed packs are immutable files (copy once), and commits
//!   are numbered, so a replica is "all packs, then a catalog export up to
//!   commit N"; objects first, then metadata.
//!
//! # Version history
//! * 1 (revfs 0.1): first format.
//! * 2: the catalog (layout 2) adds the path-version index ("h" keys) and
//!   the status counters. Packs, records, the config and replica files are
//!   unchanged; a version-1 store opens as it is and its catalog is
//!   upgraded in place on first open (`engine::history::upgrade`; the
//!   fixture `tests/fixtures/v1-store` proves it). A revfs that reads only
//!   version 1 refuses a version-2 store.
//! * 3: large files get a tree of manifest nodes (inner nodes, version-2
//!   manifest records), so that a small edit writes the changed leaf and
//!   its path to the root, not the file's whole extent list. A leaf is the
//!   old manifest record unchanged, so a version-2 store reads as it is;
//!   its config version is raised at first writable open (nothing else
//!   changes), and its old single-leaf manifests become trees when their
//!   file is next written (`tests/fixtures/v2-store`). A revfs that reads
//!   only version 2 refuses a version-3 store.
//! * 4: retention. A prune removes commits (the sequence may have gaps, and
//!   a kept commit's parent may be gone: nothing follows parent chains any
//!   more), deletes packs (numbers are never reused: "next_pack"), and adds
//!   the growth samples ("g") and the replica deletion records ("r"); a
//!   replica gets `pruned/` files, and a rebuild takes its commits from the
//!   commit records less those. A version-3 store opens as it is (its
//!   config version is raised at first writable open;
//!   `tests/fixtures/v3-store`). A revfs that reads only version 3 refuses
//!   a version-4 store, which it would rebuild from a replica wrongly
//!   (with the dropped commits back, following cut parent chains).
//! * 5: encryption at rest (`init --encrypt`): the `keys` file, sealed
//!   record codecs 2 and 3, keyed object ids and chunk boundaries, a sealed
//!   catalog with hashed names, sealed replica head/name/pruned files and
//!   the replica's copy of `keys`. A plain store is laid out as in format
//!   4 (its chunk boundaries are the same); a version-4 store opens as it
//!   is and its config version is raised at first writable open
//!   (`tests/fixtures/v4-store`). A revfs that reads only version 4
//!   refuses a version-5 store (and any store whose config names a
//!   cipher).
//! * 6: cold record codecs 4, 8, 12 and 16 (zstd, byte planes): a repack
//!   recodes the hot (raw, lz4) chunk records it copies, and the daemon
//!   repacks packs that are mostly hot once they are sealed. A version-5
//!   store opens as it is and its config version is raised at first
//!   writable open (`tests/fixtures/v5-store`). A revfs that reads only
//!   version 5 refuses a version-6 store, whose zstd records it could not
//!   decode.
//! * 7: delta records (codec 32): a prune with `--recompress` (and the
//!   daemon's background rounds) stores an old version's chunks as deltas
//!   of the next version's bytes at the same place. A version-6 store
//!   opens as it is and its config version is raised at first writable
//!   open (`tests/fixtures/v6-store`). A revfs that reads only version 6
//!   refuses a version-7 store, whose delta records it could not decode.
//! * 8: catalog inode records of version 2 (`catalog::db::Inode`): the
//!   parent directories of a file's links as (directory, links) pairs, not
//!   one entry a link (65,000 links to a file in one directory rewrote a
//!   record of 520 KB at each link). Version-1 records are read as before
//!   and rewritten as version 2 when the inode changes; a version-7 store
//!   opens and its config version is raised at first writable open
//!   (`tests/fixtures/v7-store`). A revfs that reads only version 7
//!   refuses a version-8 store, whose inode records it could not decode.
//! * 9: checkpoint commits: a commit made where a training checkpoint
//!   completed is a version-2 commit object naming the checkpoints it
//!   completes, indexed by "k" keys. A version-8 store opens as it is and
//!   its config version is raised at first writable open
//!   (`tests/fixtures/v8-store`). A revfs that reads only version 8
//!   refuses a version-9 store, whose version-2 commits it could not decode.
//! * 10: the catalog moves from sled (`STORE/meta`) to fjall
//!   (`STORE/catalog`), keys and values unchanged (`catalog::legacy`): sled
//!   spent ~200 µs of CPU per created file on its io threads, fjall ~25. A
//!   version-9 (or older) store's catalog is copied across at its first
//!   open (built beside, made durable, renamed into place, the config
//!   raised, then the sled files removed; `tests/fixtures/v9-store`). A revfs
//!   that reads only version 9 refuses a version-10 store, whose catalog it
//!   could not find.
//! * 11: big directories' trees in pieces (version-2 trees, `dirtree`): a
//!   commit rewrote the whole listing of every directory it touched, so a
//!   job creating 100,000 files in one directory stored 161 MB of metadata
//!   for 205 MB of data over 50 commits (20 MB in pieces) (and a fsync per file made it
//!   quadratic), all of it kept by `--keep-versions` since each commit
//!   holds some file's version. Now a commit writes the pieces that
//!   changed and the index above them. A version-10 store opens as it is
//!   (its whole listings read as before, and a big directory is split at
//!   its next commit); its config version is raised at first writable open
//!   (`tests/fixtures/v10-store`). A revfs that reads only version 10
//!   refuses a version-11 store, whose version-2 trees it could not decode.
//!   In the same format, a delta record's residual may be the zigzag
//!   difference of elements instead of XOR (the high bits of its residual
//!   codec byte, zero in every older record).
//! * 12: every value of a plain store's catalog ends with a check
//!   (`catalog::db::CHECK_LEN` bytes of XXH3-64 over its stored key and
//!   bytes; catalog layout 3): fjall checks no block checksum on a read, so
//!   one flipped bit in a catalog segment was served as a file name no one
//!   wrote, or a size. An encrypted store's values were sealed already. A
//!   version-11 store opens as it is; at its first writable open the
//!   config version is raised, then every value gets its check (in
//!   batches, the layout raised in the last, so an upgrade cut short reads
//!   both forms and goes on at the next open; `tests/fixtures/v11-store`).
//!   A revfs
//!   that reads only version 11 refuses a version-12 store, whose values it
//!   would read with the check as part of them.

use crate::error::{Error, Result};
use crate::ids::{ObjectId, ObjectKind};
use std::collections::BTreeMap;

/// The store format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 12;
pub const CONF_MAGIC: &[u8; 8] = b"RVFSCONF";
pub const PACK_MAGIC: &[u8; 8] = b"RVFSPACK";
pub const META_MAGIC: &[u8; 8] = b"RVFSMETA";
pub const PACK_HEADER_LEN: u64 = 16;
pub const RECORD_HEADER_LEN: usize = 44;
/// A pack is sealed once it holds this many bytes.
pub const PACK_TARGET_SIZE: u64 = 128 << 20;

pub const CODEC_RAW: u8 = 0;
pub const CODEC_LZ4: u8 = 1;
/// Added to the codec of a record sealed with the store's key (format 5).
pub const CODEC_SEALED: u8 = 2;
/// Cold codecs (format 6): zstd of the bytes, of 2 or 4 byte planes, and
/// raw bytes that zstd did not shrink.
pub const CODEC_ZSTD: u8 = 4;
pub const CODEC_ZSTD_PLANES2: u8 = 8;
pub const CODEC_ZSTD_PLANES4: u8 = 12;
pub const CODEC_RAW_COLD: u8 = 16;
/// A delta record (format 7): a chunk as the XOR with its bases' bytes.
pub const CODEC_DELTA: u8 = 32;

/// Appends little-endian fields to a byte vector.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn time(&mut self, t: Time) -> &mut Self {
        self.0.extend_from_slice(&t.secs.to_le_bytes());
        self.u32(t.nanos)
    }
    pub fn id(&mut self, id: &ObjectId) -> &mut Self {
        self.0.extend_from_slice(&id.0);
        self
    }
    pub fn opt_id(&mut self, id: &Option<ObjectId>) -> &mut Self {
        match id {
            None => self.u8(0),
            Some(id) => self.u8(1).id(id),
        }
    }
    pub fn bytes16(&mut self, b: &[u8]) -> &mut Self {
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
        self
    }
    pub fn bytes32(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
}

/// Reads little-endian fields; every read is bounds-checked and a short or
/// malformed input is a `Corrupt` error naming `what`, never a panic.
pub struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Dec { buf, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::corrupt(self.what, "record is truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub fn time(&mut self) -> Result<Time> {
        let secs = i64::from_le_bytes(self.arr()?);
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(self.bad("nanoseconds out of range"));
        }
        Ok(Time { secs, nanos })
    }
    pub fn id(&mut self) -> Result<ObjectId> {
        Ok(ObjectId(self.arr()?))
    }
    pub fn opt_id(&mut self) -> Result<Option<ObjectId>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.id()?)),
            _ => Err(self.bad("bad option tag")),
        }
    }
    pub fn bytes16(&mut self) -> Result<Vec<u8>> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub fn bytes32(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// Checks the leading record-version byte.
    pub fn version(&mut self, want: u8) -> Result<()> {
        let v = self.u8()?;
        if v != want {
            return Err(self.bad(&format!("record version {v}, expected {want}")));
        }
        Ok(())
    }
    pub fn end(&self) -> Result<()> {
        if !self.buf.is_empty() {
            return Err(self.bad("trailing bytes"));
        }
        Ok(())
    }
    /// A count that cannot exceed what the remaining bytes could hold.
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() {
            return Err(self.bad("count larger than the record"));
        }
        Ok(n)
    }
    pub fn bad(&self, detail: &str) -> Error {
        Error::corrupt(self.what, detail)
    }
}

/// A point in time with nanosecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub fn now() -> Time {
        Time::from_system(std::time::SystemTime::now())
    }
    pub fn from_system(t: std::time::SystemTime) -> Time {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (mut secs, mut nanos) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Time { secs, nanos }
            }
        }
    }
    pub fn to_system(self) -> std::time::SystemTime {
        use std::time::{Duration, UNIX_EPOCH};
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs as u64, self.nanos)
        } else {
            UNIX_EPOCH - Duration::new(self.secs.unsigned_abs(), 0) + Duration::new(0, self.nanos)
        }
    }
    pub fn as_nanos(self) -> i128 {
        self.secs as i128 * 1_000_000_000 + self.nanos as i128
    }
    pub fn from_nanos(n: i128) -> Time {
        Time {
            secs: n.div_euclid(1_000_000_000) as i64,
            nanos: n.rem_euclid(1_000_000_000) as u32,
        }
    }
}

/// The type of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FileType {
    Regular = 1,
    Directory = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDevice = 6,
    BlockDevice = 7,
}

impl FileType {
    pub fn from_u8(b: u8) -> Option<FileType> {
        Some(match b {
            1 => FileType::Regular,
            2 => FileType::Directory,
            3 => FileType::Symlink,
            4 => FileType::Fifo,
            5 => FileType::Socket,
            6 => FileType::CharDevice,
            7 => FileType::BlockDevice,
            _ => return None,
        })
    }
    /// From the S_IFMT bits of a mode.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileType::Regular,
            libc::S_IFDIR => FileType::Directory,
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::Fifo,
            libc::S_IFSOCK => FileType::Socket,
            libc::S_IFCHR => FileType::CharDevice,
            libc::S_IFBLK => FileType::BlockDevice,
            _ => return None,
        })
    }
}

/// Attributes and content of one inode: what a tree entry and an inode
/// record both hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: FileType,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub allocated: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub rdev: u32,
    pub content: Option<ObjectId>,
    pub target: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Node {
    pub fn new(kind: FileType, perm: u16, uid: u32, gid: u32) -> Node {
        let now = Time::now();
        Node {
            kind,
            perm,
            uid,
            gid,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            size: 0,
            allocated: 0,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
            content: None,
            target: Vec::new(),
            xattrs: BTreeMap::new(),
        }
    }

    pub fn encode(&self, e: &mut Enc) {
        e.u8(self.kind as u8)
            .u16(self.perm)
            .u32(self.uid)
            .u32(self.gid)
            .u32(self.nlink)
            .u64(self.size)
            .u64(self.allocated)
            .time(self.atime)
            .time(self.mtime)
            .time(self.ctime)
            .u32(self.rdev)
            .opt_id(&self.content)
            .bytes32(&self.target)
            .u16(self.xattrs.len() as u16);
        for (k, v) in &self.xattrs {
            e.bytes16(k).bytes32(v);
        }
    }

    pub fn decode(d: &mut Dec) -> Result<Node> {
        let kind = FileType::from_u8(d.u8()?).ok_or_else(|| d.bad("bad file type"))?;
        let perm = d.u16()?;
        let (uid, gid, nlink) = (d.u32()?, d.u32()?, d.u32()?);
        let (size, allocated) = (d.u64()?, d.u64()?);
        let (atime, mtime, ctime) = (d.time()?, d.time()?, d.time()?);
        let rdev = d.u32()?;
        let content = d.opt_id()?;
        let target = d.bytes32()?;
        let n = d.u16()?;
        let mut xattrs = BTreeMap::new();
        for _ in 0..n {
            let k = d.bytes16()?;
            xattrs.insert(k, d.bytes32()?);
        }
        Ok(Node {
            kind,
            perm,
            uid,
            gid,
            nlink,
            size,
            allocated,
            atime,
            mtime,
            ctime,
            rdev,
            content,
            target,
            xattrs,
        })
    }
}

/// One extent of a file version: a chunk of data or a hole that reads as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    Hole { len: u64 },
    Chunk { len: u64, id: ObjectId },
}

impl Extent {
    /// Bytes of the file this extent covers (never 0).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        match self {
            Extent::Hole { len } | Extent::Chunk { len, .. } => *len,
        }
    }
}

/// One subtree of an inner manifest node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Child {
    /// File bytes it covers (never 0).
    pub len: u64,
    /// Of those, bytes in chunk extents (for st_blocks).
    pub data: u64,
    pub id: ObjectId,
}

/// One node of a file version's manifest tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestNode {
    /// Extents in order: the whole content of a small file.
    Leaf(Vec<Extent>),
    /// Subtrees in order, each a node of `level - 1` (a leaf is level 0).
    Inner { level: u8, children: Vec<Child> },
}

impl ManifestNode {
    pub fn level(&self) -> u8 {
        match self {
            ManifestNode::Leaf(_) => 0,
            ManifestNode::Inner { level, .. } => *level,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        match self {
            ManifestNode::Leaf(extents) => {
                e.u8(1).u32(extents.len() as u32);
                for x in extents {
                    match x {
                        Extent::Hole { len } => e.u8(0).u64(*len),
                        Extent::Chunk { len, id } => e.u8(1).u64(*len).id(id),
                    };
                }
            }
            ManifestNode::Inner { level, children } => {
                e.u8(2).u8(*level).u32(children.len() as u32);
                for c in children {
                    e.u64(c.len).u64(c.data).id(&c.id);
                }
            }
        }
        e.0
    }

    pub fn decode(buf: &[u8]) -> Result<ManifestNode> {
        let mut d = Dec::new(buf, "manifest");
        // A file is at most i64::MAX bytes; extents and subtrees are never empty.
        let mut total: u64 = 0;
        let mut add = |d: &Dec, len: u64| {
            total = total
                .checked_add(len)
                .filter(|t| *t <= i64::MAX as u64 && len > 0)
                .ok_or_else(|| d.bad("lengths out of range"))?;
            Ok::<(), Error>(())
        };
        let node = match d.u8()? {
            1 => {
                let n = d.count(9)?;
                let mut extents = Vec::with_capacity(n);
                for _ in 0..n {
                    let tag = d.u8()?;
                    let len = d.u64()?;
                    add(&d, len)?;
                    extents.push(match tag {
                        0 => Extent::Hole { len },
                        1 => Extent::Chunk { len, id: d.id()? },
                        _ => return Err(d.bad("bad extent tag")),
                    });
                }
                ManifestNode::Leaf(extents)
            }
            2 => {
                let level = d.u8()?;
                let n = d.count(48)?;
                if level == 0 || n == 0 {
                    return Err(d.bad("inner node without level or children"));
                }
                let mut children = Vec::with_capacity(n);
                for _ in 0..n {
                    let (len, data, id) = (d.u64()?, d.u64()?, d.id()?);
                    add(&d, len)?;
                    if data > len {
                        return Err(d.bad("more data than length"));
                    }
                    children.push(Child { len, data, id });
                }
                ManifestNode::Inner { level, children }
            }
            v => return Err(d.bad(&format!("record version {v}, expected 1 or 2"))),
        };
        d.end()?;
        Ok(node)
    }

    /// File bytes the node covers.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        match self {
            ManifestNode::Leaf(x) => x.iter().map(Extent::len).sum(),
            ManifestNode::Inner { children, .. } => children.iter().map(|c| c.len).sum(),
        }
    }

    /// Of those, bytes in chunk extents.
    pub fn data(&self) -> u64 {
        match self {
            ManifestNode::Leaf(x) => x
                .iter()
                .filter(|x| matches!(x, Extent::Chunk { .. }))
                .map(Extent::len)
                .sum(),
            ManifestNode::Inner { children, .. } => children.iter().map(|c| c.data).sum(),
        }
    }
}

/// One entry of a directory tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub node: Node,
}

/// One directory as of a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: Vec<TreeEntry>,
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        Tree::encode_entries(&self.entries)
    }

    /// The version-1 record of a listing (a whole directory, or a piece).
    pub fn encode_entries(entries: &[TreeEntry]) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(1).u32(entries.len() as u32);
        for x in entries {
            e.bytes16(&x.name).u64(x.ino);
            x.node.encode(&mut e);
        }
        e.0
    }

    pub fn decode(buf: &[u8]) -> Result<Tree> {
        let mut d = Dec::new(buf, "tree");
        d.version(1)?;
        let n = d.count(16)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let name = d.bytes16()?;
            let ino = d.u64()?;
            entries.push(TreeEntry {
                name,
                ino,
                node: Node::decode(&mut d)?,
            });
        }
        d.end()?;
        Ok(Tree { entries })
    }
}

/// One piece of a directory split in pieces: a tree and how many entries
/// it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreePiece {
    pub id: ObjectId,
    pub entries: u64,
}

/// A tree record as stored: a listing, or the pieces of one (format 11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeRecord {
    Listing(Tree),
    Pieces(Vec<TreePiece>),
}

impl TreeRecord {
    pub fn encode_pieces(pieces: &[TreePiece]) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(2).u32(pieces.len() as u32);
        for p in pieces {
            e.id(&p.id).u64(p.entries);
        }
        e.0
    }

    pub fn decode(buf: &[u8]) -> Result<TreeRecord> {
        if buf.first() != Some(&2) {
            return Tree::decode(buf).map(TreeRecord::Listing);
        }
        let mut d = Dec::new(buf, "tree");
        d.version(2)?;
        let n = d.count(40)?;
        if n == 0 {
            return Err(d.bad("a split tree without pieces"));
        }
        let mut pieces = Vec::with_capacity(n);
        for _ in 0..n {
            let id = d.id()?;
            let entries = d.u64()?;
            if entries == 0 {
                return Err(d.bad("an empty piece"));
            }
            pieces.push(TreePiece { id, entries });
        }
        d.end()?;
        Ok(TreeRecord::Pieces(pieces))
    }
}

/// A recorded state of the whole tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub seq: u64,
    pub time: Time,
    pub parent: Option<ObjectId>,
    pub root: ObjectId,
    pub root_node: Node,
    /// The training checkpoints this commit completes (format 9).
    pub checkpoints: Vec<CheckpointMark>,
}

/// A checkpoint a commit completes: its directory, and what marked it
/// complete (a marker file, or the directory renamed into place); paths
/// relative to the root, `/`-separated (empty: the root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointMark {
    pub dir: String,
    pub marker: String,
}

impl CheckpointMark {
    /// The marks as a commit (version 2) and a "k" value hold them.
    pub fn encode_all(marks: &[CheckpointMark], e: &mut Enc) {
        e.u32(marks.len() as u32);
        for m in marks {
            e.bytes16(m.dir.as_bytes()).bytes16(m.marker.as_bytes());
        }
    }

    pub fn decode_all(d: &mut Dec) -> Result<Vec<CheckpointMark>> {
        let n = d.count(4)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let text = |d: &mut Dec| -> Result<String> {
                String::from_utf8(d.bytes16()?).map_err(|_| d.bad("checkpoint path not UTF-8"))
            };
            let dir = text(d)?;
            let marker = text(d)?;
            out.push(CheckpointMark { dir, marker });
        }
        Ok(out)
    }

    /// A "k" value.
    pub fn encode_list(marks: &[CheckpointMark]) -> Vec<u8> {
        let mut e = Enc::default();
        Self::encode_all(marks, &mut e);
        e.0
    }

    pub fn decode_list(buf: &[u8]) -> Result<Vec<CheckpointMark>> {
        let mut d = Dec::new(buf, "checkpoint record");
        let out = Self::decode_all(&mut d)?;
        d.end()?;
        Ok(out)
    }
}

impl Commit {
    /// Version 1 unless the commit completes a checkpoint, so that a
    /// store's other commits read as they always did.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(if self.checkpoints.is_empty() { 1 } else { 2 })
            .u64(self.seq)
            .time(self.time)
            .opt_id(&self.parent)
            .id(&self.root);
        self.root_node.encode(&mut e);
        if !self.checkpoints.is_empty() {
            CheckpointMark::encode_all(&self.checkpoints, &mut e);
        }
        e.0
    }

    pub fn decode(buf: &[u8]) -> Result<Commit> {
        let mut d = Dec::new(buf, "commit");
        let version = d.u8()?;
        if !(1..=2).contains(&version) {
            return Err(d.bad(&format!("record version {version}, expected 1 or 2")));
        }
        let mut c = Commit {
            seq: d.u64()?,
            time: d.time()?,
            parent: d.opt_id()?,
            root: d.id()?,
            root_node: Node::decode(&mut d)?,
            checkpoints: Vec::new(),
        };
        if version == 2 {
            c.checkpoints = CheckpointMark::decode_all(&mut d)?;
        }
        d.end()?;
        Ok(c)
    }
}

/// The header of one object record in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: ObjectKind,
    pub codec: u8,
    pub raw_len: u32,
    pub stored_len: u32,
    pub id: ObjectId,
}

impl RecordHeader {
    /// The bytes of the record it heads: header and payload.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.stored_len as usize
    }

    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0] = self.kind as u8;
        b[1] = self.codec;
        b[4..8].copy_from_slice(&self.raw_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.stored_len.to_le_bytes());
        b[12..44].copy_from_slice(&self.id.0);
        b
    }

    pub fn decode(buf: &[u8]) -> Result<RecordHeader> {
        let mut d = Dec::new(buf, "pack record header");
        let kind = ObjectKind::from_u8(d.u8()?).ok_or_else(|| d.bad("bad object kind"))?;
        let codec = d.u8()?;
        if !matches!(
            codec & !CODEC_SEALED,
            CODEC_RAW
                | CODEC_LZ4
                | CODEC_ZSTD
                | CODEC_ZSTD_PLANES2
                | CODEC_ZSTD_PLANES4
                | CODEC_RAW_COLD
                | CODEC_DELTA
        ) {
            return Err(d.bad("unknown codec"));
        }
        let _reserved = d.u16()?;
        let (raw_len, stored_len) = (d.u32()?, d.u32()?);
        // lz4 expands at most ~255x; a raw record is as long as stored. This
        // bounds what a damaged header can make a reader allocate.
        let max_raw = match codec & !CODEC_SEALED {
            CODEC_RAW | CODEC_RAW_COLD => stored_len as u64,
            CODEC_LZ4 => stored_len as u64 * 255 + 16,
            // zstd has no such small bound; no record is near 1 GiB.
            _ => 1 << 30,
        };
        if raw_len as u64 > max_raw {
            return Err(d.bad("raw length impossible for the stored length"));
        }
        Ok(RecordHeader {
            kind,
            codec,
            raw_len,
            stored_len,
            id: d.id()?,
        })
    }
}

/// Encodes the 16-byte header of a pack file.
pub fn pack_header() -> [u8; PACK_HEADER_LEN as usize] {
    let mut b = [0u8; PACK_HEADER_LEN as usize];
    b[..8].copy_from_slice(PACK_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b
}

/// Checks a magic + u32 version prefix; refuses newer versions with a clear message.
pub fn check_magic(buf: &[u8], magic: &[u8; 8], what: &str) -> Result<u32> {
    if buf.len() < 12 || &buf[..8] != magic {
        return Err(Error::corrupt(
            what.to_string(),
            format!(
                "does not start with the magic {:?}",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if version > FORMAT_VERSION {
        return Err(Error::Store(format!(
            "{what} has format version {version}, newer than this revfs supports \
             ({FORMAT_VERSION}): upgrade revfs"
        )));
    }
    if version == 0 {
        return Err(Error::corrupt(what.to_string(), "format version 0"));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_header_bytes_are_exact() {
        assert_eq!(
            pack_header(),
            [
                b'R', b'V', b'F', b'S', b'P', b'A', b'C', b'K', 12, 0, 0, 0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn record_header_bytes_are_exact() {
        let h = RecordHeader {
            kind: ObjectKind::Tree,
            codec: CODEC_LZ4,
            raw_len: 0xF0E0,
            stored_len: 0x100,
            id: ObjectId([7; 32]),
        };
        let b = h.encode();
        assert_eq!(&b[..12], &[3, 1, 0, 0, 0xE0, 0xF0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(&b[12..], &[7; 32]);
        assert_eq!(RecordHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn manifest_bytes_are_exact_and_round_trip() {
        let m = ManifestNode::Leaf(vec![
            Extent::Hole { len: 2 },
            Extent::Chunk {
                len: 3,
                id: ObjectId([9; 32]),
            },
        ]);
        let b = m.encode();
        assert_eq!(&b[..15], &[1, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(b.len(), 1 + 4 + 9 + 9 + 32);
        assert_eq!(ManifestNode::decode(&b).unwrap(), m);
        let inner = ManifestNode::Inner {
            level: 1,
            children: vec![Child {
                len: 5,
                data: 3,
                id: ObjectId([4; 32]),
            }],
        };
        let b = inner.encode();
        assert_eq!(&b[..6], &[2, 1, 1, 0, 0, 0]);
        assert_eq!(b.len(), 6 + 48);
        assert_eq!(ManifestNode::decode(&b).unwrap(), inner);
        assert_eq!((inner.len(), inner.data()), (5, 3));
    }

    #[test]
    fn decoders_reject_garbage_without_panicking() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 1) as u8).collect();
            let _ = ManifestNode::decode(&junk);
            let _ = Tree::decode(&junk);
            let mut split = junk.clone();
            split.insert(0, 2);
            let _ = TreeRecord::decode(&split);
            let _ = Commit::decode(&junk);
            let _ = RecordHeader::decode(&junk);
        }
        // A count that claims more entries than bytes is refused, not allocated.
        assert!(Tree::decode(&[1, 255, 255, 255, 255]).is_err());
        assert!(TreeRecord::decode(&[2, 255, 255, 255, 255]).is_err());
        assert!(TreeRecord::decode(&[2, 0, 0, 0, 0]).is_err(), "no pieces");
        // Extent lengths that add up past the largest file (found by fuzzing).
        let mut m = vec![1, 2, 0, 0, 0, 0];
        for _ in 0..2 {
            m.push(0);
            m.extend_from_slice(&(u64::MAX / 2 + 1).to_le_bytes());
        }
        assert!(ManifestNode::decode(&m).is_err());
        // An inner node without children, or of level 0.
        assert!(ManifestNode::decode(&[2, 1, 0, 0, 0, 0]).is_err());
        assert!(ManifestNode::decode(&[2, 0, 1, 0, 0, 0]).is_err());
        // So is a raw length no lz4 block of that stored length can have.
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[0] = 1;
        h[1] = CODEC_LZ4;
        h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        h[8..12].copy_from_slice(&10u32.to_le_bytes());
        assert!(RecordHeader::decode(&h).is_err());
    }

    #[test]
    fn commits_are_version_1_unless_they_complete_a_checkpoint() {
        let mut c = Commit {
            seq: 7,
            time: Time { secs: 5, nanos: 6 },
            parent: None,
            root: ObjectId([1; 32]),
            root_node: Node::new(FileType::Directory, 0o755, 0, 0),
            checkpoints: Vec::new(),
        };
        let b = c.encode();
        assert_eq!(b[0], 1);
        assert_eq!(Commit::decode(&b).unwrap(), c);
        c.checkpoints = vec![CheckpointMark {
            dir: "out/checkpoint-500".into(),
            marker: "out/checkpoint-500/trainer_state.json".into(),
        }];
        let b2 = c.encode();
        assert_eq!(b2[0], 2);
        assert_eq!(
            &b2[..b.len()][1..],
            &b[1..],
            "the version-1 fields come first"
        );
        assert_eq!(&b2[b.len()..b.len() + 6], &[1, 0, 0, 0, 18, 0]);
        assert_eq!(Commit::decode(&b2).unwrap(), c);
        let mut v3 = b2.clone();
        v3[0] = 3;
        assert!(Commit::decode(&v3).is_err());
        assert!(Commit::decode(&b2[..b2.len() - 1]).is_err());
    }

    #[test]
    fn newer_format_is_refused_with_a_message() {
        let mut b = CONF_MAGIC.to_vec();
        b.extend_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let e = check_magic(&b, CONF_MAGIC, "config")
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn negative_times_round_trip() {
        let t = Time {
            secs: -5,
            nanos: 250,
        };
        assert_eq!(Time::from_system(t.to_system()), t);
    }
}
