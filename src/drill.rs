//! `revfs drill STORE`: a disaster-recovery drill. It mounts the replica
//! read-only in a temporary directory, exactly as one would after losing
//! the primary, reads a sample of versions (every version with `full`)
//! through that mount and compares them byte for byte with the primary,
//! and reports the measured RPO (replica lag) and RTO (time from the start
//! to the first verified byte, and to the whole sample).

use crate::engine::Options;
use crate::error::{Error, Result};
use crate::replica::ReplicaStatus;
use crate::repo::{Config, Repo, mount_of};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub replica: PathBuf,
    pub versions_in_replica: usize,
    pub sampled: usize,
    pub bytes_compared: u64,
    pub mismatches: Vec<String>,
    pub rpo: ReplicaStatus,
    pub rto_first_byte_seconds: f64,
    pub rto_sample_seconds: f64,
    pub passed: bool,
}

/// A read-only mount by a child `revfs mount`; unmounted when dropped.
struct TempMount {
    dir: PathBuf,
    child: Option<Child>,
}

impl TempMount {
    fn new(store: &Path, dir: PathBuf) -> Result<TempMount> {
        std::fs::create_dir_all(&dir).map_err(Error::io_at(&dir))?;
        let exe = std::env::current_exe().map_err(Error::Io)?;
        let log_path = dir.with_extension("log");
        let log = std::fs::File::create(&log_path).map_err(Error::io_at(&log_path))?;
        let child = Command::new(exe)
            .arg("mount")
            .arg(store)
            .arg(&dir)
            .arg("--read-only")
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

pub fn drill(
    store: &Path,
    replica: Option<PathBuf>,
    full: bool,
    sample: usize,
) -> Result<DrillReport> {
    let start = Instant::now();
    let (_, cfg) = Config::read(store)?;
    let replica = replica.or(cfg.replica).ok_or_else(|| {
        Error::Store(format!(
            "{}: no replica configured (give --replica DIR)",
            store.display()
        ))
    })?;
    let replica = std::path::absolute(&replica).map_err(Error::io_at(&replica))?;

    // RPO: what the primary has committed that the replica lacks.
    let live = primary_mount(store);
    let rpo = match &live {
        Some(_) => {
            let v = crate::control::request(store, crate::control::Request::Status)?;
            serde_json::from_value(v["replica"].clone()).unwrap_or_default()
        }
        None => {
            let r = Repo::open(
                store,
                Options {
                    read_only: true,
                    ..Options::default()
                },
            )?;
            crate::replica::lag(&replica, &r.engine.db, &r.engine.store)?
        }
    };

    let tmp = std::env::temp_dir().join(format!("revfs-drill-{}", std::process::id()));
    let rmount = TempMount::new(&replica, tmp.join("replica"))?;
    let history = Repo::open(
        &replica,
        Options {
            read_only: true,
            ..Options::default()
        },
    )?
    .engine
    .history()?;
    let (pmount, pdir) = match live {
        Some(d) => (None, d),
        None => (
            Some(TempMount::new(store, tmp.join("primary"))?),
            tmp.join("primary"),
        ),
    };

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
        versions_in_replica: history.len(),
        sampled: picked.len(),
        bytes_compared: 0,
        mismatches: Vec::new(),
        rpo,
        rto_first_byte_seconds: 0.0,
        rto_sample_seconds: 0.0,
        passed: false,
    };
    for v in picked {
        let rel = format!(".snapshots/at/{}/{}", v.time, v.path);
        match same_bytes(&rmount.dir.join(&rel), &pdir.join(&rel)) {
            Ok((true, n)) => report.bytes_compared += n,
            Ok((false, _)) => report.mismatches.push(format!("{rel}: bytes differ")),
            Err(e) => report.mismatches.push(format!("{rel}: {e}")),
        }
        if report.rto_first_byte_seconds == 0.0 {
            report.rto_first_byte_seconds = start.elapsed().as_secs_f64();
        }
    }
    report.rto_sample_seconds = start.elapsed().as_secs_f64();
    report.passed = report.mismatches.is_empty() && report.sampled > 0;
    drop(rmount);
    drop(pmount);
    // Only our two log files are left; the mountpoints went with the mounts.
    for f in ["replica.log", "primary.log"] {
        let _ = std::fs::remove_file(tmp.join(f));
    }
    let _ = std::fs::remove_dir(&tmp);
    Ok(report)
}
