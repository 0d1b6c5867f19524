//! How a delta record's residual is made from a chunk's bytes and the
//! bytes of its bases laid under them (`delta`): XOR (format 7), or the
//! zigzag difference of little-endian elements (format 11).
//!
//! A full-training step moves a float by a unit or so in the last place.
//! XOR of the two bit patterns is small when no carry crosses a bit, but a
//! step that carries (0x..7f -> 0x..80) flips many bits; their integer
//! difference is +1 or -1 all the same, and zigzag (0 -1 1 -2 2 -> 0 1 2 3 4)
//! keeps a small negative number's high bytes zero too. Measured on the
//! benchmark's checkpoints (64 KiB pieces, byte planes, zstd 3, against the
//! key): bf16 residuals 0.186 -> 0.147 of the checkpoint one step away and
//! 0.294 -> 0.248 eleven steps away; f32 0.56 -> 0.51 and 0.62 -> 0.59.
//! Elements start where the chunk's do in the file, which a chunk boundary
//! does not tell: the encoder tries each phase on a sample and keeps the
//! best, and the record says which.

/// A residual's transform; its code rides in the high three bits of the
/// residual codec byte (zero, XOR, in every record before format 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    Xor,
    /// Elements of `width` bytes (2 or 4) starting at byte `phase` of the
    /// chunk; bytes before the first and after the last whole element XOR.
    Diff {
        width: u8,
        phase: u8,
    },
}

/// Every transform, in the order of their codes.
pub const ALL: [Transform; 7] = [
    Transform::Xor,
    Transform::Diff { width: 2, phase: 0 },
    Transform::Diff { width: 2, phase: 1 },
    Transform::Diff { width: 4, phase: 0 },
    Transform::Diff { width: 4, phase: 1 },
    Transform::Diff { width: 4, phase: 2 },
    Transform::Diff { width: 4, phase: 3 },
];

/// Bits of the codec byte below the transform code.
pub const CODE_SHIFT: u32 = 5;

impl Transform {
    pub fn code(self) -> u8 {
        ALL.iter().position(|t| *t == self).unwrap_or(0) as u8
    }

    pub fn from_code(code: u8) -> Option<Transform> {
        ALL.get(code as usize).copied()
    }

    /// `buf` (a chunk's bytes) becomes its residual over `base` (as long).
    pub fn apply(self, buf: &mut [u8], base: &[u8]) {
        self.run(buf, base, true)
    }

    /// `buf` (a residual) becomes the chunk's bytes again.
    pub fn undo(self, buf: &mut [u8], base: &[u8]) {
        self.run(buf, base, false)
    }

    fn run(self, buf: &mut [u8], base: &[u8], forward: bool) {
        let n = buf.len().min(base.len());
        let (buf, base) = (&mut buf[..n], &base[..n]);
        let Transform::Diff { width, phase } = self else {
            xor(buf, base);
            return;
        };
        let (w, p) = (width as usize, (phase as usize).min(n));
        let whole = (n - p) / w * w;
        xor(&mut buf[..p], &base[..p]);
        xor(&mut buf[p + whole..], &base[p + whole..]);
        let (body, under) = (&mut buf[p..p + whole], &base[p..p + whole]);
        match (w, forward) {
            (2, true) => each::<2>(body, under, |a, b| {
                let d = (a as u16).wrapping_sub(b as u16) as i16;
                ((d << 1) ^ (d >> 15)) as u16 as u64
            }),
            (2, false) => each::<2>(body, under, |z, b| {
                let z = z as u16;
                let d = (z >> 1) ^ (z & 1).wrapping_neg();
                (b as u16).wrapping_add(d) as u64
            }),
            (_, true) => each::<4>(body, under, |a, b| {
                let d = (a as u32).wrapping_sub(b as u32) as i32;
                ((d << 1) ^ (d >> 31)) as u32 as u64
            }),
            (_, false) => each::<4>(body, under, |z, b| {
                let z = z as u32;
                let d = (z >> 1) ^ (z & 1).wrapping_neg();
                (b as u32).wrapping_add(d) as u64
            }),
        }
    }
}

/// `f(element of buf, element of base)` into each `W`-byte element of `buf`.
fn each<const W: usize>(buf: &mut [u8], base: &[u8], f: impl Fn(u64, u64) -> u64) {
    for (x, y) in buf.chunks_exact_mut(W).zip(base.chunks_exact(W)) {
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        a[..W].copy_from_slice(x);
        b[..W].copy_from_slice(y);
        let r = f(u64::from_le_bytes(a), u64::from_le_bytes(b)).to_le_bytes();
        x.copy_from_slice(&r[..W]);
    }
}

/// `dst` ^= `src`, byte by byte (as far as the shorter goes).
pub fn xor(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transform_undoes_itself_at_every_length() {
        let noise = crate::chunker::tests::bytes(3, 4099);
        let base = crate::chunker::tests::bytes(4, 4099);
        for t in ALL {
            assert_eq!(Transform::from_code(t.code()), Some(t));
            for n in [0, 1, 2, 3, 5, 8, 4099] {
                let mut b = noise[..n].to_vec();
                t.apply(&mut b, &base[..n]);
                t.undo(&mut b, &base[..n]);
                assert!(b == noise[..n], "{t:?} at {n}");
            }
        }
        assert_eq!(Transform::from_code(7), None);
    }

    #[test]
    fn a_one_ulp_step_that_carries_is_one_small_number_not_many_flipped_bits() {
        // f32 0x3f7fffff -> 0x3f800000: XOR flips 24 bits, the difference is 1.
        let old = 0x3f7f_ffffu32.to_le_bytes();
        let new = 0x3f80_0000u32.to_le_bytes();
        let mut x = old;
        Transform::Xor.apply(&mut x, &new);
        assert_eq!(u32::from_le_bytes(x).count_ones(), 24);
        let mut d = old;
        Transform::Diff { width: 4, phase: 0 }.apply(&mut d, &new);
        assert_eq!(u32::from_le_bytes(d), 1, "zigzag(-1)");
    }
}
