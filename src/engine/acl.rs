//! POSIX ACLs. With `FUSE_POSIX_ACL` the kernel enforces them (with
//! `default_permissions`) from the `system.posix_acl_access` xattr, which
//! revfs stores like any xattr (so snapshots keep it). What is left to a
//! FUSE filesystem is done here: an access ACL sets the mode's permission
//! bits and chmod sets the ACL's owner, mask and other entries (the two
//! always agree), and a node created in a directory with a default ACL
//! gets it as its access ACL, masked by the mode asked for, instead of the
//! umask (a directory also inherits the default ACL itself).
//!
//! The xattr format is the kernel's: a little-endian u32 version (2), then
//! 8-byte entries (u16 tag, u16 permissions, u32 user or group id).

use crate::error::{Error, Result};

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

impl Acl {
    /// A well-formed ACL: version 2, one owner, owning group and other
    /// entry, a mask when there are named entries, permissions within rwx.
    pub fn parse(b: &[u8]) -> Result<Acl> {
        if b.len() < 4 || !(b.len() - 4).is_multiple_of(8) {
            return Err(Error::Invalid);
        }
        if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != VERSION {
            return Err(Error::Invalid);
        }
        let entries: Vec<Entry> = b[4..]
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let count = |t: u16| entries.iter().filter(|e| e.tag == t).count();
        let named = count(USER) + count(GROUP);
        let known = [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER];
        if count(USER_OBJ) != 1
            || count(GROUP_OBJ) != 1
            || count(OTHER) != 1
            || count(MASK) > 1
            || (named > 0 && count(MASK) != 1)
            || entries
                .iter()
                .any(|e| !known.contains(&e.tag) || e.perm & !7 != 0)
        {
            return Err(Error::Invalid);
        }
        Ok(Acl(entries))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    fn perm(&self, tag: u16) -> Option<u16> {
        self.0.iter().find(|e| e.tag == tag).map(|e| e.perm)
    }

    /// The permission bits (of 0o777) the ACL means: the owner's, the
    /// mask's (or the owning group's, without one) and other's.
    pub fn mode_bits(&self) -> u16 {
        let group = self.perm(MASK).or(self.perm(GROUP_OBJ)).unwrap_or(0);
        (self.perm(USER_OBJ).unwrap_or(0) << 6) | (group << 3) | self.perm(OTHER).unwrap_or(0)
    }

    /// Whether it says no more than a mode does (no named entries, no mask).
    pub fn is_minimal(&self) -> bool {
        self.0.len() == 3
    }

    /// chmod: the owner, mask (or owning group) and other entries take
    /// `mode`'s bits.
    pub fn chmod(&mut self, mode: u16) {
        let has_mask = self.perm(MASK).is_some();
        for e in &mut self.0 {
            match e.tag {
                USER_OBJ => e.perm = (mode >> 6) & 7,
                MASK => e.perm = (mode >> 3) & 7,
                GROUP_OBJ if !has_mask => e.perm = (mode >> 3) & 7,
                OTHER => e.perm = mode & 7,
                _ => {}
            }
        }
    }

    /// A parent's default ACL as the access ACL of a node created with
    /// `mode` (the kernel's `posix_acl_create_masq`): the owner, mask (or
    /// owning group) and other entries lose what `mode` does not grant;
    /// returns the node's permission bits.
    pub fn create_masq(&mut self, mode: u16) -> u16 {
        let has_mask = self.perm(MASK).is_some();
        for e in &mut self.0 {
            match e.tag {
                USER_OBJ => e.perm &= (mode >> 6) & 7,
                MASK => e.perm &= (mode >> 3) & 7,
                GROUP_OBJ if !has_mask => e.perm &= (mode >> 3) & 7,
                OTHER => e.perm &= mode & 7,
                _ => {}
            }
        }
        (mode & !0o777) | self.mode_bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        Acl(entries
            .iter()
            .map(|&(tag, perm, id)| Entry { tag, perm, id })
            .collect())
        .encode()
    }

    #[test]
    fn mode_chmod_and_inheritance_agree_with_the_kernels_rules() {
        // u::rw-, u:65534:r--, g::r-x, m::r--, o::---
        let b = acl(&[
            (USER_OBJ, 6, 0),
            (USER, 4, 65534),
            (GROUP_OBJ, 5, 0),
            (MASK, 4, 0),
            (OTHER, 0, 0),
        ]);
        let mut a = Acl::parse(&b).unwrap();
        assert_eq!(a.encode(), b);
        assert_eq!(a.mode_bits(), 0o640);
        assert!(!a.is_minimal());
        a.chmod(0o751);
        assert_eq!(a.mode_bits(), 0o751);
        assert_eq!(a.perm(GROUP_OBJ), Some(5), "the mask moves, not the group");
        let mut d = Acl::parse(&b).unwrap();
        assert_eq!(d.create_masq(0o666), 0o640);
        let mut d = Acl::parse(&b).unwrap();
        assert_eq!(d.create_masq(0o600), 0o600);
        assert_eq!(
            d.perm(USER),
            Some(4),
            "named entries stay (the mask limits them)"
        );
        // Malformed: no mask with a named entry, a bad version, a bad perm.
        assert!(
            Acl::parse(&acl(&[
                (USER_OBJ, 6, 0),
                (USER, 4, 1),
                (GROUP_OBJ, 4, 0),
                (OTHER, 0, 0)
            ]))
            .is_err()
        );
        let mut bad = b.clone();
        bad[0] = 1;
        assert!(Acl::parse(&bad).is_err());
        assert!(Acl::parse(&acl(&[(USER_OBJ, 8, 0), (GROUP_OBJ, 4, 0), (OTHER, 0, 0)])).is_err());
        assert!(Acl::parse(&b[..7]).is_err());
    }
}
