//! The disaster, not the rehearsal: recovery from the replica in the
//! states a crash leaves (kill -9 with an open pack in several parts, a
//! part cut short, a recover killed half-way), a drill that fails when
//! recovery would, and the start-up and bad-input paths around them.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::metrics::{free_port, scrape};
use common::{BIN, Mount, bytes, revfs, status, wait_replicated, wait_until};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LAG_TIMEOUT: Duration = Duration::from_secs(60);

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// `revfs recover REPLICA NEW --json`: (success, parsed report or None, output).
fn recover(replica: &Path, new: &Path) -> (bool, Option<serde_json::Value>, String) {
    let out = Command::new(BIN)
        .arg("recover")
        .arg(replica)
        .arg(new)
        .arg("--json")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).ok(),
        text,
    )
}

fn parts(replica: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(replica.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Mounts a recovered store, checks files against `want` (the first read
/// block by block backwards first: random reads, which recover gave the
/// piece tables of its chunks), unmounts, verifies.
fn check_recovered(tmp: &Path, store: &Path, want: &[(&str, &[u8])]) {
    use std::os::unix::fs::FileExt;
    let mnt = tmp.join(format!(
        "mnt-{}",
        store.file_name().unwrap().to_string_lossy()
    ));
    fs::create_dir_all(&mnt).unwrap();
    let mut m = Mount::attach(store.to_path_buf(), mnt, tmp.join("rec-daemon.log"));
    let port = free_port();
    m.start(&["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let (name, data) = want[0];
    let f = fs::File::open(m.p(name)).unwrap();
    let blocks = data.len() / 4096;
    for b in (0..blocks).rev().step_by(7) {
        let mut buf = [0u8; 4096];
        f.read_exact_at(&mut buf, (b * 4096) as u64).unwrap();
        assert!(
            buf[..] == data[b * 4096..(b + 1) * 4096],
            "{name} block {b}"
        );
    }
    drop(f);
    // Reads within 2 MiB of each other are sequential (read whole).
    if data.len() > 4 << 20 {
        let pieces = scrape(port)["revfs_piece_reads_total"];
        assert!(pieces >= (blocks / 7 / 4) as f64, "{pieces} piece reads");
    }
    for (name, data) in want {
        assert_eq!(&fs::read(m.p(name)).unwrap()[..], *data, "{name}");
    }
    m.unmount();
    let (ok, out) = revfs(&[os("verify"), store.as_os_str()]);
    assert!(ok, "{out}");
}

#[test]
fn kill_9_with_an_open_pack_in_parts_then_recover_and_drill() {
    let Some((mut m, r)) = Mount::with_replica(&[]) else {
        return;
    };
    let a = bytes(1, 5_000_000);
    fs::write(m.p("a.bin"), &a).unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    fs::write(m.p("b.txt"), b"small\n").unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    assert!(parts(&r).len() >= 2, "open pack in parts: {:?}", parts(&r));
    let (ok, out) = revfs(&[os("drill"), m.store.as_os_str()]);
    assert!(ok, "{out}");
    m.crash();
    let cut = m.tmp.path().join("replica-cut");
    copy_dir(&r, &cut);

    // The disaster: the replica as kill -9 left it, the primary gone.
    let new = m.tmp.path().join("new");
    let (ok, rep, out) = recover(&r, &new);
    assert!(ok, "{out}");
    let rep = rep.unwrap();
    assert_eq!(rep["lost_commits"], 0, "{rep}");
    assert_eq!(rep["head"], rep["replica_head"], "{rep}");
    assert!(!new.join(".revfs-recovering").exists());
    check_recovered(m.tmp.path(), &new, &[("a.bin", &a), ("b.txt", b"small\n")]);

    // The drill of the crashed primary recovers for real and passes.
    let (ok, out) = revfs(&[os("drill"), m.store.as_os_str(), os("--json")]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["recovered_clean"], true, "{v}");
    assert!(v["rto_recover_seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert!(!Path::new(v["scratch"].as_str().unwrap()).exists(), "{v}");

    // A part cut short (the replica's disk lost its tail): everything
    // intact comes back, and the damage is reported, not hidden.
    let last = parts(&cut).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let new2 = m.tmp.path().join("new2");
    let (ok, rep, out) = recover(&cut, &new2);
    assert!(ok, "{out}");
    let rep = rep.unwrap();
    assert!(rep["lost_commits"].as_u64().unwrap() >= 1, "{rep}");
    assert!(out.contains("WARNING"), "{out}");
    check_recovered(m.tmp.path(), &new2, &[("a.bin", &a)]);
    // ... and the drill against that replica fails.
    let (ok, out) = revfs(&[
        os("drill"),
        m.store.as_os_str(),
        os("--replica"),
        cut.as_os_str(),
    ]);
    assert!(!ok, "drill must fail when recovery loses commits: {out}");

    // The crashed primary comes back: its old open pack (a torn tail past
    // the last sync) is now sealed and shipped whole over the parts; new
    // writes follow in new packs. The replica still recovers everything.
    let old_parts = parts(&r);
    assert!(!old_parts.is_empty());
    m.start(&["--replica", r.to_str().unwrap()]);
    let c = bytes(3, 2_000_000);
    fs::write(m.p("c.bin"), &c).unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    for p in &old_parts {
        assert!(!p.exists(), "{} replaced by its sealed pack", p.display());
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let pack = r.join("packs").join(format!("{}.pack", &name[..16]));
        assert!(pack.exists(), "{}", pack.display());
    }
    m.unmount();
    let new3 = m.tmp.path().join("new3");
    let (ok, rep, out) = recover(&r, &new3);
    assert!(ok, "{out}");
    assert_eq!(rep.unwrap()["lost_commits"], 0);
    check_recovered(
        m.tmp.path(),
        &new3,
        &[("a.bin", &a), ("b.txt", b"small\n"), ("c.bin", &c)],
    );
}

#[test]
fn a_killed_recover_runs_again_and_a_failed_one_leaves_nothing() {
    let Some((mut m, r)) = Mount::with_replica(&[]) else {
        return;
    };
    let big = bytes(9, 40 << 20);
    fs::write(m.p("big"), &big).unwrap();
    fs::write(m.p("small"), b"x").unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    m.crash();
    let tmp = m.tmp.path();

    // Aborted at each named step, then run again.
    for point in [
        "recover:pack-copied",
        "recover:packs-copied",
        "recover:catalog-built",
        "recover:config-written",
    ] {
        let new = tmp.join(point.replace(':', "-"));
        let st = Command::new(BIN)
            .arg("recover")
            .arg(&r)
            .arg(&new)
            .env("REVFS_CRASH_AT", point)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!st.success(), "{point}: did not crash");
        assert!(new.join(".revfs-recovering").exists(), "{point}");
        let (ok, _, out) = recover(&r, &new);
        assert!(ok, "{point}: {out}");
        check_recovered(tmp, &new, &[("big", &big), ("small", b"x")]);
    }

    // kill -9 at seeded moments, then run again.
    for (i, delay_ms) in [5u64, 40, 120, 300].into_iter().enumerate() {
        let new = tmp.join(format!("killed-{i}"));
        let mut child = Command::new(BIN)
            .arg("recover")
            .arg(&r)
            .arg(&new)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let (ok, _, out) = recover(&r, &new);
        // "already a store" only when the first run finished before the kill.
        let finished =
            out.contains("already a revfs store") && !new.join(".revfs-recovering").exists();
        assert!(ok || finished, "{out}");
        check_recovered(tmp, &new, &[("big", &big), ("small", b"x")]);
    }

    // Failures leave nothing: a missing NEW stays missing, an empty one empty.
    let empty_replica = tmp.join("empty-replica");
    fs::create_dir(&empty_replica).unwrap();
    let (ok, out) = revfs(&[
        os("init"),
        tmp.join("other").as_os_str(),
        os("--replica"),
        empty_replica.as_os_str(),
    ]);
    assert!(ok, "{out}");
    let missing = tmp.join("never");
    let (ok, _, out) = recover(&empty_replica, &missing);
    assert!(!ok && out.contains("no usable commit"), "{out}");
    assert!(!missing.exists(), "{out}");
    let empty = tmp.join("empty");
    fs::create_dir(&empty).unwrap();
    let (ok, _, _) = recover(&empty_replica, &empty);
    assert!(!ok);
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
    // A directory with something else in it is refused and left alone.
    let busy = tmp.join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("mine"), b"keep").unwrap();
    let (ok, _, out) = recover(&r, &busy);
    assert!(!ok && out.contains("not empty"), "{out}");
    assert_eq!(fs::read(busy.join("mine")).unwrap(), b"keep");
    assert_eq!(fs::read_dir(&busy).unwrap().count(), 1);
}

#[test]
fn verify_while_commits_land_is_never_a_false_alarm() {
    let Some(m) = Mount::new(&["--commit-interval", "100ms"]) else {
        return;
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut f = fs::File::create(m.p(&format!("w{}", i % 50))).unwrap();
                f.write_all(&bytes(i, 100_000 + (i as usize % 7) * 50_000))
                    .unwrap();
                if i.is_multiple_of(3) {
                    f.sync_all().unwrap();
                }
                i += 1;
            }
        });
        let before = status(&m.store)["commits"].as_u64().unwrap();
        let start = std::time::Instant::now();
        let (mut runs, mut landed) = (0, 0);
        // At least 30 runs, with at least 10 commits landing meanwhile.
        let mut failure = None;
        while (runs < 30 || landed < 10) && start.elapsed() < Duration::from_secs(120) {
            let (ok, out) = revfs(&[os("verify"), m.store.as_os_str()]);
            if !ok {
                failure = Some(out);
                break;
            }
            runs += 1;
            landed = status(&m.store)["commits"].as_u64().unwrap() - before;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(failure.is_none(), "verify during commits: {failure:?}");
        assert!(runs >= 30 && landed >= 10, "{runs} runs, {landed} commits");
    });
}

/// A `revfs mount --daemon` started by a test; unmounted and awaited on drop.
struct Daemon {
    mnt: PathBuf,
    pid: i32,
}

impl Daemon {
    /// Runs `revfs mount ARGS --daemon`: (daemon or None, success, stderr).
    fn start(args: &[&std::ffi::OsStr], mnt: &Path) -> (Option<Daemon>, bool, String) {
        let out = Command::new(BIN)
            .arg("mount")
            .args(args)
            .arg("--daemon")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let d = stdout
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse().ok())
            .filter(|_| out.status.success())
            .map(|pid| Daemon {
                mnt: mnt.to_path_buf(),
                pid,
            });
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (d, out.status.success(), format!("{stdout}{stderr}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;
        let start = std::time::Instant::now();
        while alive(self.pid) && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(self.pid) {
            // SAFETY: the daemon this test started.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

#[test]
fn a_second_daemon_mount_fails_with_the_reason() {
    let Some(m) = Mount::new(&[]) else { return };
    let (d, ok, out) = Daemon::start(&[m.store.as_os_str(), m.mnt.as_os_str()], &m.mnt);
    assert!(d.is_none() && !ok, "second mount must fail: {out}");
    assert!(out.contains("in use by another revfs process"), "{out}");
    // The first mount is unharmed.
    fs::write(m.p("still"), b"here").unwrap();
    assert_eq!(fs::read(m.p("still")).unwrap(), b"here");
}

#[test]
fn a_replica_on_a_read_only_share_mounts_and_is_never_written() {
    let Some((mut m, r)) = Mount::with_replica(&[]) else {
        return;
    };
    fs::write(m.p("f"), bytes(3, 300_000)).unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    m.unmount();
    let tmp = m.tmp.path();
    let share = tmp.join("share");
    fs::create_dir(&share).unwrap();
    let bind = |args: &[&str]| {
        let st = Command::new("mount").args(args).status().unwrap();
        assert!(st.success());
    };
    bind(&["--bind", r.to_str().unwrap(), share.to_str().unwrap()]);
    struct Unbind(PathBuf);
    impl Drop for Unbind {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unbind = Unbind(share.clone());
    bind(&["-o", "remount,bind,ro", share.to_str().unwrap()]);
    let listing = |d: &Path| {
        let out = Command::new("find")
            .arg(d)
            .arg("-printf")
            .arg("%p %s %T@\n")
            .output();
        let mut l: Vec<String> = String::from_utf8_lossy(&out.unwrap().stdout)
            .lines()
            .map(String::from)
            .collect();
        l.sort();
        l
    };
    let before = listing(&r);
    let mnt = tmp.join("ro");
    fs::create_dir(&mnt).unwrap();
    {
        let (d, ok, out) = Daemon::start(
            &[share.as_os_str(), mnt.as_os_str(), os("--read-only")],
            &mnt,
        );
        assert!(ok && d.is_some(), "{out}");
        assert_eq!(fs::read(mnt.join("f")).unwrap(), bytes(3, 300_000));
        // Its control socket lives outside the replica.
        let s = status(&share);
        assert!(s["versions"].as_u64().unwrap() >= 1, "{s}");
        assert!(s["logical_bytes"].as_u64().unwrap() >= 300_000, "{s}");
    }
    wait_until("read-only mount gone", Duration::from_secs(20), || {
        !common::is_mountpoint(&mnt)
    });
    assert_eq!(before, listing(&r), "the replica was written");
}

#[test]
fn init_with_a_bad_replica_leaves_nothing() {
    if !common::fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let missing = tmp.path().join("missing");
    let (ok, out) = revfs(&[
        os("init"),
        store.as_os_str(),
        os("--replica"),
        missing.as_os_str(),
    ]);
    assert!(!ok && out.contains("does not exist"), "{out}");
    assert!(!store.exists());
    // An empty store directory stays empty; a non-empty replica is refused.
    fs::create_dir(&store).unwrap();
    let full = tmp.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    let (ok, out) = revfs(&[
        os("init"),
        store.as_os_str(),
        os("--replica"),
        full.as_os_str(),
    ]);
    assert!(!ok && out.contains("not empty"), "{out}");
    assert_eq!(fs::read_dir(&store).unwrap().count(), 0);
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1);
    // The retry with a good replica works.
    let good = tmp.path().join("good");
    fs::create_dir(&good).unwrap();
    let (ok, out) = revfs(&[
        os("init"),
        store.as_os_str(),
        os("--replica"),
        good.as_os_str(),
    ]);
    assert!(ok, "{out}");
}

#[test]
fn a_missing_replica_is_said_at_once_and_set_up_when_it_appears() {
    let Some(m) = Mount::init() else { return };
    let r = m.tmp.path().join("later");
    let (d, ok, out) = Daemon::start(
        &[
            m.store.as_os_str(),
            m.mnt.as_os_str(),
            os("--replica"),
            r.as_os_str(),
        ],
        &m.mnt,
    );
    assert!(ok && d.is_some(), "{out}");
    assert!(
        out.contains("warning") && out.contains("does not exist"),
        "the terminal must hear of it: {out}"
    );
    fs::write(m.p("a"), bytes(4, 1 << 20)).unwrap();
    wait_until("state missing", LAG_TIMEOUT, || {
        status(&m.store)["replica"]["state"] == "missing"
    });
    fs::create_dir(&r).unwrap();
    wait_replicated(&m.store, LAG_TIMEOUT);
    assert_eq!(status(&m.store)["replica"]["state"], "ok");
    assert!(r.join("revfs.conf").exists());
    drop(d);
    // The replica it set up recovers the data.
    let new = m.tmp.path().join("new");
    let (ok, _, out) = recover(&r, &new);
    assert!(ok, "{out}");
    check_recovered(m.tmp.path(), &new, &[("a", &bytes(4, 1 << 20))]);
}
