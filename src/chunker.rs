//! Content-defined chunking with FastCDC (the `fastcdc` crate, 2020 variant).
//!
//! Chunk sizes were chosen by measurement on `shared/bench/gen_workload.py`
//! (see `examples/chunk_sizes.rs` and the README): the workload's changes
//! are whole tensors of 0.06-4 MiB at scale 1, so the cost of a changed
//! tensor is its size plus about one chunk on each edge. Smaller chunks
//! dedup fine-tune steps better but cost an index entry and a manifest
//! extent (41 bytes) each; 64 KiB average keeps both the edge overhead
//! (<= 12% on the finetune steps) and the metadata (< 0.1% of data) small.
//! The minimum and maximum are the usual 1/4 and 4x of the average.

use std::io::Read;

pub const MIN_CHUNK: usize = 16 << 10;
pub const AVG_CHUNK: usize = 64 << 10;
pub const MAX_CHUNK: usize = 256 << 10;

/// Cuts `source` into chunks and hands each to `sink` in order.
pub fn chunk_stream<R: Read>(
    source: R,
    mut sink: impl FnMut(&[u8]) -> crate::Result<()>,
) -> crate::Result<()> {
    for chunk in fastcdc::v2020::StreamCDC::new(source, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK) {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => crate::Error::Io(io),
            other => crate::Error::Io(std::io::Error::other(other.to_string())),
        })?;
        sink(&chunk.data)?;
    }
    Ok(())
}

/// Chunk lengths of an in-memory buffer (for tests and measurements).
pub fn chunk_lengths(data: &[u8]) -> Vec<usize> {
    fastcdc::v2020::FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| c.length)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift), so the test needs no RNG crate.
    pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn boundaries_are_pinned_for_a_fixed_seed() {
        let data = bytes(42, 1 << 20);
        let lens = chunk_lengths(&data);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        // Pinned: a change here changes every stored chunk id.
        assert_eq!(lens, PINNED);
    }
    const PINNED: &[usize] = &[];

    #[test]
    fn insertion_near_start_keeps_later_chunks() {
        let data = bytes(7, 4 << 20);
        let mut edited = data.clone();
        edited.splice(1000..1000, b"inserted bytes".iter().copied());
        let hashes = |d: &[u8]| -> Vec<blake3::Hash> {
            let mut off = 0;
            chunk_lengths(d)
                .into_iter()
                .map(|l| {
                    off += l;
                    blake3::hash(&d[off - l..off])
                })
                .collect()
        };
        let (a, b) = (hashes(&data), hashes(&edited));
        let shared = b.iter().filter(|h| a.contains(h)).count();
        assert!(a.len() > 20, "{}", a.len());
        assert!(
            shared >= a.len() - 2,
            "only {shared} of {} chunks kept",
            a.len()
        );
    }

    #[test]
    fn stream_and_slice_agree() {
        let data = bytes(3, 3 << 20);
        let mut lens = Vec::new();
        chunk_stream(&data[..], |c| {
            lens.push(c.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(lens, chunk_lengths(&data));
    }
}
