//! A store directory as a whole: create it, check its config, take its
//! lock, and open the catalog, the object store and the engine over it.

use crate::catalog::db::Db;
use crate::crypto::Crypto;
use crate::engine::{Engine, Options};
use crate::error::{Error, Result};
use crate::format::FORMAT_VERSION;
use crate::store::ObjectStore;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::config::{CONF_FILE, Config, DEFAULT_PRUNE_INTERVAL, DEFAULT_REPLICA_DELETE_AFTER};
pub use crate::sys::sync_dir;

pub const SOCKET_FILE: &str = "daemon.sock";

/// Makes everything under `dir` its owner's alone (directories 0700,
/// files 0600), as a store made by an older revfs may not be; says once
/// how many entries it changed. Best effort: an entry it cannot change
/// (not ours, a read-only share) is left with a warning.
pub fn tighten(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut changed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.file_type().is_symlink() {
            continue;
        }
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & want)) {
                Ok(()) => changed += 1,
                Err(e) => tracing::warn!("{}: cannot make it private: {e}", p.display()),
            }
        }
        if m.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    if changed > 0 {
        tracing::info!(
            "{}: {changed} files and directories were readable by other users; now owner-only",
            dir.display()
        );
    }
}

/// Creates a new store in `store` (missing or empty) replicating to
/// `replica` (an existing, empty directory). A failure at any step leaves
/// `store` as it was (missing, or empty) and the replica untouched.
pub fn init_with_replica(store: &Path, replicas: &[PathBuf], encrypt: bool) -> Result<Config> {
    for dir in replicas {
        crate::replica::check_empty(&*crate::replica::target_of(dir)?)?;
    }
    check_new_store(store)?;
    // Asked before anything is made: a refused passphrase leaves nothing.
    let pass = if encrypt {
        Some(crate::crypto::passphrase::new(store, true)?)
    } else {
        None
    };
    let existed = store.exists();
    let made = init(store, pass.as_ref().map(|p| p.as_bytes())).and_then(|(cfg, crypto)| {
        if replicas.is_empty() {
            return Ok(cfg);
        }
        let mut r = Repo::open_unlocked(store, Options::default(), crypto)?;
        for dir in replicas {
            crate::replica::init_replica(&*crate::replica::target_of(dir)?, &r.config, store)?;
        }
        if let Some(w) = r.attach_replicas(replicas)?.into_iter().next() {
            return Err(Error::Store(w));
        }
        r.engine.shutdown()?;
        Ok(r.config.clone())
    });
    if made.is_err() {
        remove_new_store(store, existed);
    }
    made
}

/// Removes what `init` made in `store`: the directory itself, or (when it
/// existed before, empty) everything in it.
fn remove_new_store(store: &Path, existed: bool) {
    if !existed {
        let _ = std::fs::remove_dir_all(store);
        return;
    }
    if let Ok(rd) = std::fs::read_dir(store) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Creates a new store in `store` (which must be missing or empty),
/// encrypted when a passphrase is given; its config and keys.
pub fn init(store: &Path, passphrase: Option<&[u8]>) -> Result<(Config, Crypto)> {
    check_new_store(store)?;
    std::fs::create_dir_all(store.join("packs")).map_err(Error::io_at(store))?;
    let crypto = match passphrase {
        None => Crypto::plain(),
        Some(p) => {
            let master = crate::crypto::MasterKey::random()?;
            crate::crypto::slots::KeyFile::new(&master, p)?.write(store)?;
            Crypto::new(&master)?
        }
    };
    let db = Db::open_store(store, true, crypto.clone())?;
    let (uid, gid) = crate::sys::uid_gid();
    Engine::init_catalog(&db, uid, gid)?;
    drop(db);
    let cfg = Config {
        store_id: blake3::hash(
            format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
        )
        .to_hex()[..32]
            .to_string(),
        created: crate::timefmt::rfc3339(crate::format::Time::now()),
        id_key: None,
        cipher: crypto
            .is_encrypted()
            .then(|| crate::crypto::CIPHER.to_string()),
        replica: None,
        more_replicas: Vec::new(),
        role: None,
        retention: None,
        prune_interval_secs: None,
        replica_delete_after_secs: None,
        checkpoint_markers: None,
    };
    // The config goes last: a store without it is not a store yet.
    cfg.write(store)?;
    Ok((cfg, crypto))
}

/// Refuses a `store` directory that holds anything (a store or not).
fn check_new_store(store: &Path) -> Result<()> {
    if store.join(CONF_FILE).exists() {
        return Err(Error::Store(format!(
            "{}: already a revfs store",
            store.display()
        )));
    }
    if store.exists() {
        let mut it = std::fs::read_dir(store).map_err(Error::io_at(store))?;
        if it.next().is_some() {
            return Err(Error::Store(format!(
                "{}: directory is not empty and is not a revfs store; refusing to use it",
                store.display()
            )));
        }
    }
    Ok(())
}

/// The exclusive lock of a store: one process at a time opens it.
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub fn acquire(store: &Path) -> Result<StoreLock> {
        let path = store.join("lock");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io_at(&path))?;
        // A lock can outlive its holder for an instant (a child forked
        // while it was open holds it until exec), so try for up to a second.
        let mut locked = false;
        for _ in 0..10 {
            locked = crate::sys::try_lock(&f);
            if locked {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !locked {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::Store(format!(
                "{}: store is in use by another revfs process (pid {}); \
                 a store can be mounted once at a time",
                store.display(),
                holder.trim()
            )));
        }
        f.set_len(0).map_err(Error::io_at(&path))?;
        let _ = writeln!(f, "{}", std::process::id());
        Ok(StoreLock { _file: f })
    }
}

/// An open store: config, lock, catalog, objects and engine.
pub struct Repo {
    pub path: PathBuf,
    pub config: Config,
    pub engine: Arc<Engine>,
    /// The configured replicas, the first first (one client each for
    /// healing and replicating).
    pub replicas: Vec<(PathBuf, Arc<dyn crate::replica::target::Target>)>,
    _lock: Option<StoreLock>,
}

impl Repo {
    /// Opens the store at `store`; an encrypted one asks for its
    /// passphrase (`crypto::passphrase`) before anything is written.
    pub fn open(store: &Path, opts: Options) -> Result<Repo> {
        let (_, config) = Config::read(store)?;
        let crypto = crate::crypto::slots::unlock(store, config.cipher.as_deref())?;
        Repo::open_unlocked(store, opts, crypto)
    }

    /// Opens the store at `store` with its keys already unlocked.
    pub fn open_unlocked(store: &Path, mut opts: Options, crypto: Crypto) -> Result<Repo> {
        let (version, config) = Config::read(store)?;
        opts.policy = config.policy().merged(&opts.policy);
        opts.markers = config.markers()?;
        if config.role.as_deref() == Some(crate::replica::ROLE_REPLICA) {
            return Repo::open_replica(store, config, opts, crypto);
        }
        let lock = StoreLock::acquire(store)?;
        if !opts.read_only {
            tighten(store);
        }
        let leftover = store.join(crate::replica::recover::MARKER);
        if !opts.read_only && leftover.exists() {
            // A recover that was killed after writing the config (its last
            // step) and before removing its marker: the store is complete.
            let _ = std::fs::remove_file(&leftover);
            let _ = std::fs::remove_dir_all(store.join(crate::replica::recover::DOWNLOAD));
        }
        let db = Arc::new(Db::open_store(store, false, crypto)?);
        let packs = store.join("packs");
        if !packs.is_dir() {
            return Err(Error::Store(format!(
                "{}: packs directory missing; run `revfs recover` from a replica",
                packs.display()
            )));
        }
        let objects = Arc::new(ObjectStore::open(&packs, db.clone(), opts.read_only)?);
        objects.set_cache_limit(opts.chunk_cache);
        if let Some((total, _)) = crate::sys::fs_space(&packs) {
            // Half the low-water mark at which a mounted store drops history,
            // at most 1 GiB: room for that prune's copies on a full disk.
            let low = crate::retention::plan::low_water(total);
            objects.space.set_reserve((low / 2).min(1 << 30));
        }
        let engine = Arc::new(Engine::new(db, objects, store.join("staging"), opts)?);
        if version < FORMAT_VERSION && !engine.read_only() {
            // Formats 3 and 4 only add what older stores never hold (inner
            // manifest nodes; pruned history): raising the number keeps an
            // older revfs from opening a store it could no longer read.
            // Raised before the catalog's upgrade below, so that a crash
            // in it leaves a store only this revfs opens (and finishes):
            // a format-11 revfs would read checked values as data.
            config.write(store)?;
            tracing::info!("store format {version} upgraded to {FORMAT_VERSION}");
        }
        // A catalog of an earlier layout gets the newer indexes once (even
        // for a read-only mount: only the catalog changes, never the data);
        // its values get their checks at a writable open.
        crate::engine::history::upgrade(&engine)?;
        let mut repo = Repo {
            path: store.to_path_buf(),
            config,
            engine,
            replicas: Vec::new(),
            _lock: Some(lock),
        };
        repo.attach_replicas(&[])?;
        Ok(repo)
    }

    /// Uses `dir` (or the configured replica) as this store's replica:
    /// records it in the config, makes an empty directory a replica the
    /// first time, and heals corrupt reads from it. A replica that was set
    /// up once and lost its marker (an unmounted share) is never
    /// re-initialized: it is reported missing instead.
    /// Returns a warning for the user when the replica could not be set up
    /// (the replicator sets it up once the directory is there).
    pub fn attach_replicas(&mut self, dirs: &[PathBuf]) -> Result<Vec<String>> {
        if !dirs.is_empty() {
            let mut want = Vec::new();
            for dir in dirs {
                let dir = crate::config::absolute_spec(dir)?;
                if !want.contains(&dir) {
                    want.push(dir);
                }
            }
            if self.config.replicas() != want {
                self.config.replica = Some(want.remove(0));
                self.config.more_replicas = want;
                if !self.engine.read_only() {
                    self.config.write(&self.path)?;
                }
            }
        }
        let mut warnings = Vec::new();
        self.replicas.clear();
        for dir in self.config.replicas() {
            let target = crate::replica::target_of(&dir)?;
            if !self.engine.read_only()
                && let Err(e) =
                    crate::replica::set_up(&*target, &self.config, &self.engine.db, &self.path)
            {
                let msg = format!(
                    "replica {} not set up yet: {e}; replication starts once it can be set up",
                    dir.display()
                );
                tracing::warn!("{msg}");
                warnings.push(msg);
            }
            if !self.engine.read_only()
                && let Some(d) = target.local_dir()
                && d.join(CONF_FILE).exists()
            {
                tighten(d);
            }
            self.replicas.push((dir, target));
        }
        let heal = self.replicas.iter();
        let heal = heal.map(|r| Arc::new(crate::replica::HealFrom(r.1.clone())) as _);
        self.engine.store.set_heal_from(heal.collect());
        // The shipper reads what was written, and drops it once shipped.
        self.engine.store.set_drop_behind(self.replicas.is_empty());
        let links = self.replicas.iter().map(|(dir, _)| {
            Arc::new(crate::replica::Offline {
                dir: dir.clone(),
                db: self.engine.db.clone(),
                store: self.engine.store.clone(),
            }) as Arc<dyn crate::engine::ReplicaLink>
        });
        self.engine.set_replicas(links.collect());
        Ok(warnings)
    }

    /// A replica, served read-only from a catalog rebuilt in memory; the
    /// replica directory itself is never written.
    fn open_replica(dir: &Path, config: Config, opts: Options, crypto: Crypto) -> Result<Repo> {
        if !opts.read_only {
            return Err(Error::Store(format!(
                "{}: is a replica; mount it with --read-only, or make a writable \
                 store from it with `revfs recover`",
                dir.display()
            )));
        }
        let db = Arc::new(Db::temporary_with(crypto)?);
        let packs = dir.join("packs");
        let mut found = crate::replica::import::Imported::default();
        crate::replica::import::index_packs(&packs, &db, &mut found)?;
        let objects = Arc::new(ObjectStore::open(&packs, db.clone(), true)?);
        crate::replica::import::import(
            &crate::replica::target::DirTarget::new(dir.to_path_buf()),
            objects.clone(),
            &db,
            crate::replica::import::Check::Head,
            &mut found,
        )?;
        let engine = Arc::new(Engine::new(db, objects, dir.join("staging"), opts)?);
        Ok(Repo {
            path: dir.to_path_buf(),
            config,
            engine,
            replicas: Vec::new(),
            _lock: None,
        })
    }
}

/// Where a mount of a bucket caches what it reads.
#[derive(Clone, Debug, Default)]
pub struct CacheOptions {
    /// The cache directory (default: `replica::remote::default_cache_dir`).
    pub dir: Option<PathBuf>,
    /// At most this many bytes of blocks.
    pub size: u64,
}

impl Repo {
    /// Opens a replica in a bucket (`s3://BUCKET/PREFIX`) read-only, served
    /// straight from it: its config and keys were read with
    /// `replica::remote::open_config`; the object index comes from its
    /// pack index objects, and every read is a ranged GET through the
    /// block cache.
    pub fn open_remote(
        spec: &Path,
        config: Config,
        opts: Options,
        crypto: Crypto,
        cache: &CacheOptions,
    ) -> Result<Repo> {
        use crate::replica::remote;
        if !opts.read_only {
            return Err(Error::Store(format!(
                "{}: a bucket is mounted with --read-only; make a writable store from \
                 it with `revfs recover {} NEWSTORE`",
                spec.display(),
                spec.display()
            )));
        }
        let target = crate::replica::target_of(spec)?;
        let dir = cache
            .dir
            .clone()
            .unwrap_or_else(|| remote::default_cache_dir(&config.store_id));
        let blocks = crate::replica::cache::BlockCache::open(&dir, cache.size, &config.store_id)?;
        let packs = remote::RemotePacks::open(target.clone(), blocks)?;
        let db = Arc::new(Db::temporary_with(crypto)?);
        let mut found = crate::replica::import::Imported::default();
        packs.index_into(&db, &mut found)?;
        let objects = Arc::new(ObjectStore::open_remote(Arc::new(packs), db.clone(), &dir));
        crate::replica::import::import(
            &*target,
            objects.clone(),
            &db,
            crate::replica::import::Check::Head,
            &mut found,
        )?;
        tracing::info!(
            "{}: {} objects in {} packs, head {}; cache {}",
            spec.display(),
            found.objects,
            found.packs,
            found.head,
            dir.display()
        );
        let engine = Arc::new(Engine::new(db, objects, dir.join("staging"), opts)?);
        Ok(Repo {
            path: spec.to_path_buf(),
            config,
            engine,
            replicas: Vec::new(),
            _lock: None,
        })
    }
}

/// Where the daemon serving `store` keeps its control socket and log: the
/// store itself, except for a replica, which a read-only mount never
/// writes (it may be a read-only share): there a private directory under
/// the runtime directory (`$XDG_RUNTIME_DIR`, else `/run` for root, else
/// the temp directory), named by the hash of the replica's path.
pub fn runtime_dir(store: &Path) -> Result<PathBuf> {
    let s3 = crate::replica::target::is_s3(&store.to_string_lossy());
    let is_replica = s3
        || Config::read(store)
            .is_ok_and(|(_, c)| c.role.as_deref() == Some(crate::replica::ROLE_REPLICA));
    if !is_replica {
        return Ok(store.to_path_buf());
    }
    let abs = crate::config::absolute_spec(store)?;
    let root = crate::sys::is_root();
    let base = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ if root && Path::new("/run").is_dir() => PathBuf::from("/run"),
        _ => std::env::temp_dir(),
    };
    let hash = blake3::hash(abs.as_os_str().as_encoded_bytes()).to_hex();
    let dir = base.join(format!("revfs-{}", &hash[..16]));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(Error::io_at(&dir))?;
    Ok(dir)
}

/// The revfs mount that holds `path`: (mount root, store directory),
/// read from /proc/self/mountinfo (the mount source is `revfs:STORE`).
pub fn mount_of(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let abs = std::path::absolute(path).map_err(Error::io_at(path))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(Error::Io)?;
    let mut best: Option<(PathBuf, PathBuf)> = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mnt = match left.split(' ').nth(4) {
            Some(m) => PathBuf::from(unescape_mountinfo(m)),
            None => continue,
        };
        let mut r = right.split(' ');
        let (fstype, source) = (r.next().unwrap_or(""), r.next().unwrap_or(""));
        let Some(store) = source.strip_prefix("revfs:") else {
            continue;
        };
        if fstype.starts_with("fuse") && abs.starts_with(&mnt) {
            let longer = best
                .as_ref()
                .is_none_or(|(b, _)| mnt.as_os_str().len() > b.as_os_str().len());
            if longer {
                best = Some((mnt, PathBuf::from(unescape_mountinfo(store))));
            }
        }
    }
    best.ok_or_else(|| Error::Store(format!("{}: not inside a mounted revfs", path.display())))
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A store named directly, or the store behind a mounted revfs path.
pub fn resolve_store(target: &Path) -> Result<PathBuf> {
    if target.join(CONF_FILE).exists() {
        return Ok(target.to_path_buf());
    }
    mount_of(target).map(|(_, store)| store)
}
