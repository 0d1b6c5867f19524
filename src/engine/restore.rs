//! `revfs restore`: puts a file, a directory or the whole tree back to its
//! state in a commit, as metadata only. The chunks, manifests and trees of
//! that commit are already in the store, so restoring 10 GiB writes a few
//! catalog records, never the bytes.
//!
//! The live subtree at the destination is made equal to the snapshot's:
//! entries missing from the snapshot are removed, the others are updated
//! in place (a regular file with one link keeps its inode, so open handles
//! see the restored content) or created anew; hard links within the
//! snapshot become hard links again. Every file whose content changes gets
//! a version, and a commit is made before (so the state being replaced is
//! in history: a restore can be undone by another) and after.
//!
//! All catalog changes go in one atomic batch under the namespace lock; an
//! open file with unrecorded writes is left to its writer (its next close
//! records on top of the restored state, as any later write would).

use super::file::FileState;
use super::{Engine, Inval, lock};
use crate::catalog::db::{Batch, Dentry, Inode, Version};
use crate::error::{Error, Result};
use crate::format::{FileType, Node, Time};
use crate::ids::{CommitSeq, Ino, ObjectId};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What a restore did.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct Restored {
    /// The commit restored from, and its time.
    pub from_commit: u64,
    pub from_time: String,
    /// The commit that holds the restored state.
    pub commit: u64,
    /// Regular files whose content was set, and their bytes.
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    /// Other nodes (symlinks, devices...) set.
    pub others: u64,
    /// Live entries removed because the snapshot does not have them.
    pub removed: u64,
}

/// The catalog changes of one restore, read back through an overlay so
/// that a node touched twice (hard links) is counted right.
struct Txn<'a> {
    engine: &'a Engine,
    inodes: HashMap<Ino, Option<Inode>>,
    dentries: BTreeMap<(Ino, Vec<u8>), Option<Dentry>>,
    dirty: Vec<Ino>,
    orphans: Vec<Ino>,
    /// Snapshot inode number -> live inode made or reused for it.
    links: HashMap<u64, Ino>,
    /// Files whose content was set: (inode, manifest) for open handles.
    contents: Vec<(Ino, Option<ObjectId>)>,
    versions: Vec<(Ino, Version)>,
    batch: Batch,
    now: Time,
    out: Restored,
}

impl Txn<'_> {
    fn inode(&self, ino: Ino) -> Result<Inode> {
        match self.inodes.get(&ino) {
            Some(Some(i)) => Ok(i.clone()),
            Some(None) => Err(Error::NotFound),
            None => self.engine.inode(ino),
        }
    }

    fn put(&mut self, ino: Ino, inode: Inode) {
        self.inodes.insert(ino, Some(inode));
    }

    fn dentry(&self, parent: Ino, name: &[u8]) -> Result<Option<Dentry>> {
        match self.dentries.get(&(parent, name.to_vec())) {
            Some(d) => Ok(*d),
            None => self.engine.db.dentry(parent, name),
        }
    }

    fn list(&self, dir: Ino) -> Result<Vec<(Vec<u8>, Dentry)>> {
        let mut m: BTreeMap<Vec<u8>, Dentry> = self.engine.db.list_dir(dir)?.into_iter().collect();
        for ((_, name), d) in self
            .dentries
            .range((dir, Vec::new())..)
            .take_while(|((p, _), _)| *p == dir)
        {
            match d {
                Some(d) => m.insert(name.clone(), *d),
                None => m.remove(name),
            };
        }
        Ok(m.into_iter().collect())
    }

    fn set_dentry(&mut self, parent: Ino, name: &[u8], d: Option<Dentry>) {
        self.dentries.insert((parent, name.to_vec()), d);
        self.dirty.push(parent);
    }

    fn add_name(&mut self, parent: Ino, name: &[u8], ino: Ino, kind: FileType) {
        self.set_dentry(parent, name, Some(Dentry { ino, kind }));
    }

    /// Makes `parent/name` what the snapshot entry (`src_ino`, `src`) is.
    fn restore_at(&mut self, parent: Ino, name: &[u8], src_ino: u64, src: &Node) -> Result<()> {
        let live = self.dentry(parent, name)?;
        if let Some(d) = live {
            let reuse = match (d.kind, src.kind) {
                (FileType::Directory, FileType::Directory) => true,
                (FileType::Regular, FileType::Regular) => {
                    !self.links.contains_key(&src_ino) && self.inode(d.ino)?.node.nlink == 1
                }
                _ => false,
            };
            if reuse {
                return self.update(d.ino, src_ino, src);
            }
            self.remove(parent, name, d)?;
        }
        self.create(parent, name, src_ino, src)
    }

    /// Sets an existing live node (a directory, or a file with one link)
    /// to the snapshot's.
    fn update(&mut self, ino: Ino, src_ino: u64, src: &Node) -> Result<()> {
        let mut inode = self.inode(ino)?;
        let (nlink, tree) = (inode.node.nlink, inode.node.content);
        inode.node = src.clone();
        inode.node.nlink = nlink;
        inode.node.ctime = self.now;
        if src.kind == FileType::Directory {
            // A directory's content is its tree at the last commit (what the
            // next commit compares with), not the snapshot's.
            inode.node.content = tree;
            inode.node.nlink = self.sync_dir(ino, src)?;
            self.out.dirs += 1;
            self.dirty.push(ino);
        } else {
            self.file_set(ino, src);
            self.links.insert(src_ino, ino);
        }
        self.dirty.extend(inode.parents.dirs());
        self.put(ino, inode);
        Ok(())
    }

    fn file_set(&mut self, ino: Ino, src: &Node) {
        self.out.files += 1;
        self.out.bytes += src.size;
        self.contents.push((ino, src.content));
        self.versions.push((
            ino,
            Version {
                time: self.now,
                size: src.size,
                mtime: src.mtime,
                manifest: src.content,
                fsynced: false,
                commit: CommitSeq(0),
            },
        ));
    }

    /// Makes the entries of live directory `dir` those of the snapshot
    /// directory `src`; returns the directory's link count.
    fn sync_dir(&mut self, dir: Ino, src: &Node) -> Result<u32> {
        let tree = match src.content {
            Some(t) => self.engine.cached_tree(&t)?,
            None => Default::default(),
        };
        for (name, d) in self.list(dir)? {
            if tree
                .entries
                .binary_search_by(|e| e.name.as_slice().cmp(&name))
                .is_err()
            {
                self.remove(dir, &name, d)?;
            }
        }
        let mut subdirs = 0;
        for e in tree.entries.iter() {
            self.restore_at(dir, &e.name, e.ino, &e.node)?;
            subdirs += (e.node.kind == FileType::Directory) as u32;
        }
        Ok(2 + subdirs)
    }

    /// A new live node for the snapshot's, or a new link to the live node
    /// already made for the same snapshot inode.
    fn create(&mut self, parent: Ino, name: &[u8], src_ino: u64, src: &Node) -> Result<()> {
        if src.kind != FileType::Directory
            && let Some(&ino) = self.links.get(&src_ino)
        {
            let mut inode = self.inode(ino)?;
            inode.node.nlink += 1;
            inode.parents.push(parent);
            self.put(ino, inode);
            self.add_name(parent, name, ino, src.kind);
            return Ok(());
        }
        let ino = self.engine.alloc_ino(&mut self.batch);
        let mut node = src.clone();
        node.ctime = self.now;
        node.nlink = 1;
        if src.kind == FileType::Directory {
            node.content = None; // no tree committed yet
        }
        self.add_name(parent, name, ino, src.kind);
        self.put(
            ino,
            Inode {
                node: node.clone(),
                parents: crate::catalog::db::Parents::one(parent),
            },
        );
        match src.kind {
            FileType::Directory => {
                let nlink = self.sync_dir(ino, src)?;
                let mut inode = self.inode(ino)?;
                inode.node.nlink = nlink;
                inode.node.mtime = src.mtime;
                self.put(ino, inode);
                self.dirty.push(ino);
                self.out.dirs += 1;
                self.adjust_nlink(parent, 1)?;
            }
            FileType::Regular => {
                self.file_set(ino, src);
                self.links.insert(src_ino, ino);
            }
            _ => {
                self.out.others += 1;
                self.links.insert(src_ino, ino);
            }
        }
        Ok(())
    }

    fn adjust_nlink(&mut self, dir: Ino, delta: i64) -> Result<()> {
        let mut d = self.inode(dir)?;
        d.node.nlink = (d.node.nlink as i64 + delta).max(2) as u32;
        d.node.mtime = self.now;
        d.node.ctime = self.now;
        self.put(dir, d);
        Ok(())
    }

    /// Removes live entry `parent/name` (a directory with all it holds).
    fn remove(&mut self, parent: Ino, name: &[u8], d: Dentry) -> Result<()> {
        self.out.removed += 1;
        self.set_dentry(parent, name, None);
        let mut inode = self.inode(d.ino)?;
        if d.kind == FileType::Directory {
            for (child, cd) in self.list(d.ino)? {
                self.remove(d.ino, &child, cd)?;
            }
            self.adjust_nlink(parent, -1)?;
            inode.node.nlink = 0;
        } else {
            inode.node.nlink = inode.node.nlink.saturating_sub(1);
        }
        inode.parents.remove_one(parent);
        inode.node.ctime = self.now;
        if inode.node.nlink > 0 {
            self.put(d.ino, inode);
        } else if self.engine.in_use(d.ino) {
            // Still open or known to the kernel: it lives on unlinked.
            self.put(d.ino, inode);
            self.orphans.push(d.ino);
        } else {
            self.inodes.insert(d.ino, None);
        }
        Ok(())
    }

    /// Writes everything into the batch.
    fn finish(mut self) -> Finished {
        let mut p = lock(&self.engine.pending);
        for (ino, inode) in &self.inodes {
            // The restored content replaces any not yet committed.
            p.content.remove(ino);
            match inode {
                Some(i) => self.batch.put_inode(*ino, i),
                None => {
                    self.batch.del_inode(*ino);
                    self.batch.clear_dirty(*ino);
                }
            }
        }
        drop(p);
        for ((parent, name), d) in &self.dentries {
            match d {
                Some(d) => self.batch.put_dentry(*parent, name, *d),
                None => self.batch.del_dentry(*parent, name),
            }
        }
        for d in &self.dirty {
            if !matches!(self.inodes.get(d), Some(None)) {
                self.batch.mark_dirty(*d);
            }
        }
        for o in &self.orphans {
            self.batch.put_orphan(*o);
        }
        let mut inval: Vec<Inval> = self.inodes.keys().map(|i| Inval::Inode(*i)).collect();
        inval.extend(self.dentries.into_keys().map(|(p, n)| Inval::Entry(p, n)));
        Finished {
            batch: self.batch,
            versions: self.versions,
            contents: self.contents,
            inval,
            out: self.out,
        }
    }
}

/// A restore's catalog batch and what follows from it.
struct Finished {
    batch: Batch,
    versions: Vec<(Ino, Version)>,
    contents: Vec<(Ino, Option<ObjectId>)>,
    inval: Vec<Inval>,
    out: Restored,
}

impl Engine {
    /// Restores `path` (relative to the mount root; empty: the whole tree)
    /// as it was at instant `at` to `to` (default: in place).
    pub fn restore(&self, path: &str, at: Time, to: Option<&str>) -> Result<Restored> {
        self.check_writable()?;
        let instant = crate::timefmt::rfc3339(at);
        let (seq, time) = self.commit_at(at)?.ok_or_else(|| {
            Error::Store(format!(
                "no commit at or before {instant}: history starts later"
            ))
        })?;
        let comps = super::history::components(path);
        let (src_ino, src) = self.entry_at(seq, path)?.ok_or_else(|| {
            Error::Store(format!(
                "/{path}: not in the tree at {instant} (commit {})",
                seq.0
            ))
        })?;
        let dest = to.map(super::history::components).unwrap_or(comps);
        if dest.first() == Some(&super::snapshots::SNAPSHOTS_NAME) {
            return Err(Error::ReadOnly);
        }
        if dest.is_empty() && src.kind != FileType::Directory {
            return Err(Error::IsDir);
        }
        // What is there now goes into history first, so this can be undone.
        self.record_all()?;
        self.commit(true)?;
        let (contents, inval, mut out) = {
            let _ns = lock(&self.ns);
            // A prune drops commits under this lock: the objects of one
            // still listed here are kept, and of one gone, not.
            if self.db.commit(seq)?.is_none() {
                return Err(Error::Store(format!(
                    "commit {} was dropped by prune while restoring",
                    seq.0
                )));
            }
            let mut txn = Txn {
                engine: self,
                inodes: HashMap::new(),
                dentries: BTreeMap::new(),
                dirty: Vec::new(),
                orphans: Vec::new(),
                links: HashMap::new(),
                contents: Vec::new(),
                versions: Vec::new(),
                batch: Batch::default(),
                now: Time::now(),
                out: Restored::default(),
            };
            match dest.split_last() {
                None => {
                    txn.update(Ino::ROOT, src_ino, &src)?;
                }
                Some((name, dirs)) => {
                    let mut parent = Ino::ROOT;
                    for d in dirs {
                        let e = self.db.dentry(parent, d)?.ok_or(Error::NotFound)?;
                        if e.kind != FileType::Directory {
                            return Err(Error::NotDir);
                        }
                        parent = e.ino;
                    }
                    txn.restore_at(parent, name, src_ino, &src)?;
                    txn.adjust_nlink(parent, 0)?;
                    txn.dirty.push(parent);
                }
            }
            let f = txn.finish();
            self.db.apply(f.batch)?;
            let mut p = lock(&self.pending);
            for (ino, v) in f.versions {
                let vseq = self
                    .next_vseq
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                p.versions.push((ino, vseq, v));
            }
            (f.contents, f.inval, f.out)
        };
        // Open handles of restored files see the restored content, unless
        // they hold unrecorded writes of their own.
        for (ino, content) in contents {
            if let Some(f) = self.open_file(ino) {
                let mut st = f.write().unwrap_or_else(|e| e.into_inner());
                if !st.dirty {
                    *st = FileState::new(self.load_manifest(content)?);
                }
            }
        }
        out.from_commit = seq.0;
        out.from_time = crate::timefmt::rfc3339(time);
        out.commit = self.commit(true)?.map_or(0, |c| c.0);
        // The kernel caches names and attributes it did not see change.
        self.invalidate(inval);
        Ok(out)
    }
}
