//! Real programs through a real mount, and what survives an unmount and a
//! kill -9 of the daemon.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, bytes};
use std::fs;
use std::io::Write;

#[test]
fn cp_rsync_tar_round_trips() {
    let Some(m) = Mount::new(&[]) else { return };
    let src = m.tmp.path().join("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    for i in 0..200u64 {
        fs::write(src.join(format!("sub/f{i}")), bytes(i, (i * 997) as usize)).unwrap();
    }
    fs::write(src.join("sub/deeper/big"), bytes(7, 5 << 20)).unwrap();
    std::os::unix::fs::symlink("sub/f1", src.join("link")).unwrap();
    m.sh("chmod 600 \"$T/src/sub/f3\" && touch -d '2020-02-03 04:05:06' \"$T/src/sub/f4\"");
    m.sh("setfattr -n user.tag -v hello \"$T/src/sub/f5\" 2>/dev/null || python3 -c \"import os; os.setxattr('$T/src/sub/f5','user.tag',b'hello')\"");

    m.sh("cp -a \"$T/src\" cpa && diff -r \"$T/src\" cpa");
    m.sh("test $(stat -c %a cpa/sub/f3) = 600 && test $(stat -c %Y cpa/sub/f4) = $(stat -c %Y \"$T/src/sub/f4\")");
    m.sh("test -L cpa/link && test $(readlink cpa/link) = sub/f1");
    m.sh("python3 -c \"import os; assert os.getxattr('cpa/sub/f5','user.tag')==b'hello'\"");

    m.sh("rsync -a \"$T/src/\" rs/ && diff -r \"$T/src\" rs && rsync -a --checksum -n --itemize-changes \"$T/src/\" rs/ | (! grep -q .)");

    m.sh("tar -C \"$T/src\" -cf \"$T/a.tar\" . && mkdir tx && tar -C tx -xf \"$T/a.tar\" && diff -r \"$T/src\" tx");
    m.sh("tar -C tx -cf \"$T/b.tar\" . && mkdir \"$T/back\" && tar -C \"$T/back\" -xf \"$T/b.tar\" && diff -r \"$T/src\" \"$T/back\"");
}

#[test]
fn git_init_commit_fsck() {
    let Some(m) = Mount::new(&[]) else { return };
    m.sh(
        "git init -q repo && cd repo && for i in $(seq 1 50); do echo line $i > f$i; done && \
         git add . && git -c user.email=t@t -c user.name=t commit -qm one && \
         echo change >> f1 && git mv f2 g2 && git -c user.email=t@t -c user.name=t commit -qam two && \
         git gc -q && git fsck --strict --full && test $(git rev-list --count HEAD) = 2",
    );
}

#[test]
fn sqlite_thousand_transactions_integrity() {
    let Some(m) = Mount::new(&[]) else { return };
    m.sh("python3 -c \"
import sqlite3
c = sqlite3.connect('db.sqlite')
c.execute('create table t(i integer primary key, v text)')
for i in range(1000):
    c.execute('insert into t(v) values (?)', (str(i) * 20,)); c.commit()
c.execute('update t set v = v || v where i % 7 = 0'); c.commit()
c.execute('delete from t where i % 11 = 0'); c.commit()
assert c.execute('pragma integrity_check').fetchone()[0] == 'ok'
assert c.execute('select count(*) from t').fetchone()[0] == 1000 - 90
c.close()
\"");
    m.sh("python3 -c \"import sqlite3; c=sqlite3.connect('db.sqlite'); assert c.execute('pragma integrity_check').fetchone()[0]=='ok'\"");
}

#[test]
fn numpy_write_and_mmap_read() {
    let Some(m) = Mount::new(&[]) else { return };
    m.sh("python3 -c \"
import numpy as np
a = np.random.default_rng(1).standard_normal((512, 1024)).astype(np.float32)
np.save('w.npy', a)
b = np.load('w.npy', mmap_mode='r')
assert b.shape == a.shape and (b == a).all()
m = np.memmap('raw.f32', dtype=np.float32, mode='w+', shape=(1 << 20,))
m[:] = np.arange(1 << 20, dtype=np.float32); m.flush(); del m
r = np.memmap('raw.f32', dtype=np.float32, mode='r')
assert r[12345] == 12345.0 and r[-1] == (1 << 20) - 1
\"");
}

fn tree_digest(m: &Mount) -> String {
    m.sh("find . -type f -print0 | sort -z | xargs -0 sha256sum; find . -printf '%p %y %m %s %n %l\\n' | sort")
}

#[test]
fn remount_gives_identical_content() {
    let Some(mut m) = Mount::new(&[]) else { return };
    fs::create_dir_all(m.p("ckpt/run1")).unwrap();
    for i in 0..5u64 {
        fs::write(m.p(&format!("ckpt/run1/step{i}.bin")), bytes(i, 2 << 20)).unwrap();
    }
    m.sh("seq 1 10000 > data.csv && ln -s data.csv latest.csv && ln data.csv hard.csv && mkdir -p empty/dir && chmod 751 empty");
    m.sh("python3 -c \"import os; os.setxattr('data.csv','user.k',b'v')\"");
    let before = tree_digest(&m);
    m.remount(&[]);
    assert_eq!(tree_digest(&m), before);
    m.sh("python3 -c \"import os; assert os.getxattr('data.csv','user.k')==b'v'\"");
    // And again after writing more, with a read-only mount.
    m.remount(&["--read-only"]);
    assert_eq!(tree_digest(&m), before);
    let e = fs::write(m.p("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn fsynced_files_survive_kill_9() {
    let Some(mut m) = Mount::new(&[]) else { return };
    let mut expected = Vec::new();
    for i in 0..20u64 {
        let data = bytes(100 + i, 64 * 1024 + i as usize * 4099);
        let name = format!("f{i}");
        let mut f = fs::File::create(m.p(&name)).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        expected.push((name, data));
    }
    // An fsync'ed in-place change, then a file left open with unsynced data.
    let f = fs::OpenOptions::new().write(true).open(m.p("f3")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"PATCHED", 10).unwrap();
    f.sync_data().unwrap();
    expected[3].1[10..17].copy_from_slice(b"PATCHED");
    let mut unsynced = fs::File::create(m.p("unsynced")).unwrap();
    unsynced.write_all(b"maybe").unwrap();
    m.crash();
    drop(unsynced);
    m.start(&[]);
    for (name, data) in &expected {
        assert_eq!(&fs::read(m.p(name)).unwrap(), data, "{name} after kill -9");
    }
    // The mount keeps working after the crash.
    fs::write(m.p("after"), b"ok").unwrap();
    m.remount(&[]);
    assert_eq!(fs::read(m.p("after")).unwrap(), b"ok");
}

#[test]
fn second_mount_of_a_store_fails_clearly() {
    let Some(m) = Mount::new(&[]) else { return };
    let other = m.tmp.path().join("mnt2");
    fs::create_dir(&other).unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("mount")
        .arg(&m.store)
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert!(!common::is_mountpoint(&other));
    // status works while mounted, through the daemon.
    let out = std::process::Command::new(common::BIN)
        .args(["status", "--json"])
        .arg(&m.store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], revfs::format::FORMAT_VERSION);
}

#[test]
fn sigterm_and_sigint_flush_and_unmount() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let Some(mut m) = Mount::new(&[]) else { return };
        fs::write(m.p("kept"), b"before the signal").unwrap();
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(m.pid() as i32, sig) }, 0);
        common::wait_until(
            "unmount after signal",
            std::time::Duration::from_secs(20),
            || !common::is_mountpoint(&m.mnt),
        );
        m.wait_exit_ok();
        m.start(&[]);
        assert_eq!(fs::read(m.p("kept")).unwrap(), b"before the signal");
    }
}

#[test]
fn daemon_mode_detaches_and_unmounts_cleanly() {
    if !common::fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, mnt) = (tmp.path().join("s"), tmp.path().join("m"));
    fs::create_dir(&mnt).unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["init".as_ref(), store.as_os_str()]).status.success());
    let out = run(&[
        "mount".as_ref(),
        store.as_os_str(),
        mnt.as_os_str(),
        "--daemon".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Mounted when the command returns.
    let guard = Unmount(&mnt);
    assert!(common::is_mountpoint(&mnt));
    fs::write(mnt.join("f"), b"x").unwrap();
    let pid: i32 = fs::read_to_string(store.join("lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        std::process::Command::new("umount")
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );
    // SAFETY: signal 0 only probes whether the daemon is alive.
    common::wait_until(
        "daemon exit",
        std::time::Duration::from_secs(20),
        || unsafe { libc::kill(pid, 0) != 0 },
    );
    drop(guard);
    // A second init of the same directory is refused.
    assert!(!run(&["init".as_ref(), store.as_os_str()]).status.success());
}

/// Unmounts (lazily) when dropped, for tests that mount without `Mount`.
struct Unmount<'a>(&'a std::path::Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if common::is_mountpoint(self.0) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0)
                .status();
        }
    }
}

#[test]
fn fsx_random_io_with_mmap_matches_a_model() {
    let Some(mut m) = Mount::new(&[]) else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/fsx.py");
    for seed in [1, 2] {
        m.sh(&format!("python3 {script} fsx{seed} {seed} 1500"));
    }
    // The file reads back the same after a remount.
    let before = fs::read(m.p("fsx1")).unwrap();
    m.remount(&[]);
    assert_eq!(fs::read(m.p("fsx1")).unwrap(), before);
}
