//! Measures how chunk-size parameters trade dedup against chunk count on a
//! workload from `shared/bench/gen_workload.py`:
//!
//!     python3 ../shared/bench/gen_workload.py /tmp/wl --scale 0.5
//!     cargo run --release --example chunk_sizes -- /tmp/wl
//!
//! For each parameter set it prints, per step, the new (not yet seen) chunk
//! bytes, and in total the stored bytes and the chunk count.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: chunk_sizes WORKLOAD_DIR"),
    );
    let mut steps: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("workload dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    steps.sort();
    for (min, avg, max) in [
        (4 << 10, 16 << 10, 64 << 10),
        (16 << 10, 64 << 10, 256 << 10),
        (64 << 10, 256 << 10, 1 << 20),
        (256 << 10, 1 << 20, 4 << 20),
    ] {
        let mut seen = HashSet::new();
        let (mut stored, mut chunks, mut logical) = (0u64, 0u64, 0u64);
        let mut per_step = Vec::new();
        for step in &steps {
            let mut fs = Vec::new();
            files(step, &mut fs);
            let mut new = 0u64;
            for f in fs {
                let data = std::fs::read(&f).expect("read");
                logical += data.len() as u64;
                for c in fastcdc::v2020::FastCDC::new(&data, min, avg, max) {
                    let h = blake3::hash(&data[c.offset..c.offset + c.length]);
                    if seen.insert(h) {
                        new += c.length as u64;
                        chunks += 1;
                    }
                }
            }
            stored += new;
            per_step.push(format!("{:.1}", new as f64 / (1 << 20) as f64));
        }
        println!(
            "avg {:>4} KiB: stored {:.1} MiB of {:.1} MiB logical, {} chunks; new MiB per step: {}",
            avg >> 10,
            stored as f64 / (1 << 20) as f64,
            logical as f64 / (1 << 20) as f64,
            chunks,
            per_step.join(" ")
        );
    }
}
