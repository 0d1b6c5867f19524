//! A replica in S3, through real mounts, the real CLI and a real SeaweedFS
//! that the test starts and stops: replication, the server going away and
//! coming back, recover from the bucket alone, a wrong key, kill -9 of the
//! daemon in the middle of an upload, a bucket mounted read-only.
// Tests may unwrap (and the shared helpers call libc).
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::s3::Seaweed;
use common::{Mount, Rng, dir_bytes, os};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// `revfs ARGS` with the server's AWS environment: (ok, output).
fn rv(s3: &[(&'static str, String)], args: &[&std::ffi::OsStr]) -> (bool, String) {
    let set: Vec<(&str, &str)> = s3.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::revfs_env(&set, &[], args)
}

/// A store replicating to `url`, mounted with the server's environment.
fn mounted(s3: &Seaweed, url: &str) -> Mount {
    mounted_with(s3, url, None)
}

/// [`mounted`], encrypted with passphrase `pass` when given.
fn mounted_with(s3: &Seaweed, url: &str, pass: Option<&str>) -> Mount {
    let tmp = tempfile::Builder::new()
        .prefix("revfs-s3r")
        .tempdir()
        .unwrap();
    let store = tmp.path().join("store");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut env = s3.env();
    env.extend(pass.map(|p| ("REVFS_PASSWORD", p.to_string())));
    let mut args = vec![os("init"), store.as_os_str(), os("--replica"), os(url)];
    if pass.is_some() {
        args.push(os("--encrypt"));
    }
    let (ok, out) = rv(&env, &args);
    assert!(ok, "{out}");
    let mut m = Mount::attach(store, mnt, tmp.path().join("daemon.log"));
    m.tmp = tmp;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    m.start_env(&[], &env);
    m
}

fn save(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn replica(m: &Mount) -> serde_json::Value {
    common::status(&m.store)["replica"].clone()
}

fn caught_up(m: &Mount, timeout: Duration) {
    common::commit(&m.store);
    common::wait_until("S3 replica lag 0", timeout, || {
        let r = replica(m);
        r["state"] == "ok" && r["lag_commits"] == 0 && r["lag_bytes"] == 0
    });
}

/// Every version `revfs log` lists of `rel` in mount `m`, oldest first
/// (as digests, to compare with `common::digests` of what was saved).
fn versions(m: &Mount, rel: &str) -> Vec<common::Digest> {
    let (ok, out) = rv(&[], &[os("log"), m.p(rel).as_os_str(), os("--json")]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| common::digest(&fs::read(e["path"].as_str().unwrap()).unwrap()))
        .collect()
}

fn recover_and_mount(s3: &Seaweed, url: &str, m: &Mount, name: &str) -> Mount {
    let rec = m.tmp.path().join(name);
    let (ok, out) = rv(&s3.env(), &[os("recover"), os(url), rec.as_os_str()]);
    assert!(ok, "{out}");
    let (ok, out) = rv(&[], &[os("verify"), rec.as_os_str()]);
    assert!(ok, "the recovered store is not clean: {out}");
    let mnt = m.tmp.path().join(format!("{name}-mnt"));
    fs::create_dir(&mnt).unwrap();
    let mut back = Mount::attach(rec, mnt, m.tmp.path().join(format!("{name}.log")));
    back.start(&[]);
    back
}

#[test]
fn an_s3_replica_catches_up_after_the_server_comes_back_and_recovers_every_version() {
    if !common::fuse_available() {
        return;
    }
    let mut s3 = Seaweed::start("replicas");
    let url = "s3://replicas/store-1";
    let mut m = mounted(&s3, url);
    let mut rng = Rng::new(1);
    let mut saved = Vec::new();
    for _ in 0..2 {
        let v = rng.bytes(3 << 20);
        save(&m.p("model.bin"), &v);
        saved.push(v);
        common::commit(&m.store);
    }
    // A checkpoint larger than a multipart part, in a pack of its own.
    let big = rng.bytes(40 << 20);
    save(&m.p("big.bin"), &big);
    caught_up(&m, Duration::from_secs(60));
    // The server goes away. While nothing is written, an idle replica is
    // asked nothing (every request costs), so it is not noticed yet...
    s3.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(replica(&m)["state"], "ok", "{}", replica(&m));
    // ...writes go on, and status says the replica is behind and failing.
    let v = rng.bytes(3 << 20);
    save(&m.p("model.bin"), &v);
    saved.push(v);
    common::commit(&m.store);
    common::wait_until(
        "the replica reported failing",
        Duration::from_secs(60),
        || {
            let r = replica(&m);
            r["lag_commits"].as_u64().unwrap_or(0) > 0 && r["last_error"].is_string()
        },
    );
    assert_eq!(replica(&m)["state"], "error", "{}", replica(&m));
    // It comes back: the replica catches up by itself.
    s3.restart();
    caught_up(&m, Duration::from_secs(90));
    m.unmount();
    // Recover from the bucket alone: every version, byte for byte.
    let mut back = recover_and_mount(&s3, url, &m, "recovered");
    assert_eq!(versions(&back, "model.bin"), common::digests(&saved));
    assert_eq!(
        common::digest(&fs::read(back.p("big.bin")).unwrap()),
        common::digest(&big)
    );
    back.unmount();
}

#[test]
fn a_wrong_key_or_a_missing_bucket_is_one_clear_line() {
    let s3 = Seaweed::start("replicas");
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let mut env = s3.env();
    env.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_SECRET_ACCESS_KEY", "wrong".into()));
    let (ok, out) = rv(
        &env,
        &[
            os("init"),
            store.as_os_str(),
            os("--replica"),
            os("s3://replicas/x"),
        ],
    );
    assert!(!ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("revfs: "))
        .unwrap_or_default();
    assert!(
        line.contains("s3://replicas/x") && line.contains("PermissionDenied"),
        "{out}"
    );
    assert!(!store.exists(), "a failed init left {}", store.display());
    let (ok, out) = rv(
        &s3.env(),
        &[
            os("recover"),
            os("s3://no-such-bucket/x"),
            tmp.path().join("r").as_os_str(),
        ],
    );
    assert!(!ok && out.contains("no-such-bucket"), "{out}");
    assert!(!tmp.path().join("r").exists());
}

#[test]
fn kill_9_of_the_daemon_mid_upload_then_recover_from_the_bucket() {
    if !common::fuse_available() {
        return;
    }
    let s3 = Seaweed::start("replicas");
    let url = "s3://replicas/store-k";
    let mut m = mounted(&s3, url);
    let mut rng = Rng::new(2);
    let first = rng.bytes(2 << 20);
    save(&m.p("model.bin"), &first);
    caught_up(&m, Duration::from_secs(60));
    // A large write whose upload is under way when the daemon dies.
    let big = rng.bytes(96 << 20);
    save(&m.p("big.bin"), &big);
    common::commit(&m.store);
    std::thread::sleep(Duration::from_millis(300));
    m.crash();
    // The bucket is a consistent store at this instant: recover holds
    // everything the replica had reported, and verifies clean.
    let mut back = recover_and_mount(&s3, url, &m, "recovered");
    assert_eq!(versions(&back, "model.bin"), vec![common::digest(&first)]);
    match fs::read(back.p("big.bin")) {
        Ok(b) => assert_eq!(b, big, "big.bin recovered with other bytes"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
    }
    back.unmount();
    // The primary, mounted again, ships the rest; a second recover has it all.
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    m.start_env(&[], &env);
    caught_up(&m, Duration::from_secs(90));
    m.unmount();
    let mut again = recover_and_mount(&s3, url, &m, "recovered-2");
    assert_eq!(
        common::digest(&fs::read(again.p("big.bin")).unwrap()),
        common::digest(&big)
    );
    again.unmount();
}

#[test]
fn a_recover_from_the_bucket_killed_at_any_moment_runs_again() {
    if !common::fuse_available() {
        return;
    }
    let s3 = Seaweed::start("replicas");
    let url = "s3://replicas/store-r";
    let mut m = mounted(&s3, url);
    let mut rng = Rng::new(4);
    let mut saved = Vec::new();
    for _ in 0..3 {
        let v = rng.bytes(24 << 20);
        save(&m.p("model.bin"), &v);
        saved.push(v);
        common::commit(&m.store);
    }
    caught_up(&m, Duration::from_secs(90));
    m.unmount();
    let rec = m.tmp.path().join("rec");
    let env = s3.env();
    // kill -9 of recover at several moments (downloading, rebuilding),
    // each followed by a run to the end over what it left.
    let mut interrupted = 0;
    for (i, delay) in [50u64, 300, 900, 2000].into_iter().enumerate() {
        let mut child = std::process::Command::new(common::BIN)
            .arg("recover")
            .arg(url)
            .arg(&rec)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay + rng.below(100)));
        let _ = child.kill();
        let _ = child.wait();
        // Killed after it dropped its marker, it is a store already; a
        // marker (with or without the config) is an interrupted run.
        let finished =
            rec.join("revfs.conf").exists() && !rec.join(revfs::replica::recover::MARKER).exists();
        if !finished {
            interrupted += 1;
            let (ok, out) = rv(&env, &[os("recover"), os(url), rec.as_os_str()]);
            assert!(ok, "run {i} after a kill: {out}");
        }
        let mnt = m.tmp.path().join(format!("rec-mnt-{i}"));
        fs::create_dir(&mnt).unwrap();
        let mut back = Mount::attach(rec.clone(), mnt, m.tmp.path().join(format!("rec{i}.log")));
        back.start(&[]);
        assert_eq!(
            versions(&back, "model.bin"),
            common::digests(&saved),
            "run {i}"
        );
        back.unmount();
        let (ok, out) = rv(&[], &[os("verify"), rec.as_os_str()]);
        assert!(ok, "run {i}: the recovered store is not clean: {out}");
        for left in [
            revfs::replica::recover::DOWNLOAD,
            revfs::replica::recover::MARKER,
        ] {
            assert!(!rec.join(left).exists(), "run {i}: {left} left behind");
        }
        fs::remove_dir_all(&rec).unwrap();
    }
    assert!(interrupted > 0, "no kill landed before recover was done");
}

#[test]
fn a_bucket_mounts_read_only_through_a_bounded_cache_with_or_without_its_indexes() {
    if !common::fuse_available() {
        return;
    }
    let s3 = Seaweed::start("replicas");
    let url = "s3://replicas/store-m";
    let pass = "bucket mount pass";
    let mut m = mounted_with(&s3, url, Some(pass));
    let mut rng = Rng::new(5);
    let mut saved = Vec::new();
    for i in 0..3 {
        // Each version larger than the whole cache, marked in plain text.
        let mut v = format!("PLAINTEXT-MARK-{i}").into_bytes();
        v.extend(rng.bytes(12 << 20));
        save(&m.p("model.bin"), &v);
        saved.push(v);
        common::commit(&m.store);
    }
    fs::write(m.p("notes.txt"), b"small file\n").unwrap();
    caught_up(&m, Duration::from_secs(90));
    m.unmount();

    let mut env = s3.env();
    env.push(("REVFS_PASSWORD", pass.to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cache_size = 16u64 << 20;
    let serve = |name: &str| {
        let mnt = m.tmp.path().join(format!("{name}-mnt"));
        fs::create_dir(&mnt).unwrap();
        let cache = m.tmp.path().join(format!("{name}-cache"));
        let log = m.tmp.path().join(format!("{name}.log"));
        let mut b = Mount::attach(url.into(), mnt, log);
        let size = cache_size.to_string();
        let args = [
            "--read-only",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--cache-size",
            &size,
        ];
        b.start_env(&args, &env);
        (b, cache)
    };
    let (mut b, cache) = serve("bucket");
    // Every version byte for byte (36 MiB through a 16 MiB cache)...
    assert_eq!(versions(&b, "model.bin"), common::digests(&saved));
    assert_eq!(fs::read(b.p("notes.txt")).unwrap(), b"small file\n");
    // status (asked of the mount's daemon) and statfs answer for a bucket.
    let mut with_pass = s3.env();
    with_pass.push(("REVFS_PASSWORD", pass.to_string()));
    let (ok, out) = rv(&with_pass, &[os("status"), os(url), os("--json")]);
    assert!(ok, "{out}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(st["stored_bytes"].as_u64() > Some(36 << 20), "{st}");
    assert!(st["encrypted"] == true, "{st}");
    let df = std::process::Command::new("df")
        .arg(b.p(""))
        .output()
        .unwrap();
    assert!(
        df.status.success(),
        "df: {}",
        String::from_utf8_lossy(&df.stderr)
    );
    // ...and the cache stayed within its size and holds no plaintext.
    let held = dir_bytes(&cache);
    assert!(held > 0 && held <= cache_size, "cache holds {held} bytes");
    for e in fs::read_dir(&cache).unwrap() {
        // The mount's fetch-ahead may still be filling the cache, evicting
        // a block (or renaming a fetched one into place) after the listing.
        let data = match fs::read(e.unwrap().path()) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{e}"),
        };
        assert!(
            !data.windows(15).any(|w| w.starts_with(b"PLAINTEXT-MARK-")),
            "plaintext in the cache"
        );
    }
    // Read-only: a write is refused with EROFS, nothing reaches the bucket.
    let e = fs::write(b.p("new.txt"), b"x").unwrap_err();
    assert_eq!(common::errno(e), libc::EROFS);
    // A second mount of the same cache is refused with one clear line.
    let other = m.tmp.path().join("other-mnt");
    fs::create_dir(&other).unwrap();
    let mut args = vec![os("mount"), os(url), other.as_os_str(), os("--read-only")];
    args.extend([os("--cache-dir"), cache.as_os_str()]);
    let (ok, out) = rv(&with_pass, &args);
    assert!(!ok && out.contains("cache in use"), "{out}");
    b.unmount();

    // A bucket without index objects (an older replica) is read by its
    // record headers: the same versions.
    let t = revfs::replica::target::S3Target::with_config(url, &s3.config()).unwrap();
    use revfs::replica::target::Target;
    let idx = t.list("index/").unwrap();
    assert!(!idx.is_empty(), "the replicator shipped no index objects");
    for (name, _) in &idx {
        t.delete(name).unwrap();
    }
    let (mut old, _) = serve("no-index");
    assert_eq!(versions(&old, "model.bin"), common::digests(&saved));
    old.unmount();
}

#[test]
fn verify_of_a_bucket_finds_and_repairs_a_damaged_record_and_a_drill_passes() {
    if !common::fuse_available() {
        return;
    }
    let s3 = Seaweed::start("replicas");
    let url = "s3://replicas/store-v";
    let mut m = mounted(&s3, url);
    let mut rng = Rng::new(6);
    let data = rng.bytes(6 << 20);
    save(&m.p("model.bin"), &data);
    caught_up(&m, Duration::from_secs(60));
    // The drill recovers from the bucket and mounts the bucket itself.
    let (ok, out) = rv(&s3.env(), &[os("drill"), m.store.as_os_str(), os("--json")]);
    assert!(ok, "{out}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["passed"], true, "{d}");
    m.unmount();

    let verify = |extra: &[&str]| {
        let mut args = vec![os("verify"), m.store.as_os_str(), os("--replica"), os(url)];
        args.extend(extra.iter().map(os));
        args.push(os("--json"));
        let (_, out) = rv(&s3.env(), &args);
        // The report first; a failed verify adds its one line after it.
        let mut values = serde_json::Deserializer::from_str(&out).into_iter();
        let v: Option<serde_json::Value> = values.next().and_then(|v| v.ok());
        v.unwrap_or_else(|| panic!("no report: {out}"))
    };
    let clean = verify(&[]);
    assert_eq!(clean["clean"], true, "{clean}");
    let checked = clean["replica"]["objects_checked"].as_u64().unwrap();
    assert!(checked > 0, "{clean}");

    // One flipped byte inside the largest pack object of the bucket.
    use revfs::replica::target::Target;
    let t = revfs::replica::target::S3Target::with_config(url, &s3.config()).unwrap();
    let (name, size) = t
        .list("packs/")
        .unwrap()
        .into_iter()
        .max_by_key(|o| o.1)
        .unwrap();
    let mut bytes = t.get(&name).unwrap().unwrap();
    bytes[size as usize / 2] ^= 0x40;
    t.put_replace(&name, &bytes).unwrap();

    let found = verify(&[]);
    assert_eq!(found["clean"], false, "{found}");
    assert_eq!(
        found["replica"]["corrupt"].as_array().unwrap().len(),
        1,
        "{found}"
    );
    assert_eq!(
        found["primary"]["corrupt"].as_array().unwrap().len(),
        0,
        "{found}"
    );
    let fixed = verify(&["--repair"]);
    assert_eq!(fixed["replica"]["repaired"], 1, "{fixed}");
    let again = verify(&[]);
    assert_eq!(again["clean"], true, "{again}");
    assert_eq!(t.get(&name).unwrap().unwrap().len() as u64, size);
}

#[test]
fn two_replicas_a_directory_and_a_bucket_each_keep_their_own_state_and_both_recover() {
    if !common::fuse_available() {
        return;
    }
    let mut s3 = Seaweed::start("replicas");
    let url = "s3://replicas/store-2";
    let tmp = tempfile::Builder::new()
        .prefix("revfs-s3two")
        .tempdir()
        .unwrap();
    let (store, mnt, nas) = (
        tmp.path().join("store"),
        tmp.path().join("mnt"),
        tmp.path().join("nas"),
    );
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(&nas).unwrap();
    let env = s3.env();
    let args = [
        os("init"),
        store.as_os_str(),
        os("--replica"),
        nas.as_os_str(),
    ];
    let (ok, out) = rv(&env, &[&args[..], &[os("--replica"), os(url)]].concat());
    assert!(ok, "{out}");
    let mut m = Mount::attach(store.clone(), mnt, tmp.path().join("daemon.log"));
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    m.start_env(&[], &envs);
    let both = |m: &Mount| common::status(&m.store)["replicas"].clone();
    let caught_up_both = |m: &Mount, timeout| {
        common::commit(&m.store);
        common::wait_until("both replicas at lag 0", timeout, || {
            let r = both(m);
            r.as_array().unwrap().len() == 2
                && r.as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["state"] == "ok" && r["lag_commits"] == 0 && r["lag_bytes"] == 0)
        });
    };
    let mut rng = Rng::new(7);
    let mut saved = vec![rng.bytes(3 << 20)];
    save(&m.p("model.bin"), &saved[0]);
    caught_up_both(&m, Duration::from_secs(60));
    let st = common::status(&m.store);
    assert_eq!(st["replica"]["path"], nas.to_str().unwrap(), "{st}");
    assert_eq!(st["replicas"][1]["path"], url, "{st}");

    // The bucket goes away: the directory replica goes on, the bucket's
    // state says it is failing, and both catch up once it is back.
    s3.stop();
    saved.push(rng.bytes(3 << 20));
    save(&m.p("model.bin"), &saved[1]);
    common::commit(&m.store);
    common::wait_until(
        "the directory at lag 0 while the bucket fails",
        Duration::from_secs(60),
        || {
            let r = both(&m);
            r[0]["state"] == "ok"
                && r[0]["lag_commits"] == 0
                && r[1]["state"] == "error"
                && r[1]["lag_commits"].as_u64() > Some(0)
                && r[1]["last_error"].is_string()
        },
    );
    s3.restart();
    caught_up_both(&m, Duration::from_secs(90));
    m.unmount();

    // A damaged pack in the primary, and the directory replica without
    // its copy: reads heal from the bucket, the next replica in the list.
    let pack = fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(&pack, &bytes).unwrap();
    fs::remove_file(nas.join("packs").join(pack.file_name().unwrap())).unwrap();
    m.start_env(&[], &envs);
    assert_eq!(versions(&m, "model.bin"), common::digests(&saved));
    assert!(
        m.log_text().contains(&format!("healed from replica {url}")),
        "{}",
        m.log_text()
    );
    caught_up_both(&m, Duration::from_secs(90));
    m.unmount();

    // Each replica alone recovers every version.
    let from_nas = recover_and_mount(&s3, nas.to_str().unwrap(), &m, "from-nas");
    assert_eq!(versions(&from_nas, "model.bin"), common::digests(&saved));
    let from_bucket = recover_and_mount(&s3, url, &m, "from-bucket");
    assert_eq!(versions(&from_bucket, "model.bin"), common::digests(&saved));
}

#[test]
fn a_burst_of_503s_or_a_full_quota_delays_the_replica_and_loses_nothing() {
    if !common::fuse_available() {
        return;
    }
    let s3 = Seaweed::start("replicas");
    let proxy =
        common::fault_proxy::FaultProxy::start(s3.endpoint.strip_prefix("http://").unwrap());
    // Every request goes through the proxy.
    let mut env = s3.env();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", proxy.url()));
    let url = "s3://replicas/store-503";
    let tmp = tempfile::Builder::new()
        .prefix("revfs-s3b")
        .tempdir()
        .unwrap();
    let store = tmp.path().join("store");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let (ok, out) = rv(
        &env,
        &[os("init"), store.as_os_str(), os("--replica"), os(url)],
    );
    assert!(ok, "{out}");
    let mut m = Mount::attach(store, mnt, tmp.path().join("daemon.log"));
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    m.start_env(&[], &envs);
    let mut rng = Rng::new(8);
    // Checkpoints larger than a multipart part, so a burst meets an upload.
    let mut saved = vec![rng.bytes(40 << 20)];
    save(&m.p("model.bin"), &saved[0]);
    caught_up(&m, Duration::from_secs(90));

    proxy.unavailable(true);
    saved.push(rng.bytes(40 << 20));
    save(&m.p("model.bin"), &saved[1]);
    common::commit(&m.store);
    common::wait_until(
        "the replicator to meet the burst",
        Duration::from_secs(60),
        || proxy.refused() >= 5,
    );
    // The mount goes on meanwhile: writes and reads never wait for S3.
    saved.push(rng.bytes(1 << 20));
    save(&m.p("model.bin"), &saved[2]);
    assert_eq!(
        common::digest(&fs::read(m.p("model.bin")).unwrap()),
        common::digest(&saved[2])
    );
    assert!(
        replica(&m)["lag_commits"].as_u64() > Some(0),
        "{}",
        replica(&m)
    );
    proxy.unavailable(false);
    caught_up(&m, Duration::from_secs(120));

    // A full quota: every upload refused, reads and listings still served.
    proxy.quota_full(true);
    let refused = proxy.refused();
    saved.push(rng.bytes(2 << 20));
    save(&m.p("model.bin"), &saved[3]);
    common::commit(&m.store);
    common::wait_until(
        "status to say the quota is full",
        Duration::from_secs(60),
        || {
            let r = replica(&m);
            r["state"] == "error"
                && r["lag_commits"].as_u64() > Some(0)
                && r["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("QuotaExceeded"))
        },
    );
    assert!(proxy.refused() > refused);
    assert_eq!(
        common::digest(&fs::read(m.p("model.bin")).unwrap()),
        common::digest(&saved[3])
    );
    proxy.quota_full(false);
    caught_up(&m, Duration::from_secs(120));
    m.unmount();

    let mut back = recover_and_mount(&s3, url, &m, "recovered");
    assert_eq!(versions(&back, "model.bin"), common::digests(&saved));
    back.unmount();
    let (ok, out) = rv(
        &s3.env(),
        &[os("verify"), m.store.as_os_str(), os("--replica"), os(url)],
    );
    assert!(ok, "{out}");
}
