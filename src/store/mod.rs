//! Content-addressed objects: BLAKE3 ids, lz4, packs, the object index.
//!
//! Durability promise of [`ObjectStore`]:
//! * `put` appends the object to the open pack (or finds it already stored)
//!   and makes it readable at once; it is *not* durable and *not* indexed in
//!   the catalog yet; its location sits in the pending map.
//! * `sync` makes every object put before the call durable.
//! * `pending` + `published` move locations into the catalog: the commit
//!   protocol calls `pending()` before `sync()` and writes the entries in the
//!   same catalog batch as the metadata that references them.
//!
//! Every read is verified against the id; a mismatch is a `Corrupt` error
//! with a log line, never wrong bytes. The first failed write or sync
//! poisons the store for writing until it is reopened (reads go on).

pub mod cache;
pub mod codec;
pub mod delta;
pub mod pack;
pub mod pieces;
pub mod residual;
pub mod space;

use crate::catalog::db::{Db, IndexEntry};
use crate::chunker::Chunker;
use crate::crypto::{Crypto, Domain};
use crate::error::{Error, Result};
use crate::format::{CODEC_DELTA, CODEC_SEALED, RECORD_HEADER_LEN, RecordHeader};
use crate::ids::{ObjectId, ObjectKind, PackNo};
use crate::reach::IdSet;
use lru::LruCache;
use pack::{PackReader, PackWriter};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The catalog counter that keeps pack numbers unique.
pub const NEXT_PACK: &str = "next_pack";

/// Delta bases a read follows at most (a chain is kept far shorter,
/// `retention::deltas`; this only stops a damaged or circular one).
const MAX_DELTA_DEPTH: usize = 64;
/// Delta records whose bases are remembered (`bases`).
const BASES_ENTRIES: usize = 1 << 16;

pub struct ObjectStore {
    dir: PathBuf,
    db: Arc<Db>,
    writer: Mutex<PackWriter>,
    pending: Mutex<HashMap<ObjectId, IndexEntry>>,
    /// The piece tables of pending raw chunks ([`pieces`]), indexed with them.
    tables: Mutex<HashMap<ObjectId, Vec<u8>>>,
    /// Pending ids that are new copies of objects already indexed (heals),
    /// not new objects.
    rewritten: Mutex<std::collections::HashSet<ObjectId>>,
    readers: Mutex<HashMap<PackNo, Arc<PackReader>>>,
    /// Decoded objects (`cache`), bounded by bytes.
    cache: Mutex<cache::Cache>,
    /// Chunks being loaded (each loaded once when readers meet).
    loading: cache::InFlight,
    /// The bases of delta records read so far, with the record's entry.
    bases: Mutex<LruCache<ObjectId, (IndexEntry, Vec<ObjectId>)>>,
    poison: Mutex<Option<String>>,
    read_only: bool,
    /// The replica, for healing corrupt reads.
    heal_from: Mutex<Vec<Arc<dyn PackSource>>>,
    /// While a prune runs: every id `put` found already stored (a new
    /// reference to an old object), which the prune must keep.
    gc: Mutex<Option<IdSet>>,
    /// The free space new data leaves, and the wait for it.
    pub space: space::Space,
    /// Where data is cut into chunks (keyed in an encrypted store).
    chunker: Chunker,
    /// Where the packs are read from when they are not in `dir`.
    remote: Option<Arc<dyn PackSource>>,
    /// What is counted as it happens (heals, failed reads, commits).
    pub stats: Arc<crate::metrics::Stats>,
}

/// Where pack bytes come from when they are not (good) local files: a
/// replica in a bucket that a read-only store is served from
/// (`replica::remote`), or a replica a damaged record is read again from
/// (`replica::HealFrom`).
pub trait PackSource: Send + Sync {
    /// `len` bytes of pack `pack` from `offset`; `fresh` asks for them
    /// from the source itself, past any cache (a cached copy was bad).
    fn read_at(&self, pack: PackNo, offset: u64, len: usize, fresh: bool) -> Result<Vec<u8>>;

    /// What to call the source in messages.
    fn describe(&self) -> String;

    /// Bytes of pack data the source holds (0 when it cannot say).
    fn stored_bytes(&self) -> u64 {
        0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind;
    // keep serving rather than cascading the panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ObjectStore {
    pub fn open(packs_dir: &Path, db: Arc<Db>, read_only: bool) -> Result<ObjectStore> {
        let mut writer = PackWriter::new(packs_dir)?;
        // A pack number is never used twice, also after prune deleted the
        // newest packs (a replica may still hold them).
        writer.skip_to(PackNo(db.counter(NEXT_PACK)?));
        Ok(ObjectStore::with(packs_dir, db, read_only, writer, None))
    }

    /// A read-only store whose packs are read from `source`, whose object
    /// index `db` already holds; `local` is the local directory that
    /// stands for its packs' (its free space is what statfs shows).
    pub fn open_remote(source: Arc<dyn PackSource>, db: Arc<Db>, local: &Path) -> ObjectStore {
        let writer = PackWriter::unused(local);
        ObjectStore::with(local, db, true, writer, Some(source))
    }

    /// Bytes the packs take (a bucket's, for a store read from one).
    pub fn stored_bytes(&self) -> Result<u64> {
        match &self.remote {
            Some(src) => Ok(src.stored_bytes()),
            None => pack::packs_bytes(&self.dir),
        }
    }

    fn with(
        packs_dir: &Path,
        db: Arc<Db>,
        read_only: bool,
        writer: PackWriter,
        remote: Option<Arc<dyn PackSource>>,
    ) -> ObjectStore {
        ObjectStore {
            remote,
            stats: Arc::default(),
            chunker: Chunker::new(db.crypto()),
            dir: packs_dir.to_path_buf(),
            writer: Mutex::new(writer),
            db,
            pending: Mutex::new(HashMap::new()),
            tables: Mutex::new(HashMap::new()),
            rewritten: Mutex::new(Default::default()),
            readers: Mutex::new(HashMap::new()),
            cache: Mutex::new(cache::Cache::new(cache::default_bytes())),
            loading: cache::InFlight::default(),
            bases: Mutex::new(LruCache::new(
                NonZeroUsize::new(BASES_ENTRIES).expect("non-zero"),
            )),
            poison: Mutex::new(None),
            read_only,
            heal_from: Mutex::new(Vec::new()),
            gc: Mutex::new(None),
            space: space::Space::default(),
        }
    }

    /// Whether written pack pages leave the page cache once on the disk
    /// ([`PackWriter::set_drop_behind`]).
    pub fn set_drop_behind(&self, on: bool) {
        lock(&self.writer).set_drop_behind(on);
    }

    /// Bytes of decoded objects kept in memory at most.
    pub fn set_cache_limit(&self, bytes: u64) {
        lock(&self.cache).set_limit(bytes);
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if let Some(why) = lock(&self.poison).as_ref() {
            return Err(Error::Poisoned(why.clone()));
        }
        Ok(())
    }

    /// Records the first write failure; every later write is refused.
    pub fn poison(&self, e: Error) -> Error {
        tracing::error!("store write failed, refusing further writes: {e}");
        lock(&self.poison).get_or_insert_with(|| e.to_string());
        e
    }

    /// Why the store refuses writes, if it does.
    pub fn poison_reason(&self) -> Option<String> {
        lock(&self.poison).clone()
    }

    /// Where an object is, pending or published.
    pub fn locate(&self, id: &ObjectId) -> Result<Option<IndexEntry>> {
        if let Some(e) = lock(&self.pending).get(id) {
            return Ok(Some(*e));
        }
        self.db.index(id)
    }

    /// Reads that fail their check are served from this replica
    /// (verified) and the object is written again here.
    pub fn set_heal_from(&self, replicas: Vec<Arc<dyn PackSource>>) {
        *lock(&self.heal_from) = replicas;
    }

    /// Stores `data` as an object of `kind` unless an identical one exists.
    pub fn put(&self, kind: ObjectKind, data: &[u8]) -> Result<ObjectId> {
        // A plain store's chunk of several pieces gets its id and its
        // piece table from one pass over the bytes.
        let (id, table) = if pieces::kept(self.db.crypto(), kind, data.len()) {
            let (id, t) = pieces::hash(data);
            (id, Some(t))
        } else {
            (self.db.crypto().object_id(kind, data), None)
        };
        if self.locate(&id)?.is_some() {
            let tracked = match lock(&self.gc).as_mut() {
                Some(touched) => {
                    touched.insert(id);
                    true
                }
                None => false,
            };
            // A prune may have swept the entry just before it saw this
            // reference: then the object is stored again.
            if !tracked || self.locate(&id)?.is_some() {
                return Ok(id);
            }
        }
        self.append(kind, id, data, table)
    }

    /// Starts noting every old object that `put` hands out again (the
    /// references a prune cannot see in the catalog yet).
    pub fn track_reuse(&self) {
        *lock(&self.gc) = Some(IdSet::default());
    }

    /// Stops noting reuse.
    pub fn end_reuse(&self) {
        *lock(&self.gc) = None;
    }

    /// The ids reused since `track_reuse`.
    pub fn reused(&self) -> Vec<ObjectId> {
        lock(&self.gc)
            .as_ref()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Runs `f` (which removes index entries) with reuse frozen: `f`
    /// gets the reused set, and no `put` can reuse an entry `f` removes
    /// without seeing it gone.
    pub fn with_reuse_frozen<T>(&self, f: impl FnOnce(&IdSet) -> Result<T>) -> Result<T> {
        let g = lock(&self.gc);
        let empty = IdSet::default();
        f(g.as_ref().unwrap_or(&empty))
    }

    /// Writes a good copy of an object whose stored copy is damaged; the
    /// index moves to it at the next commit.
    pub fn rewrite(&self, kind: ObjectKind, data: &[u8]) -> Result<ObjectId> {
        let id = self.db.crypto().object_id(kind, data);
        self.append(kind, id, data, None)?;
        lock(&self.rewritten).insert(id);
        Ok(id)
    }

    /// Whether a pending id is a new copy of an indexed object (a heal).
    pub fn is_rewrite(&self, id: &ObjectId) -> bool {
        lock(&self.rewritten).contains(id)
    }

    /// Appends the record of object `id`; `table`, its piece table, is
    /// kept to be indexed with it when the record is raw.
    fn append(
        &self,
        kind: ObjectKind,
        id: ObjectId,
        data: &[u8],
        table: Option<Vec<u8>>,
    ) -> Result<ObjectId> {
        self.check_writable()?;
        if kind == ObjectKind::Chunk {
            // Data only: commits and their trees must still go through.
            self.space.check(&self.dir, data.len() as u64)?;
        }
        let (header, record) = encode_record(self.db.crypto(), kind, id, data, false)?;
        let raw_len = header.raw_len;
        // Hold the pending lock across the append so that `pending()` never
        // sees an entry whose bytes are not yet written.
        let mut pending = lock(&self.pending);
        let (pack, offset) = lock(&self.writer)
            .append(&record)
            .map_err(|e| self.append_failed(e))?;
        pending.insert(
            id,
            IndexEntry {
                pack,
                offset,
                stored_len: header.stored_len,
                raw_len,
                kind,
                codec: header.codec,
            },
        );
        if let Some(t) = table.filter(|_| pieces::is_raw(header.codec)) {
            lock(&self.tables).insert(id, t);
        }
        Ok(id)
    }

    /// A failed pack append: a full disk is an error (nothing references
    /// the partial bytes and the next append writes over them); anything
    /// else poisons the store.
    fn append_failed(&self, e: Error) -> Error {
        if e.errno() == libc::ENOSPC || e.errno() == libc::EDQUOT {
            tracing::warn!("pack append: {e}");
            e
        } else {
            self.poison(e)
        }
    }

    /// Makes every object put so far durable.
    pub fn sync(&self) -> Result<()> {
        self.check_writable()?;
        // The fdatasync runs without the writer's lock: files being closed
        // meanwhile append their chunks instead of waiting for the disk.
        let target = lock(&self.writer)
            .sync_target()
            .map_err(|e| self.poison(e))?;
        if let Some((no, file, len)) = target {
            file.sync_data()
                .map_err(Error::io_at(pack::pack_path(&self.dir, no)))
                .map_err(|e| self.poison(e))?;
            lock(&self.writer).synced_to(no, len);
        }
        Ok(())
    }

    /// The pack being appended to and its durable length.
    pub fn open_pack(&self) -> Option<(PackNo, u64)> {
        lock(&self.writer).open_pack()
    }

    /// Seals the open pack (so that prune may work on it); the number the
    /// next pack will get, which every pack sealed now is below.
    pub fn rotate(&self) -> Result<PackNo> {
        self.check_writable()?;
        let mut w = lock(&self.writer);
        w.seal().map_err(|e| self.poison(e))?;
        Ok(w.next_no())
    }

    /// The number the next new pack will get.
    pub fn next_pack(&self) -> PackNo {
        lock(&self.writer).next_no()
    }

    /// Drops the cached reader of a deleted pack.
    pub fn forget_pack(&self, no: PackNo) {
        lock(&self.readers).remove(&no);
    }

    /// Copies the records of `objects` (verified) into the open pack and
    /// makes them durable; their new locations, for the caller to publish.
    /// With `recode`, hot chunk records (raw, lz4) are written cold (zstd,
    /// byte planes: `codec`) and the chunks it plans as deltas are written
    /// as deltas of their bases when that is smaller (`delta`), at the
    /// pace it sets; others are copied as they are.
    pub fn copy_records(
        &self,
        objects: &[(ObjectId, IndexEntry)],
        mut recode: Option<Recode>,
    ) -> Result<Vec<(ObjectId, IndexEntry)>> {
        self.check_writable()?;
        let mut out = Vec::with_capacity(objects.len());
        let bases = |b: &ObjectId| self.get(b);
        for (id, e) in objects {
            let f = self.reader(e.pack)?;
            let path = pack::pack_path(&self.dir, e.pack);
            let hdr_at = record_start(e)?;
            let stored = f
                .read_at(hdr_at, e.record_len() as usize)
                .map_err(Error::io_at(&path))?;
            // Never copy damage forward: check before writing.
            let raw = check_record(self.db.crypto(), &stored, &path, id, e, &bases)?;
            let encoded = match recode.as_mut() {
                Some(r) if e.kind == ObjectKind::Chunk => r.encode(self, id, e, &raw)?,
                _ => None,
            };
            let (record, entry) = match encoded {
                Some((h, r)) => {
                    crate::crashpoint::crash_point("recode:encoded");
                    let entry = IndexEntry {
                        stored_len: h.stored_len,
                        codec: h.codec,
                        ..*e
                    };
                    (std::borrow::Cow::Owned(r), entry)
                }
                None => (std::borrow::Cow::Borrowed(&stored[..]), *e),
            };
            let (pack, offset) = lock(&self.writer)
                .append(&record)
                .map_err(|err| self.append_failed(err))?;
            out.push((
                *id,
                IndexEntry {
                    pack,
                    offset,
                    ..entry
                },
            ));
        }
        self.sync()?;
        Ok(out)
    }

    /// Puts into `b` the new locations `moved` of the objects `was` (as
    /// `copy_records` returned them) whose index entry still points at the
    /// copy that was read: one batch switches them all. The bytes switched
    /// (as written anew, recoded or not).
    pub fn relocate(
        &self,
        b: &mut crate::catalog::db::Batch,
        was: &[(ObjectId, IndexEntry)],
        moved: &[(ObjectId, IndexEntry)],
    ) -> Result<u64> {
        let mut bytes = 0;
        for ((id, old), (_, new)) in was.iter().zip(moved) {
            if self.db.index(id)? == Some(*old) {
                b.put_index(id, new);
                bytes += new.record_len();
            }
        }
        Ok(bytes)
    }

    /// Seals the open pack (at close).
    pub fn seal(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        lock(&self.writer).seal().map_err(|e| self.poison(e))
    }

    /// A copy of the locations not yet in the catalog.
    pub fn pending(&self) -> Vec<(ObjectId, IndexEntry)> {
        lock(&self.pending).iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Puts the pending locations `index` (from [`pending`](Self::pending))
    /// into catalog batch `b`, with the piece tables of their chunks.
    pub fn index_into(&self, b: &mut crate::catalog::db::Batch, index: &[(ObjectId, IndexEntry)]) {
        let tables = lock(&self.tables);
        for (id, e) in index {
            b.put_index(id, e);
            if let Some(t) = tables.get(id) {
                b.put_pieces(id, t);
            }
        }
    }

    /// Drops pending locations now present in the catalog.
    pub fn published(&self, ids: impl Iterator<Item = ObjectId>) {
        let mut p = lock(&self.pending);
        let mut r = lock(&self.rewritten);
        let mut t = lock(&self.tables);
        for id in ids {
            p.remove(&id);
            r.remove(&id);
            t.remove(&id);
        }
    }

    fn reader(&self, pack: PackNo) -> Result<Arc<PackReader>> {
        let mut r = lock(&self.readers);
        if let Some(f) = r.get(&pack) {
            return Ok(f.clone());
        }
        let f = Arc::new(PackReader::open(&self.dir, pack)?);
        r.insert(pack, f.clone());
        Ok(f)
    }

    /// Copies the object's bytes from offset `at` into all of `dst` (a
    /// chunk read through an extent that covers part of it).
    pub fn copy_out(&self, id: &ObjectId, at: usize, dst: &mut [u8], access: Access) -> Result<()> {
        // A random read of a chunk not cached reads only the pieces it needs.
        if access == Access::Random && !self.is_cached(id) && self.copy_pieces(id, at, dst) {
            return Ok(());
        }
        let data = self.get_for(id, access)?;
        let src = data
            .get(at..at + dst.len())
            .ok_or_else(|| Error::corrupt(format!("chunk {id}"), "shorter than its extent"))?;
        dst.copy_from_slice(src);
        Ok(())
    }

    /// Whether the decoded object is in the cache (a read needs no I/O).
    pub fn is_cached(&self, id: &ObjectId) -> bool {
        lock(&self.cache).contains(id)
    }

    /// The verified bytes of an object.
    pub fn get(&self, id: &ObjectId) -> Result<Arc<Vec<u8>>> {
        self.get_at(id, 0, Access::Sequential)
    }

    /// [`get`](Self::get) for a read of the given kind.
    pub fn get_for(&self, id: &ObjectId, access: Access) -> Result<Arc<Vec<u8>>> {
        self.get_at(id, 0, access)
    }

    /// Where the object's record is in a local pack: (pack, start, end);
    /// None for a store whose packs are elsewhere.
    pub fn record_range(&self, id: &ObjectId) -> Result<Option<(PackNo, u64, u64)>> {
        if self.remote.is_some() {
            return Ok(None);
        }
        Ok(match self.locate(id)? {
            Some(e) => {
                let at = record_start(&e)?;
                Some((e.pack, at, at + e.record_len()))
            }
            None => None,
        })
    }

    /// Drops bytes `start..end` of local pack `pack` from the page cache
    /// (only a hint): read by a sequential reader, their decoded bytes
    /// are cached here and the mount's cache of the file keeps what was
    /// read, so the pack's pages were a third copy, and new pages to fill
    /// (see [`PackWriter::set_drop_behind`]).
    pub fn drop_pages(&self, pack: PackNo, start: u64, end: u64) {
        if let Ok(r) = self.reader(pack)
            && let Some(f) = r.whole_file()
        {
            let _ = crate::sys::drop_cached(f, start, end.saturating_sub(start));
        }
    }

    /// [`get`](Self::get) of an object `depth` delta bases below the one
    /// asked for.
    fn get_at(&self, id: &ObjectId, depth: usize, access: Access) -> Result<Arc<Vec<u8>>> {
        if let Some(v) = lock(&self.cache).get(id) {
            return Ok(v.clone());
        }
        // One load of a chunk asked for by two readers at once (the bases
        // below it are its loader's: no waiting on a chain, so no cycle).
        let _loading = if depth == 0 {
            let turn = self.loading.begin(id);
            if turn.is_none()
                && let Some(v) = lock(&self.cache).get(id)
            {
                return Ok(v.clone());
            }
            turn
        } else {
            None
        };
        if depth > MAX_DELTA_DEPTH {
            return Err(Error::corrupt(
                format!("chunk {id}"),
                "delta chain too long (a cycle?)",
            ));
        }
        let e = self.locate(id)?.ok_or_else(|| {
            let err = Error::corrupt(format!("object {id}"), "missing from the index");
            tracing::error!("{err}");
            err
        })?;
        let data = match self
            .read_verified_at(id, &e, depth, access)
            .or_else(|err| self.read_moved(id, &e, err, depth))
        {
            Ok(d) => Arc::new(d),
            Err(err) => {
                tracing::error!("read failed: {err}");
                match self.heal(id, &e, depth) {
                    Some(d) => {
                        crate::metrics::Stats::add(&self.stats.healed, 1);
                        Arc::new(d)
                    }
                    None => {
                        crate::metrics::Stats::add(&self.stats.read_errors, 1);
                        return Err(err);
                    }
                }
            }
        };
        lock(&self.cache).put(*id, data.clone());
        Ok(data)
    }

    /// The chunks a delta record's bytes are rebuilt from (none for any
    /// other record): read from the head of a plain record, the whole of a
    /// sealed one; remembered per record.
    pub fn bases(&self, id: &ObjectId, e: &IndexEntry) -> Result<Vec<ObjectId>> {
        if !e.is_delta() {
            return Ok(Vec::new());
        }
        if let Some((at, b)) = lock(&self.bases).get(id)
            && at == e
        {
            return Ok(b.clone());
        }
        let b = delta::bases_of(&self.segments(id, e)?);
        lock(&self.bases).put(*id, (*e, b.clone()));
        Ok(b)
    }

    /// The segments of the delta record of `id` at `e`.
    pub fn segments(&self, id: &ObjectId, e: &IndexEntry) -> Result<Vec<delta::Segment>> {
        let at = record_start(e)?;
        let path = pack::pack_path(&self.dir, e.pack);
        let sealed = e.codec & CODEC_SEALED != 0;
        let len = if sealed {
            e.stored_len as usize
        } else {
            (e.stored_len as usize).min(delta::HEAD_LEN)
        };
        let stored = match &self.remote {
            Some(src) => src.read_at(e.pack, at, RECORD_HEADER_LEN + len, false)?,
            None => self
                .reader(e.pack)?
                .read_at(at, RECORD_HEADER_LEN + len)
                .map_err(Error::io_at(&path))?,
        };
        let (head, body) = split_record(&stored, &path, id)?;
        let payload = if sealed {
            let where_ = format!("object {id} in {}", path.display());
            std::borrow::Cow::Owned(self.db.crypto().open(Domain::Record, head, body, &where_)?)
        } else {
            std::borrow::Cow::Borrowed(body)
        };
        delta::segments_of_head(&payload)
    }

    /// A read that failed because a prune moved the object (repack) and
    /// deleted its old pack meanwhile: read it where it is now.
    fn read_moved(
        &self,
        id: &ObjectId,
        was: &IndexEntry,
        err: Error,
        depth: usize,
    ) -> Result<Vec<u8>> {
        match self.locate(id)? {
            Some(now) if now != *was => self.read_verified_at(id, &now, depth, Access::Sequential),
            _ => Err(err),
        }
    }

    /// The replica's copy of a damaged object, verified; the primary gets a
    /// good copy again when it is writable.
    fn heal(&self, id: &ObjectId, e: &IndexEntry, depth: usize) -> Option<Vec<u8>> {
        let replicas = lock(&self.heal_from).clone();
        let at = e.offset.checked_sub(RECORD_HEADER_LEN as u64)?;
        let len = e.record_len() as usize;
        // Each replica in turn, the first first.
        let (raw, from) = replicas.iter().find_map(|t| {
            let dir = PathBuf::from(t.describe());
            let rec = t.read_at(e.pack, at, len, true);
            let bases = |b: &ObjectId| self.get_at(b, depth + 1, Access::Sequential);
            match rec.and_then(|rec| check_record(self.db.crypto(), &rec, &dir, id, e, &bases)) {
                Ok(raw) => Some((raw, dir)),
                Err(err) => {
                    tracing::warn!("object {id}: not healed from {}: {err}", dir.display());
                    None
                }
            }
        })?;
        if self.read_only {
            tracing::warn!("object {id}: served from replica {}", from.display());
        } else {
            match self.rewrite(e.kind, &raw) {
                Ok(_) => tracing::warn!(
                    "object {id}: corrupt in the primary, healed from replica {}",
                    from.display()
                ),
                Err(err) => {
                    tracing::error!("object {id}: served from replica, repair failed: {err}")
                }
            }
        }
        Some(raw)
    }

    /// Reads the record of `id` at `e` again from a replica after it was
    /// found damaged (and rewrites it when the store is writable); whether
    /// a good copy was found.
    pub fn repair(&self, id: &ObjectId, e: &IndexEntry) -> bool {
        lock(&self.cache).remove(id);
        let healed = self.heal(id, e, 0).is_some();
        if healed {
            crate::metrics::Stats::add(&self.stats.healed, 1);
        }
        healed
    }

    /// Whether object locations wait for the next commit.
    pub fn has_pending(&self) -> bool {
        !lock(&self.pending).is_empty()
    }

    /// Reads, decodes and hash-checks one record.
    pub fn read_verified(&self, id: &ObjectId, e: &IndexEntry) -> Result<Vec<u8>> {
        self.read_verified_at(id, e, 0, Access::Sequential)
    }

    fn read_verified_at(
        &self,
        id: &ObjectId,
        e: &IndexEntry,
        depth: usize,
        access: Access,
    ) -> Result<Vec<u8>> {
        let bases = |b: &ObjectId| self.get_at(b, depth + 1, access);
        if let Some(src) = &self.remote {
            return self.read_remote(&**src, id, e, &bases);
        }
        self.read_local(id, e, &bases, access)
    }

    /// Reads, decodes and hash-checks the record of `id` at `e` in a local pack.
    fn read_local(
        &self,
        id: &ObjectId,
        e: &IndexEntry,
        bases: Bases,
        access: Access,
    ) -> Result<Vec<u8>> {
        let f = self.reader(e.pack)?;
        let path = &pack::pack_path(&self.dir, e.pack);
        let crypto = self.db.crypto();
        let at = record_start(e)?;
        let Some(file) = f.whole_file() else {
            let stored = f
                .read_at(at, e.record_len() as usize)
                .map_err(Error::io_at(path))?;
            return check_record(crypto, &stored, path, id, e, bases);
        };
        // The common case: header and payload read apart, no copy. The
        // length is checked first: a damaged one allocates nothing.
        let len = file.metadata().map_err(Error::io_at(path))?.len();
        if at + e.record_len() > len {
            return Err(Error::io_at(path)(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            )));
        }
        let mut head = [0u8; RECORD_HEADER_LEN];
        let n = e.stored_len as usize;
        let direct = match access {
            Access::Random => self.read_direct(&f, path, at, &mut head, n),
            Access::Sequential => None,
        };
        let body = match direct {
            Some(body) => body,
            None => crate::sys::pread_split(file, at, &mut head, n).map_err(Error::io_at(path))?,
        };
        check_parts(crypto, &head, body.into(), path, id, e, Some(bases))
    }

    /// `head.len()` bytes at `at` of pack `f` (at `path`) into `head` and
    /// the `n` after them, read past the page cache when none of them is
    /// in it; None when they must be read through it. A direct read that
    /// fails is read again through the page cache by the caller, which
    /// says what is wrong if anything is.
    fn read_direct(
        &self,
        f: &PackReader,
        path: &Path,
        at: u64,
        head: &mut [u8],
        n: usize,
    ) -> Option<Vec<u8>> {
        let d = f.uncached(path, at, (head.len() + n) as u64)?;
        match crate::sys::pread_direct(d, at, head, n) {
            Ok(body) => {
                crate::metrics::Stats::add(&self.stats.direct_reads, 1);
                Some(body)
            }
            Err(err) => {
                f.direct_failed(&err);
                None
            }
        }
    }

    /// A record read from the pack source; a cached copy that fails its
    /// check is read once more from the source itself.
    fn read_remote(
        &self,
        src: &dyn PackSource,
        id: &ObjectId,
        e: &IndexEntry,
        bases: Bases,
    ) -> Result<Vec<u8>> {
        let at = record_start(e)?;
        let len = e.record_len() as usize;
        let path = PathBuf::from(src.describe()).join(pack::pack_name(e.pack));
        let check = |fresh| {
            let stored = src.read_at(e.pack, at, len, fresh)?;
            check_record(self.db.crypto(), &stored, &path, id, e, bases)
        };
        check(false).or_else(|err| {
            tracing::warn!("{err}; reading it again from {}", src.describe());
            check(true)
        })
    }

    pub fn packs_dir(&self) -> &Path {
        &self.dir
    }

    /// The keys of this store.
    pub fn crypto(&self) -> &Crypto {
        self.db.crypto()
    }

    /// The chunker of this store (keyed boundaries when it is encrypted).
    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }
}

/// The header of the record of object `id` (`kind`, bytes `data`) and the
/// whole record (header, payload): lz4 when that is smaller (zstd, byte
/// planes, when `cold`: `codec`), then sealed in an encrypted store
/// (codec | `CODEC_SEALED`) with the header as associated data. One
/// buffer, so the bytes are copied once.
pub fn encode_record(
    crypto: &Crypto,
    kind: ObjectKind,
    id: ObjectId,
    data: &[u8],
    cold: bool,
) -> Result<(RecordHeader, Vec<u8>)> {
    let (codec, payload): (u8, std::borrow::Cow<[u8]>) = if cold {
        let (c, p) = codec::encode_cold(data)?;
        (c, p.into())
    } else {
        codec::encode_hot(data)
    };
    seal_record(crypto, kind, id, data.len(), codec, &payload)
}

/// The record of chunk `id` (bytes `data`) as a delta of `segments`
/// (`delta::encode`), sealed like any other.
pub fn encode_delta_record(
    crypto: &Crypto,
    id: ObjectId,
    data: &[u8],
    segments: &[delta::Segment],
    base_of: impl FnMut(&ObjectId) -> Result<Arc<Vec<u8>>>,
) -> Result<(RecordHeader, Vec<u8>)> {
    let payload = delta::encode(data, segments, base_of)?;
    seal_record(
        crypto,
        ObjectKind::Chunk,
        id,
        data.len(),
        CODEC_DELTA,
        &payload,
    )
}

/// Header and record of an encoded payload (sealed in an encrypted store).
fn seal_record(
    crypto: &Crypto,
    kind: ObjectKind,
    id: ObjectId,
    raw_len: usize,
    codec: u8,
    payload: &[u8],
) -> Result<(RecordHeader, Vec<u8>)> {
    let raw_len = u32::try_from(raw_len).map_err(|_| Error::TooBig)?;
    let header = RecordHeader {
        kind,
        codec: if crypto.is_encrypted() {
            codec | CODEC_SEALED
        } else {
            codec
        },
        raw_len,
        stored_len: u32::try_from(payload.len() + crypto.overhead()).map_err(|_| Error::TooBig)?,
        id,
    };
    let head = header.encode();
    let mut record = Vec::with_capacity(RECORD_HEADER_LEN + header.stored_len as usize);
    record.extend_from_slice(&head);
    crypto.seal_into(Domain::Record, &head, payload, &mut record);
    Ok((header, record))
}

/// How [`ObjectStore::copy_records`] recodes chunk records: at `pace`,
/// and the chunks in `deltas` as deltas of those segments' bytes.
pub struct Recode<'a> {
    pub pace: &'a mut crate::sys::Pace,
    pub deltas: &'a HashMap<ObjectId, Vec<delta::Segment>>,
    /// Every chunk gets a new record, never a copy of its old one (a
    /// rebase: the old records name bases that go).
    pub rewrite: bool,
}

impl Recode<'_> {
    /// The new record of chunk `id` (bytes `raw`, now at `e`), or None to
    /// copy it as it is: a delta when one is planned and comes out at most
    /// 9/10 of the cold record; else cold, when it is hot or rewritten.
    fn encode(
        &mut self,
        store: &ObjectStore,
        id: &ObjectId,
        e: &IndexEntry,
        raw: &[u8],
    ) -> Result<Option<(RecordHeader, Vec<u8>)>> {
        let crypto = store.db.crypto();
        let hot = codec::is_hot(e.codec & !CODEC_SEALED);
        let planned = self.deltas.get(id);
        if hot || planned.is_some() || self.rewrite {
            self.pace.took(raw.len() as u64);
        }
        let cold = if hot || self.rewrite {
            Some(encode_record(crypto, e.kind, *id, raw, true)?)
        } else {
            None
        };
        if let Some(segments) = planned {
            let d = encode_delta_record(crypto, *id, raw, segments, |b| store.get(b))?;
            let full = cold.as_ref().map_or(e.stored_len, |c| c.0.stored_len);
            if (d.0.stored_len as u64) * 10 <= full as u64 * 9 {
                return Ok(Some(d));
            }
        }
        Ok(cold)
    }
}

/// Where the record of index entry `e` starts in its pack (its header).
fn record_start(e: &IndexEntry) -> Result<u64> {
    e.offset
        .checked_sub(RECORD_HEADER_LEN as u64)
        .ok_or_else(|| Error::corrupt("object index entry", "offset inside pack header"))
}

/// How a read reaches a record in a local pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Through the page cache, where the kernel reads ahead: what a
    /// sequential reader and every background pass want.
    Sequential,
    /// Straight from the disk when none of the record is cached (see
    /// [`PackReader::uncached`]): a read that jumped elsewhere in its file.
    Random,
}

/// Where a delta record's bases come from: the verified bytes of a chunk.
pub type Bases<'a> = &'a dyn Fn(&ObjectId) -> Result<Arc<Vec<u8>>>;

/// Decodes and hash-checks `stored` (a record header and its payload),
/// the record of `id` at `e` in the pack at `path`; the raw bytes (a
/// delta record's rebuilt from its `bases`).
pub fn check_record(
    crypto: &Crypto,
    stored: &[u8],
    path: &Path,
    id: &ObjectId,
    e: &IndexEntry,
    bases: Bases,
) -> Result<Vec<u8>> {
    let (head, body) = split_record(stored, path, id)?;
    check_parts(crypto, head, body.into(), path, id, e, Some(bases))
}

/// [`check_record`] of a record on its own: a delta record's payload is
/// checked against its own check, not rebuilt (its bases are other
/// records, checked on their own: a replica's scan, recover).
pub fn check_record_alone(
    crypto: &Crypto,
    stored: &[u8],
    path: &Path,
    id: &ObjectId,
    e: &IndexEntry,
) -> Result<()> {
    let (head, body) = split_record(stored, path, id)?;
    check_parts(crypto, head, body.into(), path, id, e, None).map(|_| ())
}

fn split_record<'s>(stored: &'s [u8], path: &Path, id: &ObjectId) -> Result<(&'s [u8], &'s [u8])> {
    if stored.len() < RECORD_HEADER_LEN {
        return Err(Error::corrupt(
            format!("object {id} in {}", path.display()),
            "record cut short",
        ));
    }
    Ok(stored.split_at(RECORD_HEADER_LEN))
}

/// [`check_record`] of a record read as its header and its payload apart
/// (an owned payload of a raw record is the result as it is); without
/// `bases`, a delta record is checked on its own and gives no bytes.
fn check_parts(
    crypto: &Crypto,
    head: &[u8],
    body: std::borrow::Cow<[u8]>,
    path: &Path,
    id: &ObjectId,
    e: &IndexEntry,
    bases: Option<Bases>,
) -> Result<Vec<u8>> {
    let where_ = || format!("object {id} in {} at offset {}", path.display(), e.offset);
    let header = RecordHeader::decode(head).map_err(|err| match err {
        Error::Corrupt { detail, .. } => {
            Error::corrupt(where_(), format!("record header: {detail}"))
        }
        other => other,
    });
    header.and_then(|h| {
        if h.id != *id || h.kind != e.kind || h.stored_len != e.stored_len {
            return Err(Error::corrupt(
                format!("object {id} in {}", path.display()),
                "record header does not match the index",
            ));
        }
        let sealed = h.codec & CODEC_SEALED != 0;
        if sealed != crypto.is_encrypted() {
            return Err(Error::corrupt(
                where_(),
                if sealed {
                    "sealed record in a plain store"
                } else {
                    "plain record in an encrypted store"
                },
            ));
        }
        // Opening a sealed payload makes its own buffer: a raw one is used
        // as it is, not copied again.
        let payload: std::borrow::Cow<[u8]> = if sealed {
            crypto.open(Domain::Record, head, &body, &where_())?.into()
        } else {
            body
        };
        let here = |err| match err {
            Error::Corrupt { detail, .. } => {
                Error::corrupt(format!("object {id} in {}", path.display()), detail)
            }
            other => other,
        };
        let raw = if h.codec & !CODEC_SEALED == CODEC_DELTA {
            let parsed = delta::parse(&payload).map_err(here)?;
            match bases {
                None => {
                    return parsed
                        .residual(h.raw_len as usize)
                        .map(|_| Vec::new())
                        .map_err(here);
                }
                Some(b) => parsed.rebuild(h.raw_len as usize, b).map_err(here)?,
            }
        } else {
            codec::decode(h.codec & !CODEC_SEALED, payload, h.raw_len as usize).map_err(here)?
        };
        if raw.len() != h.raw_len as usize || crypto.object_id(h.kind, &raw) != *id {
            return Err(Error::corrupt(
                format!("object {id} in {} at offset {}", path.display(), e.offset),
                "content does not match its hash",
            ));
        }
        Ok(raw)
    })
}
