//! Retention through real mounts and the exact CLI: which versions a
//! policy keeps (the period rules on a synthetic timeline: the daemon's
//! commits are stamped by `REVFS_TEST_COMMIT_CLOCK`, `revfs::testclock`), prune racing writers and readers, kill -9 at every step
//! of a prune, `--max-size` holding a store under its bound by itself,
//! and the replica's grace window (recover gives the pre-prune history
//! inside it, the post-prune one after).
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, Rng, packs_bytes, revfs, verify_clean, wait_until};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Writes `data` to `path` and fsyncs it (one version, one commit).
fn save(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn prune(target: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(common::BIN)
        .arg("prune")
        .arg(target)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prune {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The contents of every version `revfs log` lists for `path`.
fn logged(path: &Path) -> Vec<Vec<u8>> {
    let (ok, out) = revfs(&["log".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert!(ok, "log: {out}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    log.iter()
        .map(|e| fs::read(e["path"].as_str().unwrap()).unwrap())
        .collect()
}

fn name_snapshot(m: &Mount, name: &str) {
    let (ok, out) = revfs(&[
        "snapshot".as_ref(),
        "create".as_ref(),
        m.mnt.as_os_str(),
        name.as_ref(),
    ]);
    assert!(ok, "{out}");
}

fn version(k: usize, n: usize) -> Vec<u8> {
    let mut v = format!("version {k}\n").into_bytes();
    v.extend(Rng::new(k as u64 + 1).bytes(n));
    v
}

#[test]
fn keep_versions_and_keep_last_keep_exactly_what_they_say_and_free_the_rest() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let vs: Vec<Vec<u8>> = (0..8).map(|k| version(k, 512 << 10)).collect();
    for (k, v) in vs.iter().enumerate() {
        save(&m.p("model.bin"), v);
        if k == 2 {
            name_snapshot(&m, "keep");
        }
    }
    save(&m.p("other.txt"), b"other\n");
    common::commit(&m.store);
    assert_eq!(logged(&m.p("model.bin")), vs);

    // A dry run says what would go and changes nothing.
    let before = packs_bytes(&m.store);
    let dry = prune(&m.mnt, &["--keep-versions", "3", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["commits_dropped"].as_u64().unwrap(), 4, "{dry}");
    assert!(dry["bytes_freed"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(packs_bytes(&m.store), before);
    assert_eq!(logged(&m.p("model.bin")).len(), 8);

    // Keep the last 3 versions of every live file, the named one, the head.
    let r = prune(&m.mnt, &["--keep-versions", "3"]);
    for k in [
        "commits_kept",
        "commits_dropped",
        "versions_dropped",
        "bytes_freed",
        "packs_deleted",
        "packs_repacked",
        "seconds",
    ] {
        assert!(r.get(k).is_some(), "--json lacks {k}: {r}");
    }
    assert_eq!(r["versions_dropped"].as_u64().unwrap(), 4, "{r}");
    let want: Vec<Vec<u8>> = [2, 5, 6, 7].iter().map(|k| vs[*k].clone()).collect();
    assert_eq!(logged(&m.p("model.bin")), want);
    assert_eq!(fs::read(m.p(".snapshots/keep/model.bin")).unwrap(), vs[2]);
    assert_eq!(fs::read(m.p("model.bin")).unwrap(), vs[7]);
    let after = packs_bytes(&m.store);
    assert!(
        after < before * 2 / 3,
        "packs {before} -> {after}: the dropped versions' space is not back"
    );
    verify_clean(&m.store);

    // keep-last 1: only the head (and the named snapshot) stays.
    let r = prune(&m.mnt, &["--keep-last", "1"]);
    assert!(r["commits_dropped"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(logged(&m.p("model.bin")), [vs[2].clone(), vs[7].clone()]);
    assert_eq!(fs::read(m.p("other.txt")).unwrap(), b"other\n");
    // Without a rule nothing more is dropped.
    let r = prune(&m.mnt, &[]);
    assert_eq!(r["commits_dropped"], 0, "{r}");
    m.unmount();
    verify_clean(&m.store);
    // Everything kept survives a remount, and the store still works.
    m.start(&[]);
    assert_eq!(logged(&m.p("model.bin")), [vs[2].clone(), vs[7].clone()]);
    save(&m.p("model.bin"), b"after\n");
    common::commit(&m.store);
    assert_eq!(logged(&m.p("model.bin")).len(), 3);
}

#[test]
fn keep_within_follows_the_real_clock() {
    let Some(m) = Mount::new(&[]) else {
        return;
    };
    save(&m.p("x.bin"), b"old 1\n");
    save(&m.p("x.bin"), b"old 2\n");
    common::commit(&m.store);
    std::thread::sleep(Duration::from_millis(3500));
    save(&m.p("x.bin"), b"new 1\n");
    save(&m.p("x.bin"), b"new 2\n");
    common::commit(&m.store);
    let r = prune(&m.mnt, &["--keep-within", "3s"]);
    assert_eq!(r["commits_dropped"].as_u64().unwrap(), 2, "{r}");
    assert_eq!(
        logged(&m.p("x.bin")),
        [b"new 1\n".to_vec(), b"new 2\n".to_vec()]
    );
    // The newest commit of this minute is the head: keep-minutely 1 keeps it only.
    let r = prune(&m.mnt, &["--keep-minutely", "1"]);
    assert_eq!(r["commits_kept"], 1, "{r}");
    assert_eq!(logged(&m.p("x.bin")), [b"new 2\n".to_vec()]);
    verify_clean(&m.store);
}

#[test]
fn prune_while_a_writer_and_readers_run_loses_nothing_they_need() {
    let Some(m) = Mount::new(&["--commit-interval", "200ms"]) else {
        return;
    };
    let big = Rng::new(99).bytes(6 << 20);
    save(&m.p("static.bin"), &big);
    for k in 0..6 {
        save(&m.p("model.bin"), &version(k, 300 << 10));
    }
    common::commit(&m.store);
    // A read of history that prune drops, held open across the prunes.
    let (ok, out) = revfs(&[
        "log".as_ref(),
        m.p("model.bin").as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{out}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let old_path = log[0]["path"].as_str().unwrap().to_string();
    let mut old = fs::File::open(&old_path).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, mnt) = (stop.clone(), m.mnt.clone());
        std::thread::spawn(move || {
            fs::create_dir_all(mnt.join("w")).unwrap();
            let mut written = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let d = Rng::new(1000 + i as u64).bytes(40_000 + i * 7);
                save(&mnt.join(format!("w/f{i}")), &d);
                if i.is_multiple_of(5) {
                    save(&mnt.join("model.bin"), &version(100 + i, 200 << 10));
                }
                written.push(d);
                i += 1;
            }
            written
        })
    };
    let reader = {
        let (stop, mnt, big) = (stop.clone(), m.mnt.clone(), big.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(
                    fs::read(mnt.join("static.bin")).unwrap() == big,
                    "live read"
                );
                n += 1;
            }
            n
        })
    };
    let mut dropped = 0;
    for _ in 0..6 {
        let r = prune(&m.mnt, &["--keep-last", "2"]);
        dropped += r["commits_dropped"].as_u64().unwrap();
        // The open handle on a dropped commit's file reads on.
        use std::io::{Read, Seek};
        old.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut got = Vec::new();
        old.read_to_end(&mut got).unwrap();
        assert_eq!(got, version(0, 300 << 10), "a running snapshot read broke");
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    let reads = reader.join().unwrap();
    assert!(dropped > 5, "prune dropped {dropped} commits");
    assert!(
        written.len() > 10 && reads > 3,
        "{} writes, {reads} reads",
        written.len()
    );
    for (i, d) in written.iter().enumerate() {
        assert!(
            fs::read(m.p(&format!("w/f{i}"))).unwrap() == *d,
            "w/f{i} lost its bytes"
        );
    }
    common::commit(&m.store);
    let r = prune(&m.mnt, &["--keep-last", "1"]);
    assert!(r["bytes_freed"].as_u64().is_some());
    verify_clean(&m.store);
    for (i, d) in written.iter().enumerate() {
        assert!(fs::read(m.p(&format!("w/f{i}"))).unwrap() == *d);
    }
}

#[test]
fn prune_frees_the_open_pack_while_a_file_being_written_has_bytes_in_it() {
    let Some(m) = Mount::new(&[]) else {
        return;
    };
    // Every version goes to the one open pack of a small store.
    let vs: Vec<Vec<u8>> = (0..12).map(|k| version(k, 1 << 20)).collect();
    for v in &vs {
        save(&m.p("model.bin"), v);
    }
    // A job writing meanwhile: its file is open, its bytes are stored
    // (in that same pack) but in no commit yet.
    use std::io::Write;
    let job = Rng::new(7).bytes(3 << 20);
    let mut f = fs::File::create(m.p("job.bin")).unwrap();
    f.write_all(&job).unwrap();
    let before = packs_bytes(&m.store);
    let r = prune(&m.mnt, &["--keep-versions", "2"]);
    assert_eq!(r["versions_dropped"].as_u64().unwrap(), 10, "{r}");
    let after = packs_bytes(&m.store);
    // Kept: two versions and the job's bytes, 5 MiB; dropped 10 MiB.
    assert!(
        after < 6 << 20,
        "packs {before} -> {after}: the open pack's dropped versions were kept: {r}"
    );
    f.write_all(b"tail").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut want = job.clone();
    want.extend_from_slice(b"tail");
    assert!(
        fs::read(m.p("job.bin")).unwrap() == want,
        "job.bin lost bytes"
    );
    assert_eq!(logged(&m.p("model.bin")), vs[10..].to_vec());
    verify_clean(&m.store);
}

/// A store in two sessions: the first session's pack holds only history
/// a prune drops (deleted whole), the second's some of both (repacked).
fn two_session_store() -> (Mount, Vec<Vec<u8>>) {
    let mut m = Mount::new(&[]).unwrap();
    let vs: Vec<Vec<u8>> = (0..10).map(|k| version(k, 200 << 10)).collect();
    for v in &vs[..5] {
        save(&m.p("model.bin"), v);
    }
    m.unmount();
    m.start(&[]);
    for (k, v) in vs.iter().enumerate().skip(5) {
        save(&m.p("model.bin"), v);
        if k == 6 {
            name_snapshot(&m, "keep");
        }
    }
    save(&m.p("other.txt"), b"other\n");
    m.unmount();
    (m, vs)
}

const PRUNE_POINTS: &[&str] = &[
    "prune:dropped",
    "prune:index-swept",
    "prune:packs-deleted",
    "prune:repack-copied",
    "prune:repack-switched",
    // A repack recodes the hot chunks it copies (zstd, byte planes).
    "recode:encoded",
];

#[test]
fn kill_at_every_step_of_a_prune_keeps_all_kept_history_and_the_next_prune_reclaims() {
    if !common::fuse_available() {
        return;
    }
    let (mut base, vs) = two_session_store();
    // Reference: a prune that is not interrupted.
    let reference = base.tmp.path().join("reference");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&base.store)
            .arg(&reference)
            .status()
            .unwrap()
            .success()
    );
    let r = prune(&reference, &["--keep-last", "2"]);
    assert!(r["packs_deleted"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    let clean_size = packs_bytes(&reference);
    // keep-last 2: the head (other.txt saved) and the commit before (v9);
    // and the named v6.
    let kept = [vs[6].clone(), vs[9].clone()];
    for point in PRUNE_POINTS {
        let store =
            common::pruned_until_crash(&base.store, base.tmp.path(), &["--keep-last", "2"], point);
        // Opens without repair, verifies clean, and holds what is kept.
        verify_clean(&store);
        let mnt = base.tmp.path().join("mnt2");
        fs::create_dir_all(&mnt).unwrap();
        let mut m = Mount::attach(store.clone(), mnt, base.tmp.path().join("log2"));
        m.start(&[]);
        let got = logged(&m.p("model.bin"));
        for k in &kept {
            assert!(got.contains(k), "{point}: a kept version is gone");
        }
        assert_eq!(
            fs::read(m.p(".snapshots/keep/model.bin")).unwrap(),
            vs[6],
            "{point}"
        );
        assert_eq!(fs::read(m.p("model.bin")).unwrap(), vs[9], "{point}");
        assert_eq!(fs::read(m.p("other.txt")).unwrap(), b"other\n", "{point}");
        m.unmount();
        // The next prune finishes the job: the same size as the clean one.
        prune(&store, &["--keep-last", "2"]);
        let size = packs_bytes(&store);
        assert!(
            size <= clean_size + clean_size / 20 + 4096,
            "{point}: {size} bytes of packs after the next prune, {clean_size} after a clean one"
        );
        verify_clean(&store);
    }
    base.start(&[]);
}

#[test]
fn max_size_holds_a_store_under_its_bound_with_the_protected_set_intact() {
    let Some(mut m) = Mount::new(&["--max-size", "24M", "--prune-interval", "200ms"]) else {
        return;
    };
    // Step 0 is named: protected whatever the bound says.
    let first = version(0, 2 << 20);
    save(&m.p("ckpt.bin"), &first);
    name_snapshot(&m, "step0");
    let bound = 24u64 << 20;
    let store_bytes = |s: &Path| -> u64 {
        let out = Command::new("du").arg("-sb").arg(s).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // 50 full-training steps: every step rewrites the whole checkpoint
    // (incompressible, nothing dedups) and appends to a log; after each,
    // the daemon brings the store under its bound by itself (a real step
    // takes minutes; the prune rounds here come every 200 ms).
    for step in 1..=50 {
        save(&m.p("ckpt.bin"), &version(step, 2 << 20));
        fs::write(m.p("train.log"), format!("step {step}\n").repeat(step)).unwrap();
        let start = std::time::Instant::now();
        while store_bytes(&m.store) > bound {
            if start.elapsed() > Duration::from_secs(20) {
                let du = Command::new("du")
                    .arg("-ab")
                    .arg(&m.store)
                    .output()
                    .unwrap();
                panic!(
                    "the store is over its bound 20 s after step {step}:\n{}\nstatus: {}\nlog: {}",
                    String::from_utf8_lossy(&du.stdout),
                    common::status(&m.store),
                    m.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(fs::read(m.p(".snapshots/step0/ckpt.bin")).unwrap(), first);
    assert_eq!(fs::read(m.p("ckpt.bin")).unwrap(), version(50, 2 << 20));
    let s = common::status(&m.store);
    for k in [
        "growth_bytes_per_day",
        "projected_bytes",
        "days_until_full",
        "capacity_bytes",
    ] {
        assert!(s["plan"].get(k).is_some(), "status lacks {k}: {s}");
    }
    assert_eq!(s["plan"]["capacity_bytes"].as_u64().unwrap(), bound, "{s}");
    assert!(
        s["plan"]["growth_bytes_per_day"].as_f64().unwrap() > 0.0,
        "{s}"
    );
    assert_eq!(s["plan"]["over_max_size"], false, "{s}");
    // The policy was kept in the config: set once.
    let (ok, out) = revfs(&["policy".as_ref(), m.store.as_os_str(), "--json".as_ref()]);
    assert!(ok, "{out}");
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["policy"]["max_size"]["bytes"], bound, "{p}");
    m.unmount();
    verify_clean(&m.store);
}

#[test]
fn the_replica_keeps_pruned_history_for_its_grace_window_then_follows() {
    let Some((mut m, replica)) = Mount::with_replica(&["--replica-delete-after", "1h"]) else {
        return;
    };
    let vs: Vec<Vec<u8>> = (0..6).map(|k| version(k, 256 << 10)).collect();
    for v in &vs {
        save(&m.p("model.bin"), v);
    }
    common::wait_replicated(&m.store, Duration::from_secs(30));
    let r = prune(&m.mnt, &["--keep-last", "1"]);
    assert!(r["commits_dropped"].as_u64().unwrap() >= 5, "{r}");
    assert_eq!(logged(&m.p("model.bin")), [vs[5].clone()]);
    common::wait_replicated(&m.store, Duration::from_secs(30));

    // Within the window: the replica gives back the pre-prune history.
    let rec = m.tmp.path().join("recovered");
    let (ok, out) = revfs(&["recover".as_ref(), replica.as_os_str(), rec.as_os_str()]);
    assert!(ok, "{out}");
    let mnt = m.tmp.path().join("mnt-rec");
    fs::create_dir(&mnt).unwrap();
    let mut back = Mount::attach(rec.clone(), mnt.clone(), m.tmp.path().join("rec.log"));
    back.start(&[]);
    assert_eq!(logged(&back.p("model.bin")), vs, "pre-prune history");
    back.unmount();
    verify_clean(&rec);
    // The drill passes, and says what the replica holds beyond the primary.
    let (ok, out) = revfs(&["drill".as_ref(), m.store.as_os_str()]);
    assert!(
        ok && out.contains("5 pruned on the primary"),
        "drill: {out}"
    );

    // The window over (a remount with a zero window), a round applies
    // the prune to the replica; a crash between its two steps is safe.
    m.unmount();
    let replica_before = packs_bytes(&replica);
    m.start_env(
        &["--replica-delete-after", "0s"],
        &[("REVFS_CRASH_AT", "replica:pruned-written")],
    );
    wait_until(
        "the replicator to stop at its crash point",
        Duration::from_secs(30),
        || m.log_text().contains("crash point replica:pruned-written"),
    );
    m.crash();
    let rec2 = m.tmp.path().join("recovered2");
    let (ok, out) = revfs(&["recover".as_ref(), replica.as_os_str(), rec2.as_os_str()]);
    assert!(ok, "{out}");
    verify_clean(&rec2);
    m.start(&["--replica-delete-after", "0s"]);
    common::wait_replicated(&m.store, Duration::from_secs(30));
    wait_until(
        "the replica to drop the pruned packs",
        Duration::from_secs(30),
        || packs_bytes(&replica) < replica_before,
    );
    assert!(fs::read_dir(replica.join("pruned")).unwrap().count() >= 1);
    m.unmount();

    // After the window: recover gives the post-prune history, complete.
    let rec3 = m.tmp.path().join("recovered3");
    let (ok, out) = revfs(&[
        "recover".as_ref(),
        replica.as_os_str(),
        rec3.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{out}");
    let got: serde_json::Value = serde_json::from_str(&out[..out.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(got["damaged_commits"], 0, "{got}");
    assert_eq!(got["lost_commits"], 0, "{got}");
    verify_clean(&rec3);
    let mut back = Mount::attach(rec3.clone(), mnt, m.tmp.path().join("rec3.log"));
    back.start(&[]);
    assert_eq!(logged(&back.p("model.bin")), [vs[5].clone()]);
    back.unmount();
}

#[test]
fn with_two_replicas_a_prune_reaches_each_even_one_that_was_away() {
    let Some((mut m, first)) = Mount::with_replica(&[]) else {
        return;
    };
    let second = m.tmp.path().join("replica-2");
    fs::create_dir(&second).unwrap();
    let (a, b) = (first.to_str().unwrap(), second.to_str().unwrap());
    let flags = [
        "--replica",
        a,
        "--replica",
        b,
        "--replica-delete-after",
        "0s",
    ];
    m.remount(&flags);
    let vs: Vec<Vec<u8>> = (0..6).map(|k| version(k, 256 << 10)).collect();
    for v in &vs {
        save(&m.p("model.bin"), v);
    }
    let both_caught_up = |m: &Mount| {
        common::commit(&m.store);
        wait_until("both replicas at lag 0", Duration::from_secs(30), || {
            let st = common::status(&m.store);
            let r = st["replicas"].as_array().unwrap().clone();
            r.len() == 2
                && r.iter()
                    .all(|r| r["state"] == "ok" && r["lag_commits"] == 0)
        });
    };
    both_caught_up(&m);
    let before = (packs_bytes(&first), packs_bytes(&second));

    // The second replica is away (its disk unplugged) while the prune
    // runs and the first replica applies it...
    let away = m.tmp.path().join("replica-2-away");
    fs::rename(&second, &away).unwrap();
    let r = prune(&m.mnt, &["--keep-last", "1"]);
    assert!(r["commits_dropped"].as_u64().unwrap() >= 5, "{r}");
    common::commit(&m.store);
    wait_until(
        "the first replica to drop the pruned packs",
        Duration::from_secs(30),
        || packs_bytes(&first) < before.0,
    );
    // ...and once it is back, it gets the same prune: the record waited.
    fs::rename(&away, &second).unwrap();
    both_caught_up(&m);
    wait_until(
        "the second replica to drop the pruned packs",
        Duration::from_secs(30),
        || packs_bytes(&second) < before.1,
    );
    assert!(fs::read_dir(second.join("pruned")).unwrap().count() >= 1);
    m.unmount();
    for (i, replica) in [&first, &second].into_iter().enumerate() {
        let rec = m.tmp.path().join(format!("rec-{i}"));
        let (ok, out) = revfs(&["recover".as_ref(), replica.as_os_str(), rec.as_os_str()]);
        assert!(ok, "{out}");
        verify_clean(&rec);
        let mnt = m.tmp.path().join(format!("rec-mnt-{i}"));
        fs::create_dir(&mnt).unwrap();
        let mut back = Mount::attach(rec, mnt, m.tmp.path().join(format!("rec-{i}.log")));
        back.start(&[]);
        assert_eq!(logged(&back.p("model.bin")), [vs[5].clone()], "replica {i}");
        back.unmount();
    }
}

#[test]
fn a_format_3_store_opens_and_prunes() {
    if !common::fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("v3-store");
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3-store");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(&store)
            .status()
            .unwrap()
            .success()
    );
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut m = Mount::attach(store.clone(), mnt, tmp.path().join("log"));
    m.start(&[]);
    // Written by the release before retention: model.bin saved 4 times
    // ("version K\n" + 40,000 random bytes), the second named keep-v1.
    let prefixes = |v: Vec<Vec<u8>>| -> Vec<String> {
        v.iter()
            .map(|b| String::from_utf8_lossy(&b[..10]).into_owned())
            .collect()
    };
    assert_eq!(
        prefixes(logged(&m.p("model.bin"))),
        ["version 0\n", "version 1\n", "version 2\n", "version 3\n"]
    );
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v3 store\n");
    let r = prune(&m.mnt, &["--keep-last", "1"]);
    assert!(r["commits_dropped"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(
        prefixes(logged(&m.p("model.bin"))),
        ["version 1\n", "version 3\n"]
    );
    m.unmount();
    verify_clean(&store);
    let s = common::status(&store);
    assert_eq!(s["format"], revfs::format::FORMAT_VERSION, "{s}");
}

/// A store on a disk of its own (a 512 MiB tmpfs), mounted with no policy
/// at all: only the disk filling up makes history go. The fields drop in
/// order: the mount, then the disk.
struct SmallDisk {
    m: Mount,
    disk: common::Tmpfs,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        if !common::fuse_available() {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let disk = common::Tmpfs::new(&tmp.path().join("disk"), "512m");
        let store = disk.0.join("s");
        let (ok, out) = revfs(&["init".as_ref(), store.as_os_str()]);
        assert!(ok, "{out}");
        let mnt = tmp.path().join("m");
        fs::create_dir(&mnt).unwrap();
        let mut m = Mount::attach(store, mnt, tmp.path().join("log"));
        m.start(&[]);
        Some(SmallDisk { m, disk, _tmp: tmp })
    }
}

/// A process the test started, killed and reaped when the test ends
/// (before the mount it may hold is unmounted).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn history_never_makes_a_write_fail_on_a_nearly_full_disk() {
    let Some(mut sd) = SmallDisk::mount() else {
        return;
    };
    let (m, disk) = (&mut sd.m, &sd.disk);
    let store = m.store.clone();
    let first = version(0, 8 << 20);
    save(&m.p("ckpt.bin"), &first);
    name_snapshot(m, "first");
    // 80 checkpoints of 8 MiB, four a second: 640 MiB through a 512 MiB
    // disk (the daemon looks at the free space every second; its low-water
    // mark here is 64 MiB, packs are 128 MiB).
    for step in 1..=80 {
        save(&m.p("ckpt.bin"), &version(step, 8 << 20));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(fs::read(m.p("ckpt.bin")).unwrap(), version(80, 8 << 20));
    assert_eq!(fs::read(m.p(".snapshots/first/ckpt.bin")).unwrap(), first);
    assert!(
        m.log_text().contains("nearly full"),
        "the daemon did not say why history went: {}",
        m.log_text()
    );
    // Live data that does not fit still gets ENOSPC.
    let e = fs::write(m.p("huge.bin"), Rng::new(5).bytes(600 << 20)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    fs::remove_file(m.p("huge.bin")).unwrap();
    // What the failed write left behind is garbage the daemon sweeps.
    wait_until(
        "the daemon to give the space back",
        Duration::from_secs(60),
        || disk.free() > 64 << 20,
    );
    m.unmount();
    verify_clean(&store);
}

#[test]
fn a_write_that_outruns_the_prune_loop_waits_for_it_instead_of_failing() {
    // One save of 192 MiB in a burst: it passes the low-water mark and
    // the reserve (32 MiB) well inside the second in which the loop looks
    // at the disk once; its writes wait for the loop to free the old
    // versions instead of failing with ENOSPC.
    a_save_on_a_full_disk_waits_for_the_prune_loop(&version(1000, 192 << 20), save);
}

#[test]
fn a_scattered_save_that_outruns_the_prune_loop_waits_at_close_instead_of_failing() {
    // A save written out of order (its last MiB first, as a writer that
    // seeks does) goes to the staging file, and its chunks are stored only
    // at close: 128 MiB more than the disk has above the reserve once the
    // staging file holds them. Close waits for the prune loop as the
    // writes did, instead of failing with ENOSPC.
    let scattered = |path: &Path, data: &[u8]| {
        use std::os::unix::fs::FileExt;
        let tail = data.len() - (1 << 20);
        let f = fs::File::create(path).unwrap();
        f.write_all_at(&data[tail..], tail as u64).unwrap();
        for (i, part) in data[..tail].chunks(1 << 20).enumerate() {
            f.write_all_at(part, (i << 20) as u64).unwrap();
        }
        f.sync_all().unwrap();
    };
    a_save_on_a_full_disk_waits_for_the_prune_loop(&version(1001, 128 << 20), scattered);
}

/// Fills a small disk with history, then saves `big` over it with
/// `write` (which fsyncs): the save succeeds, having waited for the prune
/// loop, and the store verifies clean.
fn a_save_on_a_full_disk_waits_for_the_prune_loop(big: &[u8], write: impl FnOnce(&Path, &[u8])) {
    let Some(mut sd) = SmallDisk::mount() else {
        return;
    };
    let (m, disk) = (&mut sd.m, &sd.disk);
    let store = m.store.clone();
    fill_history(m, disk);
    write(&m.p("ckpt.bin"), big);
    assert!(fs::read(m.p("ckpt.bin")).unwrap() == big);
    let log = m.log_text();
    assert!(
        log.contains("writes wait for the prune loop") && log.contains("nearly full"),
        "{log}"
    );
    m.unmount();
    verify_clean(&store);
}

/// Saves versions of `ckpt.bin` (48 MiB) until history fills the disk to
/// just above the daemon's low-water mark (64 MiB here), where it does
/// not drop anything yet; returns how many.
fn fill_history(m: &Mount, disk: &common::Tmpfs) -> usize {
    let mut k = 0;
    while disk.free() > 176 << 20 {
        k += 1;
        assert!(k < 20, "the disk does not fill: {} free", disk.free());
        save(&m.p("ckpt.bin"), &version(k, 48 << 20));
    }
    assert!(disk.free() > 128 << 20, "{} free", disk.free());
    k
}

#[test]
fn kill_9_during_a_save_that_waits_for_room_keeps_the_checkpoint_it_replaces() {
    let Some(mut sd) = SmallDisk::mount() else {
        return;
    };
    let (m, disk) = (&mut sd.m, &sd.disk);
    let store = m.store.clone();
    let k = fill_history(m, disk);
    let last = version(k, 48 << 20);
    // The next save comes from another process, as a job's does: it
    // truncates the checkpoint and writes 192 MiB faster than the prune
    // loop frees room, then has not yet closed it when the machine dies.
    // Meanwhile the loop, short of space, drops history for it.
    m.unmount();
    m.start(&[]);
    let seen = m.log_text().len();
    let since = |m: &Mount| m.log_text().get(seen..).unwrap_or_default().to_string();
    let src = sd._tmp.path().join("next");
    let written = sd._tmp.path().join("written");
    fs::write(&src, version(1000, 192 << 20)).unwrap();
    let _writer = Child(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, time\n\
                 f = open(sys.argv[1], 'wb'); src = open(sys.argv[2], 'rb')\n\
                 while b := src.read(1 << 20): f.write(b)\n\
                 f.flush(); open(sys.argv[3], 'w').close(); time.sleep(300)\n",
            )
            .arg(m.p("ckpt.bin"))
            .arg(&src)
            .arg(&written)
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the save's bytes to be written",
        Duration::from_secs(120),
        || written.exists(),
    );
    wait_until(
        "the prune loop to drop history for the save",
        Duration::from_secs(60),
        || since(m).contains("prune: dropped"),
    );
    m.crash();
    assert!(
        since(m).contains("writes wait"),
        "no write waited for room: {}",
        since(m)
    );
    m.start(&[]);
    // The checkpoint the save replaced is still there: live, or as a
    // version `revfs log` lists.
    let path = m.p("ckpt.bin");
    let (ok, out) = revfs(&["log".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert!(ok, "log: {out}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let kept = fs::read(&path).unwrap() == last
        || log
            .iter()
            .any(|e| fs::read(e["path"].as_str().unwrap()).is_ok_and(|d| d == last));
    assert!(
        kept,
        "version {k}, the last fsync'ed checkpoint, is gone: {out}\n{}",
        m.log_text()
    );
    m.unmount();
    verify_clean(&store);
}

#[test]
fn kill_9_while_the_daemon_prunes_by_itself_loses_nothing_kept() {
    let Some(mut m) = Mount::new(&["--keep-last", "2", "--prune-interval", "100ms"]) else {
        return;
    };
    let named = version(1000, 256 << 10);
    save(&m.p("named.bin"), &named);
    name_snapshot(&m, "kept");
    let mut rng = Rng::new(7);
    let mut last: std::collections::HashMap<String, Vec<u8>> = Default::default();
    for cycle in 0..6 {
        // Writers save versions (each fsync'ed) while the daemon prunes
        // every 100 ms; kill -9 lands at a random moment.
        let deadline = std::time::Instant::now() + Duration::from_millis(300 + rng.below(900));
        let mut k = 0;
        while std::time::Instant::now() < deadline {
            let name = format!("f{}.bin", k % 3);
            let data = version(cycle * 1000 + k, 64 << 10 | rng.below(200_000) as usize);
            save(&m.p(&name), &data);
            last.insert(name, data);
            k += 1;
        }
        m.crash();
        m.start(&["--keep-last", "2", "--prune-interval", "100ms"]);
        for (name, data) in &last {
            assert!(
                fs::read(m.p(name)).unwrap() == *data,
                "cycle {cycle}: {name} lost its last fsync'ed version"
            );
        }
        assert_eq!(fs::read(m.p(".snapshots/kept/named.bin")).unwrap(), named);
    }
    assert!(
        m.log_text().matches("prune: dropped").count() >= 6,
        "the daemon hardly pruned: {}",
        m.log_text()
    );
    m.unmount();
    verify_clean(&m.store);
    // What the kills left behind goes with the next prune.
    let r = prune(&m.store, &["--keep-last", "1"]);
    assert!(r["seconds"].as_f64().is_some(), "{r}");
    verify_clean(&m.store);
    let live: u64 = last.values().map(|d| d.len() as u64).sum::<u64>() + named.len() as u64;
    let packs = packs_bytes(&m.store);
    assert!(
        packs < live * 3 + (4 << 20),
        "{packs} bytes of packs for {live} live bytes after the kills and a prune"
    );
}

/// The commits and times `revfs log` lists for `path`.
fn logged_commits(path: &Path) -> Vec<(u64, i64)> {
    let (ok, out) = revfs(&["log".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert!(ok, "log: {out}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    log.iter()
        .map(|e| {
            let t = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
            (e["commit"].as_u64().unwrap(), t.timestamp())
        })
        .collect()
}

#[test]
fn period_rules_keep_the_newest_commit_of_each_period_on_a_synthetic_timeline() {
    use chrono::Datelike;
    let Some(mut m) = Mount::init() else {
        return;
    };
    // 130 commits 11 hours apart, ending now: two months of history.
    let step = 11 * 3600;
    let now = chrono::Utc::now().timestamp();
    let start = now - 131 * step;
    let clock = format!("{start},{step}");
    m.start_env(&[], &[("REVFS_TEST_COMMIT_CLOCK", &clock)]);
    for k in 0..130 {
        save(&m.p("x.bin"), format!("version {k}\n").as_bytes());
        if k == 3 {
            name_snapshot(&m, "early");
        }
    }
    let before = logged_commits(&m.p("x.bin"));
    assert_eq!(before.len(), 130);
    let r = prune(
        &m.mnt,
        &[
            "--keep-hourly",
            "3",
            "--keep-daily",
            "4",
            "--keep-weekly",
            "3",
            "--keep-monthly",
            "2",
        ],
    );
    // The rules, written out again here: the newest commit of each of the
    // last N periods that hold one.
    let key = |t: i64, p: &str| -> i64 {
        let d = chrono::DateTime::from_timestamp(t, 0).unwrap();
        match p {
            "h" => t.div_euclid(3600),
            "d" => t.div_euclid(86400),
            "w" => d.iso_week().year() as i64 * 100 + d.iso_week().week() as i64,
            _ => d.year() as i64 * 12 + d.month0() as i64,
        }
    };
    let mut want = std::collections::BTreeSet::new();
    for (p, n) in [("h", 3), ("d", 4), ("w", 3), ("m", 2)] {
        let mut seen = Vec::new();
        for (seq, t) in before.iter().rev() {
            let k = key(*t, p);
            if seen.len() == n {
                break;
            }
            if !seen.contains(&k) {
                seen.push(k);
                want.insert(*seq);
            }
        }
    }
    // The named commit (the 4th save) and the head are kept whatever the rules say.
    want.insert(before[3].0);
    want.insert(before.last().unwrap().0);
    let got: std::collections::BTreeSet<u64> = logged_commits(&m.p("x.bin"))
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(got, want, "{r}");
    assert!(
        want.len() < 20 && r["commits_dropped"].as_u64().unwrap() > 100,
        "{r}"
    );
    // Every kept version reads back as it was saved.
    let contents = logged(&m.p("x.bin"));
    for (c, (seq, _)) in contents.iter().zip(logged_commits(&m.p("x.bin"))) {
        let k = before.iter().position(|b| b.0 == seq).unwrap();
        assert_eq!(*c, format!("version {k}\n").into_bytes());
    }
    verify_clean(&m.store);
}
