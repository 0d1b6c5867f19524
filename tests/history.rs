//! History through real mounts: every saved version is listed by
//! `revfs log` and its path gives back exactly its bytes (rename-over
//! saves, rsync steps), and `revfs restore` rolls files, directories and
//! the whole tree back as metadata, undoably, even while a writer runs.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, bytes, revfs};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// The bytes behind every entry of `revfs log FILE`.
fn logged(file: &Path) -> Vec<Vec<u8>> {
    let (ok, out) = revfs(&[os("log"), file.as_os_str(), os("--json")]);
    assert!(ok, "{out}");
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    v.iter()
        .map(|e| fs::read(e["path"].as_str().unwrap()).unwrap())
        .collect()
}

/// Saves `n` versions of `name` by temp file + rename, `gap` apart.
fn save_by_rename(m: &Mount, name: &str, n: u64, size: usize, gap: Duration) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            let data = bytes(k + 1000, size);
            let tmp = m.p(&format!(".{name}.tmp"));
            fs::write(&tmp, &data).unwrap();
            fs::rename(&tmp, m.p(name)).unwrap();
            std::thread::sleep(gap);
            data
        })
        .collect()
}

#[test]
fn rapid_rename_over_saves_are_each_a_version() {
    let Some(m) = Mount::new(&["--min-version-interval", "0s"]) else {
        return;
    };
    let want = save_by_rename(&m, "fast.bin", 100, 4096, Duration::from_millis(50));
    assert_eq!(logged(&m.p("fast.bin")), want);
}

#[test]
fn a_child_closing_its_copy_of_a_writers_descriptor_makes_no_half_written_version() {
    use std::io::Write;
    let Some(m) = Mount::new(&["--min-version-interval", "0s"]) else {
        return;
    };
    let p = m.p("ckpt.bin");
    let first = bytes(1, 300_000);
    fs::write(&p, &first).unwrap();
    let second = bytes(2, 600_000);
    let mut f = fs::File::create(&p).unwrap();
    f.write_all(&second[..200_000]).unwrap();
    // Each child starts with a copy of the writer's descriptors, and its
    // exec closes them (they are close-on-exec), which flushes the file
    // half-written: what a data loader's workers or any program the job
    // starts do while a checkpoint is being written.
    for _ in 0..3 {
        assert!(Command::new("true").status().unwrap().success());
    }
    f.write_all(&second[200_000..]).unwrap();
    drop(f);
    // The writer's own close is the save.
    assert_eq!(
        common::digests(&logged(&p)),
        common::digests(&[first, second])
    );
}

#[test]
fn saves_seconds_apart_are_each_a_version_with_the_defaults() {
    let Some(m) = Mount::new(&[]) else { return };
    let want = save_by_rename(&m, "ckpt.bin", 20, 200_000, Duration::from_millis(1300));
    assert_eq!(logged(&m.p("ckpt.bin")), want);
}

#[test]
fn rsync_steps_into_the_mount_are_each_a_version() {
    let Some(m) = Mount::new(&["--min-version-interval", "0s"]) else {
        return;
    };
    let src = m.tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut want = Vec::new();
    for step in 0..8u64 {
        let data = bytes(step + 77, 150_000 + step as usize);
        fs::write(src.join("model.bin"), &data).unwrap();
        want.push(data);
        let st = Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", src.display()))
            .arg(m.p("dst/"))
            .status()
            .unwrap();
        assert!(st.success());
    }
    assert_eq!(logged(&m.p("dst/model.bin")), want);
}

/// (path, mode, size, mtime ns, nlink, symlink target, content) of a tree.
fn describe(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if md.is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                format!("{:x}", md5ish(&fs::read(&p).unwrap()))
            };
            let mtime = if md.is_symlink() {
                0
            } else {
                md.mtime() * 1_000_000_000 + md.mtime_nsec()
            };
            out.push(format!(
                "{rel} {:o} {} {mtime} {} {what}",
                md.mode(),
                if md.is_dir() { 0 } else { md.size() },
                md.nlink()
            ));
        }
    }
    out.sort();
    out
}

fn md5ish(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn now_rfc3339() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn restore_a_file_a_directory_and_the_whole_tree_and_undo() {
    let Some(m) = Mount::new(&[]) else { return };
    m.sh(
        "mkdir -p run/sub run/empty && echo v1 > run/a.txt && chmod 640 run/a.txt \
         && head -c 3000000 /dev/urandom > run/w.bin && ln run/w.bin run/sub/hard \
         && ln -s a.txt run/link && touch -d 2020-01-01 run/a.txt && echo top > top.txt",
    );
    common::commit(&m.store);
    let t1 = now_rfc3339();
    let before = describe(&m.p("run"));
    let before_all = describe(&m.mnt);
    std::thread::sleep(Duration::from_millis(20));
    m.sh(
        "echo v2 > run/a.txt && rm run/link && rm -r run/sub && echo junk > run/new \
         && head -c 100 /dev/urandom > run/w.bin && chmod 600 run/w.bin && echo changed > top.txt",
    );
    common::commit(&m.store);
    let t2 = now_rfc3339();
    let after = describe(&m.p("run"));

    // A single file, in place: its old bytes, mode and mtime.
    let (ok, out) = revfs(&[
        os("restore"),
        m.p("run/a.txt").as_os_str(),
        os("--at"),
        os(&t1),
    ]);
    assert!(ok, "{out}");
    assert_eq!(fs::read(m.p("run/a.txt")).unwrap(), b"v1\n");
    assert_eq!(
        fs::metadata(m.p("run/a.txt")).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // The restore is a version of its own.
    assert_eq!(logged(&m.p("run/a.txt")), [&b"v1\n"[..], b"v2\n", b"v1\n"]);

    // A directory: everything as it was (links, symlinks, modes, mtimes).
    let (ok, out) = revfs(&[
        os("restore"),
        m.p("run").as_os_str(),
        os("--at"),
        os(&t1),
        os("--json"),
    ]);
    assert!(ok, "{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["removed"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(describe(&m.p("run")), before);
    assert_eq!(
        fs::metadata(m.p("run/w.bin")).unwrap().ino(),
        fs::metadata(m.p("run/sub/hard")).unwrap().ino()
    );
    // Elsewhere in the mount: --to.
    let (ok, out) = revfs(&[
        os("restore"),
        m.p("run").as_os_str(),
        os("--at"),
        os(&t2),
        os("--to"),
        m.p("run-at-t2").as_os_str(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(describe(&m.p("run-at-t2")), after);
    assert_eq!(describe(&m.p("run")), before, "the source stays as it is");

    // The whole tree, then undo that restore with another.
    common::commit(&m.store);
    let t3 = now_rfc3339();
    let state3 = describe(&m.mnt);
    let (ok, out) = revfs(&[os("restore"), m.mnt.as_os_str(), os("--at"), os(&t1)]);
    assert!(ok, "{out}");
    assert_eq!(describe(&m.mnt), before_all);
    let (ok, out) = revfs(&[os("restore"), m.mnt.as_os_str(), os("--at"), os(&t3)]);
    assert!(ok, "{out}");
    assert_eq!(describe(&m.mnt), state3);

    // It survives a remount, and the store verifies clean.
    let mut m = m;
    m.remount(&[]);
    assert_eq!(describe(&m.mnt), state3);
    m.unmount();
    let (ok, out) = revfs(&[os("verify"), m.store.as_os_str()]);
    assert!(ok, "{out}");
}

#[test]
fn a_restore_racing_a_writer_leaves_a_consistent_tree() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::create_dir(m.p("d")).unwrap();
    let versions: Vec<Vec<u8>> = (0..4).map(|i| bytes(i + 300, 300_000)).collect();
    for i in 0..10 {
        fs::write(m.p(&format!("d/f{i}")), &versions[0]).unwrap();
    }
    common::commit(&m.store);
    let t0 = now_rfc3339();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = &versions[1 + k % 3];
                // Errors are allowed (a file may vanish under the writer);
                // wrong bytes are not.
                let _ = fs::write(m.p(&format!("d/f{}", k % 10)), v);
                k += 1;
            }
        });
        for _ in 0..10 {
            let (ok, out) = revfs(&[os("restore"), m.p("d").as_os_str(), os("--at"), os(&t0)]);
            if !ok {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("{out}");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    for i in 0..10 {
        let got = fs::read(m.p(&format!("d/f{i}"))).unwrap();
        assert!(versions.contains(&got), "d/f{i}: torn or wrong bytes");
    }
    let mut m = m;
    m.unmount();
    let (ok, out) = revfs(&[os("verify"), m.store.as_os_str()]);
    assert!(ok, "{out}");
}

/// The daemon's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn browsing_history_frees_the_view_inodes_the_kernel_forgets() {
    let Some(m) = Mount::new(&[]) else { return };
    m.sh("mkdir big && cd big && for d in $(seq 1 10); do mkdir d$d; (cd d$d && seq 1 1000 | xargs touch); done");
    common::commit(&m.store);
    let t = now_rfc3339();
    let held = || common::status(&m.store)["history_inodes"].as_u64().unwrap();
    let drop_caches = || fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let mut rss = Vec::new();
    // 10 passes over 10,000 entries, each through another view (at/ with
    // another spelling of the instant), stat-ing every entry.
    for pass in 0..10 {
        let at = format!("{}{}Z", t.trim_end_matches('Z'), "0".repeat(pass));
        let n = m.sh(&format!(
            "find '.snapshots/at/{at}/big' -type f -printf '%s\\n' | wc -l"
        ));
        assert_eq!(n.trim(), "10000");
        drop_caches();
        common::wait_until("view inodes forgotten", Duration::from_secs(20), || {
            held() < 100
        });
        rss.push(rss_kib(m.pid()));
    }
    // Memory stays flat: the last passes cost no more than the first.
    let first = rss[1];
    let last = *rss.last().unwrap();
    assert!(last <= first + first / 5 + 4096, "RSS grew: {rss:?} KiB");
}

#[test]
fn in_place_edits_of_a_large_file_are_each_a_byte_exact_version() {
    let Some(m) = Mount::new(&["--min-version-interval", "0s"]) else {
        return;
    };
    use std::io::{Seek, SeekFrom, Write};
    let mut content = bytes(5, 48 << 20);
    fs::write(m.p("db.bin"), &content).unwrap();
    let mut want = vec![content.clone()];
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(m.p("db.bin"))
        .unwrap();
    let mut x = 12345u64;
    for round in 0..8u64 {
        for k in 0..3 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Some edits straddle where a chunk boundary may be.
            let off = (x >> 20) as usize % (content.len() - 70_000);
            let data = bytes(round * 10 + k, 4096 + (x as usize % 65_536));
            f.seek(SeekFrom::Start(off as u64)).unwrap();
            f.write_all(&data).unwrap();
            content[off..off + data.len()].copy_from_slice(&data);
        }
        f.sync_all().unwrap();
        want.push(content.clone());
    }
    drop(f);
    assert_eq!(logged(&m.p("db.bin")), want);
}
