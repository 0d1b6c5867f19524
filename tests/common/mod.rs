//! Helpers for tests that mount revfs for real: each test gets its own
//! temporary store and mountpoint, and a guard that unmounts and ends the
//! daemon even when the test panics. Every wait has a timeout.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod metrics;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_revfs");

/// Whether mount tests can run here. Under CI a missing /dev/fuse or
/// missing root is a failure, not a skip.
pub fn fuse_available() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/dev/fuse").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("mount tests need root and /dev/fuse, and CI=true forbids skipping them");
        }
        eprintln!("SKIPPED: mount tests need root and /dev/fuse");
    }
    ok
}

pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let p = p.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*p))
}

/// Waits (bounded) until `ready`, failing at once with `log()` when
/// `child` exits first.
pub fn wait_ready(
    child: &mut Child,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let start = Instant::now();
    while !ready() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("exited with {st} before {what} was ready: {}", log());
        }
        assert!(
            start.elapsed() < timeout,
            "{what} not ready after {timeout:?}: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A store mounted by a `revfs mount` child process.
pub struct Mount {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
    pub mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Mount {
    /// A fresh store, mounted with `args`; None when mount tests must be skipped.
    pub fn new(args: &[&str]) -> Option<Mount> {
        let mut m = Mount::init()?;
        m.start(args);
        Some(m)
    }

    /// A fresh store in its own temp dir, not mounted yet.
    pub fn init() -> Option<Mount> {
        if !fuse_available() {
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("revfs-test")
            .tempdir()
            .unwrap();
        let store = tmp.path().join("store");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let out = Command::new(BIN).arg("init").arg(&store).output().unwrap();
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = tmp.path().join("daemon.log");
        Some(Mount {
            tmp,
            store,
            mnt,
            child: None,
            log,
        })
    }

    /// A fresh store mounted with a replica (`TMP/replica`) and `extra` args.
    pub fn with_replica(extra: &[&str]) -> Option<(Mount, PathBuf)> {
        let mut m = Mount::init()?;
        let r = m.tmp.path().join("replica");
        std::fs::create_dir(&r).unwrap();
        let mut args = vec!["--replica", r.to_str().unwrap()];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        m.start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Some((m, r))
    }

    /// An existing store, not mounted yet, to mount at `mnt` (an existing
    /// directory) with its daemon's output in `log`.
    pub fn attach(store: PathBuf, mnt: PathBuf, log: PathBuf) -> Mount {
        Mount {
            tmp: tempfile::tempdir().unwrap(),
            store,
            mnt,
            child: None,
            log,
        }
    }

    pub fn is_mounted(&self) -> bool {
        self.child.is_some()
    }

    pub fn start(&mut self, args: &[&str]) {
        self.start_env(args, &[]);
    }

    /// Mounts with `args` and extra environment variables for the daemon.
    pub fn start_env(&mut self, args: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "already mounted");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("mount")
            .arg(&self.store)
            .arg(&self.mnt)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mnt = self.mnt.clone();
        let log = self.log.clone();
        let child = self.child.insert(child);
        wait_ready(
            child,
            "the mount",
            Duration::from_secs(20),
            || is_mountpoint(&mnt),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mounted").id()
    }

    /// Clean unmount; asserts the daemon flushed and exited 0.
    pub fn unmount(&mut self) {
        // Busy for a moment when another test thread forked a child while
        // this one had a file of the mount open (the child holds a copy of
        // the descriptor until it execs): tried again, bounded.
        let mut tries = 0;
        while !Command::new("umount")
            .arg(&self.mnt)
            .status()
            .unwrap()
            .success()
        {
            tries += 1;
            assert!(tries < 50, "umount failed");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_exit_ok();
    }

    /// Waits (bounded) for the daemon to exit; asserts it exited 0.
    pub fn wait_exit_ok(&mut self) {
        let mut child = self.child.take().expect("mounted");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("daemon still running 30 s after umount");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "daemon exited with {status}: {}",
            self.log_text()
        );
    }

    pub fn remount(&mut self, args: &[&str]) {
        self.unmount();
        self.start(args);
    }

    /// kill -9 of the daemon, then drop the dead mount.
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("mounted");
        let _ = child.kill();
        let _ = child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        wait_until("dead mount to go", Duration::from_secs(10), || {
            !is_mountpoint(&self.mnt)
        });
    }

    /// Runs a shell command in the mount; asserts it succeeds.
    pub fn sh(&self, script: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&self.mnt)
            .env("M", &self.mnt)
            .env("T", self.tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "command failed: {script}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the daemon said is the first thing a failed CI run needs.
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("umount").arg(&self.mnt).status();
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if is_mountpoint(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// A copy of `store` (at `name` in `dir`) after a `revfs prune ARGS`
/// of it that was killed at crash point `point` (asserted to have
/// stopped there).
pub fn pruned_until_crash(store: &Path, dir: &Path, args: &[&str], point: &str) -> PathBuf {
    let copy = dir.join(format!("at-{}", point.replace(':', "-")));
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(store)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new(BIN)
        .arg("prune")
        .args(args)
        .arg(&copy)
        .env("REVFS_CRASH_AT", point)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(point),
        "{point}: the prune did not stop there: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    copy
}

/// Runs `script` with `sh` as user and group 65534 (nobody); whether it
/// succeeded.
pub fn as_nobody(script: &str) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "sh",
            "-c",
        ])
        .arg(script)
        .output()
        .unwrap()
        .status
        .success()
}

/// A byte string as an assertion shows it: its length and a hash (a
/// failed `assert_eq!` of two 40 MiB checkpoints prints 40 MiB).
#[derive(Debug, PartialEq, Eq)]
pub struct Digest(pub usize, pub String);

pub fn digest(b: &[u8]) -> Digest {
    Digest(b.len(), blake3::hash(b).to_hex()[..16].to_string())
}

pub fn digests(v: &[Vec<u8>]) -> Vec<Digest> {
    v.iter().map(|b| digest(b)).collect()
}

/// The raw errno of an io::Error.
pub fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A small seeded generator (xorshift64): tests replay exactly.
pub struct Rng(pub u64);

impl Rng {
    /// A well-mixed start state for any seed (nearby seeds diverge at once).
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 24) as u8).collect()
    }
    pub fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// Flips one bit of the byte in the middle of the largest pack of `store`.
pub fn flip_in_largest_pack(store: &Path) {
    let pack = std::fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = std::fs::read(&pack).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x08;
    std::fs::write(&pack, &b).unwrap();
}

/// `revfs verify STORE` passes and says clean.
pub fn verify_clean(store: &Path) {
    let (ok, out) = revfs(&["verify".as_ref(), store.as_os_str()]);
    assert!(ok && out.contains("clean"), "verify: {out}");
}

/// Bytes of the files in `dir` (not below it); a file gone between the
/// listing and its stat (a cache block evicted meanwhile) counts nothing.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Bytes of the store's pack files.
pub fn packs_bytes(store: &Path) -> u64 {
    dir_bytes(&store.join("packs"))
}

/// `revfs status STORE --json`.
pub fn status(store: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["status", "--json"])
        .arg(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asks the daemon serving `store` for a commit now (through its control
/// socket) and returns once it is made.
pub fn commit(store: &Path) {
    use std::io::{BufRead, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(store.join("daemon.sock"))
        .expect("the daemon's control socket");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.write_all(b"{\"cmd\":\"commit\"}\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&conn).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\""), "commit: {line}");
}

/// Commits what was written so far, then waits (bounded) until the
/// replica holds every commit and byte.
pub fn wait_replicated(store: &Path, timeout: Duration) {
    commit(store);
    wait_until("replica lag 0", timeout, || {
        let s = status(store);
        s["replica"]["state"] == "ok"
            && s["replica"]["lag_commits"] == 0
            && s["replica"]["lag_bytes"] == 0
    });
}

/// Runs `revfs ARGS`; returns (success, stdout + stderr).
pub fn revfs(args: &[&std::ffi::OsStr]) -> (bool, String) {
    revfs_env(&[], &[], args)
}

/// An argument as an OsStr.
pub fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Runs `revfs ARGS` with the variables `set` and without those in
/// `unset`; returns (success, stdout + stderr).
pub fn revfs_env(
    set: &[(&str, &str)],
    unset: &[&str],
    args: &[&std::ffi::OsStr],
) -> (bool, String) {
    let mut c = Command::new(BIN);
    c.args(args);
    for v in unset {
        c.env_remove(v);
    }
    let out = c.envs(set.iter().copied()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Makes a Python venv at `dir` and installs `packages` from PyPI into it
/// (the real S3 server, the ML frameworks); whether both worked.
pub fn pip_venv(dir: &Path, packages: &[&str]) -> bool {
    Command::new("python3")
        .args(["-m", "venv"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success())
}

/// A tmpfs mounted for a test, lazily unmounted when dropped.
pub struct Tmpfs(pub PathBuf);
impl Tmpfs {
    /// Its free bytes.
    pub fn free(&self) -> u64 {
        revfs::sys::fs_space(&self.0).unwrap().1
    }

    pub fn new(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root");
        Tmpfs(at.to_path_buf())
    }
    pub fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Serializes tests of one file that open stores in this process and also
/// fork children: a child forked while a store is open holds its locks
/// (flock follows the file description) until it execs.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
