//! Every sled call of revfs lives here, behind typed keys and records (the
//! key prefix table is in `format`). Writes that must be atomic together go
//! through a [`Batch`]; `flush` is the only thing that makes them durable.

use crate::error::{Error, Result};
use crate::format::{Dec, Enc, FileType, META_MAGIC, Node, Time};
use crate::ids::{CommitSeq, Ino, ObjectId, ObjectKind, PackNo};
use std::path::Path;

/// The catalog layout this build writes: 2 adds the path-version index
/// ("h") and the status counters; a version-1 catalog is upgraded in place
/// when a store is opened (`engine::history::upgrade`).
pub const CATALOG_VERSION: u32 = 2;

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
    /// One entry per link (a directory has exactly one).
    pub parents: Vec<Ino>,
}

impl Inode {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(1);
        self.node.encode(&mut e);
        e.u32(self.parents.len() as u32);
        for p in &self.parents {
            e.u64(p.0);
        }
        e.0
    }
    pub fn decode(b: &[u8]) -> Result<Inode> {
        let mut d = Dec::new(b, "inode record");
        d.version(1)?;
        let node = Node::decode(&mut d)?;
        let n = d.count(8)?;
        let parents = (0..n).map(|_| d.u64().map(Ino)).collect::<Result<_>>()?;
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

/// The hash a path's entries are grouped under in the path-version index.
pub fn path_hash(path: &str) -> [u8; 32] {
    *blake3::hash(path.as_bytes()).as_bytes()
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

/// Atomic group of catalog writes.
#[derive(Default)]
pub struct Batch(sled::Batch);

impl Batch {
    pub fn put_inode(&mut self, ino: Ino, inode: &Inode) {
        self.0.insert(ino_key(b'i', ino), inode.encode());
    }
    pub fn del_inode(&mut self, ino: Ino) {
        self.0.remove(ino_key(b'i', ino));
    }
    pub fn put_dentry(&mut self, parent: Ino, name: &[u8], d: Dentry) {
        let mut v = d.ino.0.to_le_bytes().to_vec();
        v.push(d.kind as u8);
        self.0.insert(dentry_key(parent, name), v);
    }
    pub fn del_dentry(&mut self, parent: Ino, name: &[u8]) {
        self.0.remove(dentry_key(parent, name));
    }
    pub fn put_version(&mut self, ino: Ino, vseq: u64, v: &Version) {
        self.0.insert(version_key(ino, vseq), v.encode());
    }
    pub fn put_commit(&mut self, seq: CommitSeq, id: &ObjectId, time: Time) {
        let mut e = Enc::default();
        e.id(id).time(time);
        self.0.insert(ino_key(b'c', Ino(seq.0)), e.0);
        self.put_counter("head", seq.0);
    }
    pub fn put_index(&mut self, id: &ObjectId, e: &IndexEntry) {
        self.0.insert(key(b'o', &[&id.0]), e.encode());
    }
    pub fn mark_dirty(&mut self, dir: Ino) {
        self.0.insert(ino_key(b'y', dir), &[][..]);
    }
    pub fn clear_dirty(&mut self, dir: Ino) {
        self.0.remove(ino_key(b'y', dir));
    }
    pub fn put_orphan(&mut self, ino: Ino) {
        self.0.insert(ino_key(b'z', ino), &[][..]);
    }
    pub fn del_orphan(&mut self, ino: Ino) {
        self.0.remove(ino_key(b'z', ino));
    }
    pub fn put_name(&mut self, name: &str, seq: CommitSeq) {
        self.0
            .insert(key(b'n', &[name.as_bytes()]), seq.0.to_le_bytes().to_vec());
    }
    pub fn del_name(&mut self, name: &str) {
        self.0.remove(key(b'n', &[name.as_bytes()]));
    }
    pub fn put_path_version(&mut self, path: &str, seq: CommitSeq, v: &PathVersion) {
        self.0.insert(path_key(path, Some(seq)), v.encode());
    }
    pub fn put_catalog_version(&mut self, version: u32) {
        let mut v = META_MAGIC.to_vec();
        v.extend_from_slice(&version.to_le_bytes());
        self.0.insert(key(b'F', &[b"format"]), v);
    }
    pub fn put_counter(&mut self, name: &str, v: u64) {
        self.0
            .insert(key(b'm', &[name.as_bytes()]), v.to_le_bytes().to_vec());
    }
    pub fn del_commit(&mut self, seq: CommitSeq) {
        self.0.remove(ino_key(b'c', Ino(seq.0)));
    }
    pub fn del_index(&mut self, id: &ObjectId) {
        self.0.remove(key(b'o', &[&id.0]));
    }
    pub fn del_version(&mut self, ino: Ino, vseq: u64) {
        self.0.remove(version_key(ino, vseq));
    }
    /// Removes the path-version entry with the raw key `k` (from
    /// [`Db::path_version_keys`]).
    pub fn del_path_version_key(&mut self, k: &[u8]) {
        self.0.remove(k);
    }
    /// Cumulative stored bytes as of time bucket `bucket` (growth samples).
    pub fn put_growth(&mut self, bucket: u64, total: u64) {
        self.0
            .insert(ino_key(b'g', Ino(bucket)), total.to_le_bytes().to_vec());
    }
    pub fn del_growth(&mut self, bucket: u64) {
        self.0.remove(ino_key(b'g', Ino(bucket)));
    }
    /// A prune whose deletions wait to reach the replica.
    pub fn put_replica_deletion(&mut self, no: u64, d: &ReplicaDeletion) {
        self.0.insert(ino_key(b'r', Ino(no)), d.encode());
    }
    pub fn del_replica_deletion(&mut self, no: u64) {
        self.0.remove(ino_key(b'r', Ino(no)));
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

/// The sled catalog of a store.
pub struct Db {
    db: sled::Db,
}

impl Db {
    /// Opens (creating if `create`) the catalog at `path`.
    pub fn open(path: &Path, create: bool) -> Result<Db> {
        if !create && !path.exists() {
            return Err(Error::Store(format!(
                "{}: metadata database missing; run `revfs recover` from a replica",
                path.display()
            )));
        }
        let db = sled::Config::new()
            .path(path)
            // revfs flushes explicitly at every commit; the background flush
            // only bounds how much metadata-only change a crash can lose.
            .flush_every_ms(Some(500))
            // sled caches 1 GiB by default: the daemon's memory would grow
            // with the store (an index entry per chunk) up to that.
            .cache_capacity(64 << 20)
            .open()
            .map_err(|e| {
                Error::Store(format!(
                    "{}: cannot open the metadata database ({e}); \
                     try `revfs recover` from a replica",
                    path.display()
                ))
            })?;
        let fkey = key(b'F', &[b"format"]);
        match db.get(&fkey)? {
            Some(v) => {
                crate::format::check_magic(&v, META_MAGIC, "metadata database")?;
            }
            None if create => {
                let mut v = META_MAGIC.to_vec();
                v.extend_from_slice(&CATALOG_VERSION.to_le_bytes());
                db.insert(fkey, v)?;
            }
            None => {
                return Err(Error::Store(format!(
                    "{}: metadata database is damaged or not a revfs catalog (no format \
                     record); run `revfs recover` from a replica",
                    path.display()
                )));
            }
        }
        Ok(Db { db })
    }

    /// A catalog that lives in memory and a temporary file only (for a
    /// read-only mount of a replica, whose catalog is rebuilt at mount).
    pub fn temporary() -> Result<Db> {
        let db = sled::Config::new().temporary(true).open()?;
        let mut v = META_MAGIC.to_vec();
        v.extend_from_slice(&CATALOG_VERSION.to_le_bytes());
        db.insert(key(b'F', &[b"format"]), v)?;
        Ok(Db { db })
    }

    pub fn apply(&self, b: Batch) -> Result<()> {
        self.db.apply_batch(b.0)?;
        Ok(())
    }

    /// Makes every applied write durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        self.db
            .get(ino_key(b'i', ino))?
            .map(|v| Inode::decode(&v))
            .transpose()
    }

    pub fn dentry(&self, parent: Ino, name: &[u8]) -> Result<Option<Dentry>> {
        match self.db.get(dentry_key(parent, name))? {
            None => Ok(None),
            Some(v) => decode_dentry(&v).map(Some),
        }
    }

    /// Entries of a directory in name-byte order.
    pub fn list_dir(&self, parent: Ino) -> Result<Vec<(Vec<u8>, Dentry)>> {
        let prefix = ino_key(b'd', parent);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv?;
            out.push((k[prefix.len()..].to_vec(), decode_dentry(&v)?));
        }
        Ok(out)
    }

    pub fn dir_is_empty(&self, parent: Ino) -> Result<bool> {
        Ok(self
            .db
            .scan_prefix(ino_key(b'd', parent))
            .next()
            .transpose()?
            .is_none())
    }

    pub fn versions(&self, ino: Ino) -> Result<Vec<(u64, Version)>> {
        let prefix = ino_key(b'v', ino);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv?;
            out.push((be_u64(&k[prefix.len()..])?, Version::decode(&v)?));
        }
        Ok(out)
    }

    pub fn commit(&self, seq: CommitSeq) -> Result<Option<(ObjectId, Time)>> {
        match self.db.get(ino_key(b'c', Ino(seq.0)))? {
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
                let mut d = Dec::new(&v, "commit record");
                Ok(Some((CommitSeq(be_u64(&k[1..])?), d.id()?, d.time()?)))
            }
        }
    }

    /// Every recorded state of `path`, oldest first.
    pub fn path_versions(&self, path: &str) -> Result<Vec<(CommitSeq, PathVersion)>> {
        let prefix = path_key(path, None);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
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
        for kv in self.db.scan_prefix([b'c']) {
            let (k, v) = kv?;
            let mut d = Dec::new(&v, "commit record");
            out.push((CommitSeq(be_u64(&k[1..])?), d.id()?, d.time()?));
        }
        Ok(out)
    }

    /// Named snapshots: (name, commit).
    pub fn names(&self) -> Result<Vec<(String, CommitSeq)>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([b'n']) {
            let (k, v) = kv?;
            let mut d = Dec::new(&v, "snapshot name");
            out.push((
                String::from_utf8_lossy(&k[1..]).into_owned(),
                CommitSeq(d.u64()?),
            ));
        }
        Ok(out)
    }

    pub fn name(&self, name: &str) -> Result<Option<CommitSeq>> {
        match self.db.get(key(b'n', &[name.as_bytes()]))? {
            None => Ok(None),
            Some(v) => Ok(Some(CommitSeq(Dec::new(&v, "snapshot name").u64()?))),
        }
    }

    pub fn index(&self, id: &ObjectId) -> Result<Option<IndexEntry>> {
        self.db
            .get(key(b'o', &[&id.0]))?
            .map(|v| IndexEntry::decode(&v))
            .transpose()
    }

    /// Every indexed object (for verify and status).
    pub fn index_all(&self) -> impl Iterator<Item = Result<(ObjectId, IndexEntry)>> + '_ {
        self.db.scan_prefix([b'o']).map(|kv| {
            let (k, v) = kv?;
            let id: [u8; 32] = k[1..]
                .try_into()
                .map_err(|_| Error::corrupt("object index key", "bad length"))?;
            Ok((ObjectId(id), IndexEntry::decode(&v)?))
        })
    }

    pub fn dirty_dirs(&self) -> Result<Vec<Ino>> {
        self.inos_with_prefix(b'y')
    }

    pub fn orphans(&self) -> Result<Vec<Ino>> {
        self.inos_with_prefix(b'z')
    }

    /// Every inode record.
    pub fn inodes(&self) -> impl Iterator<Item = Result<Inode>> + '_ {
        self.db
            .scan_prefix([b'i'])
            .values()
            .map(|v| Inode::decode(&v?))
    }

    /// Number of inode records.
    pub fn inode_count(&self) -> usize {
        self.db.scan_prefix([b'i']).count()
    }

    /// Every version record of every file.
    pub fn all_versions(&self) -> impl Iterator<Item = Result<Version>> + '_ {
        self.db
            .scan_prefix([b'v'])
            .values()
            .map(|v| Version::decode(&v?))
    }

    fn inos_with_prefix(&self, p: u8) -> Result<Vec<Ino>> {
        let mut out = Vec::new();
        for k in self.db.scan_prefix([p]).keys() {
            out.push(Ino(be_u64(&k?[1..])?));
        }
        Ok(out)
    }

    /// Raw keys of every path-version entry of a commit at or before
    /// `upto`, and the sizes those entries add up to (one scan).
    pub fn path_versions_upto(&self, upto: CommitSeq) -> Result<(Vec<Vec<u8>>, u64)> {
        let (mut keys, mut bytes) = (Vec::new(), 0);
        for kv in self.db.scan_prefix([b'h']) {
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
        for kv in self.db.scan_prefix([b'h']) {
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
        for kv in self.db.scan_prefix([b'v']) {
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
        for kv in self.db.scan_prefix([b'r']) {
            let (k, v) = kv?;
            out.push((be_u64(&k[1..])?, ReplicaDeletion::decode(&v)?));
        }
        Ok(out)
    }

    /// Bytes sled's files take on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    pub fn counter(&self, name: &str) -> Result<u64> {
        match self.db.get(key(b'm', &[name.as_bytes()]))? {
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
