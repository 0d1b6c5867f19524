//! Rebuilding a catalog from packs alone (plus a replica's head and names):
//! what `revfs recover` and a read-only mount of a replica do. The object
//! index comes from scanning pack records, the commit list from the head's
//! parent chain, and the live tree from the head commit's trees.

use crate::catalog::db::{Batch, Db, Dentry, IndexEntry, Inode};
use crate::error::{Error, Result};
use crate::format::{Commit, FileType, Tree};
use crate::ids::{CommitSeq, Ino, ObjectId};
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
    pub head: u64,
}

/// Indexes every record of every pack in `packs_dir` into `db`.
fn index_packs(packs_dir: &Path, db: &Db, out: &mut Imported) -> Result<()> {
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

/// Builds the catalog in `db` (a fresh one) from the packs in `packs_dir`
/// and the head and names of `replica`.
pub fn import(replica: &Path, packs_dir: &Path, db: &Arc<Db>) -> Result<Imported> {
    let mut out = Imported::default();
    index_packs(packs_dir, db, &mut out)?;
    let store = ObjectStore::open(packs_dir, db.clone(), true)?;
    let Some((head, head_id)) = super::read_head(replica)? else {
        return Err(Error::Store(format!(
            "{}: the replica holds no commit yet",
            replica.display()
        )));
    };
    out.head = head.0;

    // Commits: the head's parent chain.
    let mut b = Batch::default();
    let mut next = Some(head_id);
    let mut head_commit = None;
    while let Some(id) = next {
        let c = Commit::decode(&store.get(&id)?)?;
        b.put_commit(CommitSeq(c.seq), &id, c.time);
        out.commits += 1;
        next = c.parent;
        head_commit.get_or_insert(c);
    }
    // put_commit moved "head" along the way; the newest one wins.
    b.put_counter("head", head.0);
    for (name, seq) in super::read_names(replica)? {
        b.put_name(&name, seq);
    }
    db.apply(b)?;

    // The live tree is the head commit's tree.
    let c = head_commit.ok_or_else(|| Error::corrupt("replica head", "no commit"))?;
    let mut inodes: HashMap<u64, Inode> = HashMap::new();
    let mut root = c.root_node.clone();
    root.content = Some(c.root);
    inodes.insert(
        Ino::ROOT.0,
        Inode {
            node: root,
            parents: vec![Ino::ROOT],
        },
    );
    let mut b = Batch::default();
    let mut stack: Vec<(Ino, ObjectId)> = vec![(Ino::ROOT, c.root)];
    while let Some((dir, tree_id)) = stack.pop() {
        let tree = Tree::decode(&store.get(&tree_id)?)?;
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
                    parents: Vec::new(),
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
    b.put_counter("next_vseq", 1);
    db.apply(b)?;
    db.flush()?;
    Ok(out)
}

/// `revfs recover REPLICA NEWSTORE`: a complete, writable store built from
/// the replica alone. Packs are copied (parts joined into whole packs),
/// then the catalog is rebuilt; the config goes last.
pub fn recover(replica: &Path, new: &Path, mut progress: impl FnMut(u64, u64)) -> Result<Imported> {
    let (_, cfg) = crate::repo::Config::read(replica)?;
    if cfg.role.as_deref() != Some(super::ROLE_REPLICA) {
        return Err(Error::Store(format!(
            "{}: not a replica (no replica marker); a store can be mounted as it is",
            replica.display()
        )));
    }
    if new.exists()
        && std::fs::read_dir(new)
            .map_err(Error::io_at(new))?
            .next()
            .is_some()
    {
        return Err(Error::Store(format!(
            "{}: exists and is not empty; recover into a new directory",
            new.display()
        )));
    }
    let src = replica.join("packs");
    let dst = new.join("packs");
    std::fs::create_dir_all(&dst).map_err(Error::io_at(&dst))?;
    let packs = pack::list_packs(&src)?;
    let total: u64 = packs
        .iter()
        .map(|no| PackReader::open(&src, *no).map(|r| r.len()))
        .sum::<Result<u64>>()?;
    let mut done = 0;
    for no in packs {
        let r = PackReader::open(&src, no)?;
        let len = r.len();
        let name = format!("{:016x}.pack", no.0);
        super::publish_with(&dst, &name, |f| {
            let mut at = 0;
            while at < len {
                let n = (len - at).min(8 << 20) as usize;
                std::io::Write::write_all(f, &r.read_at(at, n)?)?;
                at += n as u64;
            }
            Ok(())
        })?;
        done += len;
        progress(done, total);
    }
    let db = Arc::new(Db::open(&new.join("meta"), true)?);
    let imported = import(replica, &dst, &db)?;
    rebuild_versions(new, db)?;
    let cfg = crate::repo::Config {
        role: None,
        replica: None,
        ..cfg
    };
    cfg.write(new)?;
    Ok(imported)
}

/// Per-file version records of a recovered store, from its history (so
/// that `status` counts versions again): one per content a path had.
fn rebuild_versions(store: &Path, db: Arc<Db>) -> Result<()> {
    let history = {
        let objects = Arc::new(ObjectStore::open(&store.join("packs"), db.clone(), true)?);
        let engine = crate::engine::Engine::new(
            db.clone(),
            objects,
            store.join("staging"),
            crate::engine::Options {
                read_only: true,
                ..Default::default()
            },
        )?;
        engine.history()?
    };
    let mut b = Batch::default();
    for (vseq, h) in history.iter().enumerate() {
        b.put_version(
            Ino(h.ino),
            vseq as u64 + 1,
            &crate::catalog::db::Version {
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
    db.flush()
}
