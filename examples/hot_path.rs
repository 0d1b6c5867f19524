//! Measures the per-byte costs on the write path (CDC cut, BLAKE3, lz4, and
//! for an encrypted store the keyed cut and a whole sealed record) on
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
    let plain = revfs::crypto::Crypto::plain();
    let keyed = revfs::crypto::Crypto::new(&revfs::crypto::MasterKey::random().unwrap()).unwrap();
    let t = Instant::now();
    let n = revfs::chunker::Chunker::new(&keyed).lengths(&data).len();
    println!(
        "keyed cut:     {:7.0} MB/s ({n} chunks)",
        mb / t.elapsed().as_secs_f64()
    );
    for (name, c) in [("plain", &plain), ("encrypted", &keyed)] {
        let t = Instant::now();
        for chunk in data.chunks(64 << 10) {
            let id = c.object_id(revfs::ids::ObjectKind::Chunk, chunk);
            let rec =
                revfs::store::encode_record(c, revfs::ids::ObjectKind::Chunk, id, chunk, false);
            std::hint::black_box(rec.unwrap());
        }
        println!(
            "record {name:9} {:7.0} MB/s (id, lz4, seal)",
            mb / t.elapsed().as_secs_f64()
        );
    }
}
