//! `mount -t fuse.revfs STORE MNT -o OPTS` and its /etc/fstab line: mount(8)
//! hands such a mount to the fuse package's `mount.fuse`, which runs
//! `revfs STORE MNT -o OPTS`; revfs maps the options to its flags, and
//! returns once the mount serves (detached). Here `mount.fuse` is run as
//! mount(8) runs it, with revfs found on PATH.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The fuse package's mount helper, if installed.
fn mount_fuse() -> Option<PathBuf> {
    [
        "/sbin/mount.fuse3",
        "/sbin/mount.fuse",
        "/usr/sbin/mount.fuse3",
        "/usr/sbin/mount.fuse",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Unmounts `mnt` and waits (bounded) for the daemon to exit, even when
/// the test panics.
struct Mounted<'a> {
    mnt: &'a Path,
    pid: Option<i32>,
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if common::is_mountpoint(self.mnt) {
            let _ = Command::new("umount").arg(self.mnt).status();
        }
        if let Some(pid) = self.pid {
            common::wait_until("the daemon to exit", Duration::from_secs(30), || {
                // SAFETY: signal 0 only checks that the process exists.
                unsafe { libc::kill(pid, 0) != 0 }
            });
        }
    }
}

#[test]
fn mount_dash_t_fuse_revfs_with_options_mounts_serves_and_unmounts_cleanly() {
    if !common::fuse_available() {
        return;
    }
    let Some(helper) = mount_fuse() else {
        assert!(
            std::env::var("CI").is_err(),
            "mount.fuse is missing (scripts/deps.sh installs fuse3)"
        );
        eprintln!("mount.fuse missing: not tested");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (store, mnt, bin) = (
        tmp.path().join("store"),
        tmp.path().join("mnt"),
        tmp.path().join("bin"),
    );
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(common::BIN, bin.join("revfs")).unwrap();
    let (ok, out) = common::revfs(&["init".as_ref(), store.as_os_str()]);
    assert!(ok, "{out}");
    let replica = tmp.path().join("replica");
    fs::create_dir(&replica).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let opts = format!(
        "rw,nosuid,nodev,replica={},commit_interval=1s,min_version_interval=0",
        replica.display()
    );
    let out = Command::new(&helper)
        .arg(&store)
        .arg(&mnt)
        .args(["-t", "fuse.revfs", "-o", &opts])
        .env("PATH", path)
        .output()
        .unwrap();
    let mut guard = Mounted {
        mnt: &mnt,
        pid: None,
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Returned once the mount serves.
    assert!(common::is_mountpoint(&mnt));
    guard.pid = Some(
        fs::read_to_string(store.join("lock"))
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    fs::write(mnt.join("a.txt"), b"through fstab\n").unwrap();
    assert_eq!(fs::read(mnt.join("a.txt")).unwrap(), b"through fstab\n");
    // The options took: the replica gets the commit.
    common::wait_replicated(&store, Duration::from_secs(30));
    assert!(replica.join("heads").is_dir());
    drop(guard);
    assert!(!common::is_mountpoint(&mnt));
    common::verify_clean(&store);
}

#[test]
fn an_unknown_fstab_option_is_refused_with_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .arg(tmp.path().join("store"))
        .arg(tmp.path().join("mnt"))
        .args(["-o", "rw,no_such_option=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-option"), "{err}");
}

#[test]
fn a_mount_tells_systemd_it_is_ready_and_stopping() {
    let Some(mut m) = common::Mount::new(&[]) else {
        return;
    };
    m.unmount();
    let sock = m.tmp.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    m.start_env(&[], &[("NOTIFY_SOCKET", sock.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    assert!(common::is_mountpoint(&m.mnt));
    m.unmount();
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze missing: the unit is not checked");
        return;
    };
    assert!(probe.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let unit = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/revfs@.service"))
        .unwrap()
        // Checked with the revfs under test where the unit expects it.
        .replace("/usr/local/bin/revfs", common::BIN);
    let path = tmp.path().join("revfs@data.service");
    fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
