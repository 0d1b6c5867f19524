//! `revfs drill STORE`: a disaster-recovery drill that proves recovery by
//! doing it. It runs `revfs recover` (the same code) from the replica into
//! a scratch directory, verifies the recovered store (every object
//! hash-checked, every reference present), mounts it read-only, and
//! compares a sample of versions (every version with `full`) byte for byte
//! with the primary; the same sample is also read through a read-only
//! mount of the replica itself, the other way back. It reports the RPO
//! (replica lag) and the measured RTO (the recovery, the first verified
//! byte, the whole sample), and fails whenever `recover` would fail or
//! would give back less than the replica's head holds. The scratch
//! directory needs room for the whole replica and is removed afterwards.

use crate::engine::Options;
use crate::error::{Error, Result};
use crate::replica::ReplicaStatus;
use crate::replica::import::Imported;
use crate::repo::{Config, Repo, mount_of};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub replica: PathBuf,
    /// Where the drill recovered to (removed afterwards).
    pub scratch: PathBuf,
    /// What `recover` rebuilt from the replica.
    pub recovered: Imported,
    /// Whether `verify` found the recovered store clean.
    pub recovered_clean: bool,
    pub versions_in_replica: usize,
    /// Versions the replica still holds that a prune dropped on the
    /// primary (inside the replica's grace window): not compared.
    pub pruned_on_primary: usize,
    pub sampled: usize,
    pub bytes_compared: u64,
    pub mismatches: Vec<String>,
    pub rpo: ReplicaStatus,
    /// Time to rebuild the store from the replica.
    pub rto_recover_seconds: f64,
    /// From the start of the recovery to the first verified byte read
    /// through a mount of the recovered store.
    pub rto_first_byte_seconds: f64,
    /// To the end of the whole sample.
    pub rto_sample_seconds: f64,
    pub passed: bool,
}

/// A read-only mount by a child `revfs mount`; unmounted when dropped.
struct TempMount {
    dir: PathBuf,
    child: Option<Child>,
}

impl TempMount {
    fn new(store: &Path, dir: PathBuf, extra: &[&std::ffi::OsStr]) -> Result<TempMount> {
        std::fs::create_dir_all(&dir).map_err(Error::io_at(&dir))?;
        let exe = std::env::current_exe().map_err(Error::Io)?;
        let log_path = dir.with_extension("log");
        let log = std::fs::File::create(&log_path).map_err(Error::io_at(&log_path))?;
        let mut cmd = Command::new(exe);
        // An encrypted store's passphrase, however this drill was given it
        // (a prompt or --password-file reach no child by themselves).
        if let Some(p) = crate::crypto::passphrase::known() {
            cmd.env(crate::crypto::passphrase::ENV, p.as_str());
        }
        let child = cmd
            .arg("mount")
            .arg(store)
            .arg(&dir)
            .arg("--read-only")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(Error::Io)?;
        let mut m = TempMount {
            dir,
            child: Some(child),
        };
        let start = Instant::now();
        loop {
            if mount_of(&m.dir).is_ok_and(|(root, _)| root == m.dir) {
                return Ok(m);
            }
            if let Some(c) = m.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                let err = std::fs::read_to_string(&log_path).unwrap_or_default();
                m.child = None;
                return Err(Error::Store(format!(
                    "mounting {} failed ({st}): {}",
                    store.display(),
                    err.lines().last().unwrap_or("")
                )));
            }
            if start.elapsed() > Duration::from_secs(120) {
                return Err(Error::Store(format!(
                    "{} did not mount within 120 s",
                    store.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("umount").arg(&self.dir).status();
        let start = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Where the primary is mounted now, if it is.
fn primary_mount(store: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(store).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let source = right.split(' ').nth(1)?;
        let mnt = left.split(' ').nth(4)?;
        (source.strip_prefix("revfs:").map(PathBuf::from) == Some(abs.clone()))
            .then(|| PathBuf::from(mnt))
    })
}

fn same_bytes(a: &Path, b: &Path) -> std::io::Result<(bool, u64)> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut total = 0;
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok((false, total));
        }
        if na == 0 {
            return Ok((true, total));
        }
        total += na as u64;
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Bytes free for an unprivileged writer in the filesystem of `path`.
fn free_bytes(path: &Path) -> Result<u64> {
    let s = crate::sys::statvfs(path).map_err(Error::io_at(path))?;
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Bytes of every file under `dir`.
fn size_of_tree(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The scratch directory of one drill; removed with everything in it.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("{}: not removed: {e}", self.0.display());
        }
    }
}

fn read_only() -> Options {
    Options {
        read_only: true,
        ..Options::default()
    }
}

/// Runs the drill: recover into `scratch` (default the temp directory),
/// verify, mount, compare with the primary; `progress(step, done, total)`
/// follows each step ("recovering", "verifying": bytes; "comparing":
/// versions).
pub fn drill(
    store: &Path,
    replica: Option<PathBuf>,
    full: bool,
    sample: usize,
    scratch: Option<PathBuf>,
    progress: &mut dyn FnMut(&'static str, u64, u64),
) -> Result<DrillReport> {
    let (_, cfg) = Config::read(store)?;
    let replica = replica.or(cfg.replica).ok_or_else(|| {
        Error::Store(format!(
            "{}: no replica configured (give --replica DIR)",
            store.display()
        ))
    })?;
    let s3 = crate::replica::target::is_s3(&replica.to_string_lossy());
    let replica = crate::config::absolute_spec(&replica)?;

    // RPO: what the primary has committed that the replica lacks.
    let live = primary_mount(store);
    let rpo = match &live {
        Some(_) => {
            let v = crate::control::request(store, crate::control::Request::Status)?;
            serde_json::from_value(v["replica"].clone()).unwrap_or_default()
        }
        None => {
            let r = Repo::open(store, read_only())?;
            crate::replica::lag(&replica, &r.engine.db, &r.engine.store)?
        }
    };

    let base = scratch.unwrap_or_else(std::env::temp_dir);
    let base = std::path::absolute(&base).map_err(Error::io_at(&base))?;
    let held = if s3 {
        // Recover downloads the bucket, then rebuilds beside it.
        let objects = crate::replica::target_of(&replica)?.list("")?;
        2 * objects.iter().map(|o| o.1).sum::<u64>()
    } else {
        size_of_tree(&replica.join("packs"))
    };
    let need = held + (64 << 20);
    let free = free_bytes(&base)?;
    if free < need {
        return Err(Error::Store(format!(
            "{}: {:.1} GiB free, the drill recovers the whole replica there and needs \
             {:.1} GiB; give --scratch DIR on a larger disk",
            base.display(),
            free as f64 / (1u64 << 30) as f64,
            need as f64 / (1u64 << 30) as f64
        )));
    }
    let tmp = Scratch(base.join(format!("revfs-drill-{}", std::process::id())));
    std::fs::create_dir(&tmp.0).map_err(Error::io_at(&tmp.0))?;

    // The recovery itself, by the code of `revfs recover`.
    let start = Instant::now();
    let recovered_dir = tmp.0.join("recovered");
    let recovered = crate::replica::recover::recover(&replica, &recovered_dir, |d, t| {
        progress("recovering", d, t)
    })?;
    let rto_recover_seconds = start.elapsed().as_secs_f64();
    let (recovered_clean, history) = {
        let r = Repo::open(&recovered_dir, read_only())?;
        let report =
            crate::verify::verify(&r.engine, None, false, |d, t| progress("verifying", d, t))?;
        (report.clean, r.engine.history()?)
    };
    let rmount = TempMount::new(&recovered_dir, tmp.0.join("recovered-mnt"), &[])?;
    // The other way back: serving the replica directly, read-only (a
    // bucket through a cache of its own).
    let cache = tmp.0.join("replica-cache");
    let cache_args = [std::ffi::OsStr::new("--cache-dir"), cache.as_os_str()];
    let replica_mount = TempMount::new(
        &replica,
        tmp.0.join("replica-mnt"),
        if s3 { &cache_args } else { &[] },
    )?;
    let (pmount, pdir) = match live {
        Some(d) => (None, d),
        None => (
            Some(TempMount::new(store, tmp.0.join("primary"), &[])?),
            tmp.0.join("primary"),
        ),
    };

    // Versions a prune dropped on the primary stay on the replica for its
    // grace window (`--replica-delete-after`): nothing to compare them with.
    let in_replica = history.len();
    let history: Vec<_> = history
        .into_iter()
        .filter(|v| {
            pdir.join(format!(".snapshots/at/{}/{}", v.time, v.path))
                .exists()
        })
        .collect();
    // Every version with `full`; otherwise an even spread, newest included.
    let picked: Vec<_> = if full || history.len() <= sample {
        history.iter().collect()
    } else {
        let step = history.len() as f64 / sample as f64;
        (0..sample)
            .map(|i| &history[history.len() - 1 - (i as f64 * step) as usize])
            .collect()
    };
    let mut report = DrillReport {
        replica: replica.clone(),
        scratch: tmp.0.clone(),
        versions_in_replica: in_replica,
        pruned_on_primary: in_replica - history.len(),
        sampled: picked.len(),
        bytes_compared: 0,
        mismatches: Vec::new(),
        rpo,
        rto_recover_seconds,
        rto_first_byte_seconds: 0.0,
        rto_sample_seconds: 0.0,
        passed: false,
        recovered,
        recovered_clean,
    };
    if !recovered_clean {
        report
            .mismatches
            .push("the recovered store does not verify clean".into());
    }
    let r = &report.recovered;
    if r.lost_commits + r.damaged_commits + r.corrupt_records > 0 {
        report.mismatches.push(format!(
            "the replica is damaged: {} records failed their hash check, {} newest commits \
             could not be recovered, {} older commits lack objects",
            r.corrupt_records, r.lost_commits, r.damaged_commits
        ));
    }
    let total = picked.len() as u64;
    for (i, v) in picked.into_iter().enumerate() {
        progress("comparing", i as u64, total);
        let rel = format!(".snapshots/at/{}/{}", v.time, v.path);
        let mounts = [
            Some(("recovered", &rmount.dir)),
            Some(("replica mount", &replica_mount.dir)),
        ];
        for (what, dir) in mounts.into_iter().flatten() {
            match same_bytes(&dir.join(&rel), &pdir.join(&rel)) {
                Ok((true, n)) => report.bytes_compared += n,
                Ok((false, _)) => report
                    .mismatches
                    .push(format!("{rel}: {what} and primary differ")),
                Err(e) => report.mismatches.push(format!("{rel} ({what}): {e}")),
            }
            if report.rto_first_byte_seconds == 0.0 {
                report.rto_first_byte_seconds = start.elapsed().as_secs_f64();
            }
        }
    }
    report.rto_sample_seconds = start.elapsed().as_secs_f64();
    report.passed = report.mismatches.is_empty() && report.sampled > 0;
    drop(rmount);
    drop(replica_mount);
    drop(pmount);
    Ok(report)
}
