//! Delta records (format 7; the layout is in `format`): a chunk stored as
//! the XOR (or, from format 11, the zigzag difference: `residual`) of its
//! bytes with bytes of other chunks, its bases. A
//! full-training step changes every float of a checkpoint by about one
//! unit in the last place, so an old version XOR another one at the same
//! offsets is mostly zero bits: its byte planes compress several times
//! better than the floats themselves (`codec::encode_cold` encodes the
//! residual). Which chunks become deltas of which bytes is the prune's
//! call (`retention::deltas`); this module only builds and takes apart
//! payloads.

use super::codec;
use super::residual::{self, Transform};
use crate::error::{Error, Result};
use crate::ids::ObjectId;

/// Segments a delta record has at most.
pub const MAX_SEGMENTS: usize = 32;
const CHECK_LEN: usize = 16;
const SEGMENT_LEN: usize = 40;
/// The id of a segment with no base (its bytes are stored as they are).
pub const NO_BASE: ObjectId = ObjectId([0; 32]);

/// `len` bytes of the chunk, XOR the bytes `start..start + len` of chunk
/// `base` (or nothing, for [`NO_BASE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub base: ObjectId,
    pub start: u32,
    pub len: u32,
}

/// The chunks `segments` name, sorted, each once.
pub fn bases_of(segments: &[Segment]) -> Vec<ObjectId> {
    let mut b: Vec<ObjectId> = segments
        .iter()
        .map(|s| s.base)
        .filter(|b| *b != NO_BASE)
        .collect();
    b.sort();
    b.dedup();
    b
}

/// A payload taken apart (its check passed).
pub struct Parsed<'a> {
    pub segments: Vec<Segment>,
    inner: u8,
    body: &'a [u8],
}

/// The payload of `raw` as a delta of `segments`, whose base chunks
/// `base_of` gives.
pub fn encode(
    raw: &[u8],
    segments: &[Segment],
    base_of: impl FnMut(&ObjectId) -> Result<std::sync::Arc<Vec<u8>>>,
) -> Result<Vec<u8>> {
    let n = segments.len();
    let covered: u64 = segments.iter().map(|s| s.len as u64).sum();
    if n == 0 || n > MAX_SEGMENTS || covered != raw.len() as u64 {
        return Err(Error::Store(format!(
            "delta of {} bytes: {n} segments covering {covered}",
            raw.len()
        )));
    }
    let (under, _) = base_image(raw.len(), segments, base_of)?;
    let (transform, inner, body) = encode_residual(raw, &under)?;
    let mut out = Vec::with_capacity(CHECK_LEN + 2 + n * SEGMENT_LEN + body.len());
    out.extend_from_slice(&[0; CHECK_LEN]);
    out.push(inner | transform.code() << residual::CODE_SHIFT);
    out.push(n as u8);
    for s in segments {
        out.extend_from_slice(&s.base.0);
        out.extend_from_slice(&s.start.to_le_bytes());
        out.extend_from_slice(&s.len.to_le_bytes());
    }
    out.extend_from_slice(&body);
    let check = blake3::hash(&out[CHECK_LEN..]);
    out[..CHECK_LEN].copy_from_slice(&check.as_bytes()[..CHECK_LEN]);
    Ok(out)
}

/// The residual of `raw` over `under` (its segments' bytes) made by the
/// transform that encodes smallest, encoded cold: (transform, codec, bytes).
fn encode_residual(raw: &[u8], under: &[u8]) -> Result<(Transform, u8, Vec<u8>)> {
    let (transform, _) = best_transform(raw, under)?;
    let mut residual = raw.to_vec();
    transform.apply(&mut residual, under);
    let (inner, body) = codec::encode_cold(&residual)?;
    Ok((transform, inner, body))
}

/// Bytes of a chunk's head tried with each transform.
const TRY_BYTES: usize = 16 << 10;

/// The transform whose residual of the chunk's head (`raw` over `under`)
/// encodes smallest (XOR on a tie), and that size.
fn best_transform(raw: &[u8], under: &[u8]) -> Result<(Transform, usize)> {
    let n = raw.len().min(TRY_BYTES);
    let mut best = (usize::MAX, Transform::Xor);
    for t in residual::ALL {
        let mut r = raw[..n].to_vec();
        t.apply(&mut r, &under[..n]);
        let size = codec::encode_cold(&r)?.1.len();
        if size < best.0 {
            best = (size, t);
        }
    }
    Ok((best.1, best.0))
}

/// `segments` rebuilt on the bases of `via` instead of on `via`: each
/// segment on `via` is replaced by the parts of `via`'s own segments
/// (`of_via`, which cover `via` exactly) under its range. XOR is
/// associative, so encoding the same bytes against the result stores what
/// `via` added in the residual, and `via` is needed no more. Neighbouring
/// segments that continue each other are merged. None when `of_via` does
/// not cover the range, or the result has too many segments.
pub fn compose(segments: &[Segment], via: &ObjectId, of_via: &[Segment]) -> Option<Vec<Segment>> {
    let mut out: Vec<Segment> = Vec::new();
    let mut push = |s: Segment| match out.last_mut() {
        Some(l)
            if l.base == s.base
                && (s.base == NO_BASE || l.start.checked_add(l.len) == Some(s.start)) =>
        {
            l.len += s.len;
        }
        _ => out.push(s),
    };
    for s in segments {
        if s.base != *via {
            push(*s);
            continue;
        }
        let (lo, hi) = (s.start as u64, s.start as u64 + s.len as u64);
        let (mut at, mut covered) = (0u64, 0u64);
        for v in of_via {
            let (vlo, vhi) = (at, at + v.len as u64);
            at = vhi;
            let (a, b) = (vlo.max(lo), vhi.min(hi));
            if a >= b {
                continue;
            }
            covered += b - a;
            let start = if v.base == NO_BASE {
                0
            } else {
                v.start + (a - vlo) as u32
            };
            push(Segment {
                base: v.base,
                start,
                len: (b - a) as u32,
            });
        }
        if covered != hi - lo {
            return None;
        }
    }
    (out.len() <= MAX_SEGMENTS).then_some(out)
}

/// Takes a payload apart, checking it on its own (not its bases).
pub fn parse(payload: &[u8]) -> Result<Parsed<'_>> {
    if payload.len() < CHECK_LEN + 2 {
        return Err(Error::corrupt("delta record", "payload cut short"));
    }
    let check = blake3::hash(&payload[CHECK_LEN..]);
    if payload[..CHECK_LEN] != check.as_bytes()[..CHECK_LEN] {
        return Err(Error::corrupt(
            "delta record",
            "payload does not match its check",
        ));
    }
    let (segments, end) = segments_at(payload)?;
    Ok(Parsed {
        segments,
        inner: payload[CHECK_LEN],
        body: &payload[end..],
    })
}

/// Bytes of a payload's head that hold its segments (at most): what a
/// reader of bases alone reads of a plain record.
pub const HEAD_LEN: usize = CHECK_LEN + 2 + MAX_SEGMENTS * SEGMENT_LEN;

/// The segments of a payload of which only the head may be there (the
/// check is not looked at: the whole record is checked when it is read).
pub fn segments_of_head(head: &[u8]) -> Result<Vec<Segment>> {
    Ok(segments_at(head)?.0)
}

/// The segments of a payload and where they end.
fn segments_at(payload: &[u8]) -> Result<(Vec<Segment>, usize)> {
    let n = *payload
        .get(CHECK_LEN + 1)
        .ok_or_else(|| Error::corrupt("delta record", "payload cut short"))? as usize;
    let end = CHECK_LEN + 2 + n * SEGMENT_LEN;
    if n == 0 || n > MAX_SEGMENTS || payload.len() < end {
        return Err(Error::corrupt("delta record", "bad segment count"));
    }
    let segments = payload[CHECK_LEN + 2..end]
        .chunks_exact(SEGMENT_LEN)
        .map(|s| {
            let u32_at = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
            let mut base = [0u8; 32];
            base.copy_from_slice(&s[..32]);
            Segment {
                base: ObjectId(base),
                start: u32_at(32),
                len: u32_at(36),
            }
        })
        .collect();
    Ok((segments, end))
}

impl Parsed<'_> {
    /// The chunk's bytes (`raw_len` of them), with `base_of` giving each
    /// segment's base bytes (the whole base chunk).
    pub fn rebuild(
        &self,
        raw_len: usize,
        mut base_of: impl FnMut(&ObjectId) -> Result<std::sync::Arc<Vec<u8>>>,
    ) -> Result<Vec<u8>> {
        let mut out = self.residual(raw_len)?;
        let covered: u64 = self.segments.iter().map(|s| s.len as u64).sum();
        if covered > out.len() as u64 {
            return Err(Error::corrupt("delta record", "segments past its end"));
        }
        let (under, at) = base_image(out.len(), &self.segments, &mut base_of)?;
        if at != out.len() {
            return Err(Error::corrupt("delta record", "segments do not cover it"));
        }
        self.transform()?.undo(&mut out, &under);
        Ok(out)
    }

    fn transform(&self) -> Result<Transform> {
        Transform::from_code(self.inner >> residual::CODE_SHIFT)
            .ok_or_else(|| Error::corrupt("delta record", "bad residual transform"))
    }

    /// The decoded residual (what [`parse`]'s check vouches for, before
    /// the bases are applied).
    pub fn residual(&self, raw_len: usize) -> Result<Vec<u8>> {
        self.transform()?;
        let codec = self.inner & ((1 << residual::CODE_SHIFT) - 1);
        if !matches!(
            codec,
            crate::format::CODEC_ZSTD
                | crate::format::CODEC_ZSTD_PLANES2
                | crate::format::CODEC_ZSTD_PLANES4
                | crate::format::CODEC_RAW_COLD
        ) {
            return Err(Error::corrupt("delta record", "bad residual codec"));
        }
        let out = codec::decode(codec, self.body.into(), raw_len)?;
        if out.len() != raw_len {
            return Err(Error::corrupt(
                "delta record",
                "residual of the wrong length",
            ));
        }
        Ok(out)
    }
}

/// The size of the residual `encode` would store for `raw` (or the head
/// of a chunk) over `segments`, their base chunks from `base_of`.
pub fn residual_len(
    raw: &[u8],
    segments: &[Segment],
    base_of: impl FnMut(&ObjectId) -> Result<std::sync::Arc<Vec<u8>>>,
) -> Result<usize> {
    let (under, _) = base_image(raw.len(), segments, base_of)?;
    if raw.len() <= TRY_BYTES {
        // All of it was encoded while the transform was chosen.
        return Ok(best_transform(raw, &under)?.1);
    }
    Ok(encode_residual(raw, &under)?.2.len())
}

/// The bytes of `segments` laid one after the other, `len` of them (zeros
/// under a "no base" segment and past the last), their base chunks from
/// `base_of`; and how many the segments covered.
fn base_image(
    len: usize,
    segments: &[Segment],
    mut base_of: impl FnMut(&ObjectId) -> Result<std::sync::Arc<Vec<u8>>>,
) -> Result<(Vec<u8>, usize)> {
    let mut out = vec![0u8; len];
    let mut at = 0usize;
    for s in segments {
        if at >= len {
            break;
        }
        let n = (s.len as usize).min(len - at);
        if s.base != NO_BASE {
            let b = base_of(&s.base)?;
            let src = b
                .get(s.start as usize..s.start as usize + n)
                .ok_or_else(|| {
                    Error::corrupt("delta record", "segment past the end of its base")
                })?;
            out[at..at + n].copy_from_slice(src);
        }
        at += n;
    }
    Ok((out, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_composed_through_its_base_rebuilds_the_same_bytes_without_it() {
        let id = |b: u8| ObjectId([b; 32]);
        let c: Vec<u8> = (0..100u32).map(|i| (i * 7) as u8).collect();
        // b: its first 60 bytes on c from 10, the rest its own.
        let b_segs = [
            Segment {
                base: id(3),
                start: 10,
                len: 60,
            },
            Segment {
                base: NO_BASE,
                start: 0,
                len: 40,
            },
        ];
        let mut b: Vec<u8> = (0..100u32).map(|i| (i * 13 + 1) as u8).collect();
        let under = base_image(b.len(), &b_segs, |_| Ok(std::sync::Arc::new(c.clone())));
        residual::xor(&mut b, &under.unwrap().0);
        // d: 50 bytes on b from 30 (across b's two segments), 20 its own.
        let d_segs = [
            Segment {
                base: id(2),
                start: 30,
                len: 50,
            },
            Segment {
                base: NO_BASE,
                start: 0,
                len: 20,
            },
        ];
        let d: Vec<u8> = (0..70u32).map(|i| (i * 5 + 3) as u8).collect();
        let bases = |x: &ObjectId| {
            Ok(std::sync::Arc::new(if *x == id(2) {
                b.clone()
            } else {
                c.clone()
            }))
        };
        let composed = compose(&d_segs, &id(2), &b_segs).unwrap();
        assert_eq!(
            composed,
            vec![
                Segment {
                    base: id(3),
                    start: 40,
                    len: 30
                },
                Segment {
                    base: NO_BASE,
                    start: 0,
                    len: 40
                },
            ]
        );
        assert!(composed.iter().all(|s| s.base != id(2)));
        let payload = encode(&d, &composed, bases).unwrap();
        let rebuilt = parse(&payload).unwrap().rebuild(d.len(), bases).unwrap();
        assert_eq!(rebuilt, d);
        // A range the base's segments do not cover: no composition.
        assert!(compose(&d_segs, &id(2), &b_segs[..1]).is_none());
    }
    use crate::ids::ObjectKind;
    use std::sync::Arc;

    /// f32-like words and the same words with their low byte nudged.
    fn versions(n: usize) -> (Vec<u8>, Vec<u8>) {
        let noise = crate::chunker::tests::bytes(5, n);
        let old: Vec<u8> = (0..n)
            .map(|i| if i % 4 >= 2 { 0x3c } else { noise[i] })
            .collect();
        let new: Vec<u8> = old
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if i % 4 == 0 {
                    b ^ (noise[i / 4] & 3)
                } else {
                    *b
                }
            })
            .collect();
        (old, new)
    }

    #[test]
    fn a_delta_round_trips_and_is_small() {
        let (old, new) = versions(70_001);
        let base = Arc::new(new.clone());
        let bid = ObjectId::of(ObjectKind::Chunk, &new);
        // Two segments of the base and a tail with none.
        let segs = [
            Segment {
                base: bid,
                start: 0,
                len: 40_000,
            },
            Segment {
                base: bid,
                start: 40_000,
                len: 30_000,
            },
            Segment {
                base: NO_BASE,
                start: 0,
                len: 1,
            },
        ];
        let p = encode(&old, &segs, |_| Ok(base.clone())).unwrap();
        assert!(p.len() < old.len() / 4, "{} of {}", p.len(), old.len());
        let parsed = parse(&p).unwrap();
        assert_eq!(parsed.segments, segs);
        assert_eq!(segments_of_head(&p[..p.len().min(HEAD_LEN)]).unwrap(), segs);
        let back = parsed.rebuild(old.len(), |_| Ok(base.clone())).unwrap();
        assert!(back == old);
    }

    #[test]
    fn float_steps_that_carry_pick_the_difference_at_the_elements_phase_and_old_xor_records_read() {
        // f32 words whose low 16 bits step by one, often across a carry; the
        // chunk starts 2 bytes into an element (as a chunk may in its file).
        let noise = crate::chunker::tests::bytes(9, 80_002);
        let words = |k: u32| -> Vec<u8> {
            (0..20_000u32)
                .flat_map(|i| {
                    let w = u32::from_le_bytes([noise[4 * i as usize], 0xff, 0x7f, 0x3f]);
                    (w.wrapping_add(k * (i % 3))).to_le_bytes()
                })
                .collect()
        };
        let (old, new) = (words(0)[2..].to_vec(), Arc::new(words(1)[2..].to_vec()));
        let segs = [Segment {
            base: ObjectId([5; 32]),
            start: 0,
            len: old.len() as u32,
        }];
        let p = encode(&old, &segs, |_| Ok(new.clone())).unwrap();
        let parsed = parse(&p).unwrap();
        assert_eq!(
            parsed.transform().unwrap(),
            Transform::Diff { width: 4, phase: 2 }
        );
        assert!(parsed.rebuild(old.len(), |_| Ok(new.clone())).unwrap() == old);
        // The same chunk as a format-7 record (XOR, code 0) is bigger, and
        // reads as it always did.
        let mut x = old.clone();
        residual::xor(&mut x, &new);
        let (inner, body) = codec::encode_cold(&x).unwrap();
        assert!(
            body.len() > p.len() * 3 / 2,
            "xor {} diff {}",
            body.len(),
            p.len()
        );
        let mut v7 = vec![0u8; CHECK_LEN];
        v7.push(inner);
        v7.push(1);
        v7.extend_from_slice(&segs[0].base.0);
        v7.extend_from_slice(&0u32.to_le_bytes());
        v7.extend_from_slice(&segs[0].len.to_le_bytes());
        v7.extend_from_slice(&body);
        let check = blake3::hash(&v7[CHECK_LEN..]);
        v7[..CHECK_LEN].copy_from_slice(&check.as_bytes()[..CHECK_LEN]);
        let parsed = parse(&v7).unwrap();
        assert_eq!(parsed.transform().unwrap(), Transform::Xor);
        assert!(parsed.rebuild(old.len(), |_| Ok(new.clone())).unwrap() == old);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let (old, new) = versions(10_000);
        let segs = [Segment {
            base: ObjectId([1; 32]),
            start: 0,
            len: 10_000,
        }];
        let base = Arc::new(new.clone());
        let mut p = encode(&old, &segs, |_| Ok(base.clone())).unwrap();
        let n = p.len();
        p[n - 1] ^= 1;
        assert!(parse(&p).is_err());
        assert!(parse(&p[..10]).is_err());
        p[n - 1] ^= 1;
        // A base shorter than its segment, a wrong length, a bad cover.
        let parsed = parse(&p).unwrap();
        assert!(
            parsed
                .rebuild(10_000, |_| Ok(Arc::new(vec![0; 5])))
                .is_err()
        );
        assert!(
            parsed
                .rebuild(9_999, |_| Ok(Arc::new(new.clone())))
                .is_err()
        );
        assert!(encode(&old, &segs[..0], |_| Ok(base.clone())).is_err());
        // A transform code no release wrote (7): refused, not guessed.
        p[CHECK_LEN] = p[CHECK_LEN] & 0x1f | 7 << residual::CODE_SHIFT;
        let check = blake3::hash(&p[CHECK_LEN..]);
        p[..CHECK_LEN].copy_from_slice(&check.as_bytes()[..CHECK_LEN]);
        let parsed = parse(&p).unwrap();
        assert!(parsed.residual(10_000).is_err());
        assert!(parsed.rebuild(10_000, |_| Ok(base.clone())).is_err());
    }
}
