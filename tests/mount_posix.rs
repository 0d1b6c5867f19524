//! POSIX behaviour through a real mount, with std::fs and libc: what an AI
//! job and its tools rely on, errno for errno as ext4 answers.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, bytes, errno};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::time::Duration;

#[test]
fn files_read_write_append_truncate() {
    let Some(m) = Mount::new(&[]) else { return };
    let data = bytes(1, 3 << 20);
    fs::write(m.p("f"), &data).unwrap();
    assert_eq!(fs::read(m.p("f")).unwrap(), data);

    // Random overwrite in place, then read back through a new handle.
    let f = OpenOptions::new().write(true).open(m.p("f")).unwrap();
    f.write_all_at(b"PATCH", 1_000_000).unwrap();
    drop(f);
    let got = fs::read(m.p("f")).unwrap();
    assert_eq!(&got[1_000_000..1_000_005], b"PATCH");
    assert_eq!(&got[..1_000_000], &data[..1_000_000]);
    assert_eq!(&got[1_000_005..], &data[1_000_005..]);

    // O_APPEND.
    let mut a = OpenOptions::new()
        .append(true)
        .create(true)
        .open(m.p("log"))
        .unwrap();
    a.write_all(b"one\n").unwrap();
    let mut a2 = OpenOptions::new().append(true).open(m.p("log")).unwrap();
    a2.write_all(b"two\n").unwrap();
    a.write_all(b"three\n").unwrap();
    drop((a, a2));
    assert_eq!(fs::read_to_string(m.p("log")).unwrap(), "one\ntwo\nthree\n");

    // truncate (path) and ftruncate (fd), shrinking then growing reads zeros.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("f"))
        .unwrap();
    f.set_len(10).unwrap();
    f.set_len(20).unwrap();
    let mut buf = Vec::new();
    (&f).read_to_end(&mut buf).unwrap();
    assert_eq!(&buf[..10], &data[..10]);
    assert_eq!(&buf[10..], &[0u8; 10]);
    drop(f);
    let st = m.sh("truncate -s 5 f && stat -c %s f");
    assert_eq!(st.trim(), "5");

    // O_TRUNC.
    fs::write(m.p("f"), b"short").unwrap();
    assert_eq!(fs::read(m.p("f")).unwrap(), b"short");

    // O_EXCL.
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("f"))
        .unwrap_err();
    assert_eq!(errno(e), libc::EEXIST);

    // Read past the end gives 0 bytes; a write far beyond makes a hole.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("f"))
        .unwrap();
    f.seek(SeekFrom::Start(100)).unwrap();
    let mut b = [0u8; 4];
    assert_eq!(f.read(&mut b).unwrap(), 0);
    f.write_all_at(b"end", 1 << 20).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (1 << 20) + 3);
}

#[test]
fn fallocate_and_sparse_files_over_4gib() {
    let Some(m) = Mount::new(&[]) else { return };
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("big"))
        .unwrap();
    let at = 5u64 << 30;
    f.write_all_at(b"tail", at).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    drop(f);
    let md = fs::metadata(m.p("big")).unwrap();
    assert_eq!(md.len(), at + 4);
    let f = File::open(m.p("big")).unwrap();
    let mut b = [1u8; 4];
    f.read_exact_at(&mut b, at).unwrap();
    assert_eq!(&b, b"tail");
    f.read_exact_at(&mut b, 3 << 30).unwrap();
    assert_eq!(b, [0; 4]);
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"head");
    // Holes take no space: far less than the size is allocated.
    std::thread::sleep(Duration::from_millis(100));
    assert!(fs::metadata(m.p("big")).unwrap().blocks() * 512 < 1 << 20);

    // fallocate default mode extends the file with zeros.
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("fa"))
        .unwrap();
    // SAFETY: valid fd, plain integers.
    let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, 65536) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(f.metadata().unwrap().len(), 65536);
}

fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> Result<(), i32> {
    // SAFETY: a valid fd and plain integers.
    let rc = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(f),
            mode,
            off as i64,
            len as i64,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[test]
fn punched_and_zeroed_ranges_read_as_zeros_and_are_stored_as_holes() {
    use libc::{
        FALLOC_FL_KEEP_SIZE as KEEP, FALLOC_FL_PUNCH_HOLE as PUNCH, FALLOC_FL_ZERO_RANGE as ZERO,
    };
    let Some(mut m) = Mount::new(&[]) else { return };
    let mut want = bytes(5, 8 << 20);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("db"))
        .unwrap();
    f.write_all(&want).unwrap();
    f.sync_all().unwrap();
    let stored = common::packs_bytes(&m.store);
    let blocks = f.metadata().unwrap().blocks();
    // A hole in the middle (what a database or `fallocate --dig-holes` does).
    fallocate(&f, PUNCH | KEEP, 2 << 20, 4 << 20).unwrap();
    want[2 << 20..6 << 20].fill(0);
    // Zeroed at the start, keeping the size; then past the end, growing it.
    fallocate(&f, ZERO | KEEP, 0, 1 << 20).unwrap();
    want[..1 << 20].fill(0);
    fallocate(&f, ZERO, 8 << 20, 1 << 20).unwrap();
    want.resize(9 << 20, 0);
    // Punching past the end changes nothing.
    fallocate(&f, PUNCH | KEEP, 9 << 20, 1 << 20).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 9 << 20);
    let mut got = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut got).unwrap();
    assert!(got == want, "reads before the version is recorded");
    f.sync_all().unwrap();
    // The new version holds holes: no new chunk bytes, and fewer blocks.
    let grew = common::packs_bytes(&m.store) - stored;
    assert!(
        grew < 256 << 10,
        "the punched version stored {grew} new bytes"
    );
    let now = f.metadata().unwrap().blocks();
    assert!(
        now * 512 <= blocks * 512 - (4 << 20),
        "blocks {blocks} -> {now}"
    );
    // Punch needs KEEP_SIZE; collapse and insert do not reach a FUSE
    // filesystem (the kernel answers for it), as on ext4 unaligned.
    assert_eq!(fallocate(&f, PUNCH, 0, 4096), Err(libc::EOPNOTSUPP));
    assert_eq!(
        fallocate(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4096),
        Err(libc::EOPNOTSUPP)
    );
    assert_eq!(
        fallocate(&f, libc::FALLOC_FL_INSERT_RANGE, 0, 4096),
        Err(libc::EOPNOTSUPP)
    );
    drop(f);
    // Both versions, exactly, after a remount.
    m.remount(&[]);
    assert!(fs::read(m.p("db")).unwrap() == want);
    let (ok, out) = common::revfs(&["log".as_ref(), m.p("db").as_os_str(), "--json".as_ref()]);
    assert!(ok, "{out}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(log.len(), 2, "{out}");
    let first = fs::read(log[0]["path"].as_str().unwrap()).unwrap();
    assert!(first == bytes(5, 8 << 20), "the version before the punch");
    let last = fs::read(log[1]["path"].as_str().unwrap()).unwrap();
    assert!(last == want, "the punched version through .snapshots");
}

#[test]
fn directories_renames_and_errnos() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::create_dir_all(m.p("a/b/c")).unwrap();
    fs::write(m.p("a/b/c/f"), b"x").unwrap();
    assert_eq!(errno(fs::create_dir(m.p("a")).unwrap_err()), libc::EEXIST);
    assert_eq!(
        errno(fs::remove_dir(m.p("a/b")).unwrap_err()),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(fs::remove_file(m.p("a/b")).unwrap_err()),
        libc::EISDIR
    );
    assert_eq!(
        errno(fs::remove_dir(m.p("a/b/c/f")).unwrap_err()),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(fs::read(m.p("a/b/c/f/x")).unwrap_err()),
        libc::ENOTDIR
    );
    assert_eq!(errno(fs::read(m.p("missing")).unwrap_err()), libc::ENOENT);
    let long = "n".repeat(256);
    assert_eq!(
        errno(fs::write(m.p(&long), b"").unwrap_err()),
        libc::ENAMETOOLONG
    );
    fs::write(m.p(&"n".repeat(255)), b"ok").unwrap();

    // Directory link counts: 2 + subdirectories.
    assert_eq!(fs::metadata(m.p("a")).unwrap().nlink(), 3);
    fs::create_dir(m.p("a/d2")).unwrap();
    assert_eq!(fs::metadata(m.p("a")).unwrap().nlink(), 4);

    // Rename of a directory, across parents.
    fs::rename(m.p("a/b"), m.p("moved")).unwrap();
    assert_eq!(fs::read(m.p("moved/c/f")).unwrap(), b"x");
    assert_eq!(fs::metadata(m.p("a")).unwrap().nlink(), 3);
    // Into its own subdirectory: EINVAL.
    assert_eq!(
        errno(fs::rename(m.p("moved"), m.p("moved/c/x")).unwrap_err()),
        libc::EINVAL
    );
    // Over a non-empty directory: ENOTEMPTY; over an empty one: fine.
    fs::create_dir(m.p("empty")).unwrap();
    assert_eq!(
        errno(fs::rename(m.p("empty"), m.p("moved")).unwrap_err()),
        libc::ENOTEMPTY
    );
    fs::rename(m.p("moved/c"), m.p("empty")).unwrap();
    assert_eq!(fs::read(m.p("empty/f")).unwrap(), b"x");
    // File over directory and directory over file.
    fs::write(m.p("file"), b"1").unwrap();
    assert_eq!(
        errno(fs::rename(m.p("file"), m.p("a")).unwrap_err()),
        libc::EISDIR
    );
    assert_eq!(
        errno(fs::rename(m.p("a"), m.p("file")).unwrap_err()),
        libc::ENOTDIR
    );

    // Atomic save: rename over an existing file keeps the open old inode readable.
    fs::write(m.p("model.ckpt"), b"old").unwrap();
    let old = File::open(m.p("model.ckpt")).unwrap();
    fs::write(m.p("model.ckpt.tmp"), b"new").unwrap();
    fs::rename(m.p("model.ckpt.tmp"), m.p("model.ckpt")).unwrap();
    assert_eq!(fs::read(m.p("model.ckpt")).unwrap(), b"new");
    assert!(!m.p("model.ckpt.tmp").exists());
    let mut s = String::new();
    (&old).read_to_string(&mut s).unwrap();
    assert_eq!(s, "old");

    // readdir lists exactly the entries (and not .snapshots).
    let mut names: Vec<String> = fs::read_dir(m.p("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["d2"]);
    // Many entries list completely.
    fs::create_dir(m.p("many")).unwrap();
    for i in 0..1500 {
        File::create(m.p(&format!("many/f{i:05}"))).unwrap();
    }
    assert_eq!(fs::read_dir(m.p("many")).unwrap().count(), 1500);
}

#[test]
fn links_unlink_while_open_and_times() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::write(m.p("t"), b"target").unwrap();
    symlink("t", m.p("sl")).unwrap();
    assert_eq!(fs::read_link(m.p("sl")).unwrap().to_str(), Some("t"));
    assert_eq!(fs::read(m.p("sl")).unwrap(), b"target");
    assert!(
        fs::symlink_metadata(m.p("sl"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let before = fs::metadata(m.p("t")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    fs::hard_link(m.p("t"), m.p("hl")).unwrap();
    let (a, b) = (
        fs::metadata(m.p("t")).unwrap(),
        fs::metadata(m.p("hl")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert!(
        a.ctime_nsec() != before.ctime_nsec() || a.ctime() != before.ctime(),
        "link updates ctime"
    );
    fs::write(m.p("hl"), b"via link").unwrap();
    assert_eq!(fs::read(m.p("t")).unwrap(), b"via link");
    fs::remove_file(m.p("t")).unwrap();
    assert_eq!(fs::metadata(m.p("hl")).unwrap().nlink(), 1);

    // An unlinked open file stays readable and writable.
    fs::write(m.p("u"), b"keep").unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("u"))
        .unwrap();
    fs::remove_file(m.p("u")).unwrap();
    assert!(!m.p("u").exists());
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "keep");
    f.write_all(b" more").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "keep more");
    drop(f);

    // chmod, chown, utimensat with nanoseconds.
    fs::write(m.p("m"), b"m").unwrap();
    fs::set_permissions(m.p("m"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(m.p("m")).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(m.p("m"), Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(m.p("m")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let t = std::time::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    let f = File::options().write(true).open(m.p("m")).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
    drop(f);
    let md = fs::metadata(m.p("m")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 123_456_789));
    assert_eq!((md.atime(), md.atime_nsec()), (1_600_000_000, 123_456_789));

    // A write moves mtime forward.
    let f = OpenOptions::new().write(true).open(m.p("m")).unwrap();
    f.write_all_at(b"z", 0).unwrap();
    drop(f);
    assert!(fs::metadata(m.p("m")).unwrap().mtime() > 1_600_000_000);

    // FIFOs and sockets via mknod.
    m.sh("mkfifo fifo && test -p fifo");
    let c = std::ffi::CString::new(m.p("sock").to_str().unwrap()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFSOCK | 0o644, 0) },
        0
    );
    assert!(std::os::unix::fs::FileTypeExt::is_socket(
        &fs::symlink_metadata(m.p("sock")).unwrap().file_type()
    ));
}

#[test]
fn xattrs_statfs_fsync() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::write(m.p("x"), b"x").unwrap();
    m.sh("python3 -c \"
import os, errno
p='x'
os.setxattr(p, 'user.k', b'v1')
assert os.getxattr(p, 'user.k') == b'v1'
os.setxattr(p, 'user.k', b'v2', os.XATTR_REPLACE)
try:
    os.setxattr(p, 'user.k', b'v3', os.XATTR_CREATE); raise SystemExit('XATTR_CREATE over existing')
except OSError as e: assert e.errno == errno.EEXIST, e
try:
    os.getxattr(p, 'user.none'); raise SystemExit('missing xattr found')
except OSError as e: assert e.errno == errno.ENODATA, e
os.setxattr(p, 'user.big', b'z' * 4000)
assert sorted(os.listxattr(p)) == ['user.big', 'user.k'], os.listxattr(p)
os.removexattr(p, 'user.k')
assert os.listxattr(p) == ['user.big']
os.mkdir('d'); os.setxattr('d', 'user.dir', b'1'); assert os.getxattr('d', 'user.dir') == b'1'
\"");
    let out = m.sh("stat -f -c '%b %a %S' .");
    let v: Vec<u64> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert!(v[0] > 0 && v[1] > 0 && v[2] > 0, "statfs: {out}");

    let mut f = File::create(m.p("synced")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    File::open(&m.mnt).unwrap().sync_all().unwrap(); // fsyncdir
}

#[test]
fn mmap_write_and_read() {
    let Some(m) = Mount::new(&[]) else { return };
    m.sh("python3 -c \"
import mmap
p='mm'
open(p,'wb').write(b'\\0' * (3 << 20))
with open(p,'r+b') as f:
    mm = mmap.mmap(f.fileno(), 0)
    mm[4096:4101] = b'hello'
    mm[(3<<20)-5:] = b'world'
    mm.flush(); mm.close()
d = open(p,'rb').read()
assert d[4096:4101] == b'hello' and d[-5:] == b'world' and len(d) == 3 << 20
with open(p,'rb') as f:
    mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    assert mm[4096:4101] == b'hello'
\"");
}

#[test]
fn permission_checks_for_non_root() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::create_dir(m.p("priv")).unwrap();
    fs::set_permissions(m.p("priv"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(m.p("ro"), b"r").unwrap();
    fs::set_permissions(m.p("ro"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(m.p("pub")).unwrap();
    fs::set_permissions(m.p("pub"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(m.p("pub/roots"), b"r").unwrap();
    let as_nobody = |script: &str| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
                script,
            ])
            .current_dir(&m.mnt)
            .status()
            .unwrap()
            .success()
    };
    assert!(
        as_nobody("cat ro >/dev/null"),
        "world-readable file readable"
    );
    assert!(
        !as_nobody("echo x >> ro"),
        "write to 0644 root file refused"
    );
    assert!(!as_nobody("ls priv"), "0700 dir not listable");
    assert!(
        as_nobody("echo mine > pub/mine && rm pub/mine"),
        "sticky dir allows own files"
    );
    assert!(
        !as_nobody("rm -f pub/roots"),
        "sticky dir protects others' files"
    );
    assert!(!as_nobody("chmod 777 ro"), "chmod by non-owner refused");

    // setgid directories pass their group on.
    fs::create_dir(m.p("sg")).unwrap();
    std::os::unix::fs::chown(m.p("sg"), None, Some(4242)).unwrap();
    fs::set_permissions(m.p("sg"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::write(m.p("sg/f"), b"").unwrap();
    fs::create_dir(m.p("sg/sub")).unwrap();
    assert_eq!(fs::metadata(m.p("sg/f")).unwrap().gid(), 4242);
    let sub = fs::metadata(m.p("sg/sub")).unwrap();
    assert_eq!(sub.gid(), 4242);
    assert_ne!(sub.mode() & libc::S_ISGID, 0);
}

#[test]
fn concurrent_readers_and_writers() {
    let Some(m) = Mount::new(&[]) else { return };
    let data = bytes(9, 8 << 20);
    fs::write(m.p("shared"), &data).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let m = &m;
            let data = &data;
            s.spawn(move || {
                for i in 0..5 {
                    let name = m.p(&format!("w{t}"));
                    let mine = bytes(t * 100 + i, 1 << 20);
                    fs::write(&name, &mine).unwrap();
                    assert_eq!(fs::read(&name).unwrap(), mine);
                    assert_eq!(&fs::read(m.p("shared")).unwrap(), data);
                }
            });
        }
    });
}

#[test]
fn rename_flags_suid_clearing_and_mtime_on_write() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::write(m.p("a"), b"A").unwrap();
    fs::write(m.p("b"), b"B").unwrap();
    let path = |n: &str| std::ffi::CString::new(m.p(n).to_str().unwrap()).unwrap();
    let renameat2 = |from: &str, to: &str, flags: u32| {
        let (f, t) = (path(from), path(to));
        // SAFETY: valid C strings; AT_FDCWD with absolute paths.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        }
    };
    assert_eq!(renameat2("a", "b", libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(renameat2("a", "b", libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read(m.p("a")).unwrap(), b"B");
    assert_eq!(fs::read(m.p("b")).unwrap(), b"A");
    assert_eq!(renameat2("a", "nope", libc::RENAME_EXCHANGE), libc::ENOENT);
    assert_eq!(renameat2("a", "c", libc::RENAME_NOREPLACE), 0);
    assert_eq!(fs::read(m.p("c")).unwrap(), b"B");

    // A write by a non-root user clears setuid (as on ext4).
    fs::write(m.p("suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(m.p("suid"), fs::Permissions::from_mode(0o4777)).unwrap();
    let ok = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            "echo x >> suid",
        ])
        .current_dir(&m.mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(fs::metadata(m.p("suid")).unwrap().mode() & 0o7777, 0o777);

    // mtime follows writes even before close.
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let f = OpenOptions::new().write(true).open(m.p("c")).unwrap();
    f.set_modified(t0).unwrap();
    assert_eq!(fs::metadata(m.p("c")).unwrap().mtime(), 1_000_000_000);
    f.write_all_at(b"later", 0).unwrap();
    assert!(fs::metadata(m.p("c")).unwrap().mtime() > 1_000_000_000);
    drop(f);
    assert!(fs::metadata(m.p("c")).unwrap().mtime() > 1_000_000_000);
    // O_TRUNC of a file empties it and moves mtime.
    fs::write(m.p("c"), b"").unwrap();
    assert_eq!(fs::metadata(m.p("c")).unwrap().len(), 0);
}

#[test]
fn reopen_right_after_close_sees_the_new_content_while_commits_run() {
    // Regression: an open racing a commit could read the catalog before
    // the commit published and the pending overlay after it was cleared,
    // and so see the previous content.
    let Some(m) = Mount::new(&["--commit-interval", "10ms"]) else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let mut i = 0u64;
    while std::time::Instant::now() < deadline {
        let want = bytes(i, 1000 + (i as usize % 3000));
        fs::write(m.p("f"), &want).unwrap();
        assert_eq!(fs::read(m.p("f")).unwrap(), want, "iteration {i}");
        i += 1;
    }
    assert!(i > 100, "{i}");
}
