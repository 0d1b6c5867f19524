//! The crash harness: a writer runs a seeded mix of AI-style work through a
//! real mount (checkpoint saves by temp file + fsync + rename, appends,
//! in-place overwrites, truncates, fsyncs, named snapshots) and records
//! every state it fsync'ed; the daemon is killed with SIGKILL at a seeded
//! moment; then the store must remount without repair, hold every
//! fsync'ed state byte for byte (live or in history), verify clean, and
//! keep working.
//!
//! `CRASH_ITERATIONS` (default 30) and `SEED` (default: from the clock,
//! printed) control it; `scripts/crash-loop.sh N` runs N iterations, and a
//! failure prints the seed that replays it: `SEED=<seed> CRASH_ITERATIONS=1`.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, Rng};
use revfs::engine::snapshots::AT_DIR;
use revfs::engine::{Engine, Options};
use revfs::ids::Ino;
use revfs::repo::Repo;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn hash(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

/// Runs the seeded workload until an operation fails (the daemon died) or
/// `stop` is set. Returns every (path, content hash) it saw fsync return for.
fn writer(m: &Mount, seed: u64, stop: &AtomicBool) -> Vec<(String, [u8; 32])> {
    let mut rng = Rng::new(seed);
    let mut synced = Vec::new();
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let dir = m.p("work");
    let _ = fs::create_dir(&dir);
    let mut step = 0u64;
    let result: std::io::Result<()> = (|| {
        while !stop.load(Ordering::Relaxed) {
            step += 1;
            let name = format!("f{}", rng.below(4));
            let path = dir.join(&name);
            match rng.below(6) {
                0 => {
                    // Checkpoint save: temp file, fsync, rename over, fsync dir.
                    let n = 64 * 1024 + rng.below(512 * 1024) as usize;
                    let data = rng.bytes(n);
                    let tmp = dir.join(format!("{name}.tmp"));
                    let mut f = File::create(&tmp)?;
                    f.write_all(&data)?;
                    f.sync_all()?;
                    synced.push((format!("work/{name}.tmp"), hash(&data)));
                    fs::rename(&tmp, &path)?;
                    File::open(&dir)?.sync_all()?;
                    files.insert(name, data);
                }
                1 => {
                    // Append a few CSV rows.
                    let rows = format!("{step},{},{}\n", rng.next(), rng.below(1000))
                        .repeat(1 + rng.below(50) as usize);
                    let mut f = OpenOptions::new().append(true).create(true).open(&path)?;
                    f.write_all(rows.as_bytes())?;
                    let content = files.entry(name.clone()).or_default();
                    content.extend_from_slice(rows.as_bytes());
                    if rng.below(2) == 0 {
                        f.sync_data()?;
                        synced.push((format!("work/{name}"), hash(content)));
                    }
                }
                2 => {
                    // Overwrite in place.
                    let content = files.entry(name.clone()).or_default();
                    let at = rng.below(content.len() as u64 + 1) as usize;
                    let n = 1 + rng.below(100_000) as usize;
                    let patch = rng.bytes(n);
                    let f = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)?;
                    f.write_all_at(&patch, at as u64)?;
                    if content.len() < at + patch.len() {
                        content.resize(at + patch.len(), 0);
                    }
                    content[at..at + patch.len()].copy_from_slice(&patch);
                    if rng.below(2) == 0 {
                        f.sync_all()?;
                        synced.push((format!("work/{name}"), hash(content)));
                    }
                }
                3 => {
                    // Truncate.
                    let content = files.entry(name.clone()).or_default();
                    let len = rng.below(content.len() as u64 + 50_000);
                    let f = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)?;
                    f.set_len(len)?;
                    content.resize(len as usize, 0);
                    if rng.below(2) == 0 {
                        f.sync_all()?;
                        synced.push((format!("work/{name}"), hash(content)));
                    }
                }
                4 => {
                    if rng.below(4) == 0 {
                        fs::create_dir(m.p(&format!(".snapshots/s{seed:x}-{step}")))?;
                    }
                }
                _ => std::thread::sleep(Duration::from_millis(rng.below(30))),
            }
        }
        Ok(())
    })();
    drop(result); // the daemon's death ends the workload with an error
    synced
}

/// Hashes of every file version the store holds: history and live tree.
fn all_hashes(e: &Engine) -> HashSet<[u8; 32]> {
    let mut out = HashSet::new();
    let read = |ino: Ino, size: u64| -> Option<Vec<u8>> {
        let fh = e.open(ino, false, false).ok()?;
        let mut data = Vec::new();
        while (data.len() as u64) < size {
            let chunk = e.read(fh, data.len() as u64, 1 << 20).ok()?;
            if chunk.is_empty() {
                break;
            }
            data.extend_from_slice(&chunk);
        }
        e.release(fh).ok()?;
        Some(data)
    };
    for v in e.history().unwrap() {
        let mut at = e.lookup(AT_DIR, v.time.as_bytes()).unwrap();
        for comp in v.path.split('/') {
            at = e.lookup(at.ino, comp.as_bytes()).unwrap();
        }
        out.insert(hash(&read(at.ino, at.node.size).unwrap()));
    }
    if let Ok(dir) = e.lookup(Ino::ROOT, b"work") {
        let fh = e.opendir(dir.ino).unwrap();
        for ent in e.readdir(fh, 0).unwrap().iter().skip(2) {
            let a = e.getattr(ent.ino).unwrap();
            out.insert(hash(&read(ent.ino, a.node.size).unwrap()));
        }
        e.releasedir(fh);
    }
    out
}

fn one_iteration(seed: u64) {
    let Some(mut m) = Mount::new(&[]) else { return };
    let stop = AtomicBool::new(false);
    let kill_after = Duration::from_millis(300 + Rng::new(!seed).below(1200));
    let synced = std::thread::scope(|s| {
        let w = s.spawn(|| writer(&m, seed, &stop));
        std::thread::sleep(kill_after);
        // SAFETY: SIGKILL to the daemon this test started.
        unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap()
    });
    m.crash();
    // Remounts without repair and keeps working.
    m.start(&[]);
    fs::write(m.p("after-crash"), b"ok").unwrap();
    assert_eq!(fs::read(m.p("after-crash")).unwrap(), b"ok");
    m.unmount();
    // Every commit's objects exist and hash correctly.
    let (ok, out) = common::revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(ok, "seed {seed}: verify after crash: {out}");
    // Every fsync'ed state is there byte for byte.
    let r = Repo::open(&m.store, Options::default()).unwrap();
    let have = all_hashes(&r.engine);
    for (path, h) in &synced {
        assert!(
            have.contains(h),
            "seed {seed}: fsync'ed state of {path} lost after kill -9 ({} fsyncs)",
            synced.len()
        );
    }
    eprintln!(
        "seed {seed}: killed after {kill_after:?}, {} fsync'ed states all present",
        synced.len()
    );
}

#[test]
fn kill_9_at_random_moments_loses_nothing_fsynced() {
    let iterations: u64 = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let base: u64 = std::env::var("SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    eprintln!("crash harness: {iterations} iterations from SEED={base}");
    for i in 0..iterations {
        let seed = base + i;
        let r = std::panic::catch_unwind(|| one_iteration(seed));
        if r.is_err() {
            panic!("crash iteration failed; replay with SEED={seed} CRASH_ITERATIONS=1");
        }
    }
}
