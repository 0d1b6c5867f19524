//! A store made by the previous release (format 1, `tests/fixtures/v1-store`,
//! written by revfs 0.1: a.txt saved as "one", "two", "three"; d/b.bin with
//! a hard link d/hard; a symlink; the named snapshot "first") still opens:
//! its catalog is upgraded once, and everything it held is there.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, revfs, status};
use std::fs;
use std::path::Path;
use std::process::Command;

#[test]
fn a_format_1_store_opens_upgraded_with_all_its_history() {
    if !common::fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("v1-store");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-store");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&fixture)
        .arg(&store)
        .status()
        .unwrap();
    assert!(st.success());
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut m = Mount::attach(store.clone(), mnt, tmp.path().join("daemon.log"));
    m.start(&[]);
    assert_eq!(fs::read(m.p("a.txt")).unwrap(), b"three\n");
    assert_eq!(fs::read_link(m.p("link")).unwrap().to_str(), Some("a.txt"));
    assert_eq!(fs::read(m.p("d/b.bin")).unwrap(), vec![b'x'; 100]);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(m.p("d/b.bin")).unwrap().ino(),
        fs::metadata(m.p("d/hard")).unwrap().ino()
    );
    assert_eq!(fs::read(m.p(".snapshots/first/a.txt")).unwrap(), b"two\n");
    // The history of the old store is in the new path index.
    let (ok, out) = revfs(&["log".as_ref(), m.p("a.txt").as_os_str(), "--json".as_ref()]);
    assert!(ok, "{out}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let got: Vec<Vec<u8>> = log
        .iter()
        .map(|e| fs::read(e["path"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(got, [&b"one\n"[..], b"two\n", b"three\n"]);
    assert!(
        m.log_text().contains("upgrading the catalog"),
        "{}",
        m.log_text()
    );
    // Counters came from the old records.
    let s = status(&store);
    assert_eq!(s["format"], 2, "{s}");
    assert!(s["versions"].as_u64().unwrap() >= 4, "{s}");
    assert!(s["commits"].as_u64().unwrap() >= 3, "{s}");
    assert!(s["chunks"].as_u64().unwrap() >= 4, "{s}");
    // It keeps working, and the upgrade happens once.
    fs::write(m.p("a.txt"), b"four\n").unwrap();
    m.remount(&[]);
    assert_eq!(fs::read(m.p("a.txt")).unwrap(), b"four\n");
    let (ok, out) = revfs(&["log".as_ref(), m.p("a.txt").as_os_str(), "--json".as_ref()]);
    assert!(ok, "{out}");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .len(),
        4
    );
    m.unmount();
    assert_eq!(
        m.log_text().matches("upgrading the catalog").count(),
        1,
        "{}",
        m.log_text()
    );
    let (ok, out) = revfs(&["verify".as_ref(), store.as_os_str()]);
    assert!(ok, "{out}");
}
