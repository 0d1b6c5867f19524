//! Rebuilding a catalog from packs alone (plus a replica's heads and names):
//! what `revfs recover` and a read-only mount of a replica do. The object
//! index comes from the pack records, the commit list from the commit
//! records up to the head (less those a prune dropped: the replica's
//! `pruned/` files; never the parent chain, which a prune cuts), and the
//! live tree from the head commit's trees.
//!
//! Which head: the newest head file whose commit is there. With
//! [`Check::Complete`] (recover, drill) every commit of the chain is also
//! checked for completeness (all its trees, manifests and chunks indexed),
//! and the live tree comes from the newest complete commit, so a damaged
//! replica still recovers everything that is intact and says what is not.

use super::target::Target;
use crate::catalog::db::{Batch, Db, Dentry, IndexEntry, Inode, Version};
use crate::error::{Error, Result};
use crate::format::{Commit, FileType};
use crate::ids::{CommitSeq, Ino, ObjectId, ObjectKind};
use crate::store::ObjectStore;
use crate::store::pack::{self, PackReader};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// What an import found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Imported {
    pub packs: u64,
    pub objects: u64,
    pub commits: u64,
    pub files: u64,
    /// The commit the live tree is rebuilt from.
    pub head: u64,
    /// The newest commit the replica's head files name.
    pub replica_head: u64,
    /// Commits newer than `head` that could not be recovered (objects missing).
    pub lost_commits: u64,
    /// Older commits kept in history with some objects missing.
    pub damaged_commits: u64,
    /// Records that failed their hash check (not indexed).
    pub corrupt_records: u64,
}

/// How far an import checks the commits it rebuilds from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Trust the head commit (fast: a read-only mount of the replica).
    Head,
    /// Walk every commit's objects; the head is the newest complete one.
    Complete,
}

/// Indexes every record of every pack in `packs_dir` into `db`, trusting
/// the record headers (reads check hashes later).
pub fn index_packs(packs_dir: &Path, db: &Db, out: &mut Imported) -> Result<()> {
    for no in pack::list_packs(packs_dir)? {
        let reader = PackReader::open(packs_dir, no)?;
        let mut b = Batch::default();
        for (h, offset) in reader.scan()? {
            b.put_index(&h.id, &IndexEntry::of_record(no, offset, &h));
            out.objects += 1;
        }
        db.apply(b)?;
        out.packs += 1;
    }
    Ok(())
}

/// Every readable head file of a replica, newest first.
fn heads(replica: &dyn Target, db: &Db) -> Result<Vec<(CommitSeq, ObjectId)>> {
    let mut out = super::read_heads(replica, db.crypto())?;
    out.sort_by_key(|h| std::cmp::Reverse(h.0));
    Ok(out)
}

/// Every commit object the packs hold that history still lists: for each
/// sequence number the copy written last (a commit that a crash lost
/// before its catalog batch leaves an orphan of the same number behind
/// it, in an earlier place), without the numbers a prune dropped
/// (`pruned/` files); newest first, up to `head`.
fn stored_commits(
    replica: &dyn Target,
    db: &Db,
    store: &ObjectStore,
    head: u64,
) -> Result<Vec<(ObjectId, Commit)>> {
    let dropped = super::read_pruned(replica, db.crypto())?;
    let mut best: HashMap<u64, ((crate::ids::PackNo, u64), ObjectId, Commit)> = HashMap::new();
    for entry in db.index_all() {
        let (id, e) = entry?;
        if e.kind != ObjectKind::Commit {
            continue;
        }
        let Ok(c) = store.get(&id).and_then(|b| Commit::decode(&b)) else {
            tracing::warn!("commit {id} is damaged: left out");
            continue;
        };
        if c.seq > head || dropped.contains(&CommitSeq(c.seq)) {
            continue;
        }
        let at = (e.pack, e.offset);
        if best.get(&c.seq).is_none_or(|(b, _, _)| *b < at) {
            best.insert(c.seq, (at, id, c));
        }
    }
    let mut out: Vec<(ObjectId, Commit)> = best.into_values().map(|(_, id, c)| (id, c)).collect();
    out.sort_by_key(|(_, c)| std::cmp::Reverse(c.seq));
    Ok(out)
}

/// The commits to rebuild from, newest first: every stored commit up to
/// the newest head whose commit is readable (not its parent chain, which
/// a prune cuts), cut (with `Check::Complete`) to start at the newest
/// complete one.
fn chain(
    replica: &dyn Target,
    db: &Db,
    store: &ObjectStore,
    check: Check,
    out: &mut Imported,
) -> Result<Vec<(ObjectId, Commit)>> {
    let heads = heads(replica, db)?;
    out.replica_head = heads.first().map_or(0, |h| h.0.0);
    let Some((head_id, head)) = heads.iter().find_map(|(seq, id)| {
        let c = store.get(id).and_then(|b| Commit::decode(&b)).ok()?;
        if c.seq != seq.0 {
            tracing::warn!("head {} names commit {} (seq {})", seq.0, id, c.seq);
        }
        Some((*id, c))
    }) else {
        return Err(Error::Store(format!(
            "{}: the replica holds no usable commit yet{}",
            replica.describe(),
            if heads.is_empty() {
                " (no head file)"
            } else {
                " (the commits its heads name are missing or damaged)"
            }
        )));
    };
    let mut commits = stored_commits(replica, db, store, head.seq)?;
    // The head file names the head; an orphan of its number loses.
    commits.retain(|(_, c)| c.seq != head.seq);
    commits.insert(0, (head_id, head));
    if check == Check::Complete {
        let mut complete = crate::reach::Complete::new(store);
        let ok: Vec<bool> = commits.iter().map(|(_, c)| complete.tree(c.root)).collect();
        let Some(first) = ok.iter().position(|x| *x) else {
            return Err(Error::Store(format!(
                "{}: no commit of the replica has all its objects ({} commits checked)",
                replica.describe(),
                commits.len()
            )));
        };
        out.lost_commits = out.replica_head.saturating_sub(commits[first].1.seq);
        out.damaged_commits += ok[first..].iter().filter(|x| !**x).count() as u64;
        commits.drain(..first);
    }
    Ok(commits)
}

/// Builds the catalog in `db` (a fresh one whose object index is already
/// filled, read through `store`) from the heads, names and pruned lists
/// of `replica`.
pub fn import(
    replica: &dyn Target,
    store: Arc<ObjectStore>,
    db: &Arc<Db>,
    check: Check,
    out: &mut Imported,
) -> Result<()> {
    let commits = chain(replica, db, &store, check, out)?;
    let Some((_, head_commit)) = commits.first() else {
        return Err(Error::corrupt("replica head", "no commit"));
    };
    let head = CommitSeq(head_commit.seq);
    out.head = head.0;

    let mut b = Batch::default();
    for (id, c) in &commits {
        b.put_commit(CommitSeq(c.seq), id, c.time);
        b.put_checkpoints(CommitSeq(c.seq), &c.checkpoints);
        out.commits += 1;
    }
    // put_commit moves "head" along; the newest one wins.
    b.put_counter("head", head.0);
    for (name, seq) in super::read_names(replica, db.crypto())? {
        if seq <= head {
            b.put_name(&name, seq);
        } else {
            tracing::warn!(
                "snapshot name {name}: its commit {} was not recovered",
                seq.0
            );
        }
    }
    db.apply(b)?;

    live_tree(&store, db, head_commit, out)?;
    rebuild_versions(db, store)?;
    db.flush()
}

/// The live tree of the catalog: the head commit's trees.
fn live_tree(store: &ObjectStore, db: &Db, c: &Commit, out: &mut Imported) -> Result<()> {
    let mut inodes: HashMap<u64, Inode> = HashMap::new();
    let mut root = c.root_node.clone();
    root.content = Some(c.root);
    inodes.insert(
        Ino::ROOT.0,
        Inode {
            node: root,
            parents: crate::catalog::db::Parents::one(Ino::ROOT),
        },
    );
    let mut b = Batch::default();
    let mut stack: Vec<(Ino, ObjectId)> = vec![(Ino::ROOT, c.root)];
    while let Some((dir, tree_id)) = stack.pop() {
        let tree = crate::dirtree::get(store, &tree_id)?;
        for e in tree.entries {
            let ino = Ino(e.ino);
            b.put_dentry(
                dir,
                &e.name,
                Dentry {
                    ino,
                    kind: e.node.kind,
                },
            );
            if e.node.kind == FileType::Directory
                && let Some(t) = e.node.content
            {
                stack.push((ino, t));
            }
            if e.node.kind == FileType::Regular {
                out.files += 1;
            }
            inodes
                .entry(e.ino)
                .or_insert_with(|| Inode {
                    node: e.node.clone(),
                    parents: crate::catalog::db::Parents::default(),
                })
                .parents
                .push(dir);
        }
    }
    let max_ino = inodes.keys().copied().max().unwrap_or(1);
    for (ino, inode) in &inodes {
        b.put_inode(Ino(*ino), inode);
    }
    b.put_counter("next_ino", max_ino + 1);
    db.apply(b)
}

/// Per-file version records, from the history of the commits (so that
/// `status` counts versions): one per content a path had at a commit.
fn rebuild_versions(db: &Arc<Db>, store: Arc<ObjectStore>) -> Result<()> {
    // A read-only engine writes nothing; its staging path is never used.
    let engine = crate::engine::Engine::new(
        db.clone(),
        store,
        std::path::PathBuf::from("/nonexistent"),
        crate::engine::Options {
            read_only: true,
            ..Default::default()
        },
    )?;
    let history = engine.history()?;
    engine.index_history(&history)?;
    let mut b = Batch::default();
    for (vseq, h) in history.iter().enumerate() {
        b.put_version(
            Ino(h.ino),
            vseq as u64 + 1,
            &Version {
                time: h.commit_time,
                size: h.size,
                mtime: h.mtime,
                manifest: h.manifest,
                fsynced: false,
                commit: CommitSeq(h.commit),
            },
        );
    }
    b.put_counter("next_vseq", history.len() as u64 + 1);
    db.apply(b)?;
    crate::status::recount(db)
}
