//! The commit protocol: turn what changed since the last commit into
//! trees and a commit object, make every new object durable, then publish
//! all references in one atomic catalog batch and flush it.
//!
//! Cost: one tree per changed directory and per ancestor of one, each in
//! proportion to that directory's entries; nothing else of the tree is read.

use super::history::Rebuilt;
use super::{Engine, lock};
use crate::catalog::db::{Batch, PathVersion};
use crate::crashpoint::crash_point;
use crate::error::Result;
use crate::format::{Commit, FileType, Time, Tree, TreeEntry};
use crate::ids::{CommitSeq, Ino, ObjectId, ObjectKind};
use crate::status;
use std::collections::HashMap;

impl Engine {
    /// Makes a commit if anything changed; with `flush`, also makes every
    /// metadata change durable even when nothing needs a commit.
    pub fn commit(&self, flush: bool) -> Result<Option<CommitSeq>> {
        let started = std::time::Instant::now();
        let made = self.commit_now(flush)?;
        if made.is_some() {
            self.store
                .stats
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(made)
    }

    fn commit_now(&self, flush: bool) -> Result<Option<CommitSeq>> {
        if self.opts.read_only {
            return Ok(None);
        }
        self.check_writable()?;
        let ns = lock(&self.ns);
        let dirty = self.db.dirty_dirs()?;
        let (content, versions, checkpoints) = {
            let p = lock(&self.pending);
            (p.content.clone(), p.versions.clone(), p.checkpoints.clone())
        };
        if dirty.is_empty() && content.is_empty() && versions.is_empty() && checkpoints.is_empty() {
            if self.store.has_pending() {
                // Only new locations of rewritten (healed) objects.
                let index = self.store.pending();
                self.store.sync()?;
                let mut b = Batch::default();
                self.store.index_into(&mut b, &index);
                self.db
                    .apply(b)
                    .and_then(|()| self.db.flush())
                    .map_err(|e| self.store.poison(e))?;
                self.store.published(index.into_iter().map(|(id, _)| id));
            } else if flush {
                self.db.flush()?;
            }
            return Ok(None);
        }

        // Directories to rebuild, deepest first.
        let mut depth: HashMap<Ino, usize> = HashMap::new();
        for d in &dirty {
            let mut chain = Vec::new();
            let mut cur = *d;
            loop {
                if depth.contains_key(&cur) {
                    break;
                }
                let Some(inode) = self.db.inode(cur)? else {
                    break; // removed since it was marked
                };
                if inode.node.kind != FileType::Directory {
                    break;
                }
                chain.push(cur);
                if cur == Ino::ROOT || chain.len() > 4096 {
                    break;
                }
                cur = inode.parents.first().copied().unwrap_or(Ino::ROOT);
            }
            let base = depth.get(&cur).copied().map_or(0, |d| d + 1);
            let n = chain.len();
            for (i, ino) in chain.into_iter().enumerate() {
                depth.entry(ino).or_insert(base + n - 1 - i);
            }
        }
        let mut order: Vec<(Ino, usize)> = depth.into_iter().collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

        let mut trees: HashMap<Ino, ObjectId> = HashMap::new();
        let mut rebuilt: HashMap<Ino, Rebuilt> = HashMap::new();
        // A file's node once per commit, however many links it has here.
        let mut nodes: HashMap<Ino, crate::format::Node> = HashMap::new();
        for (dir, _) in &order {
            let mut tree = Tree::default();
            for (name, d) in self.db.list_dir(*dir)? {
                let mut node = match nodes.get(&d.ino) {
                    Some(n) => n.clone(),
                    None => {
                        let n = self.inode(d.ino)?.node;
                        nodes.insert(d.ino, n.clone());
                        n
                    }
                };
                if let Some(t) = trees.get(&d.ino) {
                    node.content = Some(*t);
                }
                tree.entries.push(TreeEntry {
                    name,
                    ino: d.ino.0,
                    node,
                });
            }
            let id = crate::dirtree::put(&self.store, &tree)?;
            trees.insert(*dir, id);
            // Kept decoded: this commit's diff walks the trees of the
            // directories new here, and the next one diffs against them;
            // neither reads them back from the packs (nor fills the chunk
            // cache with them: 131 MB of 1 M created files).
            let tree = std::sync::Arc::new(tree);
            lock(&self.trees).put(id, tree.clone());
            let old = self.db.inode(*dir)?.and_then(|i| i.node.content);
            rebuilt.insert(*dir, Rebuilt { tree, old });
        }
        let root = match trees.get(&Ino::ROOT) {
            Some(r) => *r,
            None => match self.db.inode(Ino::ROOT)?.and_then(|r| r.node.content) {
                Some(r) => r,
                None => self
                    .store
                    .put(ObjectKind::Tree, &Tree::default().encode())?,
            },
        };
        let head = self.db.counter("head")?;
        let prev = self.db.commit(CommitSeq(head))?;
        let parent = prev.map(|c| c.0);
        let seq = CommitSeq(head + 1);
        // Commit times strictly increase, so an instant names one commit.
        let mut time = crate::testclock::commit_time(seq.0).unwrap_or_else(Time::now);
        if let Some((_, t)) = prev
            && time <= t
        {
            time = Time::from_nanos(t.as_nanos() + 1);
        }
        let mut root_node = self.inode(Ino::ROOT)?.node;
        root_node.content = Some(root);
        let commit = Commit {
            seq: seq.0,
            time,
            parent,
            root,
            root_node,
            checkpoints: checkpoints.clone(),
        };
        let commit_id = self.store.put(ObjectKind::Commit, &commit.encode())?;

        crash_point("commit:objects-written");
        // Objects first: everything referenced below is durable after this.
        let index = self.store.pending();
        self.store.sync()?;
        crash_point("commit:packs-synced");

        let mut b = Batch::default();
        let (mut chunks, mut chunk_bytes, mut stored) = (0, 0, 0);
        for (id, e) in &index {
            stored += e.record_len();
            // `put` appends only objects not yet stored: every pending chunk
            // but a healed copy is a new one.
            if e.kind == ObjectKind::Chunk && !self.store.is_rewrite(id) {
                chunks += 1;
                chunk_bytes += e.raw_len as u64;
            }
        }
        self.store.index_into(&mut b, &index);
        for (path, node) in self.changed_paths(&rebuilt)? {
            let v = PathVersion {
                time,
                size: node.size,
                content: node.content,
            };
            b.put_path_version(&path, seq, &v);
        }
        // The trees replaced are not kept decoded for every old version.
        {
            let mut cache = lock(&self.trees);
            for (dir, r) in &rebuilt {
                if let Some(old) = r.old
                    && trees.get(dir) != Some(&old)
                {
                    cache.pop(&old);
                }
            }
        }
        let add = |b: &mut Batch, name: &str, n: u64| -> Result<()> {
            b.put_counter(name, self.db.counter(name)? + n);
            Ok(())
        };
        add(&mut b, status::CHUNKS, chunks)?;
        add(&mut b, status::CHUNK_BYTES, chunk_bytes)?;
        add(&mut b, status::VERSIONS, versions.len() as u64)?;
        let logical: u64 = versions.iter().map(|(_, _, v)| v.size).sum();
        add(&mut b, status::LOGICAL_BYTES, logical)?;
        add(&mut b, status::COMMITS, 1)?;
        crate::retention::plan::note_growth(&self.db, &mut b, time, stored)?;
        for (ino, (c, _)) in &content {
            if let Some(mut rec) = self.db.inode(*ino)? {
                c.apply(&mut rec.node);
                b.put_inode(*ino, &rec);
            }
        }
        for (dir, tree) in &trees {
            if let Some(mut rec) = self.db.inode(*dir)? {
                rec.node.content = Some(*tree);
                b.put_inode(*dir, &rec);
            }
        }
        for d in &dirty {
            b.clear_dirty(*d);
        }
        for (ino, vseq, v) in &versions {
            let mut v = v.clone();
            v.commit = seq;
            b.put_version(*ino, *vseq, &v);
        }
        b.put_counter(
            "next_vseq",
            self.next_vseq.load(std::sync::atomic::Ordering::SeqCst),
        );
        b.put_commit(seq, &commit_id, time);
        b.put_checkpoints(seq, &checkpoints);
        // A catalog that failed to take or persist a commit is in an unknown
        // state: refuse writes until reopened (the catalog recovers on open).
        self.db.apply(b).map_err(|e| self.store.poison(e))?;
        // The catalog holds all of it now (in memory): what was pending goes.
        self.store.published(index.into_iter().map(|(id, _)| id));
        let mut p = lock(&self.pending);
        p.content.clear();
        p.versions.clear();
        p.placed.clear();
        p.checkpoints.clear();
        drop(p);
        drop(ns);
        crash_point("commit:catalog-applied");
        // Durable outside the namespace lock: the next commit cannot reach
        // the disk before this one (the catalog journal is recovered as a prefix),
        // and whoever asked for this commit still waits for it.
        self.db.flush().map_err(|e| self.store.poison(e))?;
        crash_point("commit:flushed");
        crate::metrics::Stats::add(&self.store.stats.versions, versions.len() as u64);
        tracing::debug!(seq = seq.0, dirs = trees.len(), "commit");
        for r in self.replicas() {
            r.kick();
        }
        Ok(Some(seq))
    }

    /// The newest commit, if any.
    pub fn head(&self) -> Result<Option<(CommitSeq, Commit)>> {
        let head = CommitSeq(self.db.counter("head")?);
        match self.db.commit(head)? {
            None => Ok(None),
            Some((id, _)) => Ok(Some((head, Commit::decode(&self.store.get(&id)?)?))),
        }
    }

    /// Reads a tree object.
    pub fn tree(&self, id: &ObjectId) -> Result<Tree> {
        crate::dirtree::get(&self.store, id)
    }
}
