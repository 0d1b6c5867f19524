//! Measures the per-byte costs on the write path (CDC cut, BLAKE3, lz4) on
//! incompressible data: `cargo run --release --example hot_path`.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]
use std::time::Instant;

fn main() {
    let mut x = 0x1234_5678_9abc_def1u64;
    let data: Vec<u8> = (0..256 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mb = data.len() as f64 / 1e6;
    let t = Instant::now();
    let lens = revfs::chunker::chunk_lengths(&data);
    println!(
        "fastcdc cut:   {:7.0} MB/s ({} chunks)",
        mb / t.elapsed().as_secs_f64(),
        lens.len()
    );
    let t = Instant::now();
    for c in data.chunks(64 << 10) {
        std::hint::black_box(blake3::hash(c));
    }
    println!("blake3:        {:7.0} MB/s", mb / t.elapsed().as_secs_f64());
    let t = Instant::now();
    for c in data.chunks(64 << 10) {
        std::hint::black_box(lz4_flex::block::compress(c));
    }
    println!("lz4 compress:  {:7.0} MB/s", mb / t.elapsed().as_secs_f64());
}
