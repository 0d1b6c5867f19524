//! The page cache holds one copy of what goes through a mount: the mount's
//! own cache of the file. The packs' pages leave it once they are on the
//! disk (written), loaded ahead for a sequential reader (read), or shipped
//! to the replica. Measured with util-linux's `fincore`.
// Tests may unwrap; the shared helpers signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, bytes, status};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

const MIB: usize = 1 << 20;

/// What a checkpoint's write can leave cached of its packs: the writeback
/// step being written and the one before it, plus a little.
const MOST_CACHED: u64 = 20 << 20;

/// Bytes of the store's pack files in the page cache.
fn cached_pack_bytes(store: &Path) -> u64 {
    let packs: Vec<_> = fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .args(&packs)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse::<u64>().unwrap())
        .sum()
}

fn pack_bytes(store: &Path) -> u64 {
    fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// 64 MiB that do not compress, written and fsync'ed as one file.
fn write_checkpoint(m: &Mount) -> Vec<u8> {
    let data = bytes(7, 64 * MIB);
    let mut f = fs::File::create(m.p("ckpt.bin")).unwrap();
    for piece in data.chunks(MIB) {
        f.write_all(piece).unwrap();
    }
    f.sync_all().unwrap();
    data
}

#[test]
fn a_written_checkpoint_leaves_its_packs_out_of_the_page_cache() {
    let Some(mut m) = Mount::new(&[]) else { return };
    let data = write_checkpoint(&m);
    let (cached, stored) = (cached_pack_bytes(&m.store), pack_bytes(&m.store));
    assert!(stored >= 64 << 20, "stored {stored}");
    assert!(
        cached <= MOST_CACHED,
        "{cached} of {stored} pack bytes still cached after the fsync"
    );
    // Read back from the disk, in a new mount (no chunk cached).
    m.remount(&[]);
    assert!(
        fs::read(m.p("ckpt.bin")).unwrap() == data,
        "content after remount"
    );
}

#[test]
fn a_sequential_read_leaves_the_packs_pages_behind() {
    let Some(mut m) = Mount::new(&[]) else { return };
    let data = write_checkpoint(&m);
    m.remount(&[]);
    let mut got = Vec::new();
    let mut f = fs::File::open(m.p("ckpt.bin")).unwrap();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data, "content read sequentially");
    let (cached, stored) = (cached_pack_bytes(&m.store), pack_bytes(&m.store));
    assert!(
        cached <= MOST_CACHED,
        "{cached} of {stored} pack bytes cached after a sequential read"
    );
}

#[test]
fn packs_leave_the_page_cache_once_shipped_to_the_replica() {
    let Some((m, replica)) = Mount::with_replica(&["--replica-sync"]) else {
        return;
    };
    write_checkpoint(&m);
    // --replica-sync: the fsync returned with everything shipped.
    let s = status(&m.store);
    assert_eq!(s["replica"]["lag_commits"], 0, "{s}");
    let (cached, stored) = (cached_pack_bytes(&m.store), pack_bytes(&m.store));
    assert!(
        cached <= MOST_CACHED,
        "{cached} of {stored} pack bytes cached after shipping"
    );
    assert!(fs::read_dir(replica.join("packs")).unwrap().count() > 0);
}

#[test]
fn a_kill_9_mid_write_keeps_every_fsynced_byte_of_dropped_pages() {
    let Some(mut m) = Mount::new(&[]) else { return };
    // 40 MiB fsync'ed (five writeback steps, dropped as they went), then
    // more of the same file written and never synced when the daemon dies.
    let data = bytes(11, 40 * MIB);
    let mut f = fs::File::create(m.p("ckpt.bin")).unwrap();
    for piece in data.chunks(MIB) {
        f.write_all(piece).unwrap();
    }
    f.sync_all().unwrap();
    assert!(cached_pack_bytes(&m.store) <= MOST_CACHED);
    for piece in bytes(12, 24 * MIB).chunks(MIB) {
        f.write_all(piece).unwrap();
    }
    m.crash();
    drop(f);
    m.start(&[]);
    // Read from the packs on the disk: their pages left the cache.
    let got = fs::read(m.p("ckpt.bin")).unwrap();
    assert!(
        got.len() >= data.len() && got[..data.len()] == data[..],
        "fsync'ed bytes after kill -9 ({} bytes read)",
        got.len()
    );
}
