//! Big directories through real mounts (format 11, `revfs::dirtree`): a
//! commit that changes a few entries of a directory of thousands stores the
//! pieces that changed, not the whole listing again; every snapshot still
//! lists the directory whole, through prune, a kill -9 in the middle of a
//! writer's fsyncs, and a recover from the replica alone.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, packs_bytes, revfs, verify_clean, wait_replicated};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const N: usize = 3000;

fn save(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Every file of directory `dir` (names and contents), read through the mount.
fn listing(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_commit_in_a_big_directory_stores_what_changed_and_every_snapshot_lists_it_whole() {
    let Some((mut m, replica)) = Mount::with_replica(&[]) else {
        return;
    };
    fs::create_dir(m.p("d")).unwrap();
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..N {
        let (name, data) = (
            format!("img{i:05}.jpg"),
            format!("image {i}\n").into_bytes(),
        );
        fs::write(m.p(&format!("d/{name}")), &data).unwrap();
        want.insert(name, data);
    }
    common::commit(&m.store);
    fs::create_dir(m.p(".snapshots/full")).unwrap();
    let full = want.clone();

    // One file changed and fsync'ed a commit, ten times: each commit stores
    // the changed file, the piece listing it and the index, not 3,000 entries.
    let before = packs_bytes(&m.store);
    for k in 0..10 {
        let name = format!("img{:05}.jpg", k * 300);
        let data = format!("changed {k}\n").into_bytes();
        save(&m.p(&format!("d/{name}")), &data);
        want.insert(name, data);
    }
    let per_commit = (packs_bytes(&m.store) - before) / 10;
    // The whole listing is over 150 KB (3,000 entries of ~60 bytes).
    assert!(
        per_commit < 30_000,
        "a commit changing one entry of {N} stored {per_commit} bytes"
    );

    // Entries removed, added in the middle, renamed: the pieces follow.
    for i in [1, 2, 1499, 1500, 2999] {
        let name = format!("img{i:05}.jpg");
        fs::remove_file(m.p(&format!("d/{name}"))).unwrap();
        want.remove(&name);
    }
    for i in [7, 1500, 2500] {
        let name = format!("img{i:05}b.jpg");
        fs::write(m.p(&format!("d/{name}")), name.as_bytes()).unwrap();
        want.insert(name.clone(), name.into_bytes());
    }
    fs::rename(m.p("d/img00010.jpg"), m.p("d/zz-last.jpg")).unwrap();
    let moved = want.remove("img00010.jpg").unwrap();
    want.insert("zz-last.jpg".into(), moved);
    common::commit(&m.store);
    assert_eq!(listing(&m.p("d")), want);
    assert_eq!(listing(&m.p(".snapshots/latest/d")), want);
    assert_eq!(listing(&m.p(".snapshots/full/d")), full);

    // kill -9 while a writer fsyncs new files into the directory: every
    // file whose fsync returned is there after the remount, whole.
    let writer = {
        let mnt = m.mnt.clone();
        std::thread::spawn(move || {
            let mut done = Vec::new();
            for i in 0..400 {
                let name = format!("new{i:04}");
                let p = mnt.join("d").join(&name);
                let ok = fs::File::create(&p)
                    .and_then(|mut f| f.write_all(name.as_bytes()).and_then(|()| f.sync_all()));
                if ok.is_err() {
                    break;
                }
                done.push(name);
            }
            done
        })
    };
    common::wait_until("the writer's first fsyncs", Duration::from_secs(60), || {
        fs::metadata(m.p("d/new0100")).is_ok()
    });
    m.crash();
    let done = writer.join().unwrap();
    assert!(done.len() >= 100, "{} fsyncs before the kill", done.len());
    m.start(&["--replica", replica.to_str().unwrap()]);
    let after = listing(&m.p("d"));
    for name in &done {
        assert_eq!(
            after.get(name).map(Vec::as_slice),
            Some(name.as_bytes()),
            "{name}"
        );
    }
    for (name, data) in &want {
        assert_eq!(after.get(name), Some(data), "{name}");
    }
    want = after;
    common::commit(&m.store);
    assert_eq!(listing(&m.p(".snapshots/latest/d")), want);

    // A prune keeps every piece the kept commits name.
    let (ok, out) = revfs(&[
        "prune".as_ref(),
        m.mnt.as_os_str(),
        "--keep-last".as_ref(),
        "1".as_ref(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(listing(&m.p(".snapshots/latest/d")), want);
    assert_eq!(listing(&m.p(".snapshots/full/d")), full);
    wait_replicated(&m.store, Duration::from_secs(60));
    m.unmount();
    verify_clean(&m.store);

    // The replica alone gives the directory back, and its history.
    let rec = m.tmp.path().join("recovered");
    let (ok, out) = revfs(&["recover".as_ref(), replica.as_os_str(), rec.as_os_str()]);
    assert!(ok, "{out}");
    verify_clean(&rec);
    let mnt2 = m.tmp.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let mut r = Mount::attach(rec, mnt2, m.tmp.path().join("rec.log"));
    r.start(&[]);
    assert_eq!(listing(&r.p("d")), want);
    assert_eq!(listing(&r.p(".snapshots/full/d")), full);
    r.unmount();
}
