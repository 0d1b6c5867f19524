//! The read-only history view under `MOUNT/.snapshots/`, built from
//! virtual directories, one symlink and real commit trees:
//!
//! ```text
//! .snapshots/                 not listed by readdir of the root; looked up
//!   latest -> <auto name>     the newest commit
//!   <name>/                   named snapshots (mkdir makes one, rmdir drops it)
//!   YYYY-MM-DDTHHMMSSZ/       automatic snapshots: the newest commit of that
//!                             second; the listing is thinned (see `Thinning`)
//!   at/<RFC 3339 instant>/    the newest commit at or before the instant
//!   checkpoints/<name>/       each completed training checkpoint's directory
//!                             in the commit that completed it
//!                             (`checkpoints`; listed once there is one)
//! ```
//!
//! Inodes of the view have bit 63 set. Each entry point (a name under
//! `.snapshots` or under `at/`) is a *view*; an inode of a view is keyed by
//! (view, inode number in the commit), so hard links within one snapshot
//! share an inode, and numbers stay stable for the life of the mount. A
//! lookup reads only the trees on its path (cached decoded), so opening a
//! snapshot directory costs in proportion to that directory.

use super::file::FileState;
use super::history::{auto_name, parse_auto_name, parse_instant};
use super::{Attr, DirEntry, Engine, Handle, lock};
use crate::catalog::db::Batch;
use crate::error::{Error, Result};
use crate::format::{Commit, FileType, Node, Time, Tree};
use crate::ids::{CommitSeq, Ino, ObjectId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub const SNAPSHOTS_NAME: &[u8] = b".snapshots";
const VIRTUAL: u64 = 1 << 63;
pub const SNAP_ROOT: Ino = Ino(VIRTUAL | 1);
pub const AT_DIR: Ino = Ino(VIRTUAL | 2);
pub const LATEST: Ino = Ino(VIRTUAL | 3);
/// `.snapshots/checkpoints/`: every completed training checkpoint.
pub const CHECKPOINTS: Ino = Ino(VIRTUAL | 4);
const FIRST_DYNAMIC: u64 = VIRTUAL | 16;

/// The two inode spaces of the engine: every entry point dispatches on it
/// first, so the history view answers the same (EROFS for writes, even on
/// a store that refuses writes) whatever else the call would check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// The live tree: inode numbers from the catalog.
    Live,
    /// The read-only history view: bit 63 set, numbers of this mount only.
    History,
}

impl Space {
    pub fn of(ino: Ino) -> Space {
        if ino.0 & VIRTUAL != 0 {
            Space::History
        } else {
            Space::Live
        }
    }
}

/// A node of the history view, and how many references the kernel holds.
#[derive(Clone)]
struct VNode {
    view: u32,
    orig: u64,
    node: Node,
    lookups: u64,
}

/// The inodes of the history view this mount has handed out. An inode
/// lives while the kernel holds it (lookups not yet forgotten); one only
/// listed by readdir lives until that listing's handle is released. A
/// view (one snapshot name or instant) lives while any inode of it does,
/// so browsing history costs memory only for what the kernel holds.
#[derive(Default)]
pub(super) struct Views {
    by_key: HashMap<(u32, u64), Ino>,
    nodes: HashMap<Ino, VNode>,
    view_ids: HashMap<String, u32>,
    /// View id -> (its key, number of its inodes alive).
    views: HashMap<u32, (String, usize)>,
    next: u64,
    next_view: u32,
}

impl Views {
    fn intern(&mut self, view: u32, orig: u64, node: Node) -> Ino {
        if let Some(ino) = self.by_key.get(&(view, orig)) {
            return *ino;
        }
        let ino = Ino(FIRST_DYNAMIC + self.next);
        self.next += 1;
        self.by_key.insert((view, orig), ino);
        self.nodes.insert(
            ino,
            VNode {
                view,
                orig,
                node,
                lookups: 0,
            },
        );
        if let Some(v) = self.views.get_mut(&view) {
            v.1 += 1;
        }
        ino
    }

    fn view_id(&mut self, key: &str) -> u32 {
        if let Some(id) = self.view_ids.get(key) {
            return *id;
        }
        let id = self.next_view;
        self.next_view = self.next_view.wrapping_add(1);
        self.view_ids.insert(key.to_string(), id);
        self.views.insert(id, (key.to_string(), 0));
        id
    }

    /// The kernel got a reference (an entry reply).
    pub(super) fn remember(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.lookups += 1;
        }
    }

    /// The kernel dropped `n` references.
    pub(super) fn forget(&mut self, ino: Ino, n: u64) {
        if let Some(v) = self.nodes.get_mut(&ino) {
            v.lookups = v.lookups.saturating_sub(n);
            if v.lookups == 0 {
                self.drop_node(ino);
            }
        }
    }

    /// A listing is done: its entries that nothing looked up go.
    pub(super) fn listed(&mut self, entries: &[DirEntry]) {
        for e in entries {
            if self.nodes.get(&e.ino).is_some_and(|n| n.lookups == 0) {
                self.drop_node(e.ino);
            }
        }
    }

    fn drop_node(&mut self, ino: Ino) {
        let Some(n) = self.nodes.remove(&ino) else {
            return;
        };
        self.by_key.remove(&(n.view, n.orig));
        let gone = self.views.get_mut(&n.view).is_some_and(|v| {
            v.1 = v.1.saturating_sub(1);
            v.1 == 0
        });
        if gone && let Some((key, _)) = self.views.remove(&n.view) {
            self.view_ids.remove(&key);
        }
    }

    /// The nodes of every view that one of `open` (inodes with an open
    /// handle) belongs to: what a running read of history needs.
    pub(super) fn in_use(&self, open: &[Ino]) -> Vec<Node> {
        let views: std::collections::HashSet<u32> = open
            .iter()
            .filter_map(|i| self.nodes.get(i).map(|n| n.view))
            .collect();
        self.nodes
            .values()
            .filter(|n| views.contains(&n.view))
            .map(|n| n.node.clone())
            .collect()
    }

    /// The names (parent, name) under which the kernel may hold a view of
    /// one of the commits `gone`.
    pub(super) fn names_of(&self, gone: &std::collections::HashSet<u64>) -> Vec<(Ino, Vec<u8>)> {
        let mut out = Vec::new();
        for (key, _) in self.views.values() {
            let Some((k, seq)) = key.rsplit_once('@') else {
                continue;
            };
            if !seq.parse().is_ok_and(|s: u64| gone.contains(&s)) {
                continue;
            }
            match k.split_once('/') {
                Some(("t", name)) => out.push((AT_DIR, name.as_bytes().to_vec())),
                Some(("c", name)) => out.push((CHECKPOINTS, name.as_bytes().to_vec())),
                Some((_, name)) => out.push((SNAP_ROOT, name.as_bytes().to_vec())),
                None => {}
            }
        }
        out
    }

    /// Inodes of the view alive now.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }
}

fn virtual_dir(mtime: Time) -> Node {
    let mut n = Node::new(FileType::Directory, 0o555, 0, 0);
    n.mtime = mtime;
    n.ctime = mtime;
    n.atime = mtime;
    n
}

fn check_snapshot_name(name: &str) -> Result<()> {
    if name.len() > 255 {
        return Err(Error::NameTooLong);
    }
    if name.is_empty()
        || name.contains('/')
        || name.contains('\0')
        || name.starts_with('.')
        || name == "latest"
        || name == "at"
        || name == super::checkpoints::VIEW_DIR
        || parse_auto_name(name).is_some()
    {
        return Err(Error::Invalid);
    }
    Ok(())
}

impl Engine {
    fn views(&self) -> std::sync::MutexGuard<'_, Views> {
        lock(&self.views)
    }

    /// A decoded tree, cached.
    pub(super) fn cached_tree(&self, id: &ObjectId) -> Result<Arc<Tree>> {
        if let Some(t) = lock(&self.trees).get(id) {
            return Ok(t.clone());
        }
        let t = Arc::new(self.tree(id)?);
        lock(&self.trees).put(*id, t.clone());
        Ok(t)
    }

    /// The root directory node of a commit (content = its root tree).
    pub(super) fn commit_root(&self, seq: CommitSeq) -> Result<Node> {
        let (id, _) = self.db.commit(seq)?.ok_or(Error::NotFound)?;
        let c = Commit::decode(&self.store.get(&id)?)?;
        let mut node = c.root_node;
        node.content = Some(c.root);
        Ok(node)
    }

    fn head_time(&self) -> Result<Time> {
        let head = CommitSeq(self.db.counter("head")?);
        Ok(self.db.commit(head)?.map_or(Time::default(), |(_, t)| t))
    }

    /// The root directory of the view named `key` at commit `seq`. A name
    /// that comes to mean another commit (an automatic name whose second
    /// is still running, a re-created name) gets a new view.
    fn view_root(&self, key: &str, seq: CommitSeq) -> Result<Ino> {
        let node = self.commit_root(seq)?;
        let mut v = self.views();
        let view = v.view_id(&format!("{key}@{}", seq.0));
        Ok(v.intern(view, crate::ids::Ino::ROOT.0, node))
    }

    /// The directory of checkpoint `e` in the commit that completed it.
    fn checkpoint_view(&self, e: &super::checkpoints::Entry) -> Result<Ino> {
        let (orig, node) = self.checkpoint_dir(e)?.ok_or(Error::NotFound)?;
        let mut v = self.views();
        let view = v.view_id(&format!("c/{}@{}", e.name, e.seq.0));
        Ok(v.intern(view, orig, node))
    }

    /// Tells the kernel to forget the views of commits a prune dropped (a
    /// later lookup finds what history holds now); views in use by open
    /// handles stay readable (prune keeps what they need).
    pub fn forget_views_of(&self, gone: &[CommitSeq]) {
        let gone: std::collections::HashSet<u64> = gone.iter().map(|s| s.0).collect();
        let names = self.views().names_of(&gone);
        self.invalidate(
            names
                .into_iter()
                .map(|(p, n)| super::Inval::Entry(p, n))
                .collect(),
        );
    }

    pub(super) fn snap_getattr(&self, ino: Ino) -> Result<Attr> {
        let node = match ino {
            SNAP_ROOT | AT_DIR | CHECKPOINTS => virtual_dir(self.head_time()?),
            LATEST => {
                let target = self.latest_target()?;
                let mut n = Node::new(FileType::Symlink, 0o777, 0, 0);
                n.size = target.len() as u64;
                n.target = target.into_bytes();
                n.mtime = self.head_time()?;
                n
            }
            _ => self
                .views()
                .nodes
                .get(&ino)
                .ok_or(Error::NotFound)?
                .node
                .clone(),
        };
        Ok(Attr { ino, node })
    }

    fn latest_target(&self) -> Result<String> {
        let head = CommitSeq(self.db.counter("head")?);
        let (_, t) = self.db.commit(head)?.ok_or(Error::NotFound)?;
        Ok(auto_name(t))
    }

    pub(super) fn snap_lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let name_s = std::str::from_utf8(name).map_err(|_| Error::NotFound)?;
        let ino = match parent {
            SNAP_ROOT => match name_s {
                "latest" => {
                    self.latest_target()?;
                    LATEST
                }
                "at" => AT_DIR,
                super::checkpoints::VIEW_DIR => CHECKPOINTS,
                _ => {
                    if let Some(seq) = self.db.name(name_s)? {
                        self.view_root(&format!("n/{name_s}"), seq)?
                    } else if let Some(t) = parse_auto_name(name_s) {
                        let end = Time {
                            secs: t.secs,
                            nanos: 999_999_999,
                        };
                        match self.commit_at(end)? {
                            Some((seq, ct)) if ct.secs == t.secs => {
                                self.view_root(&format!("a/{name_s}"), seq)?
                            }
                            _ => return Err(Error::NotFound),
                        }
                    } else {
                        return Err(Error::NotFound);
                    }
                }
            },
            AT_DIR => {
                let t = parse_instant(name_s).ok_or(Error::NotFound)?;
                if t > Time::now() {
                    return Err(Error::NotFound);
                }
                let (seq, _) = self.commit_at(t)?.ok_or(Error::NotFound)?;
                self.view_root(&format!("t/{name_s}"), seq)?
            }
            CHECKPOINTS => {
                let e = self.checkpoint_entry(name_s)?.ok_or(Error::NotFound)?;
                self.checkpoint_view(&e)?
            }
            LATEST => return Err(Error::NotDir),
            _ => {
                let dir = self
                    .views()
                    .nodes
                    .get(&parent)
                    .cloned()
                    .ok_or(Error::NotFound)?;
                if dir.node.kind != FileType::Directory {
                    return Err(Error::NotDir);
                }
                let tree = self.cached_tree(&dir.node.content.ok_or(Error::NotFound)?)?;
                let i = tree
                    .entries
                    .binary_search_by(|e| e.name.as_slice().cmp(name))
                    .map_err(|_| Error::NotFound)?;
                let e = &tree.entries[i];
                self.views().intern(dir.view, e.ino, e.node.clone())
            }
        };
        self.snap_getattr(ino)
    }

    /// Entries of a directory of the view (for readdir).
    pub(super) fn snap_list(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let dot = |ino, name: &[u8]| DirEntry {
            ino,
            kind: FileType::Directory,
            name: name.to_vec(),
        };
        let mut out = vec![dot(ino, b"."), dot(Ino::ROOT, b"..")];
        match ino {
            SNAP_ROOT => {
                if self.latest_target().is_ok() {
                    out.push(DirEntry {
                        ino: LATEST,
                        kind: FileType::Symlink,
                        name: b"latest".to_vec(),
                    });
                }
                if self.db.has_checkpoints()? {
                    out.push(dot(CHECKPOINTS, super::checkpoints::VIEW_DIR.as_bytes()));
                }
                // The listing knows each entry's commit: no lookup by name
                // (which would scan the commits once per entry).
                for s in self.snapshot_list(&self.opts.thinning)? {
                    let kind = if s.named { "n" } else { "a" };
                    let ino = self.view_root(&format!("{kind}/{}", s.name), CommitSeq(s.commit))?;
                    out.push(dot(ino, s.name.as_bytes()));
                }
            }
            AT_DIR => out[1].ino = SNAP_ROOT,
            CHECKPOINTS => {
                out[1].ino = SNAP_ROOT;
                for e in self.checkpoint_entries()? {
                    // One whose directory went before its commit: nothing to show.
                    if let Ok(ino) = self.checkpoint_view(&e) {
                        out.push(dot(ino, e.name.as_bytes()));
                    }
                }
            }
            LATEST => return Err(Error::NotDir),
            _ => {
                let dir = self
                    .views()
                    .nodes
                    .get(&ino)
                    .cloned()
                    .ok_or(Error::NotFound)?;
                if dir.node.kind != FileType::Directory {
                    return Err(Error::NotDir);
                }
                let tree = self.cached_tree(&dir.node.content.ok_or(Error::NotFound)?)?;
                let mut v = self.views();
                for e in &tree.entries {
                    out.push(DirEntry {
                        ino: v.intern(dir.view, e.ino, e.node.clone()),
                        kind: e.node.kind,
                        name: e.name.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Opens a file of the view for reading.
    pub(super) fn snap_open(&self, ino: Ino, write: bool) -> Result<u64> {
        if write {
            return Err(Error::ReadOnly);
        }
        let attr = self.snap_getattr(ino)?;
        match attr.node.kind {
            FileType::Regular => {}
            FileType::Directory => return Err(Error::IsDir),
            _ => return Err(Error::Invalid),
        }
        let state = FileState::new(self.load_manifest(attr.node.content)?);
        Ok(self.new_handle(Handle::File {
            ino,
            state: Arc::new(RwLock::new(state)),
            opener: 0,
        }))
    }

    /// Names the current state (after recording open files and committing).
    pub fn snapshot_create(&self, name: &str) -> Result<CommitSeq> {
        self.check_writable()?;
        check_snapshot_name(name)?;
        if self.db.name(name)?.is_some() {
            return Err(Error::Exists);
        }
        self.record_all()?;
        self.commit(true)?;
        let head = CommitSeq(self.db.counter("head")?);
        if head.0 == 0 {
            return Err(Error::NotFound);
        }
        self.name_commit(name, head)?;
        Ok(head)
    }

    /// Names commit `seq` (durable when this returns).
    pub(super) fn name_commit(&self, name: &str, seq: CommitSeq) -> Result<()> {
        check_snapshot_name(name)?;
        let _ns = lock(&self.ns);
        if self.db.name(name)?.is_some() {
            return Err(Error::Exists);
        }
        let mut b = Batch::default();
        b.put_name(name, seq);
        self.db.apply(b)?;
        self.db.flush()
    }

    pub fn snapshot_delete(&self, name: &str) -> Result<()> {
        self.check_writable()?;
        let _ns = lock(&self.ns);
        if self.db.name(name)?.is_none() {
            return Err(if parse_auto_name(name).is_some() {
                Error::ReadOnly
            } else {
                Error::NotFound
            });
        }
        let mut b = Batch::default();
        b.del_name(name);
        self.db.apply(b)?;
        self.db.flush()
    }

    /// `mkdir .snapshots/NAME`.
    pub(super) fn snap_mkdir(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        if parent != SNAP_ROOT {
            return Err(Error::ReadOnly);
        }
        let name = std::str::from_utf8(name).map_err(|_| Error::Invalid)?;
        self.snapshot_create(name)?;
        self.snap_lookup(SNAP_ROOT, name.as_bytes())
    }

    /// `rmdir .snapshots/NAME`.
    pub(super) fn snap_rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        if parent != SNAP_ROOT {
            return Err(Error::ReadOnly);
        }
        let name = std::str::from_utf8(name).map_err(|_| Error::NotFound)?;
        if name == "latest" || name == "at" || name == super::checkpoints::VIEW_DIR {
            return Err(Error::ReadOnly);
        }
        self.snapshot_delete(name)
    }
}
