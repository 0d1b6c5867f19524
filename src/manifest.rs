//! The content of one file version as a tree of manifest nodes: reading it
//! a node at a time, building it, and changing it by rebuilding only the
//! nodes around a change.
//!
//! Leaves hold extents; an inner node of level L holds subtrees of level
//! L - 1 with their lengths. Where a node ends is decided by its items
//! alone, as content-defined chunking decides where a chunk ends: a node
//! ends after an item whose hash has the low bits of [`LEAF_MASK`]
//! ([`INNER_MASK`] above the leaves) all zero once it holds
//! [`MIN_ITEMS`], or when it holds the most a node may. Built bottom up
//! until one level is a single node (the root), one list of extents
//! always makes the same tree, so equal contents have equal root ids.
//!
//! Because a node's end depends only on the items since its start, a new
//! version can reuse every old subtree that starts where the builder
//! stands with nothing pending below it and whose bytes did not change
//! ([`Builder::push_old`]): an edit rebuilds the leaf around it and one
//! node per level above, about 10 KiB a level, whatever the file's size.
//! A read finds its extent in one descent from the root, through a small
//! cache of decoded nodes, so an open decodes only the root.

use crate::error::{Error, Result};
use crate::format::{Child, Extent, ManifestNode};
use crate::ids::{ObjectId, ObjectKind};
use crate::store::{Access, ObjectStore};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Leaves end on an extent whose hash has these bits zero (256 on average).
pub const LEAF_MASK: u64 = 0xff;
pub const LEAF_MAX: usize = 1024;
/// Inner nodes end on a subtree whose id has these bits zero (128 on average).
pub const INNER_MASK: u64 = 0x7f;
pub const INNER_MAX: usize = 512;
/// No node ends on a hash before it holds this many items, so that every
/// level has fewer nodes than the one below, even for repeated content.
pub const MIN_ITEMS: usize = 8;
/// Decoded nodes kept per open content.
const CACHE_NODES: usize = 16;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn id_hash(id: &ObjectId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(b)
}

/// The hash an extent's cut decision looks at.
fn extent_hash(x: &Extent) -> u64 {
    match x {
        Extent::Chunk { id, .. } => id_hash(id),
        // splitmix64 of the length: holes cut like anything else.
        Extent::Hole { len } => {
            let mut z = len.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }
}

fn ends_node(hash: u64, count: usize, mask: u64, max: usize) -> bool {
    count >= max || (count >= MIN_ITEMS && hash & mask == 0)
}

/// Where each of a run of items starts, given their lengths.
fn offsets(lens: impl Iterator<Item = u64>) -> Vec<u64> {
    lens.scan(0, |at, l| {
        let s = *at;
        *at += l;
        Some(s)
    })
    .collect()
}

/// A decoded node with the offset of each item inside it.
pub struct Node {
    pub node: ManifestNode,
    starts: Vec<u64>,
    len: u64,
}

impl Node {
    fn new(node: ManifestNode) -> Node {
        let starts = match &node {
            ManifestNode::Leaf(x) => offsets(x.iter().map(Extent::len)),
            ManifestNode::Inner { children, .. } => offsets(children.iter().map(|c| c.len)),
        };
        let len = node.len();
        Node { node, starts, len }
    }

    /// The item holding `pos` (relative to the node's start, < len) and its start.
    fn find(&self, pos: u64) -> (usize, u64) {
        let i = self.starts.partition_point(|s| *s <= pos).saturating_sub(1);
        (i, self.starts.get(i).copied().unwrap_or(0))
    }
}

/// Decoded nodes by id, a few at a time.
pub struct Nodes(Mutex<LruCache<ObjectId, Arc<Node>>>);

impl Default for Nodes {
    fn default() -> Nodes {
        Nodes(Mutex::new(LruCache::new(
            NonZeroUsize::new(CACHE_NODES).expect("non-zero"),
        )))
    }
}

impl Nodes {
    /// Node `id`, which must be of `level`, read from its pack as `access` says.
    fn get(
        &self,
        store: &ObjectStore,
        id: &ObjectId,
        level: u8,
        access: Access,
    ) -> Result<Arc<Node>> {
        if let Some(n) = lock(&self.0).get(id) {
            return Ok(n.clone());
        }
        let node = ManifestNode::decode(&store.get_for(id, access)?)?;
        if node.level() != level {
            return Err(Error::corrupt(
                format!("manifest node {id}"),
                format!("level {} where {level} belongs", node.level()),
            ));
        }
        let n = Arc::new(Node::new(node));
        lock(&self.0).put(*id, n.clone());
        Ok(n)
    }

    /// The extent holding `pos` below `node` (which starts at `start`).
    fn extent_at(
        &self,
        store: &ObjectStore,
        mut node: Arc<Node>,
        mut start: u64,
        pos: u64,
        access: Access,
    ) -> Result<(u64, Extent)> {
        loop {
            let (i, at) = node.find(pos - start);
            start += at;
            let next = match &node.node {
                ManifestNode::Leaf(x) => {
                    // Lengths that do not add up (a damaged tree) must not
                    // send a read outside its extent.
                    if pos < start || pos >= start + x[i].len() {
                        return Err(Error::corrupt(
                            "manifest tree",
                            "subtree lengths do not match their nodes",
                        ));
                    }
                    return Ok((start, x[i]));
                }
                ManifestNode::Inner { level, children } => {
                    self.get(store, &children[i].id, level - 1, access)?
                }
            };
            node = next;
        }
    }
}

/// The content of one file version: its root and the nodes read so far.
#[derive(Default)]
pub struct Content {
    root: Option<(ObjectId, Arc<Node>)>,
    nodes: Nodes,
}

impl Content {
    /// The content whose root is `id` (an empty file has none).
    pub fn open(store: &ObjectStore, id: Option<ObjectId>) -> Result<Content> {
        let Some(id) = id else {
            return Ok(Content::default());
        };
        let node = ManifestNode::decode(&store.get(&id)?)?;
        Ok(Content {
            root: Some((id, Arc::new(Node::new(node)))),
            nodes: Nodes::default(),
        })
    }

    /// The root's id: what an inode and a version record hold.
    pub fn id(&self) -> Option<ObjectId> {
        self.root.as_ref().map(|r| r.0)
    }

    pub fn size(&self) -> u64 {
        self.root.as_ref().map_or(0, |r| r.1.len)
    }

    /// Bytes in chunk extents (for st_blocks).
    pub fn allocated(&self) -> u64 {
        self.root.as_ref().map_or(0, |r| r.1.node.data())
    }

    /// The extent holding `pos` and where it starts; `None` at or past the end.
    pub fn extent_at(&self, store: &ObjectStore, pos: u64) -> Result<Option<(u64, Extent)>> {
        self.extent_for(store, pos, Access::Sequential)
    }

    /// [`extent_at`](Self::extent_at) with the nodes it loads read as
    /// `access` says (a random read's nodes are as scattered as its chunks).
    pub fn extent_for(
        &self,
        store: &ObjectStore,
        pos: u64,
        access: Access,
    ) -> Result<Option<(u64, Extent)>> {
        match &self.root {
            Some((_, root)) if pos < root.len => self
                .nodes
                .extent_at(store, root.clone(), 0, pos, access)
                .map(Some),
            _ => Ok(None),
        }
    }
}

/// Builds a tree from extents and old subtrees pushed in file order.
#[derive(Default)]
pub struct Builder {
    /// Extents of the leaf being filled, and where it starts.
    leaf: Vec<Extent>,
    leaf_start: u64,
    /// A trailing hole not yet placed: the next extent may be a hole too,
    /// and adjacent holes are one extent.
    held: Option<Extent>,
    /// `inner[k]`: subtrees of the level-(k+1) node being filled, and its start.
    inner: Vec<(Vec<Child>, u64)>,
    /// Bytes placed so far (all but `held`).
    placed: u64,
    nodes: Nodes,
}

impl Builder {
    /// Every object the tree being built refers to so far (chunks of the
    /// open leaf, subtrees of the open inner nodes): references that are
    /// in memory only until `finish` writes them.
    pub fn refs(&self, out: &mut Vec<(ObjectId, ObjectKind)>) {
        for x in &self.leaf {
            if let Extent::Chunk { id, .. } = x {
                out.push((*id, ObjectKind::Chunk));
            }
        }
        for (children, _) in &self.inner {
            out.extend(children.iter().map(|c| (c.id, ObjectKind::Manifest)));
        }
    }

    /// The file offset the next extent covers from.
    pub fn pos(&self) -> u64 {
        self.placed + self.held.map_or(0, |h| h.len())
    }

    /// Appends one extent (never empty). Every step is all or nothing:
    /// when a node cannot be stored (a full disk), the builder is as it
    /// was before the call, so the caller can push the extent again later
    /// and nothing pushed before is lost.
    pub fn push(&mut self, store: &ObjectStore, x: Extent) -> Result<()> {
        if let (Some(Extent::Hole { len }), Extent::Hole { len: more }) = (&mut self.held, x) {
            *len += more;
            return Ok(());
        }
        if let Some(h) = self.held {
            self.place(store, h)?;
            self.held = None;
        }
        match x {
            Extent::Hole { .. } => self.held = Some(x),
            Extent::Chunk { .. } => self.place(store, x)?,
        }
        Ok(())
    }

    /// Adds `x` to the open leaf; stores the leaf when `x` ends it.
    fn place(&mut self, store: &ObjectStore, x: Extent) -> Result<()> {
        if self.leaf.is_empty() {
            self.leaf_start = self.placed;
        }
        self.leaf.push(x);
        if ends_node(extent_hash(&x), self.leaf.len(), LEAF_MASK, LEAF_MAX)
            && let Err(e) = self.emit_leaf(store)
        {
            self.leaf.pop();
            return Err(e);
        }
        self.placed += x.len();
        Ok(())
    }

    /// Stores the open leaf (not empty) as a child of the level-1 node;
    /// leaves it open when that fails.
    fn emit_leaf(&mut self, store: &ObjectStore) -> Result<()> {
        let child = put_node(store, &ManifestNode::Leaf(self.leaf.clone()))?;
        self.push_child(store, 1, child, self.leaf_start)?;
        self.leaf.clear();
        Ok(())
    }

    /// Appends a subtree of level `level - 1` to the level-`level` node,
    /// storing that node (and those above it that it ends) when `c` ends
    /// it. Nothing changes unless every node is stored.
    fn push_child(
        &mut self,
        store: &ObjectStore,
        level: usize,
        c: Child,
        start: u64,
    ) -> Result<()> {
        while self.inner.len() < level {
            self.inner.push((Vec::new(), 0));
        }
        let (items, at) = &mut self.inner[level - 1];
        if items.is_empty() {
            *at = start;
        }
        items.push(c);
        if ends_node(id_hash(&c.id), items.len(), INNER_MASK, INNER_MAX)
            && let Err(e) = self.emit_inner(store, level)
        {
            self.inner[level - 1].0.pop();
            return Err(e);
        }
        Ok(())
    }

    /// Stores the open level-`level` node (not empty) as a child of the
    /// node above it; leaves it open when that fails.
    fn emit_inner(&mut self, store: &ObjectStore, level: usize) -> Result<()> {
        let (items, start) = self.inner[level - 1].clone();
        let child = put_node(store, &inner(level, items)?)?;
        self.push_child(store, level + 1, child, start)?;
        self.inner[level - 1].0.clear();
        Ok(())
    }

    /// Whether nothing is pending below level `level`: the builder stands
    /// where a node of every lower level starts.
    fn empty_below(&self, level: usize) -> bool {
        self.held.is_none()
            && self.leaf.is_empty()
            && self.inner.iter().take(level - 1).all(|(v, _)| v.is_empty())
    }

    /// Appends `old`'s content from `from` (an extent boundary of `old`
    /// where the builder stands) up to the last extent boundary at or
    /// before `to`, where `old`'s bytes stop being this version's; returns
    /// that boundary. Whole old subtrees are reused where they end before
    /// `to`, or at `to` when `to_is_end` (the new content ends there too):
    /// a subtree that ends where something new follows may have ended
    /// only because the old content did.
    pub fn push_old(
        &mut self,
        store: &ObjectStore,
        old: &Content,
        from: u64,
        to: u64,
        to_is_end: bool,
    ) -> Result<u64> {
        let Some((_, root)) = &old.root else {
            return Ok(from);
        };
        let mut pos = from;
        'next: while pos < to && pos < root.len {
            let (mut node, mut start) = (root.clone(), 0u64);
            loop {
                let (i, at) = node.find(pos - start);
                let item_start = start + at;
                let next = match &node.node {
                    ManifestNode::Leaf(x) => {
                        let x = x[i];
                        if item_start != pos || pos + x.len() > to {
                            return Ok(pos);
                        }
                        self.push(store, x)?;
                        pos += x.len();
                        continue 'next;
                    }
                    ManifestNode::Inner { level, children } => {
                        let c = children[i];
                        let end = item_start + c.len;
                        let level = *level as usize;
                        if item_start == pos
                            && (end < to || (to_is_end && end == to))
                            && self.empty_below(level)
                        {
                            self.push_child(store, level, c, pos)?;
                            self.placed += c.len;
                            pos = end;
                            continue 'next;
                        }
                        self.nodes
                            .get(store, &c.id, (level - 1) as u8, Access::Sequential)?
                    }
                };
                node = next;
                start = item_start;
            }
        }
        Ok(pos)
    }

    /// Stores the last nodes; returns the content built. On an error the
    /// builder still holds everything pushed (a later call tries again).
    pub fn finish(&mut self, store: &ObjectStore) -> Result<Content> {
        if let Some(h) = self.held {
            self.place(store, h)?;
            self.held = None;
        }
        let higher =
            |b: &Builder, level: usize| b.inner[level..].iter().any(|(v, _)| !v.is_empty());
        if !higher(self, 0) {
            if self.leaf.is_empty() {
                return Ok(Content::default());
            }
            return stored_root(store, ManifestNode::Leaf(self.leaf.clone()));
        }
        if !self.leaf.is_empty() {
            self.emit_leaf(store)?;
        }
        let mut level = 1;
        loop {
            let pending = self.inner[level - 1].0.len();
            if !higher(self, level) {
                if pending == 1 {
                    let id = self.inner[level - 1].0[0].id;
                    return Content::open(store, Some(id));
                }
                return stored_root(store, inner(level, self.inner[level - 1].0.clone())?);
            }
            if pending > 0 {
                self.emit_inner(store, level)?;
            }
            level += 1;
        }
    }

    /// The extent holding `pos` among those pushed so far, and its start.
    pub fn extent_at(&self, store: &ObjectStore, pos: u64) -> Result<Option<(u64, Extent)>> {
        if pos >= self.pos() {
            return Ok(None);
        }
        if let Some(h) = self.held
            && pos >= self.placed
        {
            return Ok(Some((self.placed, h)));
        }
        if !self.leaf.is_empty() && pos >= self.leaf_start {
            let mut at = self.leaf_start;
            for x in &self.leaf {
                if pos < at + x.len() {
                    return Ok(Some((at, *x)));
                }
                at += x.len();
            }
        }
        for (level, (items, start)) in self.inner.iter().enumerate() {
            if items.is_empty() || pos < *start {
                continue;
            }
            let mut at = *start;
            for c in items {
                if pos < at + c.len {
                    let node = self
                        .nodes
                        .get(store, &c.id, level as u8, Access::Sequential)?;
                    return self
                        .nodes
                        .extent_at(store, node, at, pos, Access::Sequential)
                        .map(Some);
                }
                at += c.len;
            }
        }
        Err(Error::corrupt(
            "manifest builder",
            "offset in no pending node",
        ))
    }
}

/// Stores `node` as the root of a content.
fn stored_root(store: &ObjectStore, node: ManifestNode) -> Result<Content> {
    let id = put_node(store, &node)?.id;
    Ok(Content {
        root: Some((id, Arc::new(Node::new(node)))),
        nodes: Nodes::default(),
    })
}

/// A level-`level` node of `children`.
fn inner(level: usize, children: Vec<Child>) -> Result<ManifestNode> {
    let level = u8::try_from(level).map_err(|_| Error::TooBig)?;
    Ok(ManifestNode::Inner { level, children })
}

/// Stores `node`; returns the reference its parent holds.
fn put_node(store: &ObjectStore, node: &ManifestNode) -> Result<Child> {
    Ok(Child {
        len: node.len(),
        data: node.data(),
        id: store.put(ObjectKind::Manifest, &node.encode())?,
    })
}

/// What [`walk`] shows its visitor.
pub enum Visit<'a> {
    /// A node, before it is read: the visitor says whether to go below it
    /// (false: skip it, say when already seen or not stored).
    Node(&'a ObjectId),
    /// An extent of a leaf, in file order (the answer is ignored).
    Extent(&'a Extent),
}

/// Visits every node of the tree under `root`, parents before children,
/// and every extent of its leaves. A node that cannot be read or decoded,
/// or whose level does not fit its parent, ends the walk with its error.
pub fn walk(
    store: &ObjectStore,
    root: ObjectId,
    mut visit: impl FnMut(Visit) -> Result<bool>,
) -> Result<()> {
    // (id, the level it must have; None for the root)
    let mut stack: Vec<(ObjectId, Option<u8>)> = vec![(root, None)];
    while let Some((id, level)) = stack.pop() {
        if !visit(Visit::Node(&id))? {
            continue;
        }
        let node = ManifestNode::decode(&store.get(&id)?)?;
        if level.is_some_and(|l| l != node.level()) {
            return Err(Error::corrupt(
                format!("manifest node {id}"),
                "level does not fit its parent",
            ));
        }
        match node {
            ManifestNode::Leaf(x) => {
                for x in &x {
                    visit(Visit::Extent(x))?;
                }
            }
            ManifestNode::Inner { level, children } => {
                stack.extend(children.iter().rev().map(|c| (c.id, Some(level - 1))))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::db::Db;

    fn store() -> (tempfile::TempDir, ObjectStore) {
        let tmp = tempfile::tempdir().unwrap();
        let packs = tmp.path().join("packs");
        std::fs::create_dir(&packs).unwrap();
        let store = ObjectStore::open(&packs, Arc::new(Db::temporary().unwrap()), false).unwrap();
        (tmp, store)
    }

    /// Distinct fake chunk extents (ids need not be stored to build a tree).
    fn extents(seed: u64, n: usize) -> Vec<Extent> {
        (0..n)
            .map(|i| {
                let id = ObjectId::of(
                    ObjectKind::Chunk,
                    &[seed, i as u64].map(u64::to_le_bytes).concat(),
                );
                if i % 97 == 5 {
                    Extent::Hole {
                        len: 1000 + i as u64,
                    }
                } else {
                    Extent::Chunk {
                        len: 1 + (i as u64 * 7919) % 5000,
                        id,
                    }
                }
            })
            .collect()
    }

    fn build(store: &ObjectStore, x: &[Extent]) -> Content {
        let mut b = Builder::default();
        for e in x {
            b.push(store, *e).unwrap();
        }
        b.finish(store).unwrap()
    }

    fn flatten(store: &ObjectStore, c: &Content) -> Vec<Extent> {
        let mut out = Vec::new();
        if let Some(id) = c.id() {
            walk(store, id, |v| {
                if let Visit::Extent(x) = v {
                    out.push(*x);
                }
                Ok(true)
            })
            .unwrap();
        }
        out
    }

    /// The canonical extent list: adjacent holes are one extent.
    fn merged(x: &[Extent]) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        for e in x {
            match (out.last_mut(), e) {
                (Some(Extent::Hole { len }), Extent::Hole { len: more }) => *len += more,
                _ => out.push(*e),
            }
        }
        out
    }

    #[test]
    fn a_large_list_makes_a_deep_tree_that_reads_back_exactly() {
        let (_t, store) = store();
        let x = extents(1, 200_000);
        let c = build(&store, &x);
        let m = merged(&x);
        assert_eq!(flatten(&store, &c), m);
        assert_eq!(c.size(), x.iter().map(Extent::len).sum::<u64>());
        let data: u64 = x
            .iter()
            .filter(|e| matches!(e, Extent::Chunk { .. }))
            .map(Extent::len)
            .sum();
        assert_eq!(c.allocated(), data);
        let root = ManifestNode::decode(&store.get(&c.id().unwrap()).unwrap()).unwrap();
        assert!(root.level() >= 2, "level {}", root.level());
        // Offsets find their extents.
        let mut start = 0;
        for (i, e) in m.iter().enumerate() {
            if i % 37 == 0 {
                let got = c.extent_at(&store, start + e.len() - 1).unwrap();
                assert_eq!(got, Some((start, *e)));
            }
            start += e.len();
        }
        assert_eq!(c.extent_at(&store, start).unwrap(), None);
        // Small contents are one leaf, as in format 2; none is no node.
        let small = build(&store, &x[..5]);
        assert_eq!(
            ManifestNode::decode(&store.get(&small.id().unwrap()).unwrap()).unwrap(),
            ManifestNode::Leaf(x[..5].to_vec())
        );
        assert_eq!(build(&store, &[]).id(), None);
    }

    #[test]
    fn repeated_content_still_makes_a_tree() {
        let (_t, store) = store();
        let one = Extent::Chunk {
            len: 10,
            id: ObjectId([0; 32]),
        };
        let c = build(&store, &vec![one; 100_000]);
        assert_eq!(c.size(), 1_000_000);
        assert_eq!(flatten(&store, &c).len(), 100_000);
    }

    /// Replacing extents `[a, b)` by others of the same bytes with
    /// `push_old` around them gives exactly the tree built from scratch,
    /// and writes only the nodes on the changed paths.
    #[test]
    fn a_splice_equals_a_fresh_build_and_writes_only_a_path() {
        let (_t, store) = store();
        let x = extents(2, 100_000);
        let old = build(&store, &x);
        let starts = offsets(x.iter().map(Extent::len));
        let end = old.size();
        let at = |i: usize| starts.get(i).copied().unwrap_or(end);
        for (a, b, hole, max_nodes) in [
            (500, 503, false, 6),
            (0, 1, false, 6),
            (99_990, 100_000, false, 6),
            (50_000, 50_001, true, 6),
            (3_000, 60_000, false, 1_000),
            (4, 100_000, true, 3),
        ] {
            let bytes = at(b) - at(a);
            let new: Vec<Extent> = if hole {
                vec![Extent::Hole { len: bytes }]
            } else {
                let third = bytes / 3;
                [third, third, bytes - 2 * third]
                    .iter()
                    .filter(|l| **l > 0)
                    .enumerate()
                    .map(|(i, l)| Extent::Chunk {
                        len: *l,
                        id: ObjectId::of(ObjectKind::Chunk, &[a as u8, b as u8, i as u8]),
                    })
                    .collect()
            };
            let mut want: Vec<Extent> = x[..a].to_vec();
            want.extend(&new);
            want.extend(&x[b..]);
            let puts = store.pending().len();
            let mut bl = Builder::default();
            assert_eq!(bl.push_old(&store, &old, 0, at(a), false).unwrap(), at(a));
            for e in &new {
                bl.push(&store, *e).unwrap();
            }
            assert_eq!(bl.push_old(&store, &old, at(b), end, true).unwrap(), end);
            let got = bl.finish(&store).unwrap();
            let written = store.pending().len() - puts;
            assert_eq!(flatten(&store, &got), merged(&want), "splice {a}..{b}");
            let fresh = build(&store, &want);
            assert_eq!(got.id(), fresh.id(), "splice {a}..{b}");
            assert!(
                written <= max_nodes,
                "splice {a}..{b} wrote {written} nodes"
            );
        }
    }

    /// Offsets where the leaves of `c` start (after the first).
    fn leaf_starts(store: &ObjectStore, c: &Content) -> Vec<u64> {
        let (mut out, mut at, mut leaf_at) = (Vec::new(), 0, 0);
        walk(store, c.id().unwrap(), |v| {
            match v {
                Visit::Node(id) => {
                    let n = ManifestNode::decode(&store.get(id).unwrap()).unwrap();
                    if n.level() == 0 && at > 0 && at != leaf_at {
                        out.push(at);
                        leaf_at = at;
                    }
                }
                Visit::Extent(x) => at += x.len(),
            }
            Ok(true)
        })
        .unwrap();
        out
    }

    /// Random contents (runs of holes, runs of one repeated chunk that
    /// force cuts at the node maximum) and random splices of random new
    /// extents, often at leaf boundaries, often starting or ending with a
    /// hole next to an old one, sometimes growing the file: every splice
    /// reads back as the new list and has exactly the root of a fresh build.
    #[test]
    fn random_splices_always_equal_a_fresh_build() {
        let (_t, store) = store();
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let same = Extent::Chunk {
            len: 4096,
            id: ObjectId([3; 32]),
        };
        for round in 0..60 {
            let n = if round % 10 == 0 { 40_000 } else { 3_000 };
            let mut list: Vec<Extent> = Vec::with_capacity(n);
            while list.len() < n {
                match next() % 100 {
                    0 => list.extend(std::iter::repeat_n(same, (next() % 1500) as usize)),
                    1..=25 => list.extend((0..next() % 3 + 1).map(|_| Extent::Hole {
                        len: next() % 9000 + 1,
                    })),
                    _ => list.push(Extent::Chunk {
                        len: next() % 70_000 + 1,
                        id: ObjectId::of(ObjectKind::Chunk, &next().to_le_bytes()),
                    }),
                }
            }
            let old = build(&store, &list);
            let list = merged(&list);
            let starts = offsets(list.iter().map(Extent::len));
            let at = |i: usize| starts.get(i).copied().unwrap_or(old.size());
            let index_of = |off: u64| starts.binary_search(&off).unwrap();
            let leaves = leaf_starts(&store, &old);
            let pick = |next: &mut dyn FnMut() -> u64| -> usize {
                if next().is_multiple_of(2) && !leaves.is_empty() {
                    index_of(leaves[(next() % leaves.len() as u64) as usize])
                } else {
                    (next() % list.len() as u64) as usize
                }
            };
            let a = pick(&mut next);
            let grow = next() % 5 == 0;
            // A single hole over exactly one leaf, a third of the time.
            let one_leaf = !grow && next() % 3 == 0 && leaves.windows(2).next().is_some();
            let (a, grow) = if one_leaf {
                let i = (next() % (leaves.len() as u64 - 1)) as usize;
                (index_of(leaves[i]), false)
            } else {
                (a, grow)
            };
            let b = if grow {
                list.len()
            } else if one_leaf {
                index_of(leaves[leaves.iter().position(|l| *l == at(a)).unwrap() + 1])
            } else {
                let b = pick(&mut next);
                if b > a {
                    b
                } else {
                    (a + 1 + (next() % 40) as usize).min(list.len())
                }
            };
            // New extents: over the same bytes, or more when growing;
            // holes first or last half the time.
            let mut left = at(b) - at(a) + if grow { next() % 300_000 + 1 } else { 0 };
            let (hole_first, hole_last) = (next() % 2 == 0, next() % 2 == 0);
            let mut new = Vec::new();
            while left > 0 {
                let len = if one_leaf {
                    left
                } else {
                    (next() % 50_000 + 1).min(left)
                };
                let hole = one_leaf
                    || (new.is_empty() && hole_first)
                    || (len == left && hole_last)
                    || next() % 3 == 0;
                new.push(if hole {
                    Extent::Hole { len }
                } else {
                    Extent::Chunk {
                        len,
                        id: ObjectId::of(ObjectKind::Chunk, &next().to_le_bytes()),
                    }
                });
                left -= len;
            }
            let mut want = list[..a].to_vec();
            want.extend(&new);
            want.extend(&list[b..]);
            let mut bl = Builder::default();
            assert_eq!(bl.push_old(&store, &old, 0, at(a), false).unwrap(), at(a));
            for e in &new {
                bl.push(&store, *e).unwrap();
            }
            let end = old.size();
            if b < list.len() {
                assert_eq!(bl.push_old(&store, &old, at(b), end, true).unwrap(), end);
            }
            let got = bl.finish(&store).unwrap();
            assert_eq!(flatten(&store, &got), merged(&want), "round {round}");
            assert_eq!(got.id(), build(&store, &want).id(), "round {round}");
        }
    }
}
