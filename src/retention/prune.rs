//! `prune`: drop the commits a policy lets go and give their space back,
//! while the mount goes on serving reads, writes and commits.
//!
//! Steps, each durable before the next (named crash points between them):
//! 1. **Decide** which commits go (`policy`, then `max_size`).
//! 2. **Drop** them in one catalog batch: their commit records, the
//!    path-version index rebuilt from the kept commits, the version
//!    records only they held, the counters, and (with a replica) a
//!    deletion record for the replica's grace window. `prune:dropped`.
//! 3. **Mark** (`reach`) everything the kept commits, the live inodes,
//!    open files, pending versions, unpublished objects and the history
//!    view the kernel holds reference. The open pack is sealed first, so
//!    every pack below the next number is complete; newer packs are not
//!    touched. The last part of the mark runs with commits held off.
//! 4. **Sweep** the index entries of unmarked objects in one batch (with
//!    the packs to delete recorded for the replica), then delete the packs
//!    with nothing live. `prune:index-swept`, `prune:packs-deleted`.
//! 5. **Repack** each pack whose dead share is over `max_unused`: copy its
//!    live records into the open pack and sync (`prune:repack-copied`),
//!    switch their index entries in one batch (`prune:repack-switched`),
//!    delete the old pack.
//!
//! Why nothing needed is lost: an object leaves the index only when no
//! root reaches it at the end of the mark, and from the start of the mark
//! every old object that `put` hands out again is noted
//! (`ObjectStore::track_reuse`) and kept; the sweep runs with that note
//! frozen, so a `put` either is seen or sees the entry gone (and stores the
//! object again). References that no catalog record holds yet (open files,
//! streams) are read under each file's lock after the main mark, and
//! commits are held off while the rest is marked. A crash at any step
//! leaves a store that opens: dropped commits are gone or not (one batch),
//! a pack is deleted only after the batch that removed its last entry is
//! flushed, a repacked object is indexed at its old or its new copy, and
//! whatever is left over (a pack no entry points into, an unindexed copy)
//! is garbage the next prune takes.

use super::policy::{self, Kept, Policy};
use crate::catalog::db::{Batch, PathVersion, ReplicaDeletion};
use crate::crashpoint::crash_point;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{FileType, Time};
use crate::ids::{CommitSeq, Ino, ObjectId, PackNo};
use crate::reach::{Missing, Reach};
use crate::status;
use crate::store::{NEXT_PACK, pack};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// What a prune did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PruneReport {
    pub commits_kept: u64,
    pub commits_dropped: u64,
    /// File versions (entries of `revfs log`) no longer in history.
    pub versions_dropped: u64,
    /// Pack bytes given back to the filesystem.
    pub bytes_freed: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub seconds: f64,
    pub dry_run: bool,
    /// Sealed packs looked at, and their bytes.
    pub packs_examined: u64,
    pub bytes_examined: u64,
    /// Live bytes copied by repacking.
    pub bytes_repacked: u64,
    /// Objects the mark reached, and the bytes its set took.
    pub objects_marked: u64,
    pub mark_set_bytes: u64,
    pub stored_bytes_before: u64,
    pub stored_bytes_after: u64,
    /// The `max_size` bound in bytes, when one is set.
    pub max_size: Option<u64>,
    /// The protected set alone is over `max_size` (it is kept anyway).
    pub over_max_size: bool,
    /// Commits dropped because of `max_size` (counted in `commits_dropped`).
    pub dropped_for_size: u64,
    /// The oldest kept commit's time (the horizon of kept history).
    pub oldest_kept: Option<String>,
    /// Packs still mostly hot that this round left for the next (a
    /// background round recodes a few packs at a time).
    #[serde(default)]
    pub packs_left_hot: u64,
    /// Chunk records this round wrote as deltas of newer bytes.
    #[serde(default)]
    pub deltas_written: u64,
    /// Deltas rewritten onto other bases (or whole) so that chunks no kept
    /// version holds could go.
    #[serde(default)]
    pub deltas_rebased: u64,
}

/// How to prune.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    pub policy: Policy,
    pub dry_run: bool,
    /// Skip the mark and sweep when the policy drops no commit and the
    /// store is within its `max_size` (the periodic prune of a mounted
    /// store: then there is next to no garbage, and a mark costs what the
    /// store holds). Over its bound, the sweep runs anyway: an earlier
    /// round may have dropped commits while the store still fitted, leaving
    /// their bytes dead in a pack that only now must be repacked (rounds
    /// come every `--prune-interval`, so one over a bound it cannot meet
    /// costs one mark per interval).
    pub only_if_dropping: bool,
    /// Also repack the sealed packs whose live bytes are mostly hot chunk
    /// records (the write path's raw and lz4), to recode them cold (zstd,
    /// byte planes). Every repack recodes the hot chunks it copies.
    pub recompress: bool,
    /// With `recompress`: store no new deltas (`deltas`).
    pub no_deltas: bool,
    /// Bytes a second that recoding may take (None: as fast as it goes;
    /// the daemon's background rounds set a gentle rate).
    pub recode_rate: Option<u64>,
}

/// What one pack holds, as the mark sees it.
#[derive(Clone, Copy, Default)]
struct PackUse {
    size: u64,
    live: u64,
    /// Live bytes of hot chunk records (raw, lz4: not recoded yet).
    hot: u64,
    /// Live bytes of chunk records the delta plan would store as deltas.
    delta: u64,
}

impl PackUse {
    /// Whether its dead bytes alone call for a repack (over the bound:
    /// any; else more than `max_unused` of the pack).
    fn wants_repack(&self, policy: &Policy, over: bool) -> bool {
        let dead = self
            .size
            .saturating_sub(self.live + crate::format::PACK_HEADER_LEN);
        let share = dead as f64 * 100.0 / self.size.max(1) as f64;
        (over && dead > 0) || share > policy.max_unused()
    }
}

/// Prunes `engine`'s store under `opts`; `progress(done, total)` follows
/// the mark over the kept commits and then the packs.
pub fn prune(
    engine: &Engine,
    opts: &PruneOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PruneReport> {
    let started = Instant::now();
    let _one = engine.prune_guard();
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if !opts.dry_run {
        engine.check_writable()?;
        // What was written so far becomes the head (kept), and its objects
        // leave the pending set (so their pack can be pruned this round).
        engine.commit(false)?;
        // Before anything is read: from here on, every reuse is noted.
        engine.store.track_reuse();
    }
    let result = run(engine, opts, &mut report, progress);
    engine.store.end_reuse();
    result?;
    report.seconds = started.elapsed().as_secs_f64();
    if !opts.dry_run {
        engine.set_last_prune(&report);
    }
    Ok(report)
}

fn run(
    engine: &Engine,
    opts: &PruneOptions,
    report: &mut PruneReport,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let db = &engine.db;
    let commits = db.commits()?;
    let Some(&(head, _, _)) = commits.last() else {
        return Ok(());
    };
    report.stored_bytes_before = stored_bytes(engine)?;
    let mut kept = decide(engine, &opts.policy, &commits)?;
    if let Some(bound) = opts.policy.max_size {
        let bound = bound.bytes(fs_bytes(engine));
        report.max_size = Some(bound);
        fit(engine, &commits, &mut kept, bound, report)?;
    }
    let dropped: Vec<(CommitSeq, ObjectId, Time)> = commits
        .iter()
        .filter(|c| !kept.kept.contains(&c.0))
        .copied()
        .collect();
    let keep: Vec<(CommitSeq, ObjectId, Time)> = commits
        .iter()
        .filter(|c| kept.kept.contains(&c.0))
        .copied()
        .collect();
    report.commits_kept = keep.len() as u64;
    report.commits_dropped = dropped.len() as u64;
    report.oldest_kept = keep.first().map(|c| crate::timefmt::rfc3339(c.2));
    if dropped.is_empty() && opts.only_if_dropping && !opts.recompress && !stored_over(report) {
        report.stored_bytes_after = report.stored_bytes_before;
        return Ok(());
    }

    let first_new = if opts.dry_run {
        // A real prune seals the open pack first: count it in.
        engine.store.next_pack()
    } else {
        if !dropped.is_empty() {
            drop_commits(engine, head, &keep, &dropped, report)?;
        }
        crash_point("prune:dropped");
        // Everything stored so far is in a sealed pack below this number.
        let first_new = engine.store.rotate()?;
        // A writer that kept writing since the first commit left objects
        // in those packs that are not in the index yet, and a pack holding
        // one is not ours to touch this round (see `account`): with a job
        // writing all the time, that was every pack the last writes went
        // to, the open one of a small store (all its garbage kept). Publish
        // them now: whatever is put from here on goes to a newer pack.
        engine.commit(false)?;
        first_new
    };

    // Which old chunks become deltas of newer bytes (from the kept
    // history, after the drop).
    let plan = if opts.recompress && !opts.no_deltas {
        super::deltas::plan(engine, CommitSeq(db.counter(DELTA_THROUGH)?))?
    } else {
        super::deltas::Plan::new()
    };

    // Mark.
    let mut reach = Reach::new(&engine.store, Missing::Fail);
    let total = keep.len() as u64;
    for (i, (_, id, _)) in keep.iter().enumerate() {
        reach.commit(*id)?;
        progress(i as u64 + 1, total);
    }
    mark_live(engine, &mut reach)?;
    if opts.dry_run {
        let (uses, _) = account(engine, &reach, first_new, &plan)?;
        report.objects_marked = reach.len() as u64;
        report.mark_set_bytes = reach.set_bytes();
        plan_only(opts, &uses, report);
        report.versions_dropped = versions_dropped_estimate(engine, &keep, head)?;
        report.stored_bytes_after = report
            .stored_bytes_before
            .saturating_sub(report.bytes_freed);
        return Ok(());
    }
    // Chunks only deltas still name: those deltas move to other bases
    // first (written and switched before the sweep drops anything).
    let mut pace = crate::sys::Pace::new(opts.recode_rate.unwrap_or(u64::MAX));
    let rebased = super::rebase::rebase(engine, &reach, &mut pace)?;
    report.deltas_rebased = rebased.ids.len() as u64;
    let in_memory = engine.memory_refs();
    let (uses, garbage) = engine.paused(|paused| {
        // Commits made since the decision, and the live inodes again
        // (a restore may have pointed one at an old object meanwhile).
        let mut next = CommitSeq(head.0 + 1);
        while let Some((seq, id, _)) = db.commit_from(next)? {
            reach.commit(id)?;
            next = CommitSeq(seq.0 + 1);
        }
        mark_live(engine, &mut reach)?;
        for id in paused.pending_contents() {
            reach.content(id)?;
        }
        for n in paused.held_history() {
            reach.node(&n)?;
        }
        mark_unpublished(engine, &mut reach, &in_memory)?;
        for id in engine.store.reused() {
            if let Some(e) = engine.store.locate(&id)? {
                reach.object(id, e.kind)?;
            }
        }
        super::rebase::release(&mut reach, &rebased);
        account(engine, &reach, first_new, &plan)
    })?;
    report.objects_marked = reach.len() as u64;
    report.mark_set_bytes = reach.set_bytes();
    drop(reach);
    let round = Round {
        opts,
        first_new,
        plan: &plan,
    };
    sweep(engine, &round, uses, garbage, report, progress)?;
    if opts.recompress && report.packs_left_hot == 0 {
        // Every pack sealed before this round has been looked at, and
        // every pair of versions up to the head planned.
        let mut b = Batch::default();
        b.put_counter(COLD_THROUGH, first_new.0);
        if !opts.no_deltas {
            b.put_counter(DELTA_THROUGH, head.0 + 1);
        }
        db.apply(b)?;
    }
    super::plan::forget_old_growth(db, Time::now())?;
    report.stored_bytes_after = stored_bytes(engine)?;
    Ok(())
}

/// The commits the policy keeps, with what `keep_versions` needs.
fn decide(engine: &Engine, p: &Policy, commits: &[(CommitSeq, ObjectId, Time)]) -> Result<Kept> {
    let named: Vec<CommitSeq> = engine.db.names()?.into_iter().map(|n| n.1).collect();
    let versions = match p.keep_versions {
        Some(_) => live_file_versions(engine)?,
        None => Vec::new(),
    };
    let checkpoints = match p.keep_checkpoints {
        Some(_) => engine.checkpoint_groups()?,
        None => Vec::new(),
    };
    let times: Vec<(CommitSeq, Time)> = commits.iter().map(|c| (c.0, c.2)).collect();
    Ok(policy::decide(
        p,
        &policy::History {
            commits: &times,
            named: &named,
            versions: &versions,
            checkpoints: &checkpoints,
            now: Time::now(),
        },
    ))
}

/// For every file of the head commit, the commits that first hold each of
/// its versions (as `revfs log` lists them), oldest first.
fn live_file_versions(engine: &Engine) -> Result<Vec<Vec<CommitSeq>>> {
    let Some((_, head)) = engine.head()? else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    engine.all_files(head.root, "", &mut files)?;
    let live: HashSet<[u8; 32]> = files.iter().map(|(p, _)| engine.db.path_hash(p)).collect();
    let mut out = Vec::new();
    for (h, entries) in engine.db.path_version_groups()? {
        if live.contains(&h) {
            out.push(log_versions(&entries));
        }
    }
    Ok(out)
}

/// The commits of a path's distinct versions, as `Engine::log` counts them.
fn log_versions(entries: &[(CommitSeq, PathVersion)]) -> Vec<CommitSeq> {
    let mut out: Vec<(CommitSeq, u64)> = Vec::new();
    let mut last = None;
    for (seq, v) in entries {
        if last == Some((v.content, v.size)) {
            continue;
        }
        last = Some((v.content, v.size));
        out.push((*seq, v.size));
    }
    if out.len() > 1 && out[0].1 == 0 {
        out.remove(0);
    }
    out.into_iter().map(|v| v.0).collect()
}

/// `max_size`: drops the oldest commits outside the protected set until
/// what the rest reaches fits `bound`. One counting mark: the protected
/// commits, the live tree and what the engine holds in memory first, then the other kept commits newest
/// first, each adding what it alone reaches; the first that overflows
/// goes, with every older one.
fn fit(
    engine: &Engine,
    commits: &[(CommitSeq, ObjectId, Time)],
    kept: &mut Kept,
    bound: u64,
    report: &mut PruneReport,
) -> Result<()> {
    // History fills the bound less the catalog, less a tenth of it as room
    // for what arrives until the next round (so the store stays under it
    // between rounds, not only right after one).
    let overhead = engine.db.size_on_disk() + bound / 10;
    let budget = bound.saturating_sub(overhead);
    let mut reach = Reach::new(&engine.store, Missing::Fail).counting();
    for (seq, id, _) in commits {
        if kept.protected.contains(seq) {
            reach.commit(*id)?;
        }
    }
    mark_live(engine, &mut reach)?;
    // What open files hold and objects not published yet fill the disk as
    // much (a big save in flight is what fills it).
    mark_unpublished(engine, &mut reach, &engine.memory_refs())?;
    if reach.bytes() > budget {
        report.over_max_size = true;
    }
    let mut cut = false;
    for (seq, id, _) in commits.iter().rev() {
        if kept.protected.contains(seq) || !kept.kept.contains(seq) {
            continue;
        }
        if !cut {
            reach.commit(*id)?;
            cut = reach.bytes() > budget;
        }
        if cut {
            kept.kept.remove(seq);
            report.dropped_for_size += 1;
        }
    }
    Ok(())
}

/// Marks the live tree: every inode record's content.
fn mark_live(engine: &Engine, reach: &mut Reach) -> Result<()> {
    for inode in engine.db.inodes() {
        let inode = inode?;
        match inode.node.kind {
            FileType::Regular | FileType::Directory => reach.node(&inode.node)?,
            _ => {}
        }
    }
    Ok(())
}

/// Marks what no catalog record names yet: objects put but not
/// published, and what open files refer to (`in_memory`, from
/// `Engine::memory_refs`, which takes each file's lock).
fn mark_unpublished(
    engine: &Engine,
    reach: &mut Reach,
    in_memory: &[(ObjectId, crate::ids::ObjectKind)],
) -> Result<()> {
    for (id, e) in engine.store.pending() {
        reach.object(id, e.kind)?;
    }
    for (id, kind) in in_memory {
        reach.object(*id, *kind)?;
    }
    Ok(())
}

/// Step 2: one batch that removes the dropped commits from history.
fn drop_commits(
    engine: &Engine,
    head: CommitSeq,
    keep: &[(CommitSeq, ObjectId, Time)],
    dropped: &[(CommitSeq, ObjectId, Time)],
    report: &mut PruneReport,
) -> Result<()> {
    let db = &engine.db;
    // The path-version index of the kept history up to `head`; commits
    // after `head` write their own entries.
    let kept_history = engine.history_of(keep)?;
    let (old_keys, old_bytes) = db.path_versions_upto(head)?;
    let old_versions = old_keys.len() as u64;
    let new_versions = kept_history.len() as u64;
    let new_bytes: u64 = kept_history.iter().map(|h| h.size).sum();
    report.versions_dropped = old_versions.saturating_sub(new_versions);
    let gone: HashSet<CommitSeq> = dropped.iter().map(|c| c.0).collect();
    let mut b = Batch::default();
    for (seq, _, _) in dropped {
        b.del_commit(*seq);
    }
    for k in &old_keys {
        b.del_path_version_key(k);
    }
    crate::engine::history::put_path_versions(&mut b, &kept_history);
    // Version records only dropped commits held; each file keeps its
    // newest (it decides whether the next version merges with it).
    let mut newest: HashMap<Ino, u64> = HashMap::new();
    let records = db.version_records()?;
    for (ino, vseq, _) in &records {
        let n = newest.entry(*ino).or_insert(*vseq);
        *n = (*n).max(*vseq);
    }
    for (ino, vseq, v) in &records {
        if gone.contains(&v.commit) && newest.get(ino) != Some(vseq) {
            b.del_version(*ino, *vseq);
        }
    }
    let versions_dropped = report.versions_dropped;
    let counters = move |b: &mut Batch| -> Result<()> {
        subtract(db, b, status::COMMITS, dropped.len() as u64)?;
        subtract(db, b, status::VERSIONS, versions_dropped)?;
        subtract(
            db,
            b,
            status::LOGICAL_BYTES,
            old_bytes.saturating_sub(new_bytes),
        )
    };
    let gone_seqs: Vec<CommitSeq> = dropped.iter().map(|c| c.0).collect();
    note_for_replica(engine, &mut b, &gone_seqs, &[])?;
    // Counters and the drop go in with commits held off (a commit adds to
    // the same counters; a restore must not take a dropped commit's tree).
    engine.paused(|_| {
        counters(&mut b)?;
        db.apply(b)?;
        db.flush()
    })?;
    engine.forget_views_of(&gone_seqs);
    tracing::info!(
        "prune: dropped {} commits ({} versions), kept {}",
        dropped.len(),
        report.versions_dropped,
        keep.len()
    );
    Ok(())
}

/// Puts counter `name` less `n` into `b` (run with commits held off).
fn subtract(db: &crate::catalog::db::Db, b: &mut Batch, name: &str, n: u64) -> Result<()> {
    b.put_counter(name, db.counter(name)?.saturating_sub(n));
    Ok(())
}

/// Packs a background round recodes at most (1 GiB of packs).
const BACKGROUND_RECODE_PACKS: usize = 8;

/// The catalog counter below which every pack has been looked at by a
/// recompressing round.
const COLD_THROUGH: &str = "cold_through";

/// Whether a pack was sealed since the last recompressing round (the
/// daemon's rounds recompress only then: a round marks the whole store).
pub fn cold_due(engine: &Engine) -> Result<bool> {
    let through = engine.db.counter(COLD_THROUGH)?;
    let open = engine.store.open_pack().map(|p| p.0);
    Ok(pack::list_packs(engine.store.packs_dir())?
        .into_iter()
        .any(|no| no.0 >= through && Some(no) != open))
}

/// The catalog counter: pairs of versions whose newer one came before this
/// commit have been planned as deltas by a round that finished.
const DELTA_THROUGH: &str = "delta_through";

/// The catalog counter numbering replica deletion records.
const DELETIONS: &str = "replica_deletions";

fn versions_dropped_estimate(
    engine: &Engine,
    keep: &[(CommitSeq, ObjectId, Time)],
    head: CommitSeq,
) -> Result<u64> {
    let old = engine.db.path_versions_upto(head)?.0.len() as u64;
    Ok(old.saturating_sub(engine.history_of(keep)?.len() as u64))
}

/// Per sealed pack below `first_new`: its size and live bytes; and the
/// index entries of unmarked objects in those packs.
#[allow(clippy::type_complexity)]
fn account(
    engine: &Engine,
    reach: &Reach,
    first_new: PackNo,
    plan: &super::deltas::Plan,
) -> Result<(
    HashMap<PackNo, PackUse>,
    Vec<(ObjectId, crate::catalog::db::IndexEntry)>,
)> {
    let dir = engine.store.packs_dir();
    let mut uses: HashMap<PackNo, PackUse> = HashMap::new();
    for no in pack::list_packs(dir)? {
        if no >= first_new {
            continue;
        }
        let p = pack::pack_path(dir, no);
        match std::fs::metadata(&p) {
            Ok(m) => {
                uses.insert(
                    no,
                    PackUse {
                        size: m.len(),
                        ..Default::default()
                    },
                );
            }
            // Not a whole pack here (a part file): not ours to touch.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::IoAt { path: p, source: e }),
        }
    }
    // Packs below `first_new` that hold objects not yet published (put
    // before the open pack was sealed, committed later): their entries are
    // not in the index yet, so this round neither deletes nor repacks them.
    for (_, e) in engine.store.pending() {
        uses.remove(&e.pack);
    }
    let mut garbage = Vec::new();
    for entry in engine.db.index_all() {
        let (id, e) = entry?;
        let Some(u) = uses.get_mut(&e.pack) else {
            continue;
        };
        if reach.contains(&id) {
            let bytes = e.record_len();
            u.live += bytes;
            if e.kind == crate::ids::ObjectKind::Chunk
                && crate::store::codec::is_hot(e.codec & !crate::format::CODEC_SEALED)
            {
                u.hot += bytes;
            }
            if plan.contains_key(&id) {
                u.delta += bytes;
            }
        } else {
            garbage.push((id, e));
        }
    }
    Ok((uses, garbage))
}

/// Which packs go and which are repacked, for a dry run.
fn plan_only(opts: &PruneOptions, uses: &HashMap<PackNo, PackUse>, report: &mut PruneReport) {
    let (delete, repack) = choose(uses, opts, stored_over(report));
    report.packs_examined = uses.len() as u64;
    report.bytes_examined = uses.values().map(|u| u.size).sum();
    report.packs_deleted = delete.len() as u64;
    report.packs_repacked = repack.len() as u64;
    report.bytes_freed = delete.iter().map(|n| uses[n].size).sum::<u64>()
        + repack
            .iter()
            .map(|n| uses[n].size.saturating_sub(uses[n].live))
            .sum::<u64>();
    report.bytes_repacked = repack.iter().map(|n| uses[n].live).sum();
}

/// Whether the store is over its `max_size` bound (then every pack with
/// dead bytes is repacked, whatever `max_unused` says).
fn stored_over(report: &PruneReport) -> bool {
    report
        .max_size
        .is_some_and(|b| report.stored_bytes_before > b)
}

/// (packs to delete, packs to repack), the latter most dead first; with
/// `recompress`, the packs mostly hot, or a quarter of whose live bytes
/// the delta plan would store as deltas, or that writing the plan out of
/// place would leave over `max_unused`, are repacked too.
fn choose(
    uses: &HashMap<PackNo, PackUse>,
    opts: &PruneOptions,
    over: bool,
) -> (Vec<PackNo>, Vec<PackNo>) {
    let mut delete = Vec::new();
    let mut repack = Vec::new();
    for (no, u) in uses {
        if u.live == 0 {
            delete.push(*no);
            continue;
        }
        // A planned chunk not repacked is written out of place, which
        // leaves its old record dead: a pack that this would leave over
        // `max_unused` is repacked now, not one round later.
        let planned_dead = PackUse {
            live: u.live.saturating_sub(u.delta),
            ..*u
        };
        let cold_due = opts.recompress
            && (u.hot * 2 >= u.size
                || u.delta * 4 >= u.size
                || planned_dead.wants_repack(&opts.policy, over));
        if u.wants_repack(&opts.policy, over) || cold_due {
            repack.push(*no);
        }
    }
    delete.sort();
    if over {
        // Short of room: the cheapest copies first (each one done frees
        // room for the next).
        repack.sort_by_key(|n| uses[n].live);
    } else {
        repack.sort_by_key(|n| std::cmp::Reverse(uses[n].size - uses[n].live.min(uses[n].size)));
    }
    (delete, repack)
}

/// What steps 4 and 5 of one round work from.
struct Round<'a> {
    opts: &'a PruneOptions,
    /// Packs at or above this number are newer than the mark.
    first_new: PackNo,
    /// Chunks to store as deltas when their pack is repacked.
    plan: &'a super::deltas::Plan,
}

/// Steps 4 and 5.
fn sweep(
    engine: &Engine,
    round: &Round,
    mut uses: HashMap<PackNo, PackUse>,
    garbage: Vec<(ObjectId, crate::catalog::db::IndexEntry)>,
    report: &mut PruneReport,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let (opts, first_new) = (round.opts, round.first_new);
    let db = &engine.db;
    report.packs_examined = uses.len() as u64;
    report.bytes_examined = uses.values().map(|u| u.size).sum();
    let over = stored_over(report);
    let deleted: Vec<PackNo> = engine.store.with_reuse_frozen(|reused| {
        let mut b = Batch::default();
        for (id, e) in &garbage {
            if reused.contains(id) {
                // Handed out again since the mark: live after all.
                if let Some(u) = uses.get_mut(&e.pack) {
                    u.live += e.record_len();
                }
            } else {
                b.del_index(id);
            }
        }
        let (delete, _) = choose(&uses, opts, over);
        b.put_counter(NEXT_PACK, engine.store.next_pack().0);
        note_for_replica(engine, &mut b, &[], &delete)?;
        db.apply(b)?;
        db.flush()?;
        Ok(delete)
    })?;
    crash_point("prune:index-swept");
    let chunks_gone = garbage
        .iter()
        .filter(|(_, e)| e.kind == crate::ids::ObjectKind::Chunk)
        .count() as u64;
    let chunk_bytes_gone: u64 = garbage
        .iter()
        .filter(|(_, e)| e.kind == crate::ids::ObjectKind::Chunk)
        .map(|(_, e)| e.raw_len as u64)
        .sum();
    engine.paused(|_| {
        let mut b = Batch::default();
        subtract(db, &mut b, status::CHUNKS, chunks_gone)?;
        subtract(db, &mut b, status::CHUNK_BYTES, chunk_bytes_gone)?;
        db.apply(b)
    })?;
    drop(garbage);
    let total = uses.len() as u64;
    let mut done = 0;
    for no in &deleted {
        remove_pack(engine, *no)?;
        report.bytes_freed += uses[no].size;
        report.packs_deleted += 1;
        done += 1;
        progress(done, total);
    }
    if !deleted.is_empty() {
        crate::sys::sync_dir(engine.store.packs_dir())?;
    }
    crash_point("prune:packs-deleted");
    let gone: HashSet<PackNo> = deleted.iter().copied().collect();
    uses.retain(|n, _| !gone.contains(n));
    let (_, repack) = choose(&uses, opts, over);
    let mut pace = crate::sys::Pace::new(opts.recode_rate.unwrap_or(u64::MAX));
    // The live entries of every pack to repack, in one pass over the index
    // (a sealed pack never gets new records, so this stays true).
    let mut live: HashMap<PackNo, Vec<(ObjectId, crate::catalog::db::IndexEntry)>> =
        repack.iter().map(|n| (*n, Vec::new())).collect();
    if !repack.is_empty() {
        for entry in db.index_all() {
            let (id, e) = entry?;
            if let Some(v) = live.get_mut(&e.pack) {
                v.push((id, e));
            }
        }
    }
    let mut recoded_only = 0;
    for no in repack {
        let for_cold = !uses[&no].wants_repack(&opts.policy, over);
        if for_cold && opts.recode_rate.is_some() {
            // In the background, a few packs a round: the round holds
            // dedup-reuse tracking on while it runs.
            if recoded_only == BACKGROUND_RECODE_PACKS {
                report.packs_left_hot += 1;
                continue;
            }
            recoded_only += 1;
        }
        if let Some(bound) = report.max_size
            && over
            && stored_bytes(engine)? <= bound
        {
            break;
        }
        let Some(_room) = engine
            .store
            .space
            .hold(engine.store.packs_dir(), uses[&no].live)
        else {
            // Its copies would not fit now: a later round, with more room.
            continue;
        };
        let entries = live.remove(&no).unwrap_or_default();
        let recode = crate::store::Recode {
            pace: &mut pace,
            deltas: round.plan,
            rewrite: false,
        };
        match repack_one(
            engine,
            no,
            uses[&no].size,
            &entries,
            first_new,
            recode,
            report,
        ) {
            Ok(()) => {}
            Err(e) if e.errno() == libc::ENOSPC || e.errno() == libc::EDQUOT => {
                // No room for the copies: the packs stay as they are (what
                // was copied is unindexed garbage for the next prune).
                tracing::warn!("prune: repacking stopped, the disk is full: {e}");
                break;
            }
            Err(e) => return Err(e),
        }
        done += 1;
        progress(done, total);
    }
    write_planned(engine, round, &mut pace, report)
}

/// Writes the planned deltas whose pack was not repacked (one version's
/// chunks can be a small share of a big pack) as new records, and
/// switches the index to them; their old records are garbage for a later
/// repack. Each version is planned once, so a plan left unwritten would
/// keep its chunks whole for good.
fn write_planned(
    engine: &Engine,
    round: &Round,
    pace: &mut crate::sys::Pace,
    report: &mut PruneReport,
) -> Result<()> {
    let mut entries = Vec::new();
    for id in round.plan.keys() {
        if let Some(e) = engine.store.locate(id)?
            && !e.is_delta()
            && e.pack < round.first_new
        {
            entries.push((*id, e));
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    // In pack order: a chunk of an older pack is written first.
    entries.sort_by_key(|(_, e)| (e.pack, e.offset));
    let recode = crate::store::Recode {
        pace,
        deltas: round.plan,
        rewrite: false,
    };
    let moved = match engine.store.copy_records(&entries, Some(recode)) {
        Ok(m) => m,
        Err(e) if e.errno() == libc::ENOSPC || e.errno() == libc::EDQUOT => {
            tracing::warn!("prune: planned deltas not written, the disk is full: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    crash_point("prune:deltas-copied");
    let mut b = Batch::default();
    engine.store.relocate(&mut b, &entries, &moved)?;
    b.put_counter(NEXT_PACK, engine.store.next_pack().0.max(round.first_new.0));
    engine.db.apply(b)?;
    engine.db.flush()?;
    report.deltas_written += moved.iter().filter(|(_, now)| now.is_delta()).count() as u64;
    Ok(())
}

/// With a replica, a deletion record of the dropped `commits` and deleted
/// `packs` in the batch `b`, for the replica to take after its window.
fn note_for_replica(
    engine: &Engine,
    b: &mut Batch,
    commits: &[CommitSeq],
    packs: &[PackNo],
) -> Result<()> {
    if !engine.has_replica() || (commits.is_empty() && packs.is_empty()) {
        return Ok(());
    }
    let db = &engine.db;
    let no = db.counter(DELETIONS)? + 1;
    b.put_counter(DELETIONS, no);
    b.put_replica_deletion(
        no,
        &ReplicaDeletion {
            time: Time::now(),
            commits: commits.to_vec(),
            packs: packs.to_vec(),
        },
    );
    Ok(())
}

fn remove_pack(engine: &Engine, no: PackNo) -> Result<()> {
    let p = pack::pack_path(engine.store.packs_dir(), no);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::IoAt { path: p, source: e }),
    }
    engine.store.forget_pack(no);
    Ok(())
}

/// Step 5 for pack `no` of `size` bytes, whose indexed objects are `live`.
fn repack_one(
    engine: &Engine,
    no: PackNo,
    size: u64,
    live: &[(ObjectId, crate::catalog::db::IndexEntry)],
    first_new: PackNo,
    recode: crate::store::Recode,
    report: &mut PruneReport,
) -> Result<()> {
    let db = &engine.db;
    let moved = engine.store.copy_records(live, Some(recode))?;
    report.deltas_written += live
        .iter()
        .zip(&moved)
        .filter(|((_, was), (_, now))| !was.is_delta() && now.is_delta())
        .count() as u64;
    crash_point("prune:repack-copied");
    let mut b = Batch::default();
    let copied = engine.store.relocate(&mut b, live, &moved)?;
    b.put_counter(NEXT_PACK, engine.store.next_pack().0.max(first_new.0));
    note_for_replica(engine, &mut b, &[], &[no])?;
    db.apply(b)?;
    db.flush()?;
    crash_point("prune:repack-switched");
    remove_pack(engine, no)?;
    crate::sys::sync_dir(engine.store.packs_dir())?;
    report.packs_repacked += 1;
    report.bytes_repacked += copied;
    report.bytes_freed += size.saturating_sub(copied);
    Ok(())
}

/// Bytes the store's packs and catalog take.
pub fn stored_bytes(engine: &Engine) -> Result<u64> {
    Ok(pack::packs_bytes(engine.store.packs_dir())? + engine.db.size_on_disk())
}

/// Size of the filesystem that holds the store.
pub fn fs_bytes(engine: &Engine) -> u64 {
    crate::sys::fs_space(engine.store.packs_dir()).map_or(0, |s| s.0)
}
