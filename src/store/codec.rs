//! Record codecs. The write path uses lz4 (or raw bytes when lz4 does not
//! shrink them): fast enough that a training job never waits on it. Data
//! that has gone cold (a pack repacked) is recoded with zstd, after
//! splitting it into byte planes when that helps: float tensors keep their
//! sign and exponent bytes apart from their noisy low mantissa bytes, and
//! the planes of high bytes compress where the interleaved bytes do not
//! (bf16 and f32 checkpoints, which lz4 leaves at 1.000 of raw).
//!
//! The codec numbers are in `format` (record header byte 1); this module
//! only turns bytes into payloads and back.

use crate::error::{Error, Result};
use crate::format::{
    CODEC_LZ4, CODEC_RAW, CODEC_RAW_COLD, CODEC_ZSTD, CODEC_ZSTD_PLANES2, CODEC_ZSTD_PLANES4,
};

/// zstd's level for cold records: level 3 is zstd's default; higher levels
/// cost several times the CPU for a percent or two on tensors.
const ZSTD_LEVEL: i32 = 3;
/// The sample the plane width is chosen on (the head of the chunk).
const SAMPLE: usize = 16 << 10;

/// The write path's encoding of `data`: (codec, payload), lz4 when smaller.
pub fn encode_hot(data: &[u8]) -> (u8, std::borrow::Cow<'_, [u8]>) {
    let compressed = lz4_flex::block::compress(data);
    if compressed.len() < data.len() {
        (CODEC_LZ4, compressed.into())
    } else {
        (CODEC_RAW, data.into())
    }
}

/// Whether a record of this (unsealed) codec was written by the write path
/// and has not been through [`encode_cold`] yet.
pub fn is_hot(codec: u8) -> bool {
    codec == CODEC_RAW || codec == CODEC_LZ4
}

/// The cold encoding of `data`: zstd of its byte planes of the width that
/// compresses a sample best (1: no planes), or the raw bytes marked as
/// tried when zstd does not shrink them either.
pub fn encode_cold(data: &[u8]) -> Result<(u8, Vec<u8>)> {
    let sample = &data[..data.len().min(SAMPLE)];
    let mut best = (usize::MAX, 1);
    for width in [1usize, 2, 4] {
        let n = zstd_compress(&planes(sample, width), 1)?.len();
        if n < best.0 {
            best = (n, width);
        }
    }
    let width = best.1;
    let packed = zstd_compress(&planes(data, width), ZSTD_LEVEL)?;
    if packed.len() >= data.len() {
        return Ok((CODEC_RAW_COLD, data.to_vec()));
    }
    let codec = match width {
        1 => CODEC_ZSTD,
        2 => CODEC_ZSTD_PLANES2,
        _ => CODEC_ZSTD_PLANES4,
    };
    Ok((codec, packed))
}

/// The raw bytes of a payload of (unsealed) `codec`, `raw_len` of them.
pub fn decode(codec: u8, payload: std::borrow::Cow<[u8]>, raw_len: usize) -> Result<Vec<u8>> {
    let bad = |e: String| Error::corrupt("record payload", e);
    match codec {
        CODEC_RAW | CODEC_RAW_COLD => Ok(payload.into_owned()),
        CODEC_LZ4 => lz4_flex::block::decompress(&payload, raw_len).map_err(|e| bad(e.to_string())),
        CODEC_ZSTD | CODEC_ZSTD_PLANES2 | CODEC_ZSTD_PLANES4 => {
            let out = zstd_decompress(&payload, raw_len).map_err(|e| bad(e.to_string()))?;
            if out.len() != raw_len {
                return Err(bad(format!("{} bytes, not {raw_len}", out.len())));
            }
            Ok(match codec {
                CODEC_ZSTD => out,
                CODEC_ZSTD_PLANES2 => unplanes(&out, 2),
                _ => unplanes(&out, 4),
            })
        }
        other => Err(bad(format!("unknown codec {other}"))),
    }
}

fn zstd_error(e: std::io::Error) -> Error {
    Error::Store(format!("zstd: {e}"))
}

thread_local! {
    /// One zstd context of each kind a thread (a context costs up to a
    /// MiB to set up: not once a chunk).
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd of `data` at `level`, with this thread's context.
fn zstd_compress(data: &[u8], level: i32) -> Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let (at, z) = match c.as_mut() {
            Some(z) => z,
            None => c.insert((
                level,
                zstd::bulk::Compressor::new(level).map_err(zstd_error)?,
            )),
        };
        if *at != level {
            z.set_compression_level(level).map_err(zstd_error)?;
            *at = level;
        }
        z.compress(data).map_err(zstd_error)
    })
}

/// The `raw_len` bytes a zstd frame holds, with this thread's context.
fn zstd_decompress(payload: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let z = match d.as_mut() {
            Some(z) => z,
            None => d.insert(zstd::bulk::Decompressor::new()?),
        };
        z.decompress(payload, raw_len)
    })
}

/// `data` as `width` planes: every width-th byte from offset 0, then from
/// offset 1, ...; a tail shorter than `width` stays at the end as it is.
/// One plane is `data` itself (not copied).
fn planes(data: &[u8], width: usize) -> std::borrow::Cow<'_, [u8]> {
    if width == 1 {
        return data.into();
    }
    let n = data.len() / width;
    let mut out = vec![0u8; data.len()];
    let (body, tail) = out.split_at_mut(n * width);
    match width {
        2 => {
            let (p0, p1) = body.split_at_mut(n);
            for ((w, a), b) in data.chunks_exact(2).zip(p0).zip(p1) {
                (*a, *b) = (w[0], w[1]);
            }
        }
        _ => {
            let (p0, rest) = body.split_at_mut(n);
            let (p1, rest) = rest.split_at_mut(n);
            let (p2, p3) = rest.split_at_mut(n);
            for ((((w, a), b), c), d) in data.chunks_exact(4).zip(p0).zip(p1).zip(p2).zip(p3) {
                (*a, *b, *c, *d) = (w[0], w[1], w[2], w[3]);
            }
        }
    }
    tail.copy_from_slice(&data[n * width..]);
    out.into()
}

/// The inverse of [`planes`].
fn unplanes(data: &[u8], width: usize) -> Vec<u8> {
    let n = data.len() / width;
    let mut out = vec![0u8; data.len()];
    let (body, tail) = data.split_at(n * width);
    match width {
        2 => {
            let (p0, p1) = body.split_at(n);
            for ((w, a), b) in out.chunks_exact_mut(2).zip(p0).zip(p1) {
                (w[0], w[1]) = (*a, *b);
            }
        }
        _ => {
            let (p0, rest) = body.split_at(n);
            let (p1, rest) = rest.split_at(n);
            let (p2, p3) = rest.split_at(n);
            for ((((w, a), b), c), d) in out.chunks_exact_mut(4).zip(p0).zip(p1).zip(p2).zip(p3) {
                (w[0], w[1], w[2], w[3]) = (*a, *b, *c, *d);
            }
        }
    }
    out[n * width..].copy_from_slice(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        crate::chunker::tests::bytes(seed, n)
    }

    /// bf16-like: a smooth high byte, a noisy low byte.
    fn bf16(n: usize) -> Vec<u8> {
        let low = noise(n, 9);
        (0..n)
            .map(|i| {
                if i % 2 == 1 {
                    0x3f + (i / 4096 % 2) as u8
                } else {
                    low[i]
                }
            })
            .collect()
    }

    #[test]
    fn every_codec_round_trips_every_length() {
        for data in [
            Vec::new(),
            vec![7u8],
            noise(3, 1),
            noise(65_537, 2),
            b"text line\n".repeat(5000),
            bf16(65_539),
        ] {
            let (c, p) = encode_hot(&data);
            assert_eq!(decode(c, p, data.len()).unwrap(), data);
            let (c, p) = encode_cold(&data).unwrap();
            assert!(!is_hot(c), "cold codec {c}");
            assert_eq!(decode(c, p.into(), data.len()).unwrap(), data, "codec {c}");
            for w in [2, 4] {
                assert_eq!(unplanes(&planes(&data, w), w), data);
            }
        }
    }

    #[test]
    fn cold_picks_planes_for_tensors_and_marks_noise_tried() {
        let t = bf16(1 << 18);
        let (c, p) = encode_cold(&t).unwrap();
        assert_eq!(c, CODEC_ZSTD_PLANES2);
        assert!(p.len() < t.len() * 6 / 10, "{} of {}", p.len(), t.len());
        let (c, p) = encode_cold(&noise(1 << 16, 3)).unwrap();
        assert_eq!((c, p.len()), (CODEC_RAW_COLD, 1 << 16));
    }

    #[test]
    fn a_damaged_payload_is_an_error_not_a_panic() {
        let data = b"abc".repeat(10_000);
        let (c, mut p) = encode_cold(&data).unwrap();
        p.truncate(p.len() / 2);
        assert!(decode(c, p.into(), data.len()).is_err());
        assert!(decode(99, vec![1, 2].into(), 2).is_err());
        assert!(decode(CODEC_ZSTD, vec![0xff; 40].into(), 100).is_err());
    }
}
