//! A mounted store: the FUSE session, the group-commit loop, the control
//! socket, and a clean flush on `umount`, SIGINT or SIGTERM.

use crate::control;
use crate::engine::{Engine, Inval, Options};
use crate::error::{Error, Result};
use crate::fs::RevFs;
use crate::replica::Replicator;
use crate::repo::{Repo, SOCKET_FILE, runtime_dir};
use fuser::{Config, MountOption, SessionACL};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct MountOptions {
    pub engine: Options,
    /// Replicas that set or override the configured ones.
    pub replicas: Vec<PathBuf>,
    pub commit_interval: Duration,
    /// FUSE worker threads: one a core, at least two so a slow read does
    /// not stall others. (More threads than cores cost: a create loop of
    /// 2 KiB files ran 1,100-1,200 files/s with 4 threads on 2 cores and
    /// 1,500-4,600 with 2, each request woken on another thread.)
    pub threads: usize,
    /// The store's keys when the caller unlocked them already (else the
    /// store asks for its passphrase when it opens).
    pub crypto: Option<crate::crypto::Crypto>,
    /// The block cache of a bucket mount.
    pub cache: crate::repo::CacheOptions,
    /// Where Prometheus metrics are served (`HOST:PORT`), if anywhere.
    pub metrics_addr: Option<String>,
    /// Scheduled verification, if any (`scrub`).
    pub verify: Option<crate::scrub::Schedule>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            engine: Options::default(),
            replicas: Vec::new(),
            commit_interval: Duration::from_secs(1),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)),
            crypto: None,
            cache: crate::repo::CacheOptions {
                dir: None,
                size: DEFAULT_CACHE_SIZE,
            },
            metrics_addr: None,
            verify: None,
        }
    }
}

/// How much a bucket mount caches on local disk unless told.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;

/// A thread of the mounted store that runs until its owner drops it.
struct Background {
    stop: Arc<Stop>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The stop signal of a [`Background`] thread.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    /// Waits `d` (less when stopped); whether to go on.
    fn sleep(&self, d: Duration) -> bool {
        let g = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let g = self
            .cv
            .wait_timeout_while(g, d, |st| !*st)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        !*g
    }
}

impl Background {
    fn spawn(name: &str, body: impl FnOnce(&Stop) + Send + 'static) -> Background {
        let stop = Arc::new(Stop::default());
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&s))
            .ok();
        Background { stop, thread }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        *self.stop.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Commits every `interval` while anything changed, until stopped.
fn commit_loop(engine: Arc<Engine>, interval: Duration) -> Background {
    Background::spawn("revfs-commit", move |stop| {
        let warned = AtomicBool::new(false);
        while stop.sleep(interval) {
            match engine.commit(false) {
                Ok(_) => warned.store(false, Ordering::Relaxed),
                Err(e) => {
                    if !warned.swap(true, Ordering::Relaxed) {
                        tracing::error!("commit failed: {e}");
                    }
                }
            }
        }
    })
}

/// Prunes under the store's policy (re-read from its config each round,
/// so `revfs policy` takes effect without a remount) every interval, and
/// at once when the store's filesystem runs low on space (then the oldest
/// unprotected history goes until twice the low-water mark is free:
/// history never makes a write fail; `retention::plan::space_bound`).
fn prune_loop(engine: Arc<Engine>, store: PathBuf) -> Background {
    Background::spawn("revfs-prune", move |stop| {
        run_prune_loop(&engine, &store, stop)
    })
}

/// How often the prune loop looks at the free space.
const SPACE_CHECK: Duration = Duration::from_secs(1);
/// The same while a write waits for room (`store::space`).
const SPACE_CHECK_WANTED: Duration = Duration::from_millis(100);

/// What the prune loop last said, so that it says each thing once.
#[derive(Default)]
struct Said {
    over: bool,
    failed: bool,
    low_space: bool,
    /// Rounds in a row short of space: each halves the size asked for.
    low_rounds: u32,
    /// A round short of space that freed nothing: the next such round
    /// waits (the live data and protected history fill the disk; a mark
    /// every second would only burn CPU).
    fruitless_until: Option<std::time::Instant>,
}

/// The pace of the background recoding of cold packs, in raw bytes a
/// second: about a tenth of one core's zstd, so a running job does not
/// feel it.
const RECODE_RATE: u64 = 32 << 20;

/// How long the prune loop waits after a round short of space freed nothing.
const FRUITLESS_WAIT: Duration = Duration::from_secs(10);

fn run_prune_loop(engine: &Engine, store: &Path, stop: &Stop) {
    let mut said = Said::default();
    let mut last = std::time::Instant::now();
    engine.store.space.set_freeing(true);
    loop {
        let cfg = crate::repo::Config::read(store).map(|c| c.1);
        let interval = cfg
            .as_ref()
            .map_or(crate::repo::DEFAULT_PRUNE_INTERVAL, |c| c.prune_interval());
        let check = if engine.store.space.wanted() {
            SPACE_CHECK_WANTED
        } else {
            SPACE_CHECK
        };
        let wait = interval.saturating_sub(last.elapsed()).min(check);
        if !stop.sleep(wait) {
            break;
        }
        let Ok(cfg) = cfg else { continue };
        let mut policy = cfg.policy();
        engine.set_policy(policy.clone());
        let short = low_space_bound(engine);
        said.low_rounds = if short.is_some() {
            said.low_rounds + 1
        } else {
            0
        };
        if short.is_some() != said.low_space {
            said.low_space = short.is_some();
            if said.low_space {
                tracing::warn!(
                    "the store's disk is nearly full: dropping the oldest unprotected history"
                );
            }
        }
        let waiting = said
            .fruitless_until
            .is_some_and(|t| std::time::Instant::now() < t);
        // A write short of room waits for this loop unless it frees nothing.
        engine.store.space.set_freeing(!waiting);
        let low = short
            .filter(|_| !waiting)
            .map(|b| b >> (said.low_rounds - 1).min(63));
        if let Some(bound) = low {
            let b = policy.max_size.map_or(bound, |m| {
                m.bytes(crate::retention::prune::fs_bytes(engine))
                    .min(bound)
            });
            policy.max_size = Some(crate::retention::SizeBound::Bytes(b));
        } else if last.elapsed() < interval {
            continue;
        }
        last = std::time::Instant::now();
        // Packs sealed since the last such round are recoded cold (not
        // while short of space: a recode needs room for its copies).
        let recompress =
            low.is_none() && crate::retention::prune::cold_due(engine).unwrap_or(false);
        if policy.drops_anything() || recompress {
            // Short of space, sweep even when no commit goes
            // (a failed big write leaves unreferenced chunks).
            prune_round(engine, policy, low.is_none(), recompress, &mut said);
        }
    }
    engine.store.space.set_freeing(false);
}

/// The size the store must come down to because its disk is nearly full.
fn low_space_bound(engine: &Engine) -> Option<u64> {
    let (total, free) = crate::sys::fs_space(engine.store.packs_dir())?;
    // Only when short of space: what the store holds (a listing of packs).
    if free >= crate::retention::plan::low_water(total) {
        return None;
    }
    let stored = crate::retention::prune::stored_bytes(engine).ok()?;
    crate::retention::plan::space_bound(total, free, stored)
}

/// One prune of the loop; logs what changed.
fn prune_round(
    engine: &Engine,
    policy: crate::retention::Policy,
    only_if_dropping: bool,
    recompress: bool,
    said: &mut Said,
) {
    let opts = crate::retention::PruneOptions {
        policy,
        dry_run: false,
        only_if_dropping,
        recompress,
        no_deltas: false,
        // Short of space, as fast as it goes.
        recode_rate: only_if_dropping.then_some(RECODE_RATE),
    };
    match crate::retention::prune(engine, &opts, &mut |_, _| {}) {
        Ok(r) => {
            tracing::debug!("prune round: {r:?}");
            said.failed = false;
            said.fruitless_until = (!only_if_dropping && r.bytes_freed == 0)
                .then(|| std::time::Instant::now() + FRUITLESS_WAIT);
            if said.fruitless_until.is_some() {
                engine.store.space.set_freeing(false);
            }
            if r.commits_dropped + r.packs_deleted + r.packs_repacked > 0 {
                tracing::info!(
                    "prune: dropped {} commits, freed {} bytes ({} packs deleted, {} repacked, {} deltas rebased) in {:.2} s",
                    r.commits_dropped,
                    r.bytes_freed,
                    r.packs_deleted,
                    r.packs_repacked,
                    r.deltas_rebased,
                    r.seconds
                );
            }
            if r.over_max_size != said.over {
                said.over = r.over_max_size;
                if said.over {
                    tracing::warn!(
                        "the protected history alone is over --max-size ({} bytes): it is kept; \
                         loosen --keep-within/--keep-versions or raise --max-size",
                        r.max_size.unwrap_or(0)
                    );
                } else {
                    tracing::info!("the store fits --max-size again");
                }
            }
        }
        Err(e) => {
            if !std::mem::replace(&mut said.failed, true) {
                tracing::error!("prune failed: {e}");
            }
        }
    }
}

/// Mounts `store` at `mountpoint` and serves it in the foreground until it
/// is unmounted or the process gets SIGINT/SIGTERM; then flushes.
///
/// `startup` hears of warnings and of the moment the mount serves (the
/// parent of a `--daemon` child waits for that).
pub fn run(
    store: &Path,
    mountpoint: &Path,
    opts: MountOptions,
    startup: &mut Startup,
) -> Result<()> {
    let s3 = crate::replica::target::is_s3(&store.to_string_lossy());
    // Absolute, so that the mount source (revfs:STORE) finds the store from anywhere.
    let store = &crate::config::absolute_spec(store)?;
    if let Err(e) = std::fs::metadata(mountpoint)
        && e.raw_os_error() == Some(libc::ENOTCONN)
    {
        // The mount of a daemon that died (kill -9, OOM): detach it first.
        tracing::warn!(
            "{}: dead mount left by a crashed daemon; detaching it",
            mountpoint.display()
        );
        crate::sys::lazy_unmount(mountpoint);
    }
    if !mountpoint.is_dir() {
        return Err(Error::Store(format!(
            "{}: mountpoint is not a directory",
            mountpoint.display()
        )));
    }
    let mut repo = match &opts.crypto {
        _ if s3 => {
            let t = crate::replica::target_of(store)?;
            let (cfg, crypto) = match &opts.crypto {
                Some(c) => (crate::replica::remote::read_config(&*t)?, c.clone()),
                None => {
                    let (cfg, c, _) = crate::replica::remote::open_config(&*t, store)?;
                    (cfg, c)
                }
            };
            Repo::open_remote(store, cfg, opts.engine.clone(), crypto, &opts.cache)?
        }
        Some(c) => Repo::open_unlocked(store, opts.engine.clone(), c.clone())?,
        None => Repo::open(store, opts.engine.clone())?,
    };
    for w in repo.attach_replicas(&opts.replicas)? {
        startup.warn(&w);
    }
    let engine = repo.engine.clone();
    if let Some(addr) = &opts.metrics_addr {
        crate::metrics::http::serve(addr, crate::metrics::registry(&engine))?;
    }
    if let Some(schedule) = opts.verify
        && !engine.read_only()
    {
        let targets = repo.replicas.iter().map(|(_, t)| t.clone()).collect();
        crate::scrub::spawn(&engine, schedule, targets)?;
    }
    let mut replicators = Vec::new();
    if !engine.read_only() {
        for (dir, target) in &repo.replicas {
            let r = Replicator::new(
                dir.clone(),
                target.clone(),
                repo.config.clone(),
                engine.db.clone(),
                engine.store.clone(),
            );
            let runner = r.clone();
            std::thread::Builder::new()
                .name("revfs-replica".into())
                .spawn(move || runner.run())
                .map_err(Error::Io)?;
            replicators.push(r);
        }
        let links = replicators
            .iter()
            .map(|r| r.clone() as Arc<dyn crate::engine::ReplicaLink>);
        engine.set_replicas(links.collect());
    }
    let mut options = vec![
        MountOption::FSName(format!("revfs:{}", store.display())),
        MountOption::Subtype("revfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if opts.engine.read_only {
        options.push(MountOption::RO);
    }
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = SessionACL::All;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    // Answering before the mount appears: a command run as soon as the
    // mountpoint shows up (`revfs log` right after a mount) must reach this
    // daemon, not find the store locked and no one at the socket.
    let control = control::Server::start(&runtime_dir(store)?.join(SOCKET_FILE), engine.clone())?;
    let mut session = fuser::Session::new(RevFs::new(engine.clone()), mountpoint, &config)
        .map_err(|e| Error::Store(format!("cannot mount at {}: {e}", mountpoint.display())))?;
    let notifier = session.notifier();
    engine.set_invalidator(Box::new(move |what| {
        use std::os::unix::ffi::OsStrExt;
        // The kernel may not hold the name or inode at all: nothing to drop.
        let _ = match what {
            Inval::Entry(parent, name) => {
                notifier.inval_entry(fuser::INodeNo(parent.0), std::ffi::OsStr::from_bytes(&name))
            }
            Inval::Inode(ino) => notifier.inval_inode(fuser::INodeNo(ino.0), 0, 0),
        };
    }));
    let mut unmounter = session.unmount_callable();
    let mnt: PathBuf = mountpoint.to_path_buf();

    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]).map_err(Error::Io)?;
    let sig_handle = signals.handle();
    std::thread::Builder::new()
        .name("revfs-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!("signal {sig}: unmounting {}", mnt.display());
                if let Err(e) = unmounter.unmount() {
                    tracing::warn!("unmount failed ({e}); detaching");
                    crate::sys::lazy_unmount(&mnt);
                }
            }
        })
        .map_err(Error::Io)?;

    let commits = commit_loop(engine.clone(), opts.commit_interval);
    let pruner = (!engine.read_only()).then(|| prune_loop(engine.clone(), store.clone()));
    tracing::info!("mounted {} at {}", store.display(), mountpoint.display());
    startup.ready();
    crate::sys::sd_notify("READY=1");
    let served = session.run();
    crate::sys::sd_notify("STOPPING=1");
    drop(control);
    drop(pruner);
    drop(commits);
    sig_handle.close();
    // `destroy` flushed already when the kernel said goodbye; this covers
    // the paths where it could not.
    engine.shutdown()?;
    for r in replicators {
        // A last round ships the sealed pack and the final head.
        if let Err(e) = r.ship_now() {
            tracing::warn!(
                "replica {} not up to date at unmount: {e}",
                r.dir().display()
            );
        }
        r.stop();
    }
    served.map_err(|e| Error::Store(format!("FUSE session ended with an error: {e}")))?;
    tracing::info!("unmounted {}", mountpoint.display());
    drop(repo);
    Ok(())
}

/// How a `--daemon` child tells its parent how its start went, over a
/// pipe whose fd is in `REVFS_STARTUP_FD`: lines `warn MSG`, then `ready`
/// or `error MSG`. In the foreground there is no pipe and every method
/// does nothing (warnings and errors reach the terminal through the log).
#[derive(Default)]
pub struct Startup {
    pipe: Option<std::fs::File>,
}

const STARTUP_FD: &str = "REVFS_STARTUP_FD";

impl Startup {
    /// The pipe to the parent, when this process is a `--daemon` child.
    pub fn from_env() -> Startup {
        let fd = std::env::var(STARTUP_FD)
            .ok()
            .and_then(|v| v.parse::<i32>().ok());
        // The parent passed this descriptor for this process alone.
        let pipe = fd.and_then(crate::sys::own_fd);
        // Called first thing on the mount path, before any thread starts.
        crate::sys::remove_env_single_threaded(STARTUP_FD);
        Startup { pipe }
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        if let Some(p) = self.pipe.as_mut() {
            let _ = writeln!(p, "{}", line.replace('\n', " "));
        }
    }

    pub fn warn(&mut self, msg: &str) {
        self.send(&format!("warn {msg}"));
    }

    pub fn ready(&mut self) {
        self.send("ready");
        self.pipe = None;
    }

    pub fn error(&mut self, msg: &str) {
        self.send(&format!("error {msg}"));
        self.pipe = None;
    }
}

/// `--daemon`: starts this binary again in the foreground mode as a
/// detached child (own session, output to the daemon log) and returns
/// once the child serves the mount, with the child's warnings; or fails
/// with the child's error.
/// `env`: variables the daemon gets (an encrypted store's passphrase).
pub fn spawn_detached(
    store: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> Result<(u32, Vec<String>)> {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    let log_path = runtime_dir(store)?.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(Error::io_at(&log_path))?;
    let (reader, writer) = std::io::pipe().map_err(Error::Io)?;
    let wfd = writer.as_raw_fd();
    let exe = std::env::current_exe().map_err(Error::Io)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .envs(env.iter().copied())
        .env(STARTUP_FD, wfd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(Error::Io)?)
        .stderr(log);
    // Its own session; the write end of the pipe stays open across exec.
    crate::sys::detach_keeping(&mut cmd, wfd);
    let mut child = cmd.spawn().map_err(Error::Io)?;
    drop(writer);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut warnings = Vec::new();
    let start = std::time::Instant::now();
    let last_log_line = || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.lines().last().unwrap_or("").to_string()
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => match line.split_once(' ').unwrap_or((&line, "")) {
                ("ready", _) => return Ok((child.id(), warnings)),
                ("warn", w) => warnings.push(w.to_string()),
                ("error", e) => {
                    let _ = child.wait();
                    return Err(Error::Store(e.to_string()));
                }
                _ => {}
            },
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // The child closed the pipe without a word: it died.
                let status = child.wait().map_err(Error::Io)?;
                return Err(Error::Store(format!(
                    "daemon exited ({status}): {}",
                    last_log_line()
                )));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if start.elapsed() > Duration::from_secs(600) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Store(format!(
                        "daemon did not mount within 600 s: {}",
                        last_log_line()
                    )));
                }
            }
        }
    }
}
