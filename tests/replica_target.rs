//! The replica target interface, against a directory and a real S3 server
//! (SeaweedFS, started by the test): the same behaviour from both.
// Tests may unwrap (and the shared helpers call libc).
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::s3::Seaweed;
use revfs::replica::target::{DirTarget, S3Config, S3Target, Target};
use std::fs::File;
use std::io::Write;
use std::path::Path;

fn file_of(dir: &Path, name: &str, bytes: &[u8]) -> File {
    let p = dir.join(name);
    File::create(&p).unwrap().write_all(bytes).unwrap();
    File::open(&p).unwrap()
}

/// What every target must do.
fn conformance(t: &dyn Target, scratch: &Path) {
    let mut rng = common::Rng::new(5);
    let small = rng.bytes(100_000);
    let f = file_of(scratch, "small", &small);
    // Immutable: created once; the same bytes again are fine, others are refused.
    t.put_immutable("packs/0001.pack", &f, 0, small.len() as u64)
        .unwrap();
    t.put_immutable("packs/0001.pack", &f, 0, small.len() as u64)
        .unwrap();
    assert_eq!(t.get("packs/0001.pack").unwrap().unwrap(), small);
    let e = t.put_immutable("packs/0001.pack", &f, 1, 1000).unwrap_err();
    assert!(e.to_string().contains("other bytes"), "{e}");
    assert_eq!(t.get("packs/0001.pack").unwrap().unwrap(), small);
    // A range of a file (a part of an open pack).
    t.put_immutable("packs/0002-10.part", &f, 10, 500).unwrap();
    assert_eq!(
        t.get_range("packs/0002-10.part", 100, 50).unwrap(),
        small[110..160]
    );
    // A large object (multipart on S3), read back in ranges.
    let big = rng.bytes(40 << 20);
    let fb = file_of(scratch, "big", &big);
    t.put_immutable("packs/0003.pack", &fb, 0, big.len() as u64)
        .unwrap();
    t.put_immutable("packs/0003.pack", &fb, 0, big.len() as u64)
        .unwrap();
    for at in [0usize, 12345, (16 << 20) - 7, big.len() - 100] {
        assert_eq!(
            t.get_range("packs/0003.pack", at as u64, 100).unwrap(),
            big[at..at + 100]
        );
    }
    assert!(
        t.get_range("packs/0003.pack", big.len() as u64 - 10, 100)
            .is_err()
    );
    // Replaceable objects.
    t.put_replace("heads/0005.head", b"one").unwrap();
    t.put_replace("heads/0005.head", b"two").unwrap();
    assert_eq!(t.get("heads/0005.head").unwrap().unwrap(), b"two");
    assert_eq!(t.get("heads/0006.head").unwrap(), None);
    // Listing: names under a prefix, with sizes, sorted.
    let packs = t.list("packs/").unwrap();
    assert_eq!(
        packs,
        [
            ("packs/0001.pack".to_string(), small.len() as u64),
            ("packs/0002-10.part".to_string(), 500),
            ("packs/0003.pack".to_string(), big.len() as u64),
        ]
    );
    assert_eq!(t.list("packs/0002").unwrap().len(), 1);
    assert_eq!(t.list("names/").unwrap(), []);
    // Deleting: gone, and a missing object is no error.
    t.delete("packs/0002-10.part").unwrap();
    t.delete("packs/0002-10.part").unwrap();
    assert_eq!(t.get("packs/0002-10.part").unwrap(), None);
    assert_eq!(t.list("packs/").unwrap().len(), 2);
}

#[test]
fn a_directory_target_keeps_the_promises() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("replica");
    std::fs::create_dir(&root).unwrap();
    conformance(&DirTarget::new(root.clone()), tmp.path());
    // Nothing half-made is left behind.
    let names: Vec<_> = walk(&root);
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn an_s3_target_keeps_the_same_promises_and_says_what_went_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = Seaweed::start("replicas");
    let t = S3Target::with_config("s3://replicas/store-a", &s3.config()).unwrap();
    conformance(&t, tmp.path());
    // Another prefix of the same bucket is another replica.
    let other = S3Target::with_config("s3://replicas/store-b/", &s3.config()).unwrap();
    assert_eq!(other.list("packs/").unwrap(), []);
    let f = file_of(tmp.path(), "x", b"hello");
    // A wrong key, a missing bucket: one clear line each.
    let bad = S3Config {
        secret_access_key: Some("wrong".into()),
        ..s3.config()
    };
    let e = S3Target::with_config("s3://replicas/store-a", &bad)
        .unwrap()
        .put_immutable("packs/9.pack", &f, 0, 5)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("s3://replicas/store-a/packs/9.pack: "), "{e}");
    assert!(!e.contains('\n') && e.contains("PermissionDenied"), "{e}");
    let e = S3Target::with_config("s3://no-such-bucket/x", &s3.config())
        .unwrap()
        .list("packs/")
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n') && e.contains("no-such-bucket"), "{e}");
    // The server goes away: an error after bounded retries; it comes back: it works.
    s3.stop();
    let start = std::time::Instant::now();
    assert!(t.put_replace("heads/0007.head", b"x").is_err());
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    s3.restart();
    t.put_replace("heads/0007.head", b"x").unwrap();
    assert_eq!(
        t.list("packs/").unwrap().len(),
        2,
        "the data survived the restart"
    );
}
