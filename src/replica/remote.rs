//! A replica served straight from its target (`revfs mount s3://... MNT
//! --read-only`): the object index from the pack index objects (a scan of
//! the pack itself where one is missing or does not match), the catalog
//! rebuilt from the heads as for a directory replica, and every record
//! read with ranged GETs through a bounded block cache on local disk.
//! What the mount serves is the bucket as it was when it was mounted.

use super::cache::BlockCache;
use super::import::Imported;
use super::pack_index::{PackIndex, index_name};
use super::target::Target;
use crate::catalog::db::{Batch, Db, IndexEntry};
use crate::config::{CONF_FILE, Config};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::format::{self, PACK_HEADER_LEN, RECORD_HEADER_LEN, RecordHeader};
use crate::ids::PackNo;
use crate::store::pack;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// The config of the replica at `t`.
pub fn read_config(t: &dyn Target) -> Result<Config> {
    let conf = t.get(CONF_FILE)?.ok_or_else(|| {
        Error::Store(format!(
            "{}: not a replica (no {CONF_FILE} there)",
            t.describe()
        ))
    })?;
    let (_, cfg) = Config::decode(&conf, &t.describe())?;
    if cfg.role.as_deref() != Some(super::ROLE_REPLICA) {
        return Err(Error::Store(format!("{}: not a replica", t.describe())));
    }
    Ok(cfg)
}

/// The config and keys of the replica at `t` (`spec` names it): asks the
/// passphrase of an encrypted one; also returns it, for a process that
/// hands it on (a detached daemon).
pub fn open_config(
    t: &dyn Target,
    spec: &Path,
) -> Result<(Config, Crypto, Option<Zeroizing<String>>)> {
    let cfg = read_config(t)?;
    let Some(cipher) = cfg.cipher.as_deref() else {
        return Ok((cfg, Crypto::plain(), None));
    };
    if cipher != crate::crypto::CIPHER {
        return Err(Error::Store(format!(
            "{}: unknown cipher {cipher:?}",
            t.describe()
        )));
    }
    let name = crate::crypto::slots::KEYS_FILE;
    let bytes = t.get(name)?.ok_or_else(|| {
        Error::Store(format!(
            "{}: encrypted, but its key file is missing",
            t.describe()
        ))
    })?;
    let keys = crate::crypto::slots::KeyFile::decode(&bytes, &t.describe())?;
    let (crypto, pass) = crate::crypto::slots::unlock_file(&keys, spec)?;
    Ok((cfg, crypto, Some(pass)))
}

/// One object of `packs/`: the pack bytes `start..end` it holds.
pub struct Object {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

/// Every pack object of `t` (one listing): per pack, the whole pack, or
/// its parts sorted by start when it has no whole object yet.
pub fn pack_objects(t: &dyn Target) -> Result<Vec<(PackNo, Vec<Object>)>> {
    let mut objects: HashMap<PackNo, Vec<Object>> = HashMap::new();
    let mut whole = HashSet::new();
    for (name, size) in t.list("packs/")? {
        let Some((no, start)) = pack::parse_name(name.rsplit('/').next().unwrap_or(&name)) else {
            continue;
        };
        if start.is_none() {
            whole.insert(no);
        }
        objects.entry(no).or_default().push(Object {
            name,
            start: start.unwrap_or(0),
            end: start.unwrap_or(0) + size,
        });
    }
    let mut out: Vec<(PackNo, Vec<Object>)> = objects.into_iter().collect();
    for (no, objs) in out.iter_mut() {
        if whole.contains(no) {
            objs.retain(|o| o.name.ends_with(".pack"));
        }
        objs.sort_by_key(|o| o.start);
    }
    out.sort_by_key(|p| p.0);
    Ok(out)
}

/// Every well-formed record of object `o`, in order, read in windows of
/// `WINDOW` bytes: `f(header, payload offset in the pack, header and
/// payload)`. Stops at the object's end or a torn or damaged header;
/// returns the pack offset where it stopped (`o.end` when it read all).
pub fn scan_object(
    t: &dyn Target,
    o: &Object,
    mut f: impl FnMut(RecordHeader, u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    const WINDOW: u64 = 8 << 20;
    let (mut buf, mut buf_at) = (Vec::new(), o.start);
    let mut bytes = |at: u64, len: usize| -> Result<Vec<u8>> {
        let end = at + len as u64;
        if at < buf_at || end > buf_at + buf.len() as u64 {
            let n = (o.end - at).min(WINDOW.max(len as u64));
            buf = t.get_range(&o.name, at - o.start, n as usize)?;
            buf_at = at;
        }
        Ok(buf[(at - buf_at) as usize..(end - buf_at) as usize].to_vec())
    };
    let mut at = o.start;
    if o.start == 0 {
        let head = bytes(0, PACK_HEADER_LEN as usize)?;
        format::check_magic(&head, format::PACK_MAGIC, &o.name)?;
        at = PACK_HEADER_LEN;
    }
    while at + RECORD_HEADER_LEN as u64 <= o.end {
        let Ok(h) = RecordHeader::decode(&bytes(at, RECORD_HEADER_LEN)?) else {
            break;
        };
        let len = h.record_len();
        if at + len as u64 > o.end {
            break;
        }
        let rec = bytes(at, len)?;
        f(h, at + RECORD_HEADER_LEN as u64, &rec)?;
        at += len as u64;
    }
    Ok(at)
}

/// The packs of a replica at a target, read through a block cache.
pub struct RemotePacks {
    target: Arc<dyn Target>,
    cache: Arc<BlockCache>,
    /// Per pack: the whole pack, or its parts sorted by start.
    objects: HashMap<PackNo, Vec<Object>>,
    /// Blocks to fetch ahead of a sequential reader: (object, its size, block).
    ahead: SyncSender<(String, u64, u64)>,
    /// Per object: the block its last read ended in.
    last_block: Mutex<HashMap<String, u64>>,
}

/// A reader that moves into the next block of an object has this many
/// blocks after it fetched ahead.
const AHEAD_BLOCKS: u64 = 4;

/// Threads that fetch blocks ahead.
const AHEAD_WORKERS: usize = 2;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RemotePacks {
    /// The packs `t` holds now (one listing).
    pub fn open(t: Arc<dyn Target>, cache: BlockCache) -> Result<RemotePacks> {
        let objects = pack_objects(&*t)?.into_iter().collect();
        let cache = Arc::new(cache);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(String, u64, u64)>(64);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..AHEAD_WORKERS {
            let (rx, cache, t) = (rx.clone(), cache.clone(), t.clone());
            let _ = std::thread::Builder::new()
                .name(format!("revfs-fetch-ahead-{i}"))
                .spawn(move || {
                    while let Ok((name, size, block)) = lock(&rx).recv() {
                        let fetch = |n: &str, off: u64, len: usize| t.get_range(n, off, len);
                        // A failure is the reader's to meet, when it reads.
                        let _ = cache.read(&name, size, block * super::cache::BLOCK, 1, fetch);
                    }
                });
        }
        Ok(RemotePacks {
            target: t,
            cache,
            objects,
            ahead: tx,
            last_block: Mutex::new(HashMap::new()),
        })
    }

    /// After a read of `o` that ended in `block`: when the reader just
    /// moved into it from the block before (or starts at the first), the
    /// blocks after it are fetched ahead.
    fn fetch_ahead(&self, o: &Object, start_block: u64, block: u64) {
        let prev = lock(&self.last_block).insert(o.name.clone(), block);
        let sequential = match prev {
            Some(p) => block == p + 1,
            None => start_block == 0,
        };
        if !sequential {
            return;
        }
        let size = o.end - o.start;
        let blocks = size.div_ceil(super::cache::BLOCK);
        for b in block + 1..(block + 1 + AHEAD_BLOCKS).min(blocks) {
            if self.ahead.try_send((o.name.clone(), size, b)).is_err() {
                return;
            }
        }
    }

    /// Fills the object index of `db` from every pack object: from its
    /// index object when that covers exactly its bytes, else by reading
    /// the record headers of the object itself (through the cache).
    pub fn index_into(&self, db: &Db, out: &mut Imported) -> Result<()> {
        let indexes: HashSet<String> = self
            .target
            .list("index/")?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut packs: Vec<&PackNo> = self.objects.keys().collect();
        packs.sort();
        for no in packs {
            let mut b = Batch::default();
            for o in &self.objects[no] {
                let records = match self.index_of(o, &indexes) {
                    Some(idx) => idx.records,
                    None => {
                        // An older replica: its record headers, read once.
                        let mut found = Vec::new();
                        scan_object(&*self.target, o, |h, at, _| {
                            found.push((h, at));
                            Ok(())
                        })?;
                        found
                    }
                };
                for (h, at) in records {
                    b.put_index(&h.id, &IndexEntry::of_record(*no, at, &h));
                    out.objects += 1;
                }
            }
            db.apply(b)?;
            out.packs += 1;
        }
        Ok(())
    }

    fn index_of(&self, o: &Object, indexes: &HashSet<String>) -> Option<PackIndex> {
        let name = index_name(&o.name);
        if !indexes.contains(&name) {
            return None;
        }
        let got = self
            .target
            .get(&name)
            .and_then(|b| b.ok_or_else(|| Error::Store(format!("{name}: gone"))))
            .and_then(|b| PackIndex::decode(&b, &name));
        match got {
            Ok(idx) if idx.start == o.start && idx.end == o.end => Some(idx),
            Ok(_) => {
                tracing::warn!("{name} does not cover {}: reading its headers", o.name);
                None
            }
            Err(e) => {
                tracing::warn!("{e}: reading the headers of {}", o.name);
                None
            }
        }
    }

    /// Bytes of the pack at `at`, read from object `o` that holds them.
    fn read_object(&self, o: &Object, at: u64, len: usize, fresh: bool) -> Result<Vec<u8>> {
        let fetch = |name: &str, off: u64, n: usize| self.target.get_range(name, off, n);
        let size = o.end - o.start;
        if fresh {
            return fetch(&o.name, at - o.start, len);
        }
        let got = self.cache.read(&o.name, size, at - o.start, len, fetch)?;
        let block = |x: u64| (x - o.start) / super::cache::BLOCK;
        self.fetch_ahead(o, block(at), block(at + len.max(1) as u64 - 1));
        Ok(got)
    }

    /// Bytes the block cache holds.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.bytes()
    }
}

impl crate::store::PackSource for RemotePacks {
    fn read_at(&self, no: PackNo, offset: u64, len: usize, fresh: bool) -> Result<Vec<u8>> {
        let end = offset + len as u64;
        let o = self
            .objects
            .get(&no)
            .and_then(|objs| objs.iter().find(|o| o.start <= offset && end <= o.end))
            .ok_or_else(|| {
                Error::Store(format!(
                    "{}: pack {:016x} holds no bytes at {offset}",
                    self.target.describe(),
                    no.0
                ))
            })?;
        self.read_object(o, offset, len, fresh)
    }

    fn describe(&self) -> String {
        format!("{}/packs", self.target.describe())
    }

    fn stored_bytes(&self) -> u64 {
        self.objects
            .values()
            .flatten()
            .map(|o| o.end - o.start)
            .sum()
    }
}

/// Where a bucket mount caches blocks unless told: `$XDG_CACHE_HOME/revfs`
/// (else `~/.cache/revfs`, else the temp directory), one directory per
/// replica (named by its store id).
pub fn default_cache_dir(store_id: &str) -> std::path::PathBuf {
    let base = match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
        (Some(x), _) if !x.is_empty() => std::path::PathBuf::from(x),
        (_, Some(h)) if !h.is_empty() => Path::new(&h).join(".cache"),
        _ => std::env::temp_dir(),
    };
    base.join("revfs").join(store_id)
}
