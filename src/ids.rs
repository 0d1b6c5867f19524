//! Distinct id types so that an inode number, an object id and a commit
//! number can never be confused across module boundaries.

use std::fmt;

/// The BLAKE3 hash that names an immutable object in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// Id of `data` as an object of kind `kind` in a plain store (tests;
    /// a store names its objects with `Crypto::object_id`, keyed when it
    /// is encrypted).
    #[cfg(test)]
    pub fn of(kind: ObjectKind, data: &[u8]) -> ObjectId {
        crate::crypto::Crypto::plain().object_id(kind, data)
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.hex()[..16])
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// What an object holds; stored as one byte in every pack record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObjectKind {
    Chunk = 1,
    Manifest = 2,
    Tree = 3,
    Commit = 4,
}

impl ObjectKind {
    pub fn from_u8(b: u8) -> Option<ObjectKind> {
        Some(match b {
            1 => ObjectKind::Chunk,
            2 => ObjectKind::Manifest,
            3 => ObjectKind::Tree,
            4 => ObjectKind::Commit,
            _ => return None,
        })
    }
}

/// An inode number of the live tree. 1 is the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    pub const ROOT: Ino = Ino(1);
}

/// The sequence number of a commit (1 is the first; 0 means "none yet").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitSeq(pub u64);

/// The number of a pack file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackNo(pub u64);
