//! Every catalog (fjall) call of revfs lives here, behind typed keys and records (the
//! key prefix table is in `format`). Writes that must be atomic together go
//! through a [`Batch`]; `flush` is the only thing that makes them durable.

use crate::crypto::{Crypto, Domain};
use crate::error::{Error, Result};
use crate::format::{CheckpointMark, Dec, Enc, FileType, META_MAGIC, Node, Time};
use crate::ids::{CommitSeq, Ino, ObjectId, ObjectKind, PackNo};
use std::path::Path;

/// The catalog layout this build writes: 2 adds the path-version index
/// ("h") and the status counters; 3 ends every value of a plain store with
/// a check of its key and bytes ([`CHECK_LEN`]). An older catalog is
/// upgraded in place when a store is opened (`engine::history::upgrade`).
pub const CATALOG_VERSION: u32 = 3;

/// The first layout whose plain values carry a check.
const CHECKED_VERSION: u32 = 3;

/// Bytes of the check at the end of a plain store's catalog value: the
/// XXH3-64 of the stored key and the value (little-endian). fjall checks
/// no block checksum on a read, so without it a flipped bit in a segment
/// was served (a file name no one wrote, a size, a chunk id); an encrypted
/// store's values are sealed instead, and the format record is neither.
pub const CHECK_LEN: usize = 8;

/// The check of value `v` stored under key `sk`: a checksum against
/// damage, not a seal (XXH3: 10 ns where BLAKE3 took 128 on a dentry, and
/// `find` reads two values an entry).
fn value_check(sk: &[u8], v: &[u8]) -> [u8; CHECK_LEN] {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(&(sk.len() as u64).to_le_bytes());
    h.update(sk);
    h.update(v);
    h.digest().to_le_bytes()
}

/// `v` without its check, when it ends with the right one for key `sk`.
fn strip_check<'a>(sk: &[u8], v: &'a [u8]) -> Option<&'a [u8]> {
    let (body, check) = v.split_at_checked(v.len().checked_sub(CHECK_LEN)?)?;
    (value_check(sk, body) == check).then_some(body)
}

/// Entries the upgrade to checked values writes in one batch at most.
const CHECK_BATCH: u64 = 50_000;

/// Where an object lives in the packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub pack: PackNo,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub kind: ObjectKind,
    pub codec: u8,
}

impl IndexEntry {
    /// The bytes of the record in its pack: header and payload.
    pub fn record_len(&self) -> u64 {
        crate::format::RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }

    /// Whether the record is a delta of other chunks (format 7).
    pub fn is_delta(&self) -> bool {
        self.codec & !crate::format::CODEC_SEALED == crate::format::CODEC_DELTA
    }

    /// The entry of a record found in pack `pack` with its payload at `offset`.
    pub fn of_record(pack: PackNo, offset: u64, h: &crate::format::RecordHeader) -> IndexEntry {
        IndexEntry {
            pack,
            offset,
            stored_len: h.stored_len,
            raw_len: h.raw_len,
            kind: h.kind,
            codec: h.codec,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u64(self.pack.0)
            .u64(self.offset)
            .u32(self.stored_len)
            .u32(self.raw_len)
            .u8(self.kind as u8)
            .u8(self.codec);
        e.0
    }
    pub fn decode(b: &[u8]) -> Result<IndexEntry> {
        let mut d = Dec::new(b, "object index entry");
        let e = IndexEntry {
            pack: PackNo(d.u64()?),
            offset: d.u64()?,
            stored_len: d.u32()?,
            raw_len: d.u32()?,
            kind: ObjectKind::from_u8(d.u8()?).ok_or_else(|| d.bad("bad kind"))?,
            codec: d.u8()?,
        };
        d.end()?;
        Ok(e)
    }
}

/// A live inode: its node and the directories that link to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub node: Node,
    /// The directories holding its links (a directory's: exactly one).
    pub parents: Parents,
}

/// The directories that link to an inode, each once with its number of
/// links there, in the order of their first link: 65,000 links to a file
/// in one directory are one entry, so a link costs the same at the last
/// as at the first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parents(Vec<(Ino, u32)>);

impl Parents {
    /// One link, in `dir`.
    pub fn one(dir: Ino) -> Parents {
        Parents(vec![(dir, 1)])
    }

    /// The directory of the first link.
    pub fn first(&self) -> Option<&Ino> {
        self.0.first().map(|(d, _)| d)
    }

    /// One more link, in `dir`.
    pub fn push(&mut self, dir: Ino) {
        match self.0.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, n)) => *n += 1,
            None => self.0.push((dir, 1)),
        }
    }

    /// One link fewer in `dir`; false when it had none there.
    pub fn remove_one(&mut self, dir: Ino) -> bool {
        let Some(i) = self.0.iter().position(|(d, _)| *d == dir) else {
            return false;
        };
        self.0[i].1 -= 1;
        if self.0[i].1 == 0 {
            self.0.remove(i);
        }
        true
    }

    /// A link moved from `from` to `to` (a rename).
    pub fn moved(&mut self, from: Ino, to: Ino) {
        self.remove_one(from);
        self.push(to);
    }

    /// Each directory once.
    pub fn dirs(&self) -> impl Iterator<Item = Ino> + '_ {
        self.0.iter().map(|(d, _)| *d)
    }
}

impl Inode {
    /// Version 2: the parents as (directory, links there) pairs.
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(2);
        self.node.encode(&mut e);
        e.u32(self.parents.0.len() as u32);
        for (p, n) in &self.parents.0 {
            e.u64(p.0).u32(*n);
        }
        e.0
    }
    pub fn decode(b: &[u8]) -> Result<Inode> {
        let mut d = Dec::new(b, "inode record");
        let version = d.u8()?;
        if version != 1 && version != 2 {
            return Err(Error::corrupt(
                "inode record",
                format!("record version {version}, expected 1 or 2"),
            ));
        }
        let node = Node::decode(&mut d)?;
        let mut parents = Parents::default();
        if version == 1 {
            // One entry a link.
            for _ in 0..d.count(8)? {
                parents.push(Ino(d.u64()?));
            }
        } else {
            for _ in 0..d.count(12)? {
                let p = Ino(d.u64()?);
                let n = d.u32()?;
                if n == 0 || parents.dirs().any(|q| q == p) {
                    return Err(Error::corrupt("inode record", "bad parent links"));
                }
                parents.0.push((p, n));
            }
        }
        d.end()?;
        Ok(Inode { node, parents })
    }
}

/// One recorded version of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub time: Time,
    pub size: u64,
    pub mtime: Time,
    pub manifest: Option<ObjectId>,
    pub fsynced: bool,
    pub commit: CommitSeq,
}

impl Version {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(1)
            .time(self.time)
            .u64(self.size)
            .time(self.mtime)
            .opt_id(&self.manifest)
            .u8(self.fsynced as u8)
            .u64(self.commit.0);
        e.0
    }
    pub fn decode(b: &[u8]) -> Result<Version> {
        let mut d = Dec::new(b, "version record");
        d.version(1)?;
        let v = Version {
            time: d.time()?,
            size: d.u64()?,
            mtime: d.time()?,
            manifest: d.opt_id()?,
            fsynced: d.u8()? & 1 == 1,
            commit: CommitSeq(d.u64()?),
        };
        d.end()?;
        Ok(v)
    }
}

/// One state of one path in history: the content a commit holds there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathVersion {
    /// Commit time.
    pub time: Time,
    pub size: u64,
    pub content: Option<ObjectId>,
}

impl PathVersion {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(1).time(self.time).u64(self.size).opt_id(&self.content);
        e.0
    }
    fn decode(b: &[u8]) -> Result<PathVersion> {
        let mut d = Dec::new(b, "path version");
        if d.u8()? != 1 {
            return Err(d.bad("unknown path version record"));
        }
        let v = PathVersion {
            time: d.time()?,
            size: d.u64()?,
            content: d.opt_id()?,
        };
        d.end()?;
        Ok(v)
    }
}

/// The key of a path in the path-version index: BLAKE3 of its bytes
/// (relative to the root, `/`-separated), so keys are bounded.
fn path_key(path: &str, seq: Option<CommitSeq>) -> Vec<u8> {
    let h = blake3::hash(path.as_bytes());
    let mut k = key(b'h', &[h.as_bytes()]);
    if let Some(s) = seq {
        k.extend_from_slice(&s.0.to_be_bytes());
    }
    k
}

/// The path-version entries of one path (by its hash), oldest first.
pub type PathGroup = ([u8; 32], Vec<(CommitSeq, PathVersion)>);

impl Db {
    /// The hash a path's entries are grouped under in the path-version
    /// index (as [`Db::path_version_groups`] gives it).
    pub fn path_hash(&self, path: &str) -> [u8; 32] {
        let h = *blake3::hash(path.as_bytes()).as_bytes();
        self.crypto.name_key(b"h", &h).unwrap_or(h)
    }
}

/// A directory entry as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dentry {
    pub ino: Ino,
    pub kind: FileType,
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix];
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}
fn ino_key(prefix: u8, ino: Ino) -> Vec<u8> {
    key(prefix, &[&ino.0.to_be_bytes()])
}
fn dentry_key(parent: Ino, name: &[u8]) -> Vec<u8> {
    key(b'd', &[&parent.0.to_be_bytes(), name])
}
fn version_key(ino: Ino, vseq: u64) -> Vec<u8> {
    key(b'v', &[&ino.0.to_be_bytes(), &vseq.to_be_bytes()])
}
fn be_u64(b: &[u8]) -> Result<u64> {
    b.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Error::corrupt("catalog key", "bad length"))
}

/// Atomic group of catalog writes, by logical key (names in the clear);
/// [`Db::apply`] turns them into the stored keys and sealed values.
#[derive(Default)]
pub struct Batch(Vec<(Vec<u8>, Option<Vec<u8>>, bool)>);

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn insert(&mut self, k: Vec<u8>, v: impl Into<Vec<u8>>) {
        self.0.push((k, Some(v.into()), false));
    }
    fn remove(&mut self, k: Vec<u8>) {
        self.0.push((k, None, false));
    }
    pub fn put_inode(&mut self, ino: Ino, inode: &Inode) {
        self.insert(ino_key(b'i', ino), inode.encode());
    }
    pub fn del_inode(&mut self, ino: Ino) {
        self.remove(ino_key(b'i', ino));
    }
    pub fn put_dentry(&mut self, parent: Ino, name: &[u8], d: Dentry) {
        let mut v = d.ino.0.to_le_bytes().to_vec();
        v.push(d.kind as u8);
        self.insert(dentry_key(parent, name), v);
    }
    pub fn del_dentry(&mut self, parent: Ino, name: &[u8]) {
        self.remove(dentry_key(parent, name));
    }
    pub fn put_version(&mut self, ino: Ino, vseq: u64, v: &Version) {
        self.insert(version_key(ino, vseq), v.encode());
    }
    pub fn put_commit(&mut self, seq: CommitSeq, id: &ObjectId, time: Time) {
        let mut e = Enc::default();
        e.id(id).time(time);
        self.insert(ino_key(b'c', Ino(seq.0)), e.0);
        self.put_counter("head", seq.0);
    }
    /// The checkpoints commit `seq` completes (format 9; none: no key).
    pub fn put_checkpoints(&mut self, seq: CommitSeq, marks: &[CheckpointMark]) {
        if !marks.is_empty() {
            self.insert(
                ino_key(b'k', Ino(seq.0)),
                CheckpointMark::encode_list(marks),
            );
        }
    }
    pub fn put_index(&mut self, id: &ObjectId, e: &IndexEntry) {
        self.insert(key(b'o', &[&id.0]), e.encode());
    }
    /// The piece table of raw chunk `id` (`store::pieces`): a key older
    /// releases pass over, checked against the id at every use.
    pub fn put_pieces(&mut self, id: &ObjectId, table: &[u8]) {
        self.insert(key(b'p', &[&id.0]), table);
    }
    pub fn mark_dirty(&mut self, dir: Ino) {
        self.insert(ino_key(b'y', dir), &[][..]);
    }
    pub fn clear_dirty(&mut self, dir: Ino) {
        self.remove(ino_key(b'y', dir));
    }
    pub fn put_orphan(&mut self, ino: Ino) {
        self.insert(ino_key(b'z', ino), &[][..]);
    }
    pub fn del_orphan(&mut self, ino: Ino) {
        self.remove(ino_key(b'z', ino));
    }
    pub fn put_name(&mut self, name: &str, seq: CommitSeq) {
        self.insert(key(b'n', &[name.as_bytes()]), seq.0.to_le_bytes().to_vec());
    }
    pub fn del_name(&mut self, name: &str) {
        self.remove(key(b'n', &[name.as_bytes()]));
    }
    pub fn put_path_version(&mut self, path: &str, seq: CommitSeq, v: &PathVersion) {
        self.insert(path_key(path, Some(seq)), v.encode());
    }
    pub fn put_catalog_version(&mut self, version: u32) {
        let mut v = META_MAGIC.to_vec();
        v.extend_from_slice(&version.to_le_bytes());
        self.insert(key(b'F', &[b"format"]), v);
    }
    pub fn put_counter(&mut self, name: &str, v: u64) {
        self.insert(key(b'm', &[name.as_bytes()]), v.to_le_bytes().to_vec());
    }
    pub fn del_commit(&mut self, seq: CommitSeq) {
        self.remove(ino_key(b'c', Ino(seq.0)));
        self.remove(ino_key(b'k', Ino(seq.0)));
    }
    pub fn del_index(&mut self, id: &ObjectId) {
        self.remove(key(b'o', &[&id.0]));
        self.remove(key(b'p', &[&id.0]));
    }
    pub fn del_version(&mut self, ino: Ino, vseq: u64) {
        self.remove(version_key(ino, vseq));
    }
    /// Removes the path-version entry with the raw key `k` (from
    /// [`Db::path_version_keys`]).
    pub fn del_path_version_key(&mut self, k: &[u8]) {
        self.0.push((k.to_vec(), None, true));
    }
    /// Cumulative stored bytes as of time bucket `bucket` (growth samples).
    pub fn put_growth(&mut self, bucket: u64, total: u64) {
        self.insert(ino_key(b'g', Ino(bucket)), total.to_le_bytes().to_vec());
    }
    pub fn del_growth(&mut self, bucket: u64) {
        self.remove(ino_key(b'g', Ino(bucket)));
    }
    /// A prune whose deletions wait to reach the replica.
    pub fn put_replica_deletion(&mut self, no: u64, d: &ReplicaDeletion) {
        self.insert(ino_key(b'r', Ino(no)), d.encode());
    }
    pub fn del_replica_deletion(&mut self, no: u64) {
        self.remove(ino_key(b'r', Ino(no)));
    }
}

/// What one prune step took away, kept until the replica may lose it too
/// (`--replica-delete-after`): the commits it dropped and the packs it
/// deleted. Recorded after the copies a repack made are durable, so a
/// replication round that starts after it ships them before it applies
/// the deletion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaDeletion {
    pub time: Time,
    pub commits: Vec<CommitSeq>,
    pub packs: Vec<PackNo>,
}

impl ReplicaDeletion {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(1).time(self.time);
        e.u32(self.commits.len() as u32);
        for c in &self.commits {
            e.u64(c.0);
        }
        e.u32(self.packs.len() as u32);
        for p in &self.packs {
            e.u64(p.0);
        }
        e.0
    }
    fn decode(b: &[u8]) -> Result<ReplicaDeletion> {
        let mut d = Dec::new(b, "replica deletion");
        d.version(1)?;
        let time = d.time()?;
        let n = d.count(8)?;
        let commits = (0..n)
            .map(|_| d.u64().map(CommitSeq))
            .collect::<Result<_>>()?;
        let n = d.count(8)?;
        let packs = (0..n).map(|_| d.u64().map(PackNo)).collect::<Result<_>>()?;
        d.end()?;
        Ok(ReplicaDeletion {
            time,
            commits,
            packs,
        })
    }
}

/// The catalog of a store: one ordered key space in an LSM tree (fjall),
/// `STORE/catalog`. In an encrypted store every value but
/// the format record is sealed with its stored key as associated data,
/// and the keys that hold a name (directory entries, snapshot names, path
/// hashes) hold its keyed hash instead; the name itself rides in the
/// sealed value.
pub struct Db {
    ks: fjall::Keyspace,
    db: fjall::PartitionHandle,
    crypto: Crypto,
    /// The watermark file (none for a temporary catalog) and the number of
    /// the last flush, under the lock that orders flushes.
    durable: Option<std::path::PathBuf>,
    flushes: std::sync::Mutex<u64>,
    /// The directories marked dirty (`y` keys), mirrored in memory: every
    /// commit asks for them, and a scan of the journal's memtable walked
    /// every mark and unmark since its last flush (each create marks its
    /// directory), 6 % of the daemon's CPU in a `find` after 40,000 creates.
    dirty: std::sync::Mutex<std::collections::BTreeSet<Ino>>,
    /// Batches applied that changed a directory entry (`dentry_changes`).
    dentry_changes: std::sync::atomic::AtomicU64,
    /// Whether a plain store's values end with their check (layout 3 on;
    /// set once an older catalog's values all got theirs).
    checked: std::sync::atomic::AtomicBool,
}

/// The counter that numbers durable flushes (`watermark`).
const FLUSHES: &str = "flushes";

/// The catalog's directory in a store (format 10; before it, a sled
/// database in `meta`, moved here once by [`super::legacy`]).
pub const CATALOG_DIR: &str = "catalog";

/// The one partition (fjall's name for a key space) of a catalog.
const PARTITION: &str = "c";

/// The stored key of logical key `k` (the same in a plain store).
fn stored_key(c: &Crypto, k: &[u8]) -> Vec<u8> {
    if !c.is_encrypted() || k.is_empty() {
        return k.to_vec();
    }
    let (keep, name) = match k[0] {
        b'd' if k.len() >= 9 => k.split_at(9),
        b'n' => k.split_at(1),
        b'h' if k.len() >= 33 => {
            let (head, seq) = k.split_at(33);
            let mut out = vec![b'h'];
            out.extend_from_slice(&c.name_key(b"h", &head[1..]).expect("encrypted"));
            out.extend_from_slice(seq);
            return out;
        }
        _ => return k.to_vec(),
    };
    let mut out = keep.to_vec();
    out.extend_from_slice(&c.name_key(keep, name).expect("encrypted"));
    out
}

/// The format record's key and its value in a catalog this build makes.
pub(super) fn format_record() -> (Vec<u8>, Vec<u8>) {
    let mut v = META_MAGIC.to_vec();
    v.extend_from_slice(&CATALOG_VERSION.to_le_bytes());
    (key(b'F', &[b"format"]), v)
}

/// The message for a catalog that is there but cannot be used.
pub(super) fn damaged(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Store(format!(
        "{}: cannot open the metadata database ({why}); try `revfs recover` from a replica",
        path.display()
    ))
}

/// A catalog's fjall settings: sized for a daemon that shares two cores
/// with the job it serves.
pub(super) fn config(path: &Path) -> fjall::Config {
    fjall::Config::new(path)
        // revfs persists explicitly at every commit; the background fsync
        // only bounds how much metadata-only change a power cut can lose
        // (every batch is written to the OS at once, so kill -9 loses none).
        .fsync_ms(Some(500))
        .cache_size(32 << 20)
        .max_write_buffer_size(32 << 20)
        .flush_workers(1)
        .compaction_workers(1)
}

pub(super) fn open_partition(ks: &fjall::Keyspace) -> fjall::Result<fjall::PartitionHandle> {
    ks.open_partition(
        PARTITION,
        fjall::PartitionCreateOptions::default().max_memtable_size(16 << 20),
    )
}

impl Db {
    /// Opens (creating if `create`) the catalog of the store at `store`;
    /// a catalog of format 9 or older is moved to this layout first.
    pub fn open_store(store: &Path, create: bool, crypto: Crypto) -> Result<Db> {
        let path = store.join(CATALOG_DIR);
        if !create {
            super::legacy::move_to_lsm(store, &path)?;
        }
        Db::open_with(&path, create, crypto)
    }

    /// Opens (creating if `create`) the catalog at `path` of a store whose
    /// keys are `crypto`.
    pub fn open_with(path: &Path, create: bool, crypto: Crypto) -> Result<Db> {
        if !create && !path.exists() {
            return Err(Error::Store(format!(
                "{}: metadata database missing; run `revfs recover` from a replica",
                path.display()
            )));
        }
        let ks = super::contain::contained(|| config(path).open())
            .map_err(|why| damaged(path, format!("its journal cannot be read: {why}")))?
            .map_err(|e| damaged(path, e))?;
        let db = open_partition(&ks).map_err(|e| damaged(path, e))?;
        let (fkey, fval) = format_record();
        let version = match db.get(&fkey).map_err(|e| damaged(path, e))? {
            Some(v) => crate::format::check_magic(&v, META_MAGIC, "metadata database")?,
            None if create => {
                db.insert(fkey, fval)?;
                ks.persist(fjall::PersistMode::SyncAll)?;
                CATALOG_VERSION
            }
            None => {
                return Err(Error::Store(format!(
                    "{}: metadata database is damaged or not a revfs catalog (no format \
                     record); run `revfs recover` from a replica",
                    path.display()
                )));
            }
        };
        let mut me = Db {
            ks,
            db,
            crypto,
            durable: Some(super::watermark::path_of(path)),
            flushes: std::sync::Mutex::new(0),
            dirty: Default::default(),
            dentry_changes: Default::default(),
            checked: (version >= CHECKED_VERSION).into(),
        };
        let dirty = me.inos_with_prefix(b'y')?.into_iter().collect();
        *me.dirty.get_mut().unwrap_or_else(|p| p.into_inner()) = dirty;
        let held = me.counter(FLUSHES)?;
        super::watermark::check(path, held)?;
        *me.flushes.get_mut().unwrap_or_else(|p| p.into_inner()) = held;
        Ok(me)
    }

    /// A catalog that lives in memory and a temporary directory only (for
    /// a read-only mount of a replica, whose catalog is rebuilt at mount).
    pub fn temporary() -> Result<Db> {
        Db::temporary_with(Crypto::plain())
    }

    /// A temporary catalog of a store whose keys are `crypto`.
    pub fn temporary_with(crypto: Crypto) -> Result<Db> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("revfs-catalog-{}-{n}-{nanos}", std::process::id()));
        let ks = config(&path).temporary(true).open()?;
        let db = open_partition(&ks)?;
        let (fkey, fval) = format_record();
        db.insert(fkey, fval)?;
        Ok(Db {
            ks,
            db,
            crypto,
            durable: None,
            flushes: std::sync::Mutex::new(0),
            dirty: Default::default(),
            dentry_changes: Default::default(),
            checked: true.into(),
        })
    }

    /// The keys of the store this catalog belongs to.
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    pub fn apply(&self, b: Batch) -> Result<()> {
        if b.0.is_empty() {
            return Ok(());
        }
        let mut sb = self.ks.batch();
        let mut marks = Vec::new();
        let mut entries = false;
        for (k, v, stored) in b.0 {
            entries |= !stored && k.first() == Some(&b'd');
            if !stored && k.len() == 9 && k[0] == b'y' {
                marks.push((Ino(be_u64(&k[1..])?), v.is_some()));
            }
            let sk = if stored {
                k.clone()
            } else {
                stored_key(&self.crypto, &k)
            };
            match v {
                Some(v) => {
                    let v = self.seal_value(&k, &sk, v);
                    sb.insert(&self.db, sk, v)
                }
                None => sb.remove(&self.db, sk),
            }
        }
        sb.commit()?;
        if entries {
            self.dentry_changes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        for (dir, marked) in marks {
            if marked {
                dirty.insert(dir);
            } else {
                dirty.remove(&dir);
            }
        }
        Ok(())
    }

    /// The stored form of value `v` of logical key `k` (stored as `sk`).
    fn seal_value(&self, k: &[u8], sk: &[u8], mut v: Vec<u8>) -> Vec<u8> {
        if k.first() == Some(&b'F') {
            return v;
        }
        if !self.crypto.is_encrypted() {
            if self.is_checked() {
                let check = value_check(sk, &v);
                v.extend_from_slice(&check);
            }
            return v;
        }
        let name = match k[0] {
            b'd' => Some(&k[9..]),
            b'n' => Some(&k[1..]),
            _ => None,
        };
        let plain = match name {
            Some(n) => {
                let mut e = Enc::default();
                e.bytes16(n);
                e.0.extend_from_slice(&v);
                e.0
            }
            None => v,
        };
        self.crypto.seal(Domain::Meta, sk, &plain)
    }

    /// The plain value stored as `v` under stored key `sk`.
    fn open_value(&self, sk: &[u8], v: &[u8], what: &str) -> Result<Vec<u8>> {
        if !self.crypto.is_encrypted() {
            return self.plain_value(sk, v, what).map(<[u8]>::to_vec);
        }
        self.crypto
            .open(Domain::Meta, sk, v, what)
            .inspect_err(|e| tracing::error!("catalog: {e}"))
    }

    /// Whether plain values carry their check.
    fn is_checked(&self) -> bool {
        self.checked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A plain store's value `v` under stored key `sk` without its check,
    /// which must match; in an older catalog, as it is (or without the
    /// check that an interrupted upgrade gave it).
    fn plain_value<'a>(&self, sk: &[u8], v: &'a [u8], what: &str) -> Result<&'a [u8]> {
        match strip_check(sk, v) {
            Some(body) => Ok(body),
            None if !self.is_checked() => Ok(v),
            None => {
                let e = Error::corrupt(
                    format!("catalog {what}"),
                    "does not match its check (a damaged metadata block: `revfs recover` \
                     rebuilds the catalog from a replica)",
                );
                tracing::error!("{e}");
                Err(e)
            }
        }
    }

    /// Gives every value of an older plain catalog its check and raises
    /// the layout to [`CATALOG_VERSION`] (in batches: a value that has its
    /// check already, from an upgrade cut short, is left as it is; the
    /// layout is raised in the last batch, so a crash before it leaves an
    /// older catalog that reads both forms). How many values got one.
    pub fn add_value_checks(&self) -> Result<u64> {
        let mut done = 0u64;
        if !self.crypto.is_encrypted() && !self.is_checked() {
            let mut sb = self.ks.batch();
            for kv in self.db.iter() {
                let (k, v) = kv?;
                if k.first() == Some(&b'F') || strip_check(&k, &v).is_some() {
                    continue;
                }
                let mut nv = v.to_vec();
                nv.extend_from_slice(&value_check(&k, &v));
                sb.insert(&self.db, k, nv);
                done += 1;
                if done.is_multiple_of(CHECK_BATCH) {
                    sb.commit()?;
                    sb = self.ks.batch();
                }
            }
            sb.commit()?;
            crate::crashpoint::crash_point("catalog:checks-written");
        }
        // Checked from here: the flush's own counter too.
        self.checked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut b = Batch::default();
        b.put_catalog_version(CATALOG_VERSION);
        self.apply(b)?;
        self.flush()?;
        Ok(done)
    }

    /// Values of the catalog whose check (a plain store) or seal (an
    /// encrypted one) fails: one read of every value.
    pub fn damaged_values(&self) -> Result<u64> {
        let mut bad = 0;
        for kv in self.db.iter() {
            let (k, v) = kv?;
            if k.first() == Some(&b'F') {
                continue;
            }
            bad += u64::from(self.open_value(&k, &v, "value").is_err());
        }
        Ok(bad)
    }

    /// A name-carrying value (directory entry, snapshot name): (name, value).
    fn open_named(
        &self,
        sk: &[u8],
        logical_name: &[u8],
        v: &[u8],
        what: &str,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        if !self.crypto.is_encrypted() {
            let v = self.plain_value(sk, v, what)?;
            return Ok((logical_name.to_vec(), v.to_vec()));
        }
        let plain = self.open_value(sk, v, what)?;
        let mut d = Dec::new(&plain, "named catalog value");
        let name = d.bytes16()?;
        let rest = plain[2 + name.len()..].to_vec();
        Ok((name, rest))
    }

    /// `get` of logical key `k`: its plain value.
    fn get(&self, k: &[u8], what: &str) -> Result<Option<Vec<u8>>> {
        let sk = stored_key(&self.crypto, k);
        match self.db.get(&sk)? {
            None => Ok(None),
            Some(v) => self.open_value(&sk, &v, what).map(Some),
        }
    }

    /// Every (stored key, plain value) under logical prefix `p` (one that
    /// holds no name, so it is stored as it is).
    fn scan(
        &self,
        p: &[u8],
        what: &'static str,
    ) -> impl Iterator<Item = Result<(fjall::Slice, Vec<u8>)>> + '_ {
        self.db.prefix(p).map(move |kv| {
            let (k, v) = kv?;
            let v = self.open_value(&k, &v, what)?;
            Ok((k, v))
        })
    }

    /// The damaged blocks of the catalog's segments, found by reading
    /// every block and checking its checksum: fjall checks none on a read,
    /// so a flipped bit in a plain store's catalog is otherwise served.
    pub fn damaged_blocks(&self) -> Result<usize> {
        use fjall::AbstractTree;
        let tree = &self.db.tree;
        match super::contain::contained(std::panic::AssertUnwindSafe(|| tree.verify())) {
            Ok(r) => Ok(r.map_err(fjall::Error::from)?),
            Err(why) => Err(Error::Db(format!("a segment cannot be read: {why}"))),
        }
    }

    /// Makes every applied write durable, and numbers the flush (in the
    /// catalog, then in the watermark file once it is durable).
    pub fn flush(&self) -> Result<()> {
        let mut n = self.flushes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = &self.durable {
            let mut b = Batch::default();
            b.put_counter(FLUSHES, *n + 1);
            self.apply(b)?;
            self.ks.persist(fjall::PersistMode::SyncAll)?;
            *n += 1;
            super::watermark::write(file, *n)?;
        } else {
            self.ks.persist(fjall::PersistMode::SyncAll)?;
        }
        Ok(())
    }

    pub fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        self.get(&ino_key(b'i', ino), "inode record")?
            .map(|v| Inode::decode(&v))
            .transpose()
    }

    pub fn dentry(&self, parent: Ino, name: &[u8]) -> Result<Option<Dentry>> {
        let k = dentry_key(parent, name);
        let sk = stored_key(&self.crypto, &k);
        match self.db.get(&sk)? {
            None => Ok(None),
            Some(v) => {
                let (stored_name, v) = self.open_named(&sk, name, &v, "directory entry")?;
                if stored_name != name {
                    return Err(Error::corrupt(
                        "directory entry",
                        "name does not match its key",
                    ));
                }
                decode_dentry(&v).map(Some)
            }
        }
    }

    /// Entries of a directory in name-byte order.
    pub fn list_dir(&self, parent: Ino) -> Result<Vec<(Vec<u8>, Dentry)>> {
        let prefix = ino_key(b'd', parent);
        let mut out = Vec::new();
        for kv in self.db.prefix(&prefix) {
            let (k, v) = kv?;
            let (name, v) = self.open_named(&k, &k[prefix.len()..], &v, "directory entry")?;
            out.push((name, decode_dentry(&v)?));
        }
        if self.crypto.is_encrypted() {
            // Stored in keyed-hash order.
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(out)
    }

    pub fn dir_is_empty(&self, parent: Ino) -> Result<bool> {
        Ok(self
            .db
            .prefix(ino_key(b'd', parent))
            .next()
            .transpose()?
            .is_none())
    }

    pub fn versions(&self, ino: Ino) -> Result<Vec<(u64, Version)>> {
        let prefix = ino_key(b'v', ino);
        let mut out = Vec::new();
        for kv in self.scan(&prefix, "version record") {
            let (k, v) = kv?;
            out.push((be_u64(&k[prefix.len()..])?, Version::decode(&v)?));
        }
        Ok(out)
    }

    pub fn commit(&self, seq: CommitSeq) -> Result<Option<(ObjectId, Time)>> {
        match self.get(&ino_key(b'c', Ino(seq.0)), "commit record")? {
            None => Ok(None),
            Some(v) => {
                let mut d = Dec::new(&v, "commit record");
                Ok(Some((d.id()?, d.time()?)))
            }
        }
    }

    /// The first commit at or after `seq`: (seq, commit object id, time).
    pub fn commit_from(&self, seq: CommitSeq) -> Result<Option<(CommitSeq, ObjectId, Time)>> {
        let start = ino_key(b'c', Ino(seq.0));
        match self.db.range(start..ino_key(b'd', Ino(0))).next() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                let v = self.open_value(&k, &v, "commit record")?;
                let mut d = Dec::new(&v, "commit record");
                Ok(Some((CommitSeq(be_u64(&k[1..])?), d.id()?, d.time()?)))
            }
        }
    }

    /// Every recorded state of `path`, oldest first.
    pub fn path_versions(&self, path: &str) -> Result<Vec<(CommitSeq, PathVersion)>> {
        let prefix = stored_key(&self.crypto, &path_key(path, None));
        let mut out = Vec::new();
        for kv in self.scan(&prefix, "path version") {
            let (k, v) = kv?;
            out.push((
                CommitSeq(be_u64(&k[prefix.len()..])?),
                PathVersion::decode(&v)?,
            ));
        }
        Ok(out)
    }

    /// The catalog layout version of this catalog.
    pub fn catalog_version(&self) -> Result<u32> {
        match self.db.get(key(b'F', &[b"format"]))? {
            None => Ok(0),
            Some(v) => crate::format::check_magic(&v, META_MAGIC, "metadata database"),
        }
    }

    /// Every commit, oldest first: (seq, commit object id, time).
    pub fn commits(&self) -> Result<Vec<(CommitSeq, ObjectId, Time)>> {
        let mut out = Vec::new();
        for kv in self.scan(b"c", "commit record") {
            let (k, v) = kv?;
            let mut d = Dec::new(&v, "commit record");
            out.push((CommitSeq(be_u64(&k[1..])?), d.id()?, d.time()?));
        }
        Ok(out)
    }

    /// Whether any kept commit completes a checkpoint.
    pub fn has_checkpoints(&self) -> Result<bool> {
        Ok(self.db.prefix([b'k']).next().transpose()?.is_some())
    }

    /// Every commit that completes a checkpoint, oldest first.
    pub fn checkpoint_commits(&self) -> Result<Vec<(CommitSeq, Vec<CheckpointMark>)>> {
        let mut out = Vec::new();
        for kv in self.scan(b"k", "checkpoint record") {
            let (k, v) = kv?;
            out.push((
                CommitSeq(be_u64(&k[1..])?),
                CheckpointMark::decode_list(&v)?,
            ));
        }
        Ok(out)
    }

    /// Named snapshots: (name, commit).
    pub fn names(&self) -> Result<Vec<(String, CommitSeq)>> {
        let mut out = Vec::new();
        for kv in self.db.prefix([b'n']) {
            let (k, v) = kv?;
            let (name, v) = self.open_named(&k, &k[1..], &v, "snapshot name")?;
            let mut d = Dec::new(&v, "snapshot name");
            out.push((
                String::from_utf8_lossy(&name).into_owned(),
                CommitSeq(d.u64()?),
            ));
        }
        if self.crypto.is_encrypted() {
            out.sort();
        }
        Ok(out)
    }

    pub fn name(&self, name: &str) -> Result<Option<CommitSeq>> {
        let k = key(b'n', &[name.as_bytes()]);
        let sk = stored_key(&self.crypto, &k);
        match self.db.get(&sk)? {
            None => Ok(None),
            Some(v) => {
                let (stored, v) = self.open_named(&sk, name.as_bytes(), &v, "snapshot name")?;
                if stored != name.as_bytes() {
                    return Err(Error::corrupt(
                        "snapshot name",
                        "name does not match its key",
                    ));
                }
                Ok(Some(CommitSeq(Dec::new(&v, "snapshot name").u64()?)))
            }
        }
    }

    pub fn index(&self, id: &ObjectId) -> Result<Option<IndexEntry>> {
        self.get(&key(b'o', &[&id.0]), "object index entry")?
            .map(|v| IndexEntry::decode(&v))
            .transpose()
    }

    /// The piece table of chunk `id`, if it has one (unchecked).
    pub fn pieces(&self, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        self.get(&key(b'p', &[&id.0]), "piece table")
    }

    /// Every indexed object (for verify and status).
    pub fn index_all(&self) -> impl Iterator<Item = Result<(ObjectId, IndexEntry)>> + '_ {
        self.scan(b"o", "object index entry").map(|kv| {
            let (k, v) = kv?;
            let id: [u8; 32] = k[1..]
                .try_into()
                .map_err(|_| Error::corrupt("object index key", "bad length"))?;
            Ok((ObjectId(id), IndexEntry::decode(&v)?))
        })
    }

    /// Index entries whose id starts at or after `from` (8 bytes, big
    /// endian), in id order: where a paced walk over every object resumes.
    pub fn index_from(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<(ObjectId, IndexEntry)>> + '_ {
        let mut start = vec![b'o'];
        start.extend_from_slice(&from.to_be_bytes());
        self.db.range(start..b"p".to_vec()).map(move |kv| {
            let (k, v) = kv?;
            let v = self.open_value(&k, &v, "object index entry")?;
            let id: [u8; 32] = k[1..]
                .try_into()
                .map_err(|_| Error::corrupt("object index key", "bad length"))?;
            Ok((ObjectId(id), IndexEntry::decode(&v)?))
        })
    }

    /// How many applied batches changed a directory entry: a listing taken
    /// after reading it is current while it stays the same.
    pub fn dentry_changes(&self) -> u64 {
        self.dentry_changes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn dirty_dirs(&self) -> Result<Vec<Ino>> {
        let dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        Ok(dirty.iter().copied().collect())
    }

    pub fn orphans(&self) -> Result<Vec<Ino>> {
        self.inos_with_prefix(b'z')
    }

    /// Every inode record.
    pub fn inodes(&self) -> impl Iterator<Item = Result<Inode>> + '_ {
        self.scan(b"i", "inode record")
            .map(|kv| Inode::decode(&kv?.1))
    }

    /// Number of inode records.
    pub fn inode_count(&self) -> usize {
        self.db.prefix([b'i']).count()
    }

    /// Every version record of every file.
    pub fn all_versions(&self) -> impl Iterator<Item = Result<Version>> + '_ {
        self.scan(b"v", "version record")
            .map(|kv| Version::decode(&kv?.1))
    }

    fn inos_with_prefix(&self, p: u8) -> Result<Vec<Ino>> {
        let mut out = Vec::new();
        for kv in self.scan(&[p], "marker") {
            out.push(Ino(be_u64(&kv?.0[1..])?));
        }
        Ok(out)
    }

    /// Raw keys of every path-version entry of a commit at or before
    /// `upto`, and the sizes those entries add up to (one scan).
    pub fn path_versions_upto(&self, upto: CommitSeq) -> Result<(Vec<Vec<u8>>, u64)> {
        let (mut keys, mut bytes) = (Vec::new(), 0);
        for kv in self.scan(b"h", "path version") {
            let (k, v) = kv?;
            if k.len() == 41 && be_u64(&k[33..])? <= upto.0 {
                keys.push(k.to_vec());
                bytes += PathVersion::decode(&v)?.size;
            }
        }
        Ok((keys, bytes))
    }

    /// Every path-version entry, grouped by path (by its hash), oldest
    /// first within a group: (path hash, [(seq, version)]).
    pub fn path_version_groups(&self) -> Result<Vec<PathGroup>> {
        let mut out: Vec<PathGroup> = Vec::new();
        for kv in self.scan(b"h", "path version") {
            let (k, v) = kv?;
            if k.len() != 41 {
                return Err(Error::corrupt("path version key", "bad length"));
            }
            let h: [u8; 32] = k[1..33]
                .try_into()
                .map_err(|_| Error::corrupt("path key", "bad length"))?;
            let entry = (CommitSeq(be_u64(&k[33..])?), PathVersion::decode(&v)?);
            match out.last_mut() {
                Some((last, list)) if *last == h => list.push(entry),
                _ => out.push((h, vec![entry])),
            }
        }
        Ok(out)
    }

    /// Every version record: (ino, vseq, version).
    pub fn version_records(&self) -> Result<Vec<(Ino, u64, Version)>> {
        let mut out = Vec::new();
        for kv in self.scan(b"v", "version record") {
            let (k, v) = kv?;
            if k.len() != 17 {
                return Err(Error::corrupt("version key", "bad length"));
            }
            out.push((
                Ino(be_u64(&k[1..9])?),
                be_u64(&k[9..])?,
                Version::decode(&v)?,
            ));
        }
        Ok(out)
    }

    /// Growth samples from time bucket `from` on: (bucket, cumulative bytes).
    pub fn growth(&self, from: u64) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for kv in self
            .db
            .range(ino_key(b'g', Ino(from))..ino_key(b'h', Ino(0)))
        {
            let (k, v) = kv?;
            let v = self.open_value(&k, &v, "growth sample")?;
            out.push((be_u64(&k[1..])?, Dec::new(&v, "growth sample").u64()?));
        }
        Ok(out)
    }

    /// The newest growth sample before time bucket `bucket`.
    pub fn growth_before(&self, bucket: u64) -> Result<Option<(u64, u64)>> {
        match self
            .db
            .range(ino_key(b'g', Ino(0))..ino_key(b'g', Ino(bucket)))
            .next_back()
        {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                let v = self.open_value(&k, &v, "growth sample")?;
                Ok(Some((
                    be_u64(&k[1..])?,
                    Dec::new(&v, "growth sample").u64()?,
                )))
            }
        }
    }

    /// Prunes whose deletions have not reached the replica yet.
    pub fn replica_deletions(&self) -> Result<Vec<(u64, ReplicaDeletion)>> {
        let mut out = Vec::new();
        for kv in self.scan(b"r", "replica deletion") {
            let (k, v) = kv?;
            out.push((be_u64(&k[1..])?, ReplicaDeletion::decode(&v)?));
        }
        Ok(out)
    }

    /// Bytes the catalog's files take on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.ks.disk_space()
    }

    pub fn counter(&self, name: &str) -> Result<u64> {
        match self.get(&key(b'm', &[name.as_bytes()]), "counter")? {
            None => Ok(0),
            Some(v) => {
                let mut d = Dec::new(&v, "counter");
                d.u64()
            }
        }
    }
}

pub fn decode_dentry(v: &[u8]) -> Result<Dentry> {
    let mut d = Dec::new(v, "directory entry");
    let ino = Ino(d.u64()?);
    let kind = FileType::from_u8(d.u8()?).ok_or_else(|| d.bad("bad file type"))?;
    d.end()?;
    Ok(Dentry { ino, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn encrypted() -> Db {
        Db::temporary_with(Crypto::new(&MasterKey::random().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn inode_records_of_version_1_read_as_before_and_version_2_counts_links() {
        let node = Node::new(FileType::Regular, 0o644, 0, 0);
        // Version 1 (format 7 and before): one parent entry a link.
        let mut e = Enc::default();
        e.u8(1);
        node.encode(&mut e);
        e.u32(4);
        for p in [5u64, 9, 5, 5] {
            e.u64(p);
        }
        let old = Inode::decode(&e.0).unwrap();
        assert_eq!(old.parents.first(), Some(&Ino(5)));
        assert_eq!(old.parents.dirs().collect::<Vec<_>>(), vec![Ino(5), Ino(9)]);
        // Version 2: the same as two pairs, whatever the number of links.
        let mut many = old.clone();
        for _ in 0..60_000 {
            many.parents.push(Ino(5));
        }
        let b = many.encode();
        assert_eq!(b.len(), old.encode().len(), "a link costs no record bytes");
        assert_eq!(Inode::decode(&b).unwrap(), many);
        assert_eq!(Inode::decode(&old.encode()).unwrap(), old);
        let mut p = old.parents.clone();
        assert!(p.remove_one(Ino(9)) && !p.remove_one(Ino(9)));
        p.moved(Ino(5), Ino(2));
        assert_eq!(p.dirs().collect::<Vec<_>>(), vec![Ino(5), Ino(2)]);
    }

    #[test]
    fn an_encrypted_catalog_holds_no_name_and_refuses_any_changed_value() {
        let db = encrypted();
        let mut node = Node::new(FileType::Regular, 0o600, 0, 0);
        node.target = b"secret-target-name".to_vec();
        let mut b = Batch::default();
        b.put_inode(
            Ino(7),
            &Inode {
                node,
                parents: Parents::one(Ino::ROOT),
            },
        );
        for name in [&b"zeta-secret-file"[..], b"alpha-secret-file"] {
            b.put_dentry(
                Ino::ROOT,
                name,
                Dentry {
                    ino: Ino(7),
                    kind: FileType::Regular,
                },
            );
        }
        b.put_name("secret-snapshot-name", CommitSeq(3));
        b.put_path_version(
            "dir/secret-path",
            CommitSeq(3),
            &PathVersion {
                time: Time::now(),
                size: 5,
                content: None,
            },
        );
        db.apply(b).unwrap();
        let names: Vec<Vec<u8>> = db
            .list_dir(Ino::ROOT)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            names,
            [b"alpha-secret-file".to_vec(), b"zeta-secret-file".to_vec()]
        );
        assert_eq!(
            db.dentry(Ino::ROOT, b"zeta-secret-file")
                .unwrap()
                .unwrap()
                .ino,
            Ino(7)
        );
        assert_eq!(db.name("secret-snapshot-name").unwrap(), Some(CommitSeq(3)));
        assert_eq!(db.path_versions("dir/secret-path").unwrap().len(), 1);
        let raw: Vec<(fjall::Slice, fjall::Slice)> = db.db.iter().map(|kv| kv.unwrap()).collect();
        for (k, v) in &raw {
            for secret in [&b"secret"[..], b"dir/"] {
                assert!(!k.windows(secret.len()).any(|w| w == secret), "{k:?}");
                assert!(!v.windows(secret.len()).any(|w| w == secret), "{v:?}");
            }
        }
        // Every flipped bit of every sealed value, and a value moved to
        // another key, fail; the good value reads again after.
        let reads_ok = |db: &Db| {
            db.inode(Ino(7)).is_ok()
                && db.list_dir(Ino::ROOT).is_ok()
                && db.name("secret-snapshot-name").is_ok()
                && db.path_versions("dir/secret-path").is_ok()
        };
        for (k, v) in raw.iter().filter(|(k, _)| k[0] != b'F') {
            for bit in (0..v.len() * 8).step_by(7) {
                let mut bad = v.to_vec();
                bad[bit / 8] ^= 1 << (bit % 8);
                db.db.insert(k.clone(), bad).unwrap();
                assert!(!reads_ok(&db), "key {k:?} bit {bit} was accepted");
            }
            db.db.insert(k.clone(), v.clone()).unwrap();
            assert!(reads_ok(&db));
        }
        let (d1, d2): (Vec<_>, Vec<_>) = raw.iter().filter(|(k, _)| k[0] == b'd').cloned().unzip();
        db.db.insert(d1[0].clone(), d2[1].clone()).unwrap();
        assert!(db.list_dir(Ino::ROOT).is_err());
    }

    /// A new plain catalog in a temporary directory: (the directory, the
    /// catalog's path, the catalog).
    fn plain_on_disk() -> (tempfile::TempDir, std::path::PathBuf, Db) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CATALOG_DIR);
        let db = Db::open_with(&path, true, Crypto::plain()).unwrap();
        (dir, path, db)
    }

    #[test]
    fn dirty_directories_are_the_stored_marks_across_reopens() {
        let (_dir, path, db) = plain_on_disk();
        let mut b = Batch::default();
        for d in [9, 3, 5] {
            b.mark_dirty(Ino(d));
        }
        b.clear_dirty(Ino(5));
        db.apply(b).unwrap();
        assert_eq!(db.dirty_dirs().unwrap(), [Ino(3), Ino(9)]);
        db.flush().unwrap();
        drop(db);
        let db = Db::open_with(&path, false, Crypto::plain()).unwrap();
        assert_eq!(db.dirty_dirs().unwrap(), [Ino(3), Ino(9)]);
        let mut b = Batch::default();
        b.clear_dirty(Ino(9));
        b.mark_dirty(Ino(5));
        db.apply(b).unwrap();
        db.flush().unwrap();
        drop(db);
        let db = Db::open_with(&path, false, Crypto::plain()).unwrap();
        assert_eq!(db.dirty_dirs().unwrap(), [Ino(3), Ino(5)]);
        assert_eq!(db.inos_with_prefix(b'y').unwrap(), [Ino(3), Ino(5)]);
    }

    #[test]
    fn a_plain_catalog_refuses_any_changed_value_or_key_and_verify_counts_them() {
        let (_dir, _path, db) = plain_on_disk();
        let mut b = Batch::default();
        b.put_inode(
            Ino(7),
            &Inode {
                node: Node::new(FileType::Regular, 0o600, 0, 0),
                parents: Parents::one(Ino::ROOT),
            },
        );
        let d = Dentry {
            ino: Ino(7),
            kind: FileType::Regular,
        };
        b.put_dentry(Ino::ROOT, b"weights.bin", d);
        b.put_name("snap", CommitSeq(3));
        b.put_counter("head", 3);
        b.mark_dirty(Ino(9));
        db.apply(b).unwrap();
        let reads_ok = |db: &Db| {
            db.inode(Ino(7)).is_ok_and(|i| i.is_some())
                && db.list_dir(Ino::ROOT).is_ok_and(|l| l.len() == 1)
                && db
                    .dentry(Ino::ROOT, b"weights.bin")
                    .is_ok_and(|d| d.is_some())
                && db.name("snap").is_ok_and(|n| n == Some(CommitSeq(3)))
                && db.counter("head").is_ok_and(|n| n == 3)
                && db.inos_with_prefix(b'y').is_ok_and(|d| d == [Ino(9)])
        };
        assert!(reads_ok(&db));
        assert_eq!(db.damaged_values().unwrap(), 0);
        let raw: Vec<(fjall::Slice, fjall::Slice)> = db.db.iter().map(|kv| kv.unwrap()).collect();
        for (k, v) in raw.iter().filter(|(k, _)| k[0] != b'F') {
            assert!(v.len() >= CHECK_LEN, "{k:?}: {v:?}");
            for bit in 0..v.len() * 8 {
                let mut bad = v.to_vec();
                bad[bit / 8] ^= 1 << (bit % 8);
                db.db.insert(k.clone(), bad).unwrap();
                assert!(!reads_ok(&db), "key {k:?} bit {bit} was accepted");
                assert_eq!(db.damaged_values().unwrap(), 1);
            }
            db.db.insert(k.clone(), v.clone()).unwrap();
            assert!(reads_ok(&db));
        }
        // A name changed in the key (a file listed under a name no one
        // wrote): its value's check fails.
        let (k, v) = raw.iter().find(|(k, _)| k[0] == b'd').unwrap();
        let mut renamed = k.to_vec();
        *renamed.last_mut().unwrap() ^= 0x04;
        db.db.remove(k.clone()).unwrap();
        db.db.insert(renamed, v.clone()).unwrap();
        assert!(db.list_dir(Ino::ROOT).is_err());
        assert_eq!(db.damaged_values().unwrap(), 1);
    }

    #[test]
    fn an_unchecked_catalog_reads_both_forms_and_gets_its_checks_once() {
        let (_dir, path, db) = plain_on_disk();
        db.checked.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut b = Batch::default();
        b.put_counter("head", 5);
        b.put_name("snap", CommitSeq(5));
        b.put_catalog_version(2);
        db.apply(b).unwrap();
        db.flush().unwrap();
        drop(db);
        let db = Db::open_with(&path, false, Crypto::plain()).unwrap();
        assert!(!db.is_checked());
        assert_eq!(db.catalog_version().unwrap(), 2);
        assert_eq!(db.counter("head").unwrap(), 5);
        // One value checked already (an upgrade cut short) reads the same.
        let k = key(b'm', &[b"head"]);
        let mut v = 5u64.to_le_bytes().to_vec();
        v.extend_from_slice(&value_check(&k, &v));
        db.db.insert(&k, v).unwrap();
        assert_eq!(db.counter("head").unwrap(), 5);
        // The name and the flush counter lacked one, the head did not.
        assert_eq!(db.add_value_checks().unwrap(), 2);
        assert_eq!(db.catalog_version().unwrap(), CATALOG_VERSION);
        drop(db);
        let db = Db::open_with(&path, false, Crypto::plain()).unwrap();
        assert!(db.is_checked());
        assert_eq!(db.counter("head").unwrap(), 5);
        assert_eq!(db.name("snap").unwrap(), Some(CommitSeq(5)));
        assert_eq!(db.damaged_values().unwrap(), 0);
    }

    #[test]
    fn a_flipped_bit_in_a_segment_of_a_plain_catalog_is_found_by_damaged_blocks() {
        let (_dir, path, db) = plain_on_disk();
        let mut b = Batch::default();
        for i in 0..5000u32 {
            let name = format!("file-{:08x}-{i}", i.wrapping_mul(2_654_435_761));
            let d = Dentry {
                ino: Ino(u64::from(i) + 10),
                kind: FileType::Regular,
            };
            b.put_dentry(Ino::ROOT, name.as_bytes(), d);
        }
        db.apply(b).unwrap();
        db.flush().unwrap();
        db.db.rotate_memtable_and_wait().unwrap();
        assert_eq!(db.damaged_blocks().unwrap(), 0);
        drop(db);
        let segs: Vec<_> =
            std::fs::read_dir(path.join("partitions").join(PARTITION).join("segments"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
        assert_eq!(segs.len(), 1, "{segs:?}");
        let mut bytes = std::fs::read(&segs[0]).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(&segs[0], bytes).unwrap();
        let db = Db::open_with(&path, false, Crypto::plain()).unwrap();
        assert_eq!(db.damaged_blocks().unwrap(), 1);
    }
}
