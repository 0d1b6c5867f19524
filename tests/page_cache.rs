//! The page cache holds one copy of what goes through a mount: the mount's
//! own cache of the file. The packs' pages leave it once they are on the
//! disk (written), loaded ahead for a sequential reader (read), or shipped
//! to the replica. Measured with util-linux's `fincore`.
// Tests may unwrap; the shared helpers signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::metrics::{free_port, scrape};
use common::{Mount, Rng, bytes, flip_in_largest_pack, status};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
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

/// The 4 KiB blocks of `f` (of `len` bytes) read once each, in a seeded
/// random order that starts at the last block, so that none is read near
/// where a read before it ended (readahead's "sequential"): each block's
/// bytes, or its error. The blocks of the 4 MiB before the last are not
/// read (near the first read).
fn read_blocks_at_random(f: &fs::File, len: usize, seed: u64) -> Vec<std::io::Result<Vec<u8>>> {
    let (blocks, near_end) = (len / 4096, (len - 4 * MIB) / 4096);
    let mut order: Vec<usize> = (0..near_end).collect();
    let mut rng = Rng::new(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order.insert(0, blocks - 1);
    let mut got: Vec<std::io::Result<Vec<u8>>> = (0..blocks).map(|_| Ok(Vec::new())).collect();
    for b in order {
        let mut buf = vec![0u8; 4096];
        got[b] = f.read_exact_at(&mut buf, (b * 4096) as u64).map(|()| buf);
    }
    got
}

/// Every clean page out of the page cache (dirty ones written first).
fn drop_page_cache() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
}

#[test]
fn random_reads_take_their_records_past_the_page_cache_and_still_check_them() {
    let Some(mut m) = Mount::new(&[]) else { return };
    let data = write_checkpoint(&m);
    let port = free_port();
    let metrics = ["--metrics-addr".to_string(), format!("127.0.0.1:{port}")];
    let metrics: Vec<&str> = metrics.iter().map(String::as_str).collect();
    m.remount(&metrics);
    drop_page_cache();
    let f = fs::File::open(m.p("ckpt.bin")).unwrap();
    let got = read_blocks_at_random(&f, data.len(), 5);
    for (b, r) in got
        .iter()
        .enumerate()
        .filter(|(_, r)| !matches!(r, Ok(v) if v.is_empty()))
    {
        let r = r.as_ref().unwrap_or_else(|e| panic!("block {b}: {e}"));
        assert!(r[..] == data[b * 4096..(b + 1) * 4096], "block {b}");
    }
    // Through the page cache every record read would be cached now (and
    // the kernel's readahead around it): 60 MiB.
    let cached = cached_pack_bytes(&m.store);
    assert!(
        cached <= 4 * MIB as u64,
        "{cached} pack bytes cached after random reads"
    );
    // Most blocks came from only the pieces of their chunk that hold them
    // (77 % here); the others were over more than half of a small chunk,
    // read whole and cached, or found their chunk cached so.
    let pieces = scrape(port)["revfs_piece_reads_total"];
    let read = (data.len() - 4 * MIB) / 4096 + 1;
    assert!(
        pieces >= 0.6 * read as f64,
        "{pieces} of {read} reads from pieces"
    );
    drop(f);

    // A damaged record read at random is an error, never other bytes.
    m.unmount();
    flip_in_largest_pack(&m.store);
    m.start(&metrics);
    drop_page_cache();
    let f = fs::File::open(m.p("ckpt.bin")).unwrap();
    let got = read_blocks_at_random(&f, data.len(), 6);
    let mut failed = 0;
    for (b, r) in got.iter().enumerate() {
        match r {
            Ok(r) if r.is_empty() => {}
            Ok(r) => assert!(
                r[..] == data[b * 4096..(b + 1) * 4096],
                "block {b}: other bytes"
            ),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "block {b}: {e}");
                failed += 1;
            }
        }
    }
    // The blocks over the damaged 16 KiB piece (5 at most; 9 over a chunk
    // under 32 KiB, read whole), and at least one.
    assert!((1..=9).contains(&failed), "{failed} blocks failed");
    let cached = cached_pack_bytes(&m.store);
    assert!(
        cached <= 4 * MIB as u64,
        "{cached} pack bytes cached after random reads"
    );
}
