//! Cold records (format 6): a repack recodes the write path's raw and lz4
//! chunks with zstd, after byte planes where they help; `prune
//! --recompress` (and a mounted store by itself) repacks the packs that
//! are still mostly hot. Through a real mount: the store shrinks, every
//! byte reads back (live, snapshots, a recovered replica), damage is EIO.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, Rng, packs_bytes, revfs, verify_clean};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// A bf16 tensor as a training job saves it: the high byte (sign,
/// exponent, top of the mantissa) of every value is nearly the same, the
/// low byte is noise. lz4 leaves it as it is; 2 byte planes + zstd do not.
fn tensor(seed: u64, values: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(values * 2);
    for _ in 0..values {
        let x = r.next();
        out.push((x >> 8) as u8);
        out.push(0x3c | ((x >> 40) & 3) as u8);
    }
    out
}

fn save(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn prune_json(target: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&std::ffi::OsStr> = vec!["prune".as_ref(), target.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push("--json".as_ref());
    let (ok, out) = revfs(&args);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

struct Files {
    v1: Vec<u8>,
    v2: Vec<u8>,
    log: Vec<u8>,
    noise: Vec<u8>,
}

/// Two versions of a checkpoint (v1 named "before"), a log, random bytes.
fn write_files(m: &Mount) -> Files {
    let f = Files {
        v1: tensor(1, 3 << 20),
        v2: tensor(2, 3 << 20),
        log: (0..60_000)
            .flat_map(|i| format!("step {i} loss 0.{:04}\n", i % 9973).into_bytes())
            .collect(),
        noise: Rng::new(9).bytes(1 << 20),
    };
    save(&m.p("ckpt.bin"), &f.v1);
    let (ok, out) = revfs(&[
        "snapshot".as_ref(),
        "create".as_ref(),
        m.mnt.as_os_str(),
        "before".as_ref(),
    ]);
    assert!(ok, "{out}");
    save(&m.p("ckpt.bin"), &f.v2);
    save(&m.p("train.log"), &f.log);
    save(&m.p("noise.bin"), &f.noise);
    f
}

fn check_files(m: &Mount, f: &Files) {
    assert!(fs::read(m.p("ckpt.bin")).unwrap() == f.v2, "ckpt.bin");
    assert!(
        fs::read(m.p(".snapshots/before/ckpt.bin")).unwrap() == f.v1,
        "the snapshot's ckpt.bin"
    );
    assert!(fs::read(m.p("train.log")).unwrap() == f.log, "train.log");
    assert!(fs::read(m.p("noise.bin")).unwrap() == f.noise, "noise.bin");
}

#[test]
fn prune_recompress_through_the_mount_shrinks_the_store_and_every_byte_reads_back() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let f = write_files(&m);
    let before = packs_bytes(&m.store);
    // Through the daemon (the control socket), while it serves.
    let r = prune_json(&m.mnt, &["--recompress"]);
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    let after = packs_bytes(&m.store);
    // The checkpoints (12 MiB, to ~0.6) and the log shrink; the noise not.
    assert!(
        after < before * 3 / 4,
        "packs {before} -> {after} bytes: {r}"
    );
    check_files(&m, &f);
    // A second round finds nothing hot left to recode.
    let again = prune_json(&m.mnt, &["--recompress"]);
    assert_eq!(again["packs_repacked"], 0, "{again}");
    m.unmount();
    verify_clean(&m.store);
    // Cold again after a remount: the page cache cannot hide a bad decode.
    m.start(&[]);
    check_files(&m, &f);
    m.unmount();
}

#[test]
fn a_mounted_store_recodes_its_sealed_packs_by_itself() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let f = write_files(&m);
    // The unmount seals the pack; the next mount's round finds it.
    m.unmount();
    let before = packs_bytes(&m.store);
    m.start(&["--prune-interval", "200ms"]);
    common::wait_until(
        "the daemon to recode the sealed pack",
        Duration::from_secs(60),
        || packs_bytes(&m.store) < before * 3 / 4,
    );
    check_files(&m, &f);
    m.unmount();
    verify_clean(&m.store);
}

#[test]
fn a_flipped_byte_in_a_cold_record_is_eio_never_wrong_bytes() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    let data = tensor(5, 2 << 20);
    save(&m.p("t.bin"), &data);
    m.unmount();
    let r = prune_json(&m.store, &["--recompress"]);
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    // The newest pack holds the recoded chunks: flip a byte in its middle.
    let mut packs: Vec<_> = fs::read_dir(m.store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort();
    let pack = packs.last().unwrap();
    let mut bytes = fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(pack, &bytes).unwrap();
    m.start(&[]);
    let e = fs::read(m.p("t.bin")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    m.unmount();
    let (ok, out) = revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(!ok && !out.contains(" 0 corrupt"), "{out}");
}

#[test]
fn a_replica_of_a_recompressed_store_recovers_byte_exact() {
    let Some((mut m, replica)) = Mount::with_replica(&[]) else {
        return;
    };
    let f = write_files(&m);
    common::wait_replicated(&m.store, Duration::from_secs(30));
    prune_json(&m.mnt, &["--recompress"]);
    common::wait_replicated(&m.store, Duration::from_secs(30));
    m.unmount();
    let rec = m.tmp.path().join("recovered");
    let (ok, out) = revfs(&["recover".as_ref(), replica.as_os_str(), rec.as_os_str()]);
    assert!(ok, "{out}");
    verify_clean(&rec);
    let mnt = m.tmp.path().join("mnt-rec");
    fs::create_dir(&mnt).unwrap();
    let mut back = Mount::attach(rec, mnt, m.tmp.path().join("rec.log"));
    back.start(&[]);
    check_files(&back, &f);
    back.unmount();
}
