//! Randomized model test: seeded sequences of file operations applied both
//! to a revfs mount and to a plain directory; every result (success or the
//! exact errno) and the whole tree (types, sizes, modes, link counts,
//! contents, symlink targets) must agree after every step and after
//! remounts. A failure is shrunk to a minimal sequence and printed.
//! `MODEL_SEEDS` and `MODEL_STEPS` bound the run (CI: 3 x 150).
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, Rng};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

#[derive(Clone, Debug)]
enum Op {
    Write {
        f: String,
        off: u64,
        len: usize,
        seed: u64,
    },
    Append {
        f: String,
        len: usize,
        seed: u64,
    },
    Truncate {
        f: String,
        len: u64,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        f: String,
    },
    Mkdir {
        d: String,
    },
    Rmdir {
        d: String,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        at: String,
    },
    Chmod {
        p: String,
        mode: u32,
    },
    /// fallocate PUNCH_HOLE|KEEP_SIZE, or ZERO_RANGE (with KEEP_SIZE when
    /// `keep`).
    Hole {
        f: String,
        off: u64,
        len: u64,
        zero: bool,
        keep: bool,
    },
    Remount,
}

const DIRS: &[&str] = &["", "d0/", "d1/", "d0/e/"];
const NAMES: &[&str] = &["a", "b", "c", "d0", "d1", "e"];

fn generate(seed: u64, steps: usize) -> Vec<Op> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let path = |r: &mut Rng| format!("{}{}", r.pick(DIRS), r.pick(NAMES));
    (0..steps)
        .map(|i| match r.next() % 24 {
            0..=4 => Op::Write {
                f: path(&mut r),
                off: r.next() % 300_000,
                len: (r.next() % 200_000) as usize,
                seed: r.next(),
            },
            5..=6 => Op::Append {
                f: path(&mut r),
                len: (r.next() % 5000) as usize,
                seed: r.next(),
            },
            7..=8 => Op::Truncate {
                f: path(&mut r),
                len: r.next() % 400_000,
            },
            9..=10 => Op::Rename {
                from: path(&mut r),
                to: path(&mut r),
            },
            11 => Op::Unlink { f: path(&mut r) },
            12..=13 => Op::Mkdir { d: path(&mut r) },
            14 => Op::Rmdir { d: path(&mut r) },
            15..=16 => Op::Link {
                from: path(&mut r),
                to: path(&mut r),
            },
            17 => Op::Symlink {
                target: r.pick(NAMES).to_string(),
                at: path(&mut r),
            },
            18..=19 => Op::Chmod {
                p: path(&mut r),
                mode: [0o600, 0o644, 0o755, 0o700][(r.next() % 4) as usize],
            },
            20..=21 => Op::Hole {
                f: path(&mut r),
                off: r.next() % 300_000,
                len: 1 + r.next() % 200_000,
                zero: r.next().is_multiple_of(2),
                keep: r.next().is_multiple_of(2),
            },
            _ if i % 50 == 49 => Op::Remount,
            _ => Op::Write {
                f: path(&mut r),
                off: 0,
                len: (r.next() % 1000) as usize,
                seed: r.next(),
            },
        })
        .collect()
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..len).map(|_| (r.next() >> 24) as u8).collect()
}

/// Applies one op under `root`; the outcome is Ok or the errno.
fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |s: &str| root.join(s);
    let e = |r: std::io::Result<()>| r.map_err(|e| e.raw_os_error().unwrap_or(-1));
    match op {
        Op::Write { f, off, len, seed } => e((|| {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(p(f))?;
            file.write_all_at(&data(*seed, *len), *off)
        })()),
        Op::Append { f, len, seed } => e((|| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(p(f))?
                .write_all(&data(*seed, *len))
        })()),
        Op::Truncate { f, len } => e(OpenOptions::new()
            .write(true)
            .open(p(f))
            .and_then(|f| f.set_len(*len))),
        Op::Rename { from, to } => e(fs::rename(p(from), p(to))),
        Op::Unlink { f } => e(fs::remove_file(p(f))),
        Op::Mkdir { d } => e(fs::create_dir(p(d))),
        Op::Rmdir { d } => e(fs::remove_dir(p(d))),
        Op::Link { from, to } => e(fs::hard_link(p(from), p(to))),
        Op::Symlink { target, at } => e(std::os::unix::fs::symlink(target, p(at))),
        Op::Chmod { p: path, mode } => {
            // Only on regular files and directories (never through a link).
            match fs::symlink_metadata(p(path)) {
                Ok(m) if m.file_type().is_symlink() => Ok(()),
                _ => e(fs::set_permissions(
                    p(path),
                    fs::Permissions::from_mode(*mode),
                )),
            }
        }
        Op::Hole {
            f,
            off,
            len,
            zero,
            keep,
        } => e((|| {
            let file = OpenOptions::new().write(true).open(p(f))?;
            let mode = match (zero, keep) {
                (false, _) => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (true, true) => libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                (true, false) => libc::FALLOC_FL_ZERO_RANGE,
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            // SAFETY: a valid fd and plain integers.
            match unsafe { libc::fallocate(fd, mode, *off as i64, *len as i64) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })()),
        Op::Remount => Ok(()),
    }
}

/// Everything the model compares about a tree.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(root.join(&dir))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let rel = format!("{dir}{}", n.to_string_lossy());
            let path = root.join(&rel);
            let m = fs::symlink_metadata(&path).unwrap();
            let desc = if m.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if m.is_dir() {
                stack.push(format!("{rel}/"));
                format!("dir {:o} nlink {}", m.mode() & 0o7777, m.nlink())
            } else {
                let h = blake3::hash(&fs::read(&path).unwrap());
                format!(
                    "file {:o} nlink {} size {} {}",
                    m.mode() & 0o7777,
                    m.nlink(),
                    m.len(),
                    &h.to_hex()[..16]
                )
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// Runs `ops` on a fresh mount and a fresh plain directory; the first
/// step where they disagree, with what differed.
fn run(ops: &[Op]) -> Option<(usize, String)> {
    let mut m = Mount::new(&[])?;
    let plain = m.tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Remount = op {
            m.remount(&[]);
        }
        let (a, b) = (apply(&m.mnt, op), apply(&plain, op));
        if a != b {
            return Some((i, format!("{op:?}: revfs {a:?}, plain dir {b:?}")));
        }
        let (sa, sb) = (snapshot(&m.mnt), snapshot(&plain));
        if sa != sb {
            let diff: Vec<String> = sa
                .iter()
                .filter(|(k, v)| sb.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: revfs {v} / plain {:?}", sb.get(k)))
                .chain(
                    sb.keys()
                        .filter(|k| !sa.contains_key(*k))
                        .map(|k| format!("{k}: missing in revfs")),
                )
                .collect();
            return Some((i, format!("after {op:?}: {}", diff.join("; "))));
        }
    }
    None
}

/// Drops ops one at a time while the failure persists.
fn shrink(mut ops: Vec<Op>) -> Vec<Op> {
    let mut i = ops.len();
    while i > 0 {
        i -= 1;
        let mut fewer = ops.clone();
        fewer.remove(i);
        if run(&fewer).is_some() {
            ops = fewer;
        }
    }
    ops
}

#[test]
fn random_operations_match_a_plain_directory() {
    if !common::fuse_available() {
        return;
    }
    let seeds: u64 = std::env::var("MODEL_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let steps: usize = std::env::var("MODEL_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let base: u64 = std::env::var("SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    for seed in base..base + seeds {
        let ops = generate(seed, steps);
        if let Some((at, why)) = run(&ops) {
            let minimal = shrink(ops[..=at].to_vec());
            panic!(
                "seed {seed}, step {at}: {why}\nminimal sequence ({} ops):\n{}",
                minimal.len(),
                minimal
                    .iter()
                    .map(|o| format!("  {o:?}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
