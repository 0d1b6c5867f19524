//! Measures the engine's cost of one small file (create, write 2 KiB,
//! close) without FUSE, step by step: `cargo run --release --example
//! small_files [N]`. What the mount adds on top is kernel round trips.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]
use revfs::engine::Options;
use revfs::format::FileType;
use revfs::ids::Ino;
use revfs::repo::{self, Repo};
use std::time::{Duration, Instant};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |s| s.parse().unwrap());
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = tmp.path().join("s");
    repo::init(&dir, None).unwrap();
    let r = Repo::open(&dir, Options::default()).unwrap();
    let e = &r.engine;
    let body = vec![b'x'; 2048];
    let mut t = [Duration::ZERO; 5];
    let all = Instant::now();
    let mut d = Ino::ROOT;
    let mut committing = Duration::ZERO;
    for i in 0..n {
        if i % 1000 == 0 {
            let name = format!("d{:05}", i / 1000);
            d = e
                .create_node(
                    Ino::ROOT,
                    name.as_bytes(),
                    FileType::Directory,
                    0o755,
                    0,
                    0,
                    0,
                    b"",
                )
                .unwrap()
                .ino;
        }
        if i % 2000 == 1999 {
            let s = Instant::now();
            e.commit(false).unwrap();
            committing += s.elapsed();
        }
        let name = format!("img{i:07}.jpg");
        let s = Instant::now();
        let _ = e.lookup(d, name.as_bytes());
        let a = Instant::now();
        let ino = e
            .create_node(d, name.as_bytes(), FileType::Regular, 0o644, 0, 0, 0, b"")
            .unwrap()
            .ino;
        let fh = e.open(ino, true, false).unwrap();
        let b = Instant::now();
        e.write(fh, 0, &body).unwrap();
        let c = Instant::now();
        e.flush(fh).unwrap();
        let f = Instant::now();
        e.release(fh).unwrap();
        let g = Instant::now();
        for (k, (x, y)) in [(s, a), (a, b), (b, c), (c, f), (f, g)]
            .into_iter()
            .enumerate()
        {
            t[k] += y - x;
        }
    }
    let secs = all.elapsed().as_secs_f64();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "{:.0} files/s: lookup {:.1} us, create+open {:.1}, write {:.1}, flush {:.1}, release {:.1}",
        n as f64 / secs,
        us(t[0]),
        us(t[1]),
        us(t[2]),
        us(t[3]),
        us(t[4])
    );
    println!("commits every 2,000 files: {:.1} us a file", us(committing));
    let s = Instant::now();
    e.commit(true).unwrap();
    println!("commit of {n} files: {:.2} s", s.elapsed().as_secs_f64());
}
