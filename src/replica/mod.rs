//! Replication to a secondary directory (another disk, NFS, CephFS) or an
//! S3 bucket, through one interface (`target`): every object is published
//! whole (a directory: temporary name, fsync, rename, fsync dir; S3: one
//! PUT or a completed multipart upload), packs and parts never replace an
//! object (`If-None-Match: *` on S3), and a published file is never
//! changed in place. In a bucket the layout below is the same, under
//! `PREFIX/`.
//!
//! # Replica layout (a store of the same format, see `format`)
//! ```text
//! REPLICA/revfs.conf            config with "role": "replica" and the primary's
//!                               store_id: the marker that the directory is ours
//! REPLICA/packs/N.pack          sealed packs, byte-identical to the primary's
//! REPLICA/packs/N-OFFSET.part   durable ranges of the primary's open pack, from
//!                               OFFSET on (replaced by N.pack once it is sealed)
//! REPLICA/heads/SEQ.head        "RVFSHEAD" u32 LE version=1, u64 LE seq, Id commit
//! REPLICA/names/HEX.name        "RVFSNAME" u32 LE version=1, u64 LE seq; HEX is the
//!                               hex of the snapshot name's bytes
//! REPLICA/pruned/N.pruned       (format 4) "RVFSDROP" u32 LE version=1, u32 LE count,
//!                               count x u64 LE commit seq: commits a prune dropped;
//!                               N is the primary's deletion record number (hex)
//! REPLICA/index/NAME.idx       the record headers of packs/NAME (`pack_index`),
//!                               written just before it; optional (older replicas
//!                               have none): a bucket mount reads them, not the packs
//! REPLICA/keys                  (format 5, encrypted stores) the primary's key
//!                               slots (`crypto::slots`), copied when they change
//! ```
//! In an encrypted store (format 5) the body after magic and version of
//! every head, name and pruned file is sealed (`crypto`, metadata key,
//! the file name as associated data); a name file is named by the hex of
//! the first 16 bytes of the name's keyed hash and its body is
//! `Bytes16 name, u64 LE seq`.
//!
//! # What a prune deletes
//! The primary keeps a record of every prune step (the commits it dropped,
//! the packs it deleted) and ships it only once `--replica-delete-after`
//! (default 24 h) has passed: first the `pruned/` file, then the packs go.
//! Until then the replica holds the whole pre-prune history, so an
//! accidental prune (or one by an attacker who holds the primary) is undone
//! by `revfs recover` from the replica.
//! Ordering: each round ships pack bytes first, then head and name files,
//! so the replica never references what it lacks. Commits, trees and the
//! index are rebuilt from the packs and the head's parent chain (`import`).
//!
//! # Bounded queue
//! The queue *is* the primary's own packs: the replicator reads shipped
//! ranges back from the primary's files, so it holds no data in memory and
//! never blocks the write path; a slow or absent replica only grows the lag
//! (reported by `status`), bounded by the primary's disk.

pub mod cache;
pub mod import;
pub mod pack_index;
pub mod recover;
pub mod remote;
pub mod target;

use crate::catalog::db::Db;
use crate::config::{CONF_FILE, Config};
use crate::crypto::{Crypto, Domain};
use crate::error::{Error, Result};
use crate::format::{Dec, Enc, Time};
use crate::ids::{CommitSeq, ObjectId, PackNo};
use crate::store::ObjectStore;
use crate::store::pack;
use std::collections::HashMap;
use std::fs::File;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use target::Target;

const HEAD_MAGIC: &[u8; 8] = b"RVFSHEAD";
const NAME_MAGIC: &[u8; 8] = b"RVFSNAME";
const PRUNED_MAGIC: &[u8; 8] = b"RVFSDROP";
pub const ROLE_REPLICA: &str = "replica";
/// Head files kept on the replica besides the newest.
const KEEP_HEADS: usize = 3;

pub use crate::engine::ReplicaStatus;

/// The target a replica spec names (a directory or `s3://BUCKET/PREFIX`).
pub fn target_of(spec: &Path) -> Result<Arc<dyn Target>> {
    target::open(&spec.to_string_lossy())
}

/// Whether target `t` holds the replica marker of store `store_id`.
pub fn check_marker(t: &dyn Target, store_id: &str) -> Result<bool> {
    let Some(bytes) = t.get(CONF_FILE)? else {
        return Ok(false);
    };
    let (_, cfg) = Config::decode(&bytes, &format!("{}/{CONF_FILE}", t.describe()))?;
    if cfg.role.as_deref() != Some(ROLE_REPLICA) || cfg.store_id != store_id {
        return Err(Error::Store(format!(
            "{}: holds another store (id {}), not a replica of {store_id}",
            t.describe(),
            cfg.store_id
        )));
    }
    Ok(true)
}

/// Refuses anything but an existing, empty directory (or an empty bucket
/// prefix) as a new replica.
pub fn check_empty(t: &dyn Target) -> Result<()> {
    if let Some(dir) = t.local_dir()
        && !dir.is_dir()
    {
        return Err(Error::Store(format!(
            "{}: replica directory does not exist (create it, or mount the share)",
            dir.display()
        )));
    }
    if !t.list("")?.is_empty() || t.local_dir().is_some_and(|d| !dir_is_empty(d)) {
        return Err(Error::Store(format!(
            "{}: not empty and not a replica of this store; refusing to write there",
            t.describe()
        )));
    }
    Ok(())
}

fn dir_is_empty(d: &Path) -> bool {
    std::fs::read_dir(d).is_ok_and(|mut rd| rd.next().is_none())
}

/// Makes an empty target a replica of `primary` (whose directory is
/// `store`: an encrypted primary's key slots are copied first).
pub fn init_replica(t: &dyn Target, primary: &Config, store: &Path) -> Result<()> {
    if check_marker(t, &primary.store_id)? {
        return Ok(());
    }
    check_empty(t)?;
    let cfg = Config {
        role: Some(ROLE_REPLICA.into()),
        replica: None,
        ..primary.clone()
    };
    let subs = ["packs", "heads", "names", "pruned"];
    let made = (|| {
        if let Some(dir) = t.local_dir() {
            for sub in subs {
                std::fs::create_dir(dir.join(sub)).map_err(Error::io_at(dir))?;
            }
        }
        if primary.cipher.is_some() {
            let keys = crate::crypto::slots::KeyFile::read(store)?;
            t.put_replace(crate::crypto::slots::KEYS_FILE, &keys.encode()?)?;
        }
        // The marker goes last: without it the target is not a replica.
        t.put_replace(CONF_FILE, &cfg.encode()?)
    })();
    if made.is_err() {
        // Leave the target empty, as it was.
        let _ = t.delete(crate::crypto::slots::KEYS_FILE);
        if let Some(dir) = t.local_dir() {
            for sub in subs {
                let _ = std::fs::remove_dir(dir.join(sub));
            }
        }
    }
    made
}

/// Makes `t` the replica of the store with config `primary` and catalog
/// `db`, once: the catalog remembers that it was set up, so that a replica
/// that loses its marker later (an unmounted share) is reported missing
/// and never set up again over whatever is mounted there instead.
pub fn set_up(t: &dyn Target, primary: &Config, db: &Db, store: &Path) -> Result<()> {
    let key = format!("replica_init:{}", t.describe());
    if db.counter(&key)? != 0 {
        return Ok(());
    }
    init_replica(t, primary, store)?;
    let mut b = crate::catalog::db::Batch::default();
    b.put_counter(&key, 1);
    db.apply(b)?;
    db.flush()?;
    tracing::debug!("{}: set up as the replica", t.describe());
    Ok(())
}

/// A replica file: `magic`, u32 LE version 1, then `body`, which an
/// encrypted store seals with the file's name as associated data.
fn encode_file(crypto: &Crypto, magic: &[u8; 8], name: &str, body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&crypto.seal(Domain::Meta, name.as_bytes(), body));
    out
}

/// The body of replica file `name` (see [`encode_file`]).
fn decode_file(crypto: &Crypto, magic: &[u8; 8], name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    crate::format::check_magic(bytes, magic, name)?;
    crypto.open(Domain::Meta, name.as_bytes(), &bytes[12..], name)
}

fn head_file(seq: CommitSeq) -> String {
    format!("{:016x}.head", seq.0)
}

/// The file of a named snapshot: the hex of its name's bytes, or in an
/// encrypted store of the name's keyed hash (the name is in the body).
fn name_file(crypto: &Crypto, name: &str) -> String {
    match crypto.name_key(b"replica name", name.as_bytes()) {
        Some(h) => format!("{}.name", hex::encode(&h[..16])),
        None => format!("{}.name", hex(name)),
    }
}

fn encode_head(crypto: &Crypto, seq: CommitSeq, id: &ObjectId) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(seq.0).id(id);
    encode_file(crypto, HEAD_MAGIC, &head_file(seq), &e.0)
}

/// The last part of an object name.
fn base(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The newest readable head file of a replica: (seq, commit id).
pub fn read_head(t: &dyn Target, crypto: &Crypto) -> Result<Option<(CommitSeq, ObjectId)>> {
    Ok(read_heads(t, crypto)?.into_iter().max_by_key(|h| h.0))
}

/// Every readable head file of a replica (the newest and the few kept
/// before it); a damaged one is skipped with a log line.
pub fn read_heads(t: &dyn Target, crypto: &Crypto) -> Result<Vec<(CommitSeq, ObjectId)>> {
    let mut out = Vec::new();
    for (name, _) in t.list("heads/")? {
        let file = base(&name);
        let Some(n) = file
            .strip_suffix(".head")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        else {
            continue;
        };
        let decoded = t
            .get(&name)?
            .ok_or_else(|| Error::Store(format!("{name}: gone since the listing")))
            .and_then(|b| {
                let body = decode_file(crypto, HEAD_MAGIC, file, &b)?;
                let mut d = Dec::new(&body, "replica head");
                Ok((CommitSeq(d.u64()?), d.id()?))
            });
        match decoded {
            Ok(h) if h.0.0 == n => out.push(h),
            Ok(_) => tracing::warn!(
                "{}/{name}: names another commit than its file name",
                t.describe()
            ),
            Err(err) => tracing::warn!("skipping a damaged head file: {err}"),
        }
    }
    Ok(out)
}

/// The commits prunes dropped, as the replica has been told (a replica
/// made before format 4 has no `pruned/`: none).
pub fn read_pruned(
    t: &dyn Target,
    crypto: &Crypto,
) -> Result<std::collections::HashSet<CommitSeq>> {
    let mut out = std::collections::HashSet::new();
    for (name, _) in t.list("pruned/")? {
        let file = base(&name);
        if !file.ends_with(".pruned") {
            continue;
        }
        let Some(b) = t.get(&name)? else { continue };
        let body = decode_file(crypto, PRUNED_MAGIC, file, &b)?;
        let mut d = Dec::new(&body, "replica pruned list");
        let n = d.count(8)?;
        for _ in 0..n {
            out.insert(CommitSeq(d.u64()?));
        }
        d.end()?;
    }
    Ok(out)
}

/// Applies the primary's prune records older than `delete_after` to the
/// replica: the dropped commits' list first, then the deleted packs;
/// then forgets the record. `due` were read before this round shipped
/// the packs, so the copies a repack made are on the replica already.
fn apply_deletions(
    t: &dyn Target,
    db: &Db,
    due: Vec<(u64, crate::catalog::db::ReplicaDeletion)>,
    delete_after: Duration,
    peers: &Peers,
) -> Result<()> {
    let now = Time::now().as_nanos();
    let next = db.counter(&peers.own)?;
    for (no, d) in due {
        if now - d.time.as_nanos() < delete_after.as_nanos() as i128 {
            break;
        }
        if no < next {
            // Applied here; another replica has yet to.
            continue;
        }
        if !d.commits.is_empty() {
            // An older revfs would rebuild the dropped commits: raise the
            // replica's format first.
            if let Some(bytes) = t.get(CONF_FILE)? {
                let (version, cfg) = Config::decode(&bytes, &t.describe())?;
                if version < crate::format::FORMAT_VERSION {
                    t.put_replace(CONF_FILE, &cfg.encode()?)?;
                }
            }
            let mut e = Enc::default();
            e.u32(d.commits.len() as u32);
            for c in &d.commits {
                e.u64(c.0);
            }
            let name = format!("{no:016x}.pruned");
            let body = encode_file(db.crypto(), PRUNED_MAGIC, &name, &e.0);
            t.put_replace(&format!("pruned/{name}"), &body)?;
        }
        crate::crashpoint::crash_point("replica:pruned-written");
        for p in &d.packs {
            delete_pack_object(t, &format!("packs/{}", pack::pack_name(*p)))?;
            remove_parts(t, *p)?;
        }
        t.sync_dir("packs")?;
        t.sync_dir("index")?;
        let mut b = crate::catalog::db::Batch::default();
        b.put_counter(&peers.own, no + 1);
        let mut done = true;
        for other in peers.all.iter().filter(|k| **k != peers.own) {
            done &= db.counter(other)? > no;
        }
        if done {
            b.del_replica_deletion(no);
        }
        db.apply(b)?;
        tracing::info!(
            "replica {}: applied prune record {no} ({} commits, {} packs)",
            t.describe(),
            d.commits.len(),
            d.packs.len()
        );
    }
    Ok(())
}

/// Named snapshots recorded on a replica.
pub fn read_names(t: &dyn Target, crypto: &Crypto) -> Result<Vec<(String, CommitSeq)>> {
    let mut out = Vec::new();
    for (obj, _) in t.list("names/")? {
        let fname = base(&obj);
        let Some(hex) = fname.strip_suffix(".name") else {
            continue;
        };
        let Some(b) = t.get(&obj)? else { continue };
        let body = decode_file(crypto, NAME_MAGIC, fname, &b)?;
        let mut d = Dec::new(&body, "replica name");
        let name = if crypto.is_encrypted() {
            let n = d.bytes16()?;
            String::from_utf8(n).map_err(|_| d.bad("name is not UTF-8"))?
        } else {
            let Some(name) = unhex(hex) else { continue };
            name
        };
        out.push((name, CommitSeq(d.u64()?)));
    }
    Ok(out)
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(h: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..h.len())
        .step_by(2)
        .map(|i| h.get(i..i + 2).and_then(|x| u8::from_str_radix(x, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// How much of each pack a replica holds: (bytes held without a gap from
/// the start, whole pack present), from one listing.
pub fn replica_packs(t: &dyn Target) -> Result<HashMap<PackNo, (u64, bool)>> {
    let mut whole: HashMap<PackNo, u64> = HashMap::new();
    let mut parts: HashMap<PackNo, Vec<(u64, u64)>> = HashMap::new();
    for (name, size) in t.list("packs/")? {
        match pack::parse_name(base(&name)) {
            Some((n, None)) => {
                whole.insert(n, size);
            }
            Some((n, Some(start))) => parts.entry(n).or_default().push((start, start + size)),
            None => {}
        }
    }
    let mut out: HashMap<PackNo, (u64, bool)> =
        whole.into_iter().map(|(n, len)| (n, (len, true))).collect();
    for (n, mut runs) in parts {
        if out.contains_key(&n) {
            continue;
        }
        runs.sort();
        let mut held = 0;
        for (s, e) in runs {
            if s > held {
                break;
            }
            held = held.max(e);
        }
        out.insert(n, (held, false));
    }
    Ok(out)
}

/// The primary's packs and their durable lengths; the open pack counts
/// only up to its last sync.
fn primary_packs(store: &ObjectStore) -> Result<Vec<(PackNo, u64, bool)>> {
    let open = store.open_pack();
    let mut out = Vec::new();
    for no in pack::list_packs(store.packs_dir())? {
        match open {
            Some((o, synced)) if o == no => out.push((no, synced, false)),
            _ => {
                let p = pack::pack_path(store.packs_dir(), no);
                match std::fs::metadata(&p) {
                    Ok(m) => out.push((no, m.len(), true)),
                    // Deleted by a prune since the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::IoAt { path: p, source: e }),
                }
            }
        }
    }
    Ok(out)
}

/// Which prune records the replicas of a store have applied: a catalog
/// counter per replica (the next record it is to apply). A record is
/// dropped once every configured replica applied it.
#[derive(Clone, Debug)]
pub struct Peers {
    own: String,
    all: Vec<String>,
}

impl Peers {
    /// The replica `own` among `all` (the configured replicas).
    pub fn new(db: &Db, own: &Path, all: &[PathBuf]) -> Peers {
        let key = |p: &Path| {
            let h = db.path_hash(&p.to_string_lossy());
            let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("replica_applied/{hex}")
        };
        Peers {
            own: key(own),
            all: all.iter().map(|p| key(p)).collect(),
        }
    }

    /// A store's only replica.
    pub fn alone(db: &Db, spec: &Path) -> Peers {
        Peers::new(db, spec, &[spec.to_path_buf()])
    }
}

/// Ships what the replica lacks: pack bytes first, then the head and the
/// names. Returns the replicated head.
pub fn ship(
    t: &dyn Target,
    db: &Db,
    store: &ObjectStore,
    delete_after: Duration,
    peers: &Peers,
) -> Result<CommitSeq> {
    // Prune records before the packs: what a record needs shipped first
    // was durable before the record, so it is in the packs listed below.
    let deletions = db.replica_deletions()?;
    sync_keys(t, store)?;
    // Read the head before the pack lengths: lengths only grow, so every
    // object of this head is within the lengths read after it.
    let head = CommitSeq(db.counter("head")?);
    let head_id = db.commit(head)?.map(|c| c.0);
    let have = replica_packs(t)?;
    for (no, len, sealed) in primary_packs(store)? {
        let (got, whole) = have.get(&no).copied().unwrap_or((0, false));
        let src = pack::pack_path(store.packs_dir(), no);
        if sealed {
            if whole {
                continue;
            }
            let Ok(from) = File::open(&src) else {
                // Deleted by a prune since the listing: nothing to ship.
                continue;
            };
            put_pack_object(t, &format!("packs/{}", pack::pack_name(no)), &from, 0, len)?;
            remove_parts(t, no)?;
        } else if got < len {
            let from = File::open(&src).map_err(Error::io_at(&src))?;
            let name = format!("packs/{}", pack::part_name(no, got));
            put_pack_object(t, &name, &from, got, len)?;
        }
    }
    crate::crashpoint::crash_point("replica:packs-shipped");
    if let Some(id) = head_id {
        let have_head = read_head(t, db.crypto())?.map_or(0, |h| h.0.0);
        if head.0 > have_head {
            let body = encode_head(db.crypto(), head, &id);
            t.put_replace(&format!("heads/{}", head_file(head)), &body)?;
            prune_heads(t, head)?;
        }
    }
    crate::crashpoint::crash_point("replica:head-written");
    sync_names(t, db)?;
    apply_deletions(t, db, deletions, delete_after, peers)?;
    Ok(head)
}

/// Copies the primary's key slots to the replica when they differ (a key
/// added, removed or changed), so the replica opens with the same
/// passphrases as the primary.
fn sync_keys(t: &dyn Target, store: &ObjectStore) -> Result<()> {
    if !store.crypto().is_encrypted() {
        return Ok(());
    }
    let Some(primary) = store.packs_dir().parent() else {
        return Ok(());
    };
    let src = primary.join(crate::crypto::slots::KEYS_FILE);
    let want = std::fs::read(&src).map_err(Error::io_at(&src))?;
    if t.get(crate::crypto::slots::KEYS_FILE)?.as_deref() != Some(&want) {
        t.put_replace(crate::crypto::slots::KEYS_FILE, &want)?;
    }
    Ok(())
}

/// Publishes bytes `start..end` of the local pack `from` as `name`: its
/// index object first (`pack_index`), so every pack object has one.
fn put_pack_object(t: &dyn Target, name: &str, from: &File, start: u64, end: u64) -> Result<()> {
    let idx = pack_index::PackIndex::of_file(from, start, end).map_err(Error::Io)?;
    t.put_replace(&pack_index::index_name(name), &idx.encode())?;
    t.put_immutable(name, from, start, end - start)?;
    // The shipper is the last reader of what was just written: its pages
    // go, as they do without a replica (drop-behind). Only a hint.
    let _ = crate::sys::drop_cached(from, start, end - start);
    Ok(())
}

/// Deletes pack object `name` and then its index.
fn delete_pack_object(t: &dyn Target, name: &str) -> Result<()> {
    t.delete(name)?;
    t.delete(&pack_index::index_name(name))
}

fn remove_parts(t: &dyn Target, no: PackNo) -> Result<()> {
    let parts = t.list(&format!("packs/{}", pack::part_prefix(no)))?;
    for (name, _) in &parts {
        delete_pack_object(t, name)?;
    }
    if !parts.is_empty() {
        t.sync_dir("packs")?;
    }
    Ok(())
}

fn prune_heads(t: &dyn Target, newest: CommitSeq) -> Result<()> {
    let mut all = Vec::new();
    for (name, _) in t.list("heads/")? {
        if let Some(hex) = base(&name).strip_suffix(".head")
            && let Ok(n) = u64::from_str_radix(hex, 16)
            && n < newest.0
        {
            all.push((n, name));
        }
    }
    all.sort();
    let drop = all.len().saturating_sub(KEEP_HEADS);
    for (_, name) in all.into_iter().take(drop) {
        let _ = t.delete(&name);
    }
    Ok(())
}

fn sync_names(t: &dyn Target, db: &Db) -> Result<()> {
    let crypto = db.crypto();
    let want: HashMap<String, CommitSeq> = db.names()?.into_iter().collect();
    let have: HashMap<String, CommitSeq> = read_names(t, crypto)?.into_iter().collect();
    for (name, seq) in &want {
        if have.get(name) != Some(seq) {
            let mut e = Enc::default();
            if crypto.is_encrypted() {
                e.bytes16(name.as_bytes());
            }
            e.u64(seq.0);
            let file = name_file(crypto, name);
            let body = encode_file(crypto, NAME_MAGIC, &file, &e.0);
            t.put_replace(&format!("names/{file}"), &body)?;
        }
    }
    let gone: Vec<&String> = have.keys().filter(|n| !want.contains_key(*n)).collect();
    for name in &gone {
        t.delete(&format!("names/{}", name_file(crypto, name)))?;
    }
    if !gone.is_empty() {
        t.sync_dir("names")?;
    }
    Ok(())
}

/// The lag of a replica behind the primary, read from both.
pub fn lag(spec: &Path, db: &Db, store: &ObjectStore) -> Result<ReplicaStatus> {
    let t = target_of(spec)?;
    let rhead = read_head(&*t, db.crypto())?.map_or(0, |h| h.0.0);
    let have = replica_packs(&*t)?;
    lag_from(spec, rhead, &have, db, store)
}

/// The lag given what the replica is known to hold.
fn lag_from(
    spec: &Path,
    rhead: u64,
    have: &HashMap<PackNo, (u64, bool)>,
    db: &Db,
    store: &ObjectStore,
) -> Result<ReplicaStatus> {
    let head = db.counter("head")?;
    let mut bytes = 0;
    for (no, len, _) in primary_packs(store)? {
        bytes += len.saturating_sub(have.get(&no).map_or(0, |h| h.0));
    }
    let lag_commits = head.saturating_sub(rhead);
    let lag_seconds = if lag_commits > 0 {
        let t = db
            .commit(CommitSeq(rhead + 1))?
            .map_or(Time::now(), |c| c.1);
        (Time::now().as_nanos() - t.as_nanos()).max(0) as f64 / 1e9
    } else {
        0.0
    };
    Ok(ReplicaStatus {
        path: Some(spec.to_path_buf()),
        state: if lag_commits == 0 && bytes == 0 {
            "ok"
        } else {
            "behind"
        }
        .into(),
        lag_commits,
        lag_bytes: bytes,
        lag_seconds,
        replica_head: rhead,
        last_error: None,
    })
}

impl crate::engine::ReplicaLink for Replicator {
    fn kick(&self) {
        Replicator::kick(self)
    }

    fn wait_for(&self, seq: CommitSeq, timeout: Duration) -> Result<()> {
        Replicator::wait_for(self, seq, timeout)
    }

    fn status(&self) -> ReplicaStatus {
        Replicator::status(self)
    }
}

/// A replica of a store that is not mounted (no replicator): reports its
/// lag, read from both sides when asked.
pub struct Offline {
    pub dir: PathBuf,
    pub db: Arc<Db>,
    pub store: Arc<ObjectStore>,
}

impl crate::engine::ReplicaLink for Offline {
    fn kick(&self) {}

    /// Nothing ships without a replicator: nothing to wait for.
    fn wait_for(&self, _seq: CommitSeq, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    fn status(&self) -> ReplicaStatus {
        lag(&self.dir, &self.db, &self.store).unwrap_or_else(|e| ReplicaStatus {
            path: Some(self.dir.clone()),
            state: "missing".into(),
            last_error: Some(e.to_string()),
            ..ReplicaStatus::none()
        })
    }
}

/// A replica as a place to read damaged records again from (healing).
pub struct HealFrom(pub Arc<dyn Target>);

impl crate::store::PackSource for HealFrom {
    fn read_at(&self, pack: PackNo, offset: u64, len: usize, _fresh: bool) -> Result<Vec<u8>> {
        target::read_pack_range(&*self.0, pack, offset, len)
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// The background replicator of a mounted store.
pub struct Replicator {
    /// The replica as configured (a directory or s3://BUCKET/PREFIX).
    dir: PathBuf,
    target: Arc<dyn Target>,
    /// How long the replica keeps what a prune deleted.
    delete_after: Duration,
    config: Config,
    db: Arc<Db>,
    store: Arc<ObjectStore>,
    peers: Peers,
    inner: Mutex<Inner>,
    cv: Condvar,
}

struct Inner {
    status: ReplicaStatus,
    /// What the replica held after the last successful round.
    held: HashMap<PackNo, (u64, bool)>,
    stop: bool,
    kick: bool,
    /// Temporary files of earlier rounds have been removed.
    cleaned: bool,
    /// What the primary held when the last successful round began, and
    /// when: a remote replica is not asked anything while that is still so
    /// (up to [`IDLE_RECHECK`]), since every request costs.
    idle: Option<(PrimaryState, Instant)>,
}

/// The primary's head and pack lengths (what a round ships).
type PrimaryState = (u64, Vec<(PackNo, u64, bool)>);

/// An idle remote replica is still looked at this often (its marker).
const IDLE_RECHECK: Duration = Duration::from_secs(30);

impl Replicator {
    pub fn new(
        dir: PathBuf,
        target: Arc<dyn Target>,
        config: Config,
        db: Arc<Db>,
        store: Arc<ObjectStore>,
    ) -> Arc<Self> {
        Arc::new(Replicator {
            peers: Peers::new(&db, &dir, &config.replicas()),
            target,
            delete_after: config.replica_delete_after(),
            inner: Mutex::new(Inner {
                status: ReplicaStatus {
                    path: Some(dir.clone()),
                    state: "behind".into(),
                    ..Default::default()
                },
                held: HashMap::new(),
                stop: false,
                kick: true,
                cleaned: false,
                idle: None,
            }),
            dir,
            config,
            db,
            store,
            cv: Condvar::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One round now, from the caller's thread (the last one at unmount).
    pub fn ship_now(&self) -> Result<CommitSeq> {
        ship(
            &*self.target,
            &self.db,
            &self.store,
            self.delete_after,
            &self.peers,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a round now (after a commit).
    pub fn kick(&self) {
        self.lock().kick = true;
        self.cv.notify_all();
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }

    /// Lag figures as of now against what the last successful round
    /// shipped; state and last error as of the last round.
    pub fn status(&self) -> ReplicaStatus {
        let (mut s, held) = {
            let g = self.lock();
            (g.status.clone(), g.held.clone())
        };
        if let Ok(l) = lag_from(&self.dir, s.replica_head, &held, &self.db, &self.store) {
            s.lag_commits = l.lag_commits;
            s.lag_bytes = l.lag_bytes;
            s.lag_seconds = l.lag_seconds;
            if s.state == "ok" || s.state == "behind" {
                s.state = l.state;
            }
        }
        s
    }

    /// Waits until the replica holds commit `seq` (for `--replica-sync`).
    pub fn wait_for(&self, seq: CommitSeq, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        self.kick();
        let mut g = self.lock();
        while g.status.replica_head < seq.0 {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Store(format!(
                    "replica {} did not take commit {} within {timeout:?} ({})",
                    self.dir.display(),
                    seq.0,
                    g.status.last_error.as_deref().unwrap_or(&g.status.state)
                )));
            }
            g = self
                .cv
                .wait_timeout(g, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// Whether the replica can be written now: its marker is there, or it
    /// was never set up and can be now (the directory appeared). The first
    /// time, temporary files of an interrupted round are removed.
    fn writable(&self) -> std::result::Result<(), (&'static str, String)> {
        let store = self.store.packs_dir().parent().unwrap_or(Path::new("."));
        if let Err(e) = set_up(&*self.target, &self.config, &self.db, store) {
            let state = match self.target.local_dir() {
                Some(d) if !d.is_dir() => "missing",
                _ => "error",
            };
            return Err((state, e.to_string()));
        }
        match check_marker(&*self.target, &self.config.store_id) {
            Ok(true) => {
                if !std::mem::replace(&mut self.lock().cleaned, true) {
                    self.target.clean();
                }
                Ok(())
            }
            Ok(false) => Err((
                "missing",
                format!(
                    "{}: replica marker missing (unmounted share or removed directory); \
                 not writing there until it is back",
                    self.dir.display()
                ),
            )),
            Err(e) => Err(("error", e.to_string())),
        }
    }

    /// One replication round; updates the state, logs state changes.
    fn round(&self) {
        // The primary now; nothing to ship when it is what the last good
        // round began with and no prune record waits (a remote target).
        let state: Option<PrimaryState> =
            match (self.db.counter("head"), primary_packs(&self.store)) {
                (Ok(h), Ok(p)) => Some((h, p)),
                _ => None,
            };
        let waiting = self.db.replica_deletions().map_or(true, |d| !d.is_empty());
        if self.target.local_dir().is_none() && !waiting {
            let g = self.lock();
            if g.status.state == "ok"
                && let (Some(now), Some((then, at))) = (&state, &g.idle)
                && now == then
                && at.elapsed() < IDLE_RECHECK
            {
                return;
            }
        }
        let result = self.writable().and_then(|()| {
            self.ship_now()
                .and_then(|head| Ok((head, replica_packs(&*self.target)?)))
                .map_err(|e| ("error", e.to_string()))
        });
        let mut g = self.lock();
        let before = g.status.state.clone();
        match result {
            Ok((head, held)) => {
                g.status.replica_head = head.0;
                g.held = held;
                g.idle = state.map(|s| (s, Instant::now()));
                g.status.state = "ok".into();
                if before != "ok" && before != "behind" {
                    tracing::warn!("replica {} is back; catching up", self.dir.display());
                }
                g.status.last_error = None;
            }
            Err((state, msg)) => {
                if before != state {
                    tracing::warn!("replica {}: {msg}", self.dir.display());
                }
                g.status.state = state.into();
                g.status.last_error = Some(msg);
                g.idle = None;
            }
        }
        drop(g);
        self.cv.notify_all();
    }

    /// Runs rounds until stopped: at once when kicked, else every second
    /// (every 5 s while the replica is failing).
    pub fn run(self: Arc<Self>) {
        loop {
            let failing = {
                let g = self.lock();
                if g.stop {
                    return;
                }
                g.status.state == "missing" || g.status.state == "error"
            };
            self.round();
            let wait = if failing {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(1)
            };
            let mut g = self.lock();
            if !g.kick {
                g = self
                    .cv
                    .wait_timeout_while(g, wait, |i| !i.kick && !i.stop)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            g.kick = false;
            if g.stop {
                return;
            }
        }
    }
}
