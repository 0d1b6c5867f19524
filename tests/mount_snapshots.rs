//! History through a real mount: `.snapshots/`, `at/`, `latest`, named
//! snapshots, `revfs log`, read-only enforcement and restore with cp.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{BIN, Mount, bytes};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

/// Waits past one commit interval (with margin for a loaded CI machine)
/// so that what was closed is committed.
fn settle() {
    std::thread::sleep(Duration::from_millis(2200));
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn revfs(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "revfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn log_json(path: &std::path::Path) -> Vec<serde_json::Value> {
    let out = revfs(&["log", path.to_str().unwrap(), "--json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn versions_seconds_apart_are_restorable_via_at_and_log() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::create_dir(m.p("run")).unwrap();
    let v1 = bytes(1, 300_000);
    let v2 = bytes(2, 200_000);
    fs::write(m.p("run/ckpt"), &v1).unwrap();
    settle();
    let between = now_rfc3339();
    std::thread::sleep(Duration::from_millis(300));
    fs::write(m.p("run/ckpt"), &v2).unwrap();
    settle();
    let at = m.p(&format!(".snapshots/at/{between}/run/ckpt"));
    assert_eq!(fs::read(&at).unwrap(), v1);
    assert_eq!(fs::read(m.p("run/ckpt")).unwrap(), v2);
    // Offsets and fractional seconds are accepted too.
    let t: chrono::DateTime<chrono::FixedOffset> =
        chrono::DateTime::parse_from_rfc3339(&between).unwrap();
    let other_zone = t
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339();
    assert_eq!(
        fs::read(m.p(&format!(".snapshots/at/{other_zone}/run/ckpt"))).unwrap(),
        v1
    );
    // Before any history: nothing there.
    assert!(!m.p(".snapshots/at/2000-01-01T00:00:00Z").exists());

    let log = log_json(&m.p("run/ckpt"));
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["version"], 1);
    assert_eq!(log[0]["size"], 300_000);
    assert!(log[0]["time"].as_str().unwrap().ends_with('Z'));
    let paths: Vec<Vec<u8>> = log
        .iter()
        .map(|e| fs::read(e["path"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(paths, vec![v1, v2]);
}

#[test]
fn atomic_save_checkpoints_all_show_in_log() {
    let Some(m) = Mount::new(&[]) else { return };
    let mut saved = Vec::new();
    for i in 0..3u64 {
        let data = bytes(10 + i, 100_000);
        fs::write(m.p("model.tmp"), &data).unwrap();
        fs::rename(m.p("model.tmp"), m.p("model.safetensors")).unwrap();
        saved.push(data);
        settle();
    }
    let log = log_json(&m.p("model.safetensors"));
    let got: Vec<Vec<u8>> = log
        .iter()
        .map(|e| fs::read(e["path"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(got, saved);
}

#[test]
fn latest_follows_commits_and_snapshots_are_hidden() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::write(m.p("f"), b"one").unwrap();
    settle();
    let latest = m.p(".snapshots/latest");
    assert!(
        fs::symlink_metadata(&latest)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(latest.join("f")).unwrap(), b"one");
    fs::write(m.p("f"), b"two").unwrap();
    settle();
    assert_eq!(fs::read(latest.join("f")).unwrap(), b"two");
    // Not listed in the root, but reachable.
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names.iter().any(|n| n == ".snapshots"), "{names:?}");
    assert!(fs::metadata(m.p(".snapshots")).unwrap().is_dir());
    let listing: Vec<String> = fs::read_dir(m.p(".snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(listing.contains(&"latest".to_string()), "{listing:?}");
    let target = fs::read_link(&latest).unwrap();
    assert!(
        listing.contains(&target.to_str().unwrap().to_string()),
        "{listing:?} {target:?}"
    );
    // du / find / rsync over the live tree never descend into history.
    let out = m.sh("find . | grep -c snapshots || true");
    assert_eq!(out.trim(), "0");
    // Nothing named .snapshots can be made in the root: it is taken.
    let err = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(err(fs::write(m.p(".snapshots"), b"x")), Some(libc::EISDIR));
    assert_eq!(err(fs::create_dir(m.p(".snapshots"))), Some(libc::EEXIST));
    assert_eq!(
        err(fs::rename(m.p("f"), m.p(".snapshots"))),
        Some(libc::EISDIR)
    );
}

#[test]
fn every_write_into_a_snapshot_is_erofs() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::create_dir(m.p("d")).unwrap();
    fs::write(m.p("d/f"), b"data").unwrap();
    settle();
    let s = m.p(".snapshots/latest/d");
    let erofs = |r: std::io::Result<()>, what: &str| {
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EROFS), "{what}");
    };
    erofs(fs::write(s.join("f"), b"x"), "write");
    erofs(
        fs::OpenOptions::new()
            .append(true)
            .open(s.join("f"))
            .map(|_| ()),
        "open for append",
    );
    erofs(fs::write(s.join("new"), b"x"), "create");
    erofs(fs::remove_file(s.join("f")), "unlink");
    erofs(fs::rename(s.join("f"), s.join("g")), "rename");
    erofs(fs::create_dir(s.join("sub")), "mkdir");
    erofs(std::os::unix::fs::symlink("f", s.join("sl")), "symlink");
    erofs(fs::hard_link(s.join("f"), s.join("hl")), "link");
    erofs(
        fs::hard_link(s.join("f"), m.p("hl")),
        "link out of a snapshot",
    );
    erofs(
        fs::set_permissions(
            s.join("f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        ),
        "chmod",
    );
    erofs(
        std::os::unix::fs::chown(s.join("f"), Some(1), Some(1)),
        "chown",
    );
    erofs(
        fs::File::open(s.join("f")).and_then(|f| f.set_modified(std::time::UNIX_EPOCH)),
        "utimes",
    );
    let out = Command::new("truncate")
        .args(["-s", "0"])
        .arg(s.join("f"))
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Read-only"));
    let c = std::ffi::CString::new(s.join("f").to_str().unwrap()).unwrap();
    let (k, v) = (c"user.k", b"v");
    // SAFETY: valid C strings and buffer.
    let rc = unsafe { libc::setxattr(c.as_ptr(), k.as_ptr(), v.as_ptr().cast(), 1, 0) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EROFS))
    );
    assert_eq!(fs::read(s.join("f")).unwrap(), b"data");
    // The snapshot root itself cannot be removed or renamed.
    erofs(fs::remove_dir(m.p(".snapshots")), "rmdir .snapshots");
    erofs(fs::rename(m.p(".snapshots"), m.p("x")), "rename .snapshots");
}

#[test]
fn named_snapshots_by_mkdir_and_cli_survive_remount() {
    let Some(mut m) = Mount::new(&[]) else { return };
    fs::write(m.p("w"), b"v1").unwrap();
    fs::create_dir(m.p(".snapshots/before")).unwrap();
    fs::write(m.p("w"), b"v2").unwrap();
    settle();
    assert_eq!(fs::read(m.p(".snapshots/before/w")).unwrap(), b"v1");
    assert_eq!(fs::read(m.p("w")).unwrap(), b"v2");
    assert_eq!(
        fs::create_dir(m.p(".snapshots/before"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EEXIST)
    );
    // The CLI, on the mount and on the store (through the daemon).
    revfs(&["snapshot", "create", m.mnt.to_str().unwrap(), "cli-snap"]);
    let list = revfs(&["snapshot", "list", m.store.to_str().unwrap(), "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let named: Vec<&str> = list
        .iter()
        .filter(|s| s["named"] == true)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(named, ["before", "cli-snap"]);
    assert_eq!(fs::read(m.p(".snapshots/cli-snap/w")).unwrap(), b"v2");

    m.remount(&[]);
    assert_eq!(fs::read(m.p(".snapshots/before/w")).unwrap(), b"v1");
    fs::remove_dir(m.p(".snapshots/before")).unwrap();
    assert!(!m.p(".snapshots/before").exists());
    // Offline, on the store itself.
    m.unmount();
    revfs(&["snapshot", "delete", m.store.to_str().unwrap(), "cli-snap"]);
    revfs(&["snapshot", "create", m.store.to_str().unwrap(), "offline"]);
    m.start(&[]);
    assert!(!m.p(".snapshots/cli-snap").exists());
    assert_eq!(fs::read(m.p(".snapshots/offline/w")).unwrap(), b"v2");
}

#[test]
fn cp_a_restores_metadata_and_links_share_inodes() {
    let Some(m) = Mount::new(&[]) else { return };
    m.sh(
        "mkdir -p d && echo hello > d/f && chmod 640 d/f && chown 123:456 d/f && \
         touch -d '2021-05-06 07:08:09.123456789' d/f && ln -s f d/sl && ln d/f d/hard && \
         python3 -c \"import os; os.setxattr('d/f','user.k',b'v')\"",
    );
    settle();
    let snap = m.p(".snapshots/latest/d");
    let (a, b) = (
        fs::metadata(snap.join("f")).unwrap(),
        fs::metadata(snap.join("hard")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        fs::metadata(snap.join("f")).unwrap().ino(),
        a.ino(),
        "stable inode"
    );
    let dst = m.tmp.path().join("restored");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&snap)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    let r = fs::metadata(dst.join("f")).unwrap();
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"hello\n");
    assert_eq!(r.mode() & 0o7777, 0o640);
    assert_eq!((r.uid(), r.gid()), (123, 456));
    assert_eq!((r.mtime(), r.mtime_nsec()), (a.mtime(), 123456789));
    assert_eq!(fs::read_link(dst.join("sl")).unwrap().to_str(), Some("f"));
    assert_eq!(
        fs::metadata(dst.join("hard")).unwrap().ino(),
        r.ino(),
        "cp -a keeps hard links"
    );
    m.sh(&format!(
        "python3 -c \"import os; assert os.getxattr('{}','user.k')==b'v'\"",
        dst.join("f").display()
    ));
}

#[test]
fn a_snapshot_of_ten_thousand_files_lists_completely() {
    let Some(m) = Mount::new(&[]) else { return };
    m.sh("mkdir -p big && cd big && for d in $(seq 1 10); do mkdir d$d; (cd d$d && seq 1 1000 | xargs touch); done");
    settle();
    let n = m.sh("find .snapshots/latest/big -type f | wc -l");
    assert_eq!(n.trim(), "10000");
    let n = m.sh("ls .snapshots/latest/big/d7 | wc -l");
    assert_eq!(n.trim(), "1000");
    m.sh("du -s .snapshots/latest/big >/dev/null && tar -C .snapshots/latest -cf \"$T/s.tar\" big");
    m.sh("rsync -a .snapshots/latest/big/ \"$T/rs/\" && test $(find \"$T/rs\" -type f | wc -l) = 10000");
}
