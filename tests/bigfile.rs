//! Large files whose content is a tree of manifest nodes, through a real
//! mount: random in-place edits of a 2 GiB file against a model (every
//! version byte-exact through `.snapshots/`), edits that straddle chunk
//! boundaries, truncate and extend (holes), what a small edit stores, and
//! kill -9 while large-file versions are being written.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, Rng, bytes, revfs, status};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (offset, bytes) of one pwrite.
type Edit = (u64, Vec<u8>);

fn hash_file(path: &Path) -> blake3::Hash {
    let mut f = File::open(path).unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h.finalize();
        }
        h.update(&buf[..n]);
    }
}

fn write_all(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    for part in data.chunks(8 << 20) {
        f.write_all(part).unwrap();
    }
    f.sync_all().unwrap();
}

/// (size, path) of every version of `file`, oldest first.
fn versions(file: &Path) -> Vec<(u64, String)> {
    let (ok, out) = revfs(&["log".as_ref(), file.as_os_str(), "--json".as_ref()]);
    assert!(ok, "{out}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    log.iter()
        .map(|e| {
            (
                e["size"].as_u64().unwrap(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Stored bytes that are not chunk data: manifests, trees, commits and
/// record headers.
fn metadata_bytes(store: &Path) -> u64 {
    let s = status(store);
    s["stored_bytes"].as_u64().unwrap() - s["chunk_bytes"].as_u64().unwrap()
}

#[test]
fn random_edits_truncates_and_holes_of_a_2_gib_file_match_the_model_in_every_version() {
    let Some(mut m) = Mount::new(&[]) else { return };
    let path = m.p("big.bin");
    let mut model = bytes(1, (2 << 30) + 12_345);
    write_all(&path, &model);
    let mut hashes = vec![blake3::hash(&model)];
    // Old chunk boundaries, for edits that straddle them.
    let cuts: Vec<usize> = revfs::chunker::chunk_lengths(&model)
        .iter()
        .scan(0, |at, l| {
            *at += l;
            Some(*at)
        })
        .collect();
    let mut rng = Rng::new(77);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    for i in 0..8u64 {
        let len = [1u64, 4096, 100_000, 700_000][i as usize % 4];
        let off = match i {
            0 => 0,
            1 => model.len() as u64 - len,
            // Across an old chunk boundary.
            i if i % 3 == 0 => cuts[rng.below(cuts.len() as u64 - 1) as usize] as u64 - len / 2 - 1,
            _ => rng.below(model.len() as u64 - len),
        };
        let data = bytes(100 + i, len as usize);
        f.write_all_at(&data, off).unwrap();
        f.sync_all().unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
        hashes.push(blake3::hash(&model));
    }
    // A 4 KiB edit stores its chunks and a path of manifest nodes, not
    // the file's 32,000-extent list (1.3 MB in one flat manifest).
    let before = metadata_bytes(&m.store);
    f.write_all_at(&[7u8; 4096], 1 << 30).unwrap();
    f.sync_all().unwrap();
    model[1 << 30..(1 << 30) + 4096].fill(7);
    hashes.push(blake3::hash(&model));
    let grown = metadata_bytes(&m.store) - before;
    assert!(
        grown < 96 << 10,
        "a 4 KiB edit added {grown} bytes of metadata"
    );
    drop(f);
    // Truncate into the middle of a chunk, extend with a hole, write in the hole.
    let short = (1300 << 20) + 777;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(short as u64).unwrap();
    f.sync_all().unwrap();
    model.truncate(short);
    hashes.push(blake3::hash(&model));
    let long = (2500usize << 20) + 3;
    f.set_len(long as u64).unwrap();
    f.write_all_at(&bytes(9, 1 << 20), 2 << 30).unwrap();
    f.sync_all().unwrap();
    model.resize(long, 0);
    model[2 << 30..(2 << 30) + (1 << 20)].copy_from_slice(&bytes(9, 1 << 20));
    hashes.push(blake3::hash(&model));
    drop(f);
    let md = fs::metadata(&path).unwrap();
    assert_eq!(md.len(), long as u64);
    assert!(
        md.blocks() * 512 < short as u64 + (4 << 20),
        "the hole takes no space: {} blocks",
        md.blocks()
    );
    // Every version, byte-exact, before and after a remount.
    for round in 0..2 {
        // Commits while the first write streamed in made versions of
        // its prefixes; the edits' versions are the last ones.
        let all = versions(&path);
        assert!(all.len() >= hashes.len(), "round {round}: {all:?}");
        let vs = &all[all.len() - hashes.len()..];
        assert_eq!(vs[0].0, (2 << 30) + 12_345);
        // After the remount, the newest three (the truncate and the hole).
        let from = if round == 0 { 0 } else { vs.len() - 3 };
        for (i, ((_, p), want)) in vs.iter().zip(&hashes).enumerate().skip(from) {
            assert_eq!(hash_file(Path::new(p)), *want, "round {round}, version {i}");
        }
        assert_eq!(hash_file(&path), *hashes.last().unwrap());
        let mut hole = vec![1u8; 1 << 20];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut hole, (1500 << 20) + 5)
            .unwrap();
        assert!(hole.iter().all(|b| *b == 0));
        m.remount(&[]);
    }
    m.unmount();
    let (ok, out) = revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(ok, "{out}");
}

/// kill -9 while a writer makes versions of a 1 GiB file (scattered edits,
/// each fsync'd) and another file is being written sequentially: after
/// each crash the big file is its last fsync'd state or the one in flight,
/// the other holds only bytes that were written, and verify is clean.
#[test]
fn kill_9_during_large_file_versions_loses_nothing_fsynced() {
    let Some(mut m) = Mount::new(&[]) else { return };
    let path = m.p("big.bin");
    let mut model = bytes(2, 1 << 30);
    write_all(&path, &model);
    let stream = bytes(3, 600 << 20);
    for cycle in 0..3u64 {
        // Edits, and how many of them returned from fsync.
        let edits: Arc<Mutex<Vec<Edit>>> = Arc::default();
        let done = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (edits, done, path) = (edits.clone(), done.clone(), path.clone());
            let len = model.len() as u64;
            std::thread::spawn(move || {
                let Ok(f) = OpenOptions::new().write(true).open(&path) else {
                    return;
                };
                let mut rng = Rng::new(1000 + cycle);
                for i in 0.. {
                    let n = 1 + rng.below(600_000);
                    let off = rng.below(len - n);
                    let data = bytes(cycle * 1000 + i, n as usize);
                    edits.lock().unwrap().push((off, data.clone()));
                    if f.write_all_at(&data, off).is_err() || f.sync_all().is_err() {
                        return;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let streamer = {
            let (p, data) = (m.p(&format!("seq-{cycle}.bin")), stream.clone());
            std::thread::spawn(move || {
                let Ok(mut f) = File::create(&p) else { return };
                for part in data.chunks(1 << 20) {
                    if f.write_all(part).is_err() {
                        return;
                    }
                }
            })
        };
        common::wait_until("edits to be fsync'd", Duration::from_secs(60), || {
            done.load(Ordering::SeqCst) > 3 + cycle as usize * 4
        });
        std::thread::sleep(Duration::from_millis(37 * cycle));
        m.crash();
        writer.join().unwrap();
        streamer.join().unwrap();
        m.start(&[]);
        let got = fs::read(&path).unwrap();
        let edits = edits.lock().unwrap();
        let n = done.load(Ordering::SeqCst);
        for (off, data) in edits.iter().take(n) {
            model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        assert_eq!(got.len(), model.len());
        // The edit in flight may be in, in part (its pwrite reached the
        // daemon as several writes) or not at all; nothing else differs.
        let (a, b, new) = match edits.get(n) {
            Some((off, data)) => (*off as usize, *off as usize + data.len(), &data[..]),
            None => (0, 0, &[][..]),
        };
        assert!(
            got[..a] == model[..a] && got[b..] == model[b..],
            "cycle {cycle}: {n} fsync'd edits"
        );
        for i in a..b {
            assert!(
                got[i] == model[i] || got[i] == new[i - a],
                "cycle {cycle}: byte {i}"
            );
            model[i] = got[i];
        }
        let seq = fs::read(m.p(&format!("seq-{cycle}.bin"))).unwrap_or_default();
        assert!(
            seq.len() <= stream.len() && seq == stream[..seq.len()],
            "cycle {cycle}: the sequential file holds bytes never written"
        );
    }
    m.unmount();
    let (ok, out) = revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(ok, "{out}");
}
