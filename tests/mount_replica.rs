//! Replication through real mounts: recovery from the replica alone, crash
//! consistency, self-healing reads, replica faults (gone, full), drills.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, Tmpfs, bytes, revfs, status, wait_replicated, wait_until};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LAG_TIMEOUT: Duration = Duration::from_secs(60);

fn with_replica(extra: &[&str]) -> Option<(Mount, PathBuf)> {
    Mount::with_replica(extra)
}

fn log_paths(file: &Path) -> Vec<String> {
    let (ok, out) = revfs(&["log".as_ref(), file.as_os_str(), "--json".as_ref()]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

/// Flips bytes in the middle of the largest pack of `dir`.
fn damage_largest_pack(dir: &Path) {
    let p = fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = fs::read(&p).unwrap();
    let n = b.len();
    for off in (n / 4..n).step_by((n / 8).max(1)) {
        for x in &mut b[off..(off + 64).min(n)] {
            *x ^= 0xff;
        }
    }
    fs::write(&p, b).unwrap();
}

#[test]
fn recover_from_the_replica_alone_gives_back_every_version() {
    let Some((mut m, r)) = with_replica(&[]) else {
        return;
    };
    let versions: Vec<Vec<u8>> = (0..3)
        .map(|i| bytes(50 + i, 3_000_000 + i as usize))
        .collect();
    fs::create_dir(m.p("ckpt")).unwrap();
    for v in &versions {
        fs::write(m.p("ckpt/model.tmp"), v).unwrap();
        fs::rename(m.p("ckpt/model.tmp"), m.p("ckpt/model.bin")).unwrap();
        std::thread::sleep(Duration::from_millis(1300));
    }
    m.sh("seq 1 5000 > data.csv && ln -s data.csv link && mkdir -p a/b && echo deep > a/b/c");
    fs::create_dir(m.p(".snapshots/before-loss")).unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    let s = status(&m.store);
    assert_eq!(s["replica"]["state"], "ok", "{s}");
    m.unmount();

    // The primary is lost.
    let lost = m.tmp.path().join("lost");
    fs::rename(&m.store, &lost).unwrap();
    let (ok, out) = revfs(&["recover".as_ref(), r.as_os_str(), m.store.as_os_str()]);
    assert!(ok, "{out}");
    // Per-file version records are rebuilt from history.
    assert!(status(&m.store)["versions"].as_u64().unwrap() >= 3);
    m.start(&[]);
    assert_eq!(fs::read(m.p("ckpt/model.bin")).unwrap(), versions[2]);
    assert_eq!(
        fs::read_link(m.p("link")).unwrap().to_str(),
        Some("data.csv")
    );
    assert_eq!(fs::read_to_string(m.p("a/b/c")).unwrap(), "deep\n");
    assert_eq!(m.sh("wc -l < data.csv").trim(), "5000");
    let got: Vec<Vec<u8>> = log_paths(&m.p("ckpt/model.bin"))
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert_eq!(got, versions);
    assert!(m.p(".snapshots/before-loss/data.csv").exists());
    // The recovered store is writable and complete.
    fs::write(m.p("after"), b"new life").unwrap();
    m.unmount();
    let (ok, out) = revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(ok, "{out}");

    // The replica also mounts read-only as it is.
    let m2 = m.tmp.path().join("m2");
    fs::create_dir(&m2).unwrap();
    let mut child = Command::new(common::BIN)
        .arg("mount")
        .arg(&r)
        .arg(&m2)
        .arg("--read-only")
        .spawn()
        .unwrap();
    wait_until("replica mount", Duration::from_secs(20), || {
        common::is_mountpoint(&m2)
    });
    let read = fs::read(m2.join("ckpt/model.bin"));
    let write = fs::write(m2.join("x"), b"x");
    Command::new("umount").arg(&m2).status().unwrap();
    let _ = child.wait();
    assert_eq!(read.unwrap(), versions[2]);
    assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EROFS));
}

#[test]
fn replica_stays_consistent_through_kill_9_during_heavy_writes() {
    let Some((mut m, r)) = with_replica(&[]) else {
        return;
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut f) = fs::File::create(m.p(&format!("f{}", i % 40))) else {
                    break;
                };
                if f.write_all(&bytes(i, 500_000)).is_err() {
                    break;
                }
                drop(f);
                i += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(2500));
        // SAFETY: kill -9 of our own child daemon, mid-write.
        unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = writer.join();
    });
    m.crash();
    // The replica alone recovers into a consistent, verifiable store.
    let rec = m.tmp.path().join("rec");
    let (ok, out) = revfs(&["recover".as_ref(), r.as_os_str(), rec.as_os_str()]);
    assert!(ok, "{out}");
    let (ok, out) = revfs(&["verify".as_ref(), rec.as_os_str()]);
    assert!(ok, "{out}");
    // And the primary reopens too, and catches the replica up.
    m.start(&[]);
    wait_replicated(&m.store, LAG_TIMEOUT);
}

#[test]
fn corrupt_primary_reads_heal_from_the_replica_and_verify_repairs() {
    let Some((mut m, r)) = with_replica(&[]) else {
        return;
    };
    let data = bytes(77, 20 << 20);
    fs::write(m.p("weights"), &data).unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    m.unmount();
    damage_largest_pack(&m.store);
    let (ok, out) = revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(!ok, "verify must report the damage: {out}");
    assert!(out.contains("corrupt"), "{out}");

    m.start(&["--replica", r.to_str().unwrap()]);
    assert_eq!(fs::read(m.p("weights")).unwrap(), data, "healed read");
    assert!(m.log_text().contains("healed"), "{}", m.log_text());
    m.unmount();
    let (ok, out) = revfs(&[
        "verify".as_ref(),
        m.store.as_os_str(),
        "--replica".as_ref(),
        r.as_os_str(),
        "--repair".as_ref(),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(ok, "{out}");
}

#[test]
fn a_removed_replica_is_reported_and_caught_up_when_back() {
    let Some((m, r)) = with_replica(&[]) else {
        return;
    };
    fs::write(m.p("a"), bytes(1, 1 << 20)).unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    let away = m.tmp.path().join("replica-away");
    fs::rename(&r, &away).unwrap();
    // An empty directory where the share was: never written into.
    fs::create_dir(&r).unwrap();
    for i in 0..5 {
        fs::write(m.p(&format!("b{i}")), bytes(10 + i, 1 << 20)).unwrap();
    }
    wait_until("state missing", LAG_TIMEOUT, || {
        status(&m.store)["replica"]["state"] == "missing"
    });
    let s = status(&m.store);
    assert!(s["replica"]["lag_commits"].as_u64().unwrap() > 0, "{s}");
    assert!(
        s["replica"]["lag_bytes"].as_u64().unwrap() >= 5 << 20,
        "{s}"
    );
    assert!(s["replica"]["lag_seconds"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(
        fs::read_dir(&r).unwrap().count(),
        0,
        "nothing written under the missing share"
    );
    assert!(m.log_text().contains("marker missing"), "{}", m.log_text());
    fs::remove_dir(&r).unwrap();
    fs::rename(&away, &r).unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    assert_eq!(status(&m.store)["replica"]["state"], "ok");
}

#[test]
fn a_full_replica_does_not_harm_the_primary_and_catches_up() {
    let Some(mut m) = Mount::init() else { return };
    let r = m.tmp.path().join("small");
    let small = Tmpfs::new(&r, "4m");
    m.start(&["--replica", r.to_str().unwrap()]);
    let data = bytes(5, 12 << 20);
    fs::write(m.p("big"), &data).unwrap();
    wait_until("replica error", LAG_TIMEOUT, || {
        status(&m.store)["replica"]["state"] == "error"
    });
    let s = status(&m.store);
    assert!(
        s["replica"]["last_error"]
            .as_str()
            .unwrap()
            .contains("No space"),
        "{s}"
    );
    assert!(s["replica"]["lag_bytes"].as_u64().unwrap() > 0);
    // The primary is unharmed and keeps working.
    assert_eq!(fs::read(m.p("big")).unwrap(), data);
    fs::write(m.p("more"), b"still writable").unwrap();
    // No half-written files are left on the replica.
    let leftovers = m.sh(&format!("find {} -name '.tmp-*' | wc -l", r.display()));
    assert_eq!(leftovers.trim(), "0");
    // Room again: it catches up by itself.
    small.resize("64m");
    wait_replicated(&m.store, LAG_TIMEOUT);
    m.unmount();
    let (ok, out) = revfs(&[
        "verify".as_ref(),
        m.store.as_os_str(),
        "--replica".as_ref(),
        r.as_os_str(),
    ]);
    assert!(ok, "{out}");
}

#[test]
fn drill_passes_on_a_healthy_pair_and_fails_on_a_damaged_replica() {
    let Some((mut m, r)) = with_replica(&[]) else {
        return;
    };
    for i in 0..3 {
        fs::write(m.p("ckpt"), bytes(i, 4 << 20)).unwrap();
        std::thread::sleep(Duration::from_millis(1200));
    }
    wait_replicated(&m.store, LAG_TIMEOUT);
    // While mounted (the primary is read through its mount).
    let (ok, out) = revfs(&[
        "drill".as_ref(),
        m.store.as_os_str(),
        "--full".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["sampled"].as_u64().unwrap() >= 3, "{v}");
    assert!(v["rto_first_byte_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(v["rpo"]["lag_commits"], 0);
    m.unmount();
    // Offline, then with the replica damaged.
    let (ok, out) = revfs(&["drill".as_ref(), m.store.as_os_str()]);
    assert!(ok, "{out}");
    damage_largest_pack(&r);
    let (ok, out) = revfs(&["drill".as_ref(), m.store.as_os_str(), "--full".as_ref()]);
    assert!(!ok, "drill must fail on a damaged replica: {out}");
}

#[test]
fn replica_sync_fsync_returns_with_the_replica_up_to_date() {
    let Some((m, r)) = with_replica(&["--replica-sync"]) else {
        return;
    };
    for i in 0..5u64 {
        let mut f = fs::File::create(m.p(&format!("s{i}"))).unwrap();
        f.write_all(&bytes(i, 200_000)).unwrap();
        f.sync_all().unwrap();
        let s = status(&m.store);
        assert_eq!(s["replica"]["lag_commits"], 0, "after fsync {i}: {s}");
    }
    assert!(fs::read_dir(r.join("heads")).unwrap().count() > 0);
}
