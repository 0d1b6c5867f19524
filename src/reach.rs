//! Reachability: the walks over what a set of roots references (commits
//! -> trees -> manifest nodes -> chunks). [`Reach`] enumerates it, each
//! object once: prune marks with it (and fails on anything it cannot
//! read, since an unread tree would leave its children unmarked), verify
//! collects with it (and goes on past what is missing, to report it all).
//! [`Complete`] says whether all of it is stored (a rebuild from a
//! replica keeps the newest complete commit).
//!
//! Memory: one [`IdSet`] entry per distinct object reached (32 bytes of
//! id in an open-addressing table, about 40 bytes an object), whatever the
//! number of commits or paths that share it.

use crate::error::{Error, Result};
use crate::format::{Commit, Extent, FileType, Node, TreeRecord};
use crate::ids::{ObjectId, ObjectKind};
use crate::manifest::{self, Visit};
use crate::store::ObjectStore;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Object ids are BLAKE3 hashes: their first 8 bytes are already a good
/// hash, so the set does not hash them again.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // The id's first 8 bytes (and the slice's length prefix, a constant).
        if let Some(b) = bytes.first_chunk::<8>() {
            self.0 ^= u64::from_le_bytes(*b);
        }
    }
}

/// A set of object ids.
pub type IdSet = HashSet<ObjectId, BuildHasherDefault<IdHasher>>;

/// What the walker does with an object it cannot read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Stop with the error (prune: never guess what is unreferenced).
    Fail,
    /// Note it in [`Reach::unreadable`] and go on (verify).
    Note,
}

pub struct Reach<'a> {
    store: &'a ObjectStore,
    seen: IdSet,
    missing: Missing,
    /// Objects referenced but not readable, with why (with `Missing::Note`).
    pub unreadable: Vec<(ObjectId, String)>,
    /// Stored bytes (record headers included) of the objects marked, when
    /// counting.
    bytes: Option<u64>,
    /// Chunks marked only as the bases of deltas, never from content.
    base_only: IdSet,
    /// The bases of every delta chunk marked.
    delta_bases: HashMap<ObjectId, Vec<ObjectId>>,
}

impl<'a> Reach<'a> {
    pub fn new(store: &'a ObjectStore, missing: Missing) -> Reach<'a> {
        Reach {
            store,
            seen: IdSet::default(),
            missing,
            unreadable: Vec::new(),
            bytes: None,
            base_only: IdSet::default(),
            delta_bases: HashMap::new(),
        }
    }

    /// Chunks marked only as the bases of deltas: every version that held
    /// them is gone (thinning dropped the versions between kept ones).
    pub fn base_only(&self) -> &IdSet {
        &self.base_only
    }

    /// The bases of every delta chunk marked.
    pub fn delta_bases(&self) -> &HashMap<ObjectId, Vec<ObjectId>> {
        &self.delta_bases
    }

    /// Unmarks base-only chunks that no marked delta needs any more (its
    /// deltas were rebased).
    pub fn release(&mut self, ids: &[ObjectId]) {
        for id in ids {
            if self.base_only.remove(id) {
                self.seen.remove(id);
                self.delta_bases.remove(id);
            }
        }
    }

    /// Also adds up the stored bytes of every object marked from now on.
    pub fn counting(mut self) -> Self {
        self.bytes = Some(0);
        self
    }

    /// Stored bytes of the objects marked since counting began.
    pub fn bytes(&self) -> u64 {
        self.bytes.unwrap_or(0)
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.seen.contains(id)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Bytes the mark set takes (its table, not counting the allocator's).
    pub fn set_bytes(&self) -> u64 {
        (self.seen.capacity() * (std::mem::size_of::<ObjectId>() + 1)) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &ObjectId> {
        self.seen.iter()
    }

    /// Marks `id`; whether it was new.
    fn mark(&mut self, id: ObjectId) -> Result<bool> {
        if !self.seen.insert(id) {
            return Ok(false);
        }
        if let Some(b) = self.bytes.as_mut()
            && let Some(e) = self.store.locate(&id)?
        {
            *b += e.record_len();
        }
        Ok(true)
    }

    /// Marks chunk `id` and, when it is stored as a delta, the chunks its
    /// bytes are rebuilt from (a kept chunk keeps its bases).
    fn chunk(&mut self, id: ObjectId) -> Result<bool> {
        // Reached from content: kept for itself (again).
        self.base_only.remove(&id);
        let mut stack = vec![(id, false)];
        while let Some((id, as_base)) = stack.pop() {
            if !self.seen.insert(id) {
                continue;
            }
            if as_base {
                self.base_only.insert(id);
            }
            // One lookup for the count and the codec.
            let Some(e) = self.store.locate(&id)? else {
                continue;
            };
            if let Some(b) = self.bytes.as_mut() {
                *b += e.record_len();
            }
            match self.store.bases(&id, &e) {
                Ok(b) if b.is_empty() => {}
                Ok(b) => {
                    stack.extend(b.iter().map(|b| (*b, true)));
                    self.delta_bases.insert(id, b);
                }
                Err(err) => self.failed(id, err)?,
            }
        }
        Ok(true)
    }

    fn failed(&mut self, id: ObjectId, e: Error) -> Result<()> {
        match self.missing {
            Missing::Fail => Err(e),
            Missing::Note => {
                self.unreadable.push((id, e.to_string()));
                Ok(())
            }
        }
    }

    /// A commit object and everything under its root (not its parent:
    /// history is the set of kept commits, not a chain).
    pub fn commit(&mut self, id: ObjectId) -> Result<()> {
        if !self.mark(id)? {
            return Ok(());
        }
        match self.store.get(&id).and_then(|b| Commit::decode(&b)) {
            Ok(c) => self.tree(c.root),
            Err(e) => self.failed(id, e),
        }
    }

    /// What an inode's node references: a directory's tree, a file's content.
    pub fn node(&mut self, n: &Node) -> Result<()> {
        match (n.kind, n.content) {
            (FileType::Directory, Some(t)) => self.tree(t),
            (FileType::Regular, Some(m)) => self.content(m),
            _ => Ok(()),
        }
    }

    /// An object of a known kind (a pending or just-deduplicated one).
    pub fn object(&mut self, id: ObjectId, kind: ObjectKind) -> Result<()> {
        match kind {
            ObjectKind::Chunk => self.chunk(id).map(|_| ()),
            ObjectKind::Manifest => self.content(id),
            ObjectKind::Tree => self.tree(id),
            ObjectKind::Commit => self.commit(id),
        }
    }

    /// A directory tree and everything under it.
    pub fn tree(&mut self, id: ObjectId) -> Result<()> {
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            if !self.mark(id)? {
                continue;
            }
            let tree = match self.store.get(&id).and_then(|b| TreeRecord::decode(&b)) {
                Ok(TreeRecord::Listing(t)) => t,
                // A big directory's pieces: trees of their own.
                Ok(TreeRecord::Pieces(pieces)) => {
                    stack.extend(pieces.iter().map(|p| p.id));
                    continue;
                }
                Err(e) => {
                    self.failed(id, e)?;
                    continue;
                }
            };
            for e in tree.entries {
                match (e.node.kind, e.node.content) {
                    (FileType::Directory, Some(t)) => stack.push(t),
                    (FileType::Regular, Some(m)) => self.content(m)?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// A file's content: every manifest node and chunk under its root;
    /// subtrees marked before are not walked again.
    pub fn content(&mut self, root: ObjectId) -> Result<()> {
        if self.seen.contains(&root) {
            return Ok(());
        }
        let store = self.store;
        let walked = manifest::walk(store, root, |v| match v {
            Visit::Node(n) => self.mark(*n),
            Visit::Extent(Extent::Chunk { id, .. }) => self.chunk(*id),
            Visit::Extent(Extent::Hole { .. }) => Ok(true),
        });
        walked.or_else(|e| self.failed(root, e))
    }
}

/// Whether chunk `id` is indexed, and the bases it is rebuilt from (as
/// far as a read follows them).
fn chunk_stored(store: &ObjectStore, id: &ObjectId, depth: usize) -> Result<()> {
    let missing = || Error::corrupt(format!("chunk {id}"), "not in the replica");
    match store.locate(id)? {
        Some(e) if e.kind == ObjectKind::Chunk => {
            if depth < 64 {
                for b in store.bases(id, &e)? {
                    chunk_stored(store, &b, depth + 1)?;
                }
            }
            Ok(())
        }
        _ => Err(missing()),
    }
}

/// The other question a walk answers: is everything under a root stored
/// (`recover` and `drill` pick the newest complete commit)? Memoized per
/// subtree, complete or not, so a history costs what it holds once; the
/// mark set of [`Reach`] cannot say that a subtree seen before was
/// incomplete.
pub struct Complete<'a> {
    store: &'a ObjectStore,
    memo: HashMap<ObjectId, bool>,
}

impl<'a> Complete<'a> {
    pub fn new(store: &'a ObjectStore) -> Complete<'a> {
        Complete {
            store,
            memo: HashMap::new(),
        }
    }

    /// Whether everything under the directory tree `id` is stored.
    pub fn tree(&mut self, id: ObjectId) -> bool {
        if let Some(v) = self.memo.get(&id) {
            return *v;
        }
        let ok = match self.store.get(&id).and_then(|b| TreeRecord::decode(&b)) {
            Err(_) => false,
            Ok(TreeRecord::Pieces(pieces)) => pieces.iter().all(|p| self.tree(p.id)),
            Ok(TreeRecord::Listing(t)) => {
                t.entries
                    .iter()
                    .all(|e| match (e.node.kind, e.node.content) {
                        (FileType::Directory, Some(t)) => self.tree(t),
                        (FileType::Regular, Some(m)) => self.manifest(m),
                        _ => true,
                    })
            }
        };
        self.memo.insert(id, ok);
        ok
    }

    /// Whether every node and chunk of a manifest tree is there; subtrees
    /// shared with versions checked before are not walked again.
    fn manifest(&mut self, id: ObjectId) -> bool {
        if let Some(v) = self.memo.get(&id) {
            return *v;
        }
        let (store, memo) = (self.store, &self.memo);
        let mut walked = Vec::new();
        let ok = manifest::walk(store, id, |v| match v {
            Visit::Node(n) => {
                if memo.get(n) == Some(&true) {
                    return Ok(false);
                }
                walked.push(*n);
                Ok(true)
            }
            Visit::Extent(Extent::Chunk { id, .. }) => chunk_stored(store, id, 0).map(|_| true),
            Visit::Extent(Extent::Hole { .. }) => Ok(true),
        })
        .is_ok();
        if ok {
            self.memo.extend(walked.into_iter().map(|n| (n, true)));
        } else {
            self.memo.insert(id, false);
        }
        ok
    }
}
