//! Stores made by earlier releases still open, with everything they held.
//! Format 1 (`tests/fixtures/v1-store`, written by revfs 0.1: a.txt saved
//! as "one", "two", "three"; d/b.bin with a hard link d/hard; a symlink;
//! the named snapshot "first"): its catalog is upgraded once. Format 2
//! (`tests/fixtures/v2-store`, written by the release before manifest
//! trees: weights.bin, 1 MiB, saved, named "before-edit", then 100 bytes
//! at 500,000 overwritten with "E"; notes.txt): its flat manifests read as
//! they are and become trees when their file grows. Format 4
//! (`tests/fixtures/v4-store`, written by the release before encryption:
//! model.bin saved 4 times, named named-v4, pruned to its last version;
//! notes.txt) opens as it is under format 5. Format 5
//! (`tests/fixtures/v5-store`, written by the release before cold codecs:
//! model.bin saved 3 times as "version K\n" + 30,000 random bytes + 1,000
//! lines "text line\n", named-v5 at version 1; notes.txt) opens, is raised
//! to format 7, and recompresses. Format 6 (`tests/fixtures/v6-store`,
//! written by the release before delta records: model.bin saved 3 times
//! by rename as "version K\n" + 20,000 f32 values nudged each time, the
//! pack recompressed, named-v6 at version 2; notes.txt) opens, is raised
//! to format 7, and its old versions become deltas.
//! Format 7 (`tests/fixtures/v7-store`, written by the release before
//! counted parent links: notes.txt "v7 store\n"; a/f "linked\n" with hard
//! links a/l1, a/l2, a/l3 and b/l4) opens with its links, and its inode
//! records are rewritten in the new layout as they change.
//! Format 8 (`tests/fixtures/v8-store`, written by the release before
//! checkpoint commits: notes.txt "v8 store\n"; out/checkpoint-1/ with
//! weights.bin "weights 1\n" and trainer_state.json, the named snapshot
//! named-v8) opens, lists no checkpoint (its commits named none), records
//! new ones, and is raised to format 9.
//! Format 9 (`tests/fixtures/v9-store`, written by the release before the
//! fjall catalog: notes.txt "v9 store\n"; model.bin "model 1\n" then
//! "model 2\n", named-v9 at the second; out/checkpoint-1/ with weights.bin
//! and trainer_state.json, one checkpoint) opens with its sled catalog moved
//! to `catalog/`, from every state a crash during the move leaves.
//! Format 10 (`tests/fixtures/v10-store`, written by the release before
//! big directories' trees in pieces: notes.txt "v10 store\n"; model.bin
//! "model 1\n" then "model 2\n", named-v10 at the second; d/ with 300 files
//! f000 .. f299 holding "file N\n", one whole listing) opens, lists d whole
//! now and in its snapshot, and is raised to format 11; its next commit
//! stores d in pieces, read back after a remount and by verify.
//! Format 11 (`tests/fixtures/v11-store`, written by the release before
//! checked catalog values: notes.txt "v11 store\n"; model.bin "model 1\n"
//! (snapshot "first") then "model 2\n" (snapshot "named-v11"); d/ with f0
//! .. f4 holding "file N\n") verifies read-only as it is, and at its first
//! writable open every catalog value gets its check and the store is
//! raised to format 12, from every state a crash during that leaves.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, revfs, status};
use revfs::store::pieces;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `revfs log PATH --json` lists.
fn log_of(path: &Path) -> Vec<serde_json::Value> {
    let (ok, out) = revfs(&["log".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// A copy of fixture `name` in a new temporary directory.
fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join(name);
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let st = Command::new("cp")
        .arg("-a")
        .arg(&from)
        .arg(&store)
        .status()
        .unwrap();
    assert!(st.success());
    (tmp, store)
}

fn mount(tmp: &tempfile::TempDir, store: &Path) -> Mount {
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut m = Mount::attach(store.to_path_buf(), mnt, tmp.path().join("daemon.log"));
    m.start(&[]);
    m
}

#[test]
fn a_format_1_store_opens_upgraded_with_all_its_history() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v1-store");
    let mut m = mount(&tmp, &store);
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
    assert_eq!(s["format"], revfs::format::FORMAT_VERSION, "{s}");
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

fn conf_version(store: &Path) -> u32 {
    let c = fs::read(store.join("revfs.conf")).unwrap();
    u32::from_le_bytes(c[8..12].try_into().unwrap())
}

#[test]
fn a_format_2_store_opens_and_its_flat_manifests_grow_into_trees() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v2-store");
    assert_eq!(conf_version(&store), 2);
    let mut m = mount(&tmp, &store);
    assert_eq!(conf_version(&store), revfs::format::FORMAT_VERSION);
    // The fixture was written with these bytes (xorshift64 from 7, bits 24..32).
    let original = common::Rng(7).bytes(1 << 20);
    let mut edited = original.clone();
    edited[500_000..500_100].fill(b'E');
    assert!(fs::read(m.p("weights.bin")).unwrap() == edited);
    assert!(fs::read(m.p(".snapshots/before-edit/weights.bin")).unwrap() == original);
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v2 store\n");
    // Grow it to ~2,000 chunks (a tree of several leaves) and edit the
    // old part: the old versions stay as they were.
    let more = common::bytes(3, 100 << 20);
    {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.p("weights.bin"))
            .unwrap();
        f.write_all(&more).unwrap();
        f.sync_all().unwrap();
        // (pwrite on an O_APPEND descriptor appends, as on Linux.)
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.p("weights.bin"))
            .unwrap();
        f.write_all_at(b"after", 10).unwrap();
        f.sync_all().unwrap();
    }
    edited.extend_from_slice(&more);
    edited[10..15].copy_from_slice(b"after");
    m.remount(&[]);
    assert!(fs::read(m.p("weights.bin")).unwrap() == edited);
    assert!(fs::read(m.p(".snapshots/before-edit/weights.bin")).unwrap() == original);
    let (ok, out) = revfs(&[
        "log".as_ref(),
        m.p("weights.bin").as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{out}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(log.len(), 4, "{out}");
    let sizes: Vec<u64> = log.iter().map(|e| e["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes[..2], [1 << 20, 1 << 20]);
    m.unmount();
    let (ok, out) = revfs(&["verify".as_ref(), store.as_os_str()]);
    assert!(ok, "{out}");
}

/// The raw chunks of the store open in `r` that have no piece table
/// matching them, of those that should have one.
fn chunks_without_tables(r: &revfs::repo::Repo) -> (usize, usize) {
    let (mut without, mut all) = (0, 0);
    for entry in r.engine.db.index_all() {
        let (id, e) = entry.unwrap();
        let raw = r.engine.store.read_verified(&id, &e).unwrap();
        if pieces::table_for(r.engine.db.crypto(), e.kind, e.codec, &raw).is_some() {
            all += 1;
            let t = r.engine.db.pieces(&id).unwrap();
            without += usize::from(!t.is_some_and(|t| pieces::matches(&t, raw.len(), &id)));
        }
    }
    (without, all)
}

#[test]
fn chunks_stored_before_piece_tables_get_theirs_from_a_verify_pass() {
    let (_tmp, store) = fixture("v2-store");
    let r = revfs::repo::Repo::open(&store, revfs::engine::Options::default()).unwrap();
    let (without, all) = chunks_without_tables(&r);
    assert!(
        all >= 10 && without == all,
        "{without} of {all} without tables"
    );
    let schedule = revfs::scrub::Schedule {
        every: std::time::Duration::from_secs(3600),
        rate: 1 << 30,
        replica_full: false,
    };
    revfs::scrub::spawn(&r.engine, schedule, Vec::new()).unwrap();
    common::wait_until("a verify pass", std::time::Duration::from_secs(60), || {
        r.engine.db.counter(revfs::scrub::PASSES).unwrap() > 0
    });
    assert_eq!(chunks_without_tables(&r), (0, all));
}

#[test]
fn a_format_4_store_opens_and_is_raised_to_the_current_format() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v4-store");
    let mut m = mount(&tmp, &store);
    // model.bin was saved 4 times ("version K\n" + 40,000 random bytes).
    let model = fs::read(m.p("model.bin")).unwrap();
    assert_eq!(&model[..10], b"version 3\n");
    assert_eq!(model.len(), 40_010);
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v4 store\n");
    assert_eq!(
        fs::read(m.p(".snapshots/named-v4/model.bin")).unwrap(),
        model
    );
    fs::write(m.p("new.txt"), b"written by format 5\n").unwrap();
    m.unmount();
    let (ok, out) = revfs(&["verify".as_ref(), store.as_os_str()]);
    assert!(ok, "{out}");
    let s = status(&store);
    assert_eq!(s["format"], revfs::format::FORMAT_VERSION, "{s}");
    assert_eq!(conf_version(&store), revfs::format::FORMAT_VERSION);
    assert_eq!(s["encrypted"], false, "{s}");
}

#[test]
fn a_format_5_store_opens_is_raised_to_the_current_format_and_recompresses() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v5-store");
    assert_eq!(conf_version(&store), 5);
    let model = |k: u8| {
        let m = fs::read(store.parent().unwrap().join("mnt/model.bin")).unwrap();
        assert_eq!(&m[..10], format!("version {k}\n").as_bytes());
        assert_eq!(m.len(), 10 + 30_000 + 10_000);
        assert!(m.ends_with(&b"text line\n".repeat(1000)));
        m
    };
    let mut m = mount(&tmp, &store);
    let newest = model(2);
    let named = fs::read(m.p(".snapshots/named-v5/model.bin")).unwrap();
    assert_eq!(&named[..10], b"version 1\n");
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v5 store\n");
    // Its lz4 records recode cold; everything reads as before.
    let (ok, out) = revfs(&[
        "prune".as_ref(),
        m.mnt.as_os_str(),
        "--recompress".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    m.unmount();
    assert_eq!(conf_version(&store), revfs::format::FORMAT_VERSION);
    let (ok, out) = revfs(&["verify".as_ref(), store.as_os_str()]);
    assert!(ok, "{out}");
    m.start(&[]);
    assert_eq!(model(2), newest);
    assert_eq!(
        fs::read(m.p(".snapshots/named-v5/model.bin")).unwrap(),
        named
    );
    m.unmount();
}

#[test]
fn a_format_6_store_opens_is_raised_to_the_current_format_and_makes_deltas() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v6-store");
    assert_eq!(conf_version(&store), 6);
    let sha = |p: &Path| {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        String::from_utf8_lossy(&out.stdout)[..64].to_string()
    };
    // As the fixture was written (sha256 of the newest and of named-v6's).
    const NEWEST: &str = "265bcc925380290aa8a5dcfc117922a34f081c9b78e98b01e2f2dbe24097005d";
    const NAMED: &str = "999aa4b728cc9678f4fe24d37e5a34af93cfd69b229139bbab3a696503937d6c";
    let mut m = mount(&tmp, &store);
    assert_eq!(sha(&m.p("model.bin")), NEWEST);
    assert_eq!(sha(&m.p(".snapshots/named-v6/model.bin")), NAMED);
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v6 store\n");
    let (ok, out) = revfs(&[
        "prune".as_ref(),
        m.mnt.as_os_str(),
        "--recompress".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["deltas_written"].as_u64().unwrap() >= 2, "{r}");
    m.unmount();
    assert_eq!(conf_version(&store), revfs::format::FORMAT_VERSION);
    let (ok, out) = revfs(&["verify".as_ref(), store.as_os_str()]);
    assert!(ok, "{out}");
    m.start(&[]);
    assert_eq!(sha(&m.p("model.bin")), NEWEST);
    assert_eq!(sha(&m.p(".snapshots/named-v6/model.bin")), NAMED);
    m.unmount();
}

#[test]
fn a_format_7_store_opens_with_its_links_and_is_raised_to_format_8() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v7-store");
    assert_eq!(conf_version(&store), 7);
    let mut m = mount(&tmp, &store);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(m.p("a/f")).unwrap().nlink(), 5);
    assert_eq!(fs::read(m.p("b/l4")).unwrap(), b"linked\n");
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v7 store\n");
    // The inode changes: its record is written anew.
    fs::remove_file(m.p("a/l1")).unwrap();
    fs::hard_link(m.p("a/f"), m.p("b/l5")).unwrap();
    fs::remove_file(m.p("a/f")).unwrap();
    m.unmount();
    assert_eq!(conf_version(&store), revfs::format::FORMAT_VERSION);
    common::verify_clean(&store);
    m.start(&[]);
    assert_eq!(fs::metadata(m.p("b/l5")).unwrap().nlink(), 4);
    assert_eq!(fs::read(m.p("a/l3")).unwrap(), b"linked\n");
    assert!(!m.p("a/f").exists() && !m.p("a/l1").exists());
    m.unmount();
}

#[test]
fn a_format_8_store_opens_and_records_checkpoints_from_then_on() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v8-store");
    assert_eq!(conf_version(&store), 8);
    let mut m = mount(&tmp, &store);
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v8 store\n");
    assert_eq!(
        fs::read(m.p(".snapshots/named-v8/out/checkpoint-1/weights.bin")).unwrap(),
        b"weights 1\n"
    );
    let list = |m: &Mount| {
        let (ok, out) = revfs(&["checkpoints".as_ref(), m.mnt.as_os_str(), "--json".as_ref()]);
        assert!(ok, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(list(&m), serde_json::json!([]));
    fs::create_dir(m.p("out/checkpoint-2")).unwrap();
    fs::write(m.p("out/checkpoint-2/weights.bin"), b"weights 2\n").unwrap();
    fs::write(m.p("out/checkpoint-2/trainer_state.json"), b"{}").unwrap();
    let l = list(&m);
    assert_eq!(l[0]["directory"], "out/checkpoint-2", "{l}");
    m.unmount();
    assert_eq!(conf_version(&store), revfs::format::FORMAT_VERSION);
    common::verify_clean(&store);
    m.start(&[]);
    let l = list(&m);
    let p = std::path::PathBuf::from(l[0]["path"].as_str().unwrap());
    assert_eq!(fs::read(p.join("weights.bin")).unwrap(), b"weights 2\n");
    m.unmount();
}

/// What the v9 fixture holds, checked through a mount, the CLI and verify.
fn v9_store_is_whole(tmp: &tempfile::TempDir, store: &Path) {
    let mut m = mount(tmp, store);
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v9 store\n");
    assert_eq!(fs::read(m.p("model.bin")).unwrap(), b"model 2\n");
    assert_eq!(
        fs::read(m.p(".snapshots/named-v9/model.bin")).unwrap(),
        b"model 2\n"
    );
    let log = log_of(&m.p("model.bin"));
    assert_eq!(log.len(), 2, "{log:?}");
    let first = PathBuf::from(log[0]["path"].as_str().unwrap());
    assert_eq!(fs::read(first).unwrap(), b"model 1\n");
    let (ok, out) = revfs(&["checkpoints".as_ref(), m.mnt.as_os_str(), "--json".as_ref()]);
    assert!(ok, "{out}");
    let l: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(l.as_array().unwrap().len(), 1, "{l}");
    let p = PathBuf::from(l[0]["path"].as_str().unwrap());
    assert_eq!(fs::read(p.join("weights.bin")).unwrap(), b"weights 1\n");
    fs::write(m.p("after.txt"), b"written in format 10\n").unwrap();
    m.unmount();
    assert_eq!(conf_version(store), revfs::format::FORMAT_VERSION);
    assert!(store.join("catalog").is_dir() && !store.join("meta").exists());
    assert!(!store.join("catalog.new").exists());
    common::verify_clean(store);
    m.start(&[]);
    assert_eq!(
        fs::read(m.p("after.txt")).unwrap(),
        b"written in format 10\n"
    );
    m.unmount();
}

#[test]
fn a_format_9_store_opens_with_its_catalog_moved_out_of_sled() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v9-store");
    assert_eq!(conf_version(&store), 9);
    assert!(store.join("meta").is_dir() && !store.join("catalog").exists());
    v9_store_is_whole(&tmp, &store);
}

#[test]
fn a_crash_at_any_step_of_the_catalog_move_leaves_a_store_that_opens_whole() {
    if !common::fuse_available() {
        return;
    }
    for point in ["catalog:copied", "catalog:renamed", "catalog:config-raised"] {
        let (tmp, store) = fixture("v9-store");
        let out = Command::new(common::BIN)
            .arg("status")
            .arg(&store)
            .env("REVFS_CRASH_AT", point)
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{point}: {out:?}");
        match point {
            "catalog:copied" => assert!(store.join("catalog.new").is_dir()),
            "catalog:renamed" => assert_eq!(conf_version(&store), 9),
            _ => assert!(store.join("meta").is_dir()),
        }
        v9_store_is_whole(&tmp, &store);
    }
    // A half-built copy from a crash mid-copy (garbage where fjall's files
    // go): started over.
    let (tmp, store) = fixture("v9-store");
    fs::create_dir_all(store.join("catalog.new/journals")).unwrap();
    fs::write(store.join("catalog.new/journals/0"), b"half a journal").unwrap();
    v9_store_is_whole(&tmp, &store);
}

#[test]
fn a_format_10_store_opens_and_its_big_directory_is_split_at_its_next_commit() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v10-store");
    assert_eq!(conf_version(&store), 10);
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let written: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("f{i:03}"), format!("file {i}\n").into_bytes()))
        .collect();
    let mut m = mount(&tmp, &store);
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v10 store\n");
    assert_eq!(fs::read(m.p("model.bin")).unwrap(), b"model 2\n");
    assert_eq!(files(&m.p("d")), written);
    assert_eq!(files(&m.p(".snapshots/named-v10/d")), written);
    let log = log_of(&m.p("model.bin"));
    assert_eq!(log.len(), 2, "{log:?}");
    // A commit in format 11: d (over 256 entries) goes in pieces.
    fs::write(m.p("d/f300"), b"file 300\n").unwrap();
    common::commit(&m.store);
    let mut now = written.clone();
    now.push(("f300".into(), b"file 300\n".to_vec()));
    assert_eq!(files(&m.p(".snapshots/latest/d")), now);
    m.unmount();
    assert_eq!(conf_version(&store), revfs::format::FORMAT_VERSION);
    common::verify_clean(&store);
    // Through the library: the first commit's d is one listing, the new
    // head's is pieces.
    {
        use revfs::format::TreeRecord;
        let r = revfs::repo::Repo::open(&store, revfs::engine::Options::default()).unwrap();
        let e = &r.engine;
        let d_of = |seq: u64| {
            let (id, _) = e.db.commit(revfs::ids::CommitSeq(seq)).unwrap().unwrap();
            let c = revfs::format::Commit::decode(&e.store.get(&id).unwrap()).unwrap();
            let root = e.tree(&c.root).unwrap();
            let d = root.entries.iter().find(|x| x.name == b"d").unwrap();
            let raw = e.store.get(&d.node.content.unwrap()).unwrap();
            TreeRecord::decode(&raw).unwrap()
        };
        let head = e.db.counter("head").unwrap();
        assert!(matches!(d_of(head - 1), TreeRecord::Listing(_)));
        assert!(matches!(d_of(head), TreeRecord::Pieces(_)));
    }
    m.start(&[]);
    assert_eq!(files(&m.p(".snapshots/latest/d")), now);
    assert_eq!(files(&m.p(".snapshots/named-v10/d")), written);
    m.unmount();
}

/// The catalog layout and damaged values of the store at `store` (opened
/// through the library, writable).
fn catalog_checks(store: &Path) -> (u32, u64) {
    let r = revfs::repo::Repo::open(store, revfs::engine::Options::default()).unwrap();
    let db = &r.engine.db;
    (db.catalog_version().unwrap(), db.damaged_values().unwrap())
}

/// The v11 fixture's content, read through a mount (its first writable
/// open), then a write in format 12; checked by verify and the library.
fn v11_store_is_whole(tmp: &tempfile::TempDir, store: &Path) {
    let mut m = mount(tmp, store);
    assert_eq!(fs::read(m.p("notes.txt")).unwrap(), b"v11 store\n");
    assert_eq!(fs::read(m.p("model.bin")).unwrap(), b"model 2\n");
    assert_eq!(
        fs::read(m.p(".snapshots/first/model.bin")).unwrap(),
        b"model 1\n"
    );
    assert_eq!(
        fs::read(m.p(".snapshots/named-v11/model.bin")).unwrap(),
        b"model 2\n"
    );
    for i in 0..5 {
        let got = fs::read(m.p(&format!("d/f{i}"))).unwrap();
        assert_eq!(got, format!("file {i}\n").into_bytes());
    }
    assert_eq!(log_of(&m.p("model.bin")).len(), 2);
    fs::write(m.p("d/f5"), b"file 5\n").unwrap();
    common::commit(&m.store);
    m.unmount();
    assert_eq!(conf_version(store), revfs::format::FORMAT_VERSION);
    common::verify_clean(store);
    assert_eq!(
        catalog_checks(store),
        (revfs::catalog::db::CATALOG_VERSION, 0)
    );
    m.start(&[]);
    assert_eq!(fs::read(m.p("d/f5")).unwrap(), b"file 5\n");
    assert_eq!(
        fs::read(m.p(".snapshots/first/model.bin")).unwrap(),
        b"model 1\n"
    );
    m.unmount();
}

#[test]
fn a_format_11_store_verifies_as_it_is_and_its_catalog_values_get_checks_when_opened_writable() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v11-store");
    assert_eq!(conf_version(&store), 11);
    // Read-only: verified as it is, nothing raised.
    common::verify_clean(&store);
    assert_eq!(conf_version(&store), 11);
    v11_store_is_whole(&tmp, &store);
}

#[test]
fn a_crash_while_the_catalog_values_get_their_checks_leaves_a_store_that_opens_whole() {
    if !common::fuse_available() {
        return;
    }
    let (tmp, store) = fixture("v11-store");
    let mnt = tmp.path().join("mnt-crash");
    fs::create_dir(&mnt).unwrap();
    let out = Command::new(common::BIN)
        .arg("mount")
        .arg(&store)
        .arg(&mnt)
        .env("REVFS_CRASH_AT", "catalog:checks-written")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    // The format was raised first: a format-11 revfs refuses the store
    // from here on, and reading its checked values as data.
    assert_eq!(conf_version(&store), revfs::format::FORMAT_VERSION);
    // Every value has its check, the layout is not raised: read-only, both
    // forms read.
    common::verify_clean(&store);
    v11_store_is_whole(&tmp, &store);
}
