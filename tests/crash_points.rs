//! Stops a writer at every named crash point of the commit protocol and of
//! replication (a child process that aborts there), then reopens: the
//! store opens without repair, what was durable before is intact, the
//! interrupted change is either whole or absent, and verify is clean.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::bytes;
use revfs::engine::{Engine, Options};
use revfs::format::FileType;
use revfs::ids::Ino;
use revfs::repo::{self, Repo};
use std::path::Path;
use std::process::{Command, Stdio};

const COMMIT_POINTS: &[&str] = &[
    "record:chunks-written",
    "commit:objects-written",
    "commit:packs-synced",
    "commit:catalog-applied",
    "commit:flushed",
];
const REPLICA_POINTS: &[&str] = &["replica:packs-shipped", "replica:head-written"];

fn write_file(e: &Engine, name: &str, data: &[u8]) {
    let ino = match e.lookup(Ino::ROOT, name.as_bytes()) {
        Ok(a) => a.ino,
        Err(_) => {
            e.create_node(
                Ino::ROOT,
                name.as_bytes(),
                FileType::Regular,
                0o644,
                0,
                0,
                0,
                b"",
            )
            .unwrap()
            .ino
        }
    };
    let fh = e.open(ino, true, true).unwrap();
    e.write(fh, 0, data).unwrap();
    e.fsync(fh).unwrap();
    e.release(fh).unwrap();
}

/// One replication round of `r` to `dir` (prunes' deletions wait a day).
fn ship(r: &Repo, dir: &Path) {
    revfs::replica::ship(
        &revfs::replica::target::DirTarget::new(dir.to_path_buf()),
        &r.engine.db,
        &r.engine.store,
        std::time::Duration::from_secs(86400),
        &revfs::replica::Peers::alone(&r.engine.db, dir),
    )
    .unwrap();
}

fn read_file(e: &Engine, name: &str) -> Option<Vec<u8>> {
    let a = e.lookup(Ino::ROOT, name.as_bytes()).ok()?;
    let fh = e.open(a.ino, false, false).unwrap();
    let d = e.read(fh, 0, a.node.size as u32).unwrap();
    e.release(fh).unwrap();
    Some(d)
}

/// The child: one more change, fsync'ed (and shipped), which hits the point.
#[test]
fn crash_point_child() {
    let _serial = common::serial();
    let Ok(dir) = std::env::var("REVFS_POINT_CHILD_STORE") else {
        return;
    };
    let mut r = Repo::open(Path::new(&dir), Options::default()).unwrap();
    if let Ok(replica) = std::env::var("REVFS_POINT_CHILD_REPLICA") {
        r.attach_replicas(&[replica.into()]).unwrap();
    }
    write_file(&r.engine, "new", &bytes(2, 700_000));
    if let Some(dir) = r.config.replica.clone() {
        ship(&r, &dir);
    }
    // Not reached when the point is on the path above.
    std::process::exit(3);
}

fn run_child(store: &Path, point: &str, replica: Option<&Path>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "crash_point_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("REVFS_POINT_CHILD_STORE", store)
    .env("REVFS_CRASH_AT", point)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(r) = replica {
        cmd.env("REVFS_POINT_CHILD_REPLICA", r);
    }
    let st = cmd.status().unwrap();
    // Aborted at the point (SIGABRT): not finished, and not failed otherwise.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc::SIGABRT),
        "{point}: child did not stop at the point ({st})"
    );
}

fn verify_clean(store: &Path, replica: Option<&Path>) {
    let r = Repo::open(store, Options::default()).unwrap();
    let report = revfs::verify::verify(&r.engine, replica, false, |_, _| {}).unwrap();
    assert!(report.clean, "{report:?}");
}

#[test]
fn every_commit_crash_point_leaves_a_consistent_store() {
    let _serial = common::serial();
    for point in COMMIT_POINTS {
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path().join("s");
        repo::init(&s, None).unwrap();
        {
            let r = Repo::open(&s, Options::default()).unwrap();
            write_file(&r.engine, "base", &bytes(1, 500_000));
            r.engine.shutdown().unwrap();
        }
        run_child(&s, point, None);
        let r =
            Repo::open(&s, Options::default()).unwrap_or_else(|e| panic!("{point}: reopen: {e}"));
        assert_eq!(
            read_file(&r.engine, "base").unwrap(),
            bytes(1, 500_000),
            "{point}"
        );
        if let Some(d) = read_file(&r.engine, "new") {
            assert!(
                d.is_empty() || d == bytes(2, 700_000),
                "{point}: torn new file ({} bytes)",
                d.len()
            );
        }
        // The store keeps working after the crash.
        write_file(&r.engine, "after", b"ok");
        assert_eq!(read_file(&r.engine, "after").unwrap(), b"ok");
        r.engine.shutdown().unwrap();
        drop(r);
        verify_clean(&s, None);
    }
}

#[test]
fn every_replication_crash_point_leaves_a_consistent_replica() {
    let _serial = common::serial();
    for point in REPLICA_POINTS {
        let tmp = tempfile::tempdir().unwrap();
        let (s, rep) = (tmp.path().join("s"), tmp.path().join("r"));
        repo::init(&s, None).unwrap();
        std::fs::create_dir(&rep).unwrap();
        {
            let mut r = Repo::open(&s, Options::default()).unwrap();
            r.attach_replicas(std::slice::from_ref(&rep)).unwrap();
            write_file(&r.engine, "base", &bytes(1, 500_000));
            ship(&r, &rep);
            r.engine.shutdown().unwrap();
        }
        run_child(&s, point, Some(&rep));
        // The replica alone is a consistent store at this instant.
        let rec = tmp.path().join("rec");
        revfs::replica::recover::recover(&rep, &rec, |_, _| {})
            .unwrap_or_else(|e| panic!("{point}: recover: {e}"));
        let r = Repo::open(&rec, Options::default()).unwrap();
        assert_eq!(
            read_file(&r.engine, "base").unwrap(),
            bytes(1, 500_000),
            "{point}"
        );
        drop(r);
        verify_clean(&rec, None);
        // And the next round completes it.
        let r = Repo::open(&s, Options::default()).unwrap();
        ship(&r, &rep);
        let report = revfs::verify::verify(&r.engine, Some(&rep), false, |_, _| {}).unwrap();
        assert!(report.clean, "{point}: {report:?}");
    }
}
