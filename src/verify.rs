//! `revfs verify`: re-hash every object, check that everything referenced
//! exists, on the primary and on the replica, and with `repair` fix each
//! side from the other.
//!
//! * Primary: every indexed object is read and hash-checked (bypassing the
//!   cache); every object referenced by a kept commit (trees, manifests,
//!   chunks; not its parent, which prune may have dropped) or by a live
//!   inode must be indexed.
//! * Replica: every record of every replica pack is hash-checked; every
//!   object referenced by the replica's head must be in the replica.
//! * Repair: a bad primary object is written again from the replica's
//!   verified copy (the index moves to it); a bad replica record is
//!   rewritten from the primary in a corrected copy of its pack file
//!   (temp, fsync, rename: the replica is never modified in place).

use crate::catalog::db::IndexEntry;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::RECORD_HEADER_LEN;
use crate::ids::{ObjectId, PackNo};
use crate::reach::{Missing, Reach};
use crate::replica;
use crate::store::{check_record, check_record_alone};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Default, Serialize)]
pub struct Side {
    pub objects_checked: u64,
    pub corrupt: Vec<String>,
    pub missing: Vec<String>,
    pub repaired: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub primary: Side,
    pub replica: Option<Side>,
    pub clean: bool,
}

/// Every object reachable from `commits` (and, with `live`, from the
/// live tree), missing ones included: the shared walker, going on past
/// what it cannot read.
fn referenced(engine: &Engine, commits: &[ObjectId], live: bool) -> Result<Vec<ObjectId>> {
    let mut reach = Reach::new(&engine.store, Missing::Note);
    for c in commits {
        reach.commit(*c)?;
    }
    if live {
        for inode in engine.db.inodes() {
            reach.node(&inode?.node)?;
        }
    }
    for (id, why) in &reach.unreadable {
        tracing::warn!("{id}: {why}");
    }
    Ok(reach.ids().copied().collect())
}

fn commit_ids(engine: &Engine) -> Result<Vec<ObjectId>> {
    Ok(engine
        .db
        .commits()?
        .into_iter()
        .map(|(_, id, _)| id)
        .collect())
}

/// Checks the primary (and the replica, when given).
pub fn verify(
    engine: &Engine,
    replica_dir: Option<&Path>,
    repair: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report> {
    let replica = replica_dir.map(replica::target_of).transpose()?;
    let mut report = Report::default();
    // A prune deletes what it swept: not while this reads the index.
    let _no_prune = engine.prune_guard();
    // Commits first, then the index: a commit publishes its objects' index
    // entries with it, so every object a commit read here references is in
    // the index read after it, even while the mount goes on committing.
    let commits = commit_ids(engine)?;
    let index: Vec<_> = engine.db.index_all().collect::<Result<_>>()?;
    let total = index.len() as u64;
    let mut bad_primary: Vec<(ObjectId, IndexEntry)> = Vec::new();
    for (i, (id, e)) in index.iter().enumerate() {
        if let Err(err) = engine.store.read_verified(id, e) {
            report.primary.corrupt.push(format!("{id}: {err}"));
            bad_primary.push((*id, *e));
        }
        report.primary.objects_checked += 1;
        if i % 256 == 0 {
            progress(i as u64, total);
        }
    }
    progress(total, total);
    let t = std::time::Instant::now();
    let damaged = engine.db.damaged_blocks();
    tracing::debug!("catalog blocks checked in {:?}", t.elapsed());
    match damaged {
        Ok(0) => {}
        Ok(n) => report.primary.corrupt.push(format!(
            "metadata database: {n} damaged block(s) in its segments; `revfs recover` \
             rebuilds the store from a replica"
        )),
        Err(e) => report.primary.corrupt.push(e.to_string()),
    }
    match engine.db.damaged_values() {
        Ok(0) => {}
        Ok(n) => report.primary.corrupt.push(format!(
            "metadata database: {n} value(s) that do not match their check; `revfs recover` \
             rebuilds the store from a replica"
        )),
        Err(e) => report.primary.corrupt.push(e.to_string()),
    }
    let indexed: HashMap<ObjectId, _> = index.iter().copied().collect();
    for id in referenced(engine, &commits, true)? {
        if !indexed.contains_key(&id) && engine.store.locate(&id)?.is_none() {
            report
                .primary
                .missing
                .push(format!("{id}: referenced but not stored"));
        }
    }

    if let Some(t) = replica.as_deref() {
        let mut side = Side::default();
        let mut replica_index: HashMap<ObjectId, (PackNo, u64)> = HashMap::new();
        let mut bad_replica: Vec<(String, ObjectId, IndexEntry)> = Vec::new();
        let crypto = engine.store.crypto();
        for (no, objects) in replica::remote::pack_objects(t)? {
            for o in &objects {
                let c = check_replica_object(crypto, t, no, o, |_| {})?;
                side.objects_checked += (c.good.len() + c.bad.len()) as u64;
                replica_index.extend(c.good.into_iter().map(|(id, at)| (id, (no, at))));
                for (id, e, err) in c.bad {
                    side.corrupt.push(format!("{id} in {}: {err}", o.name));
                    bad_replica.push((o.name.clone(), id, e));
                }
                if let Some(at) = c.short_at {
                    side.corrupt.push(format!(
                        "{}: a damaged record header at offset {at}; the records after it are unchecked",
                        o.name
                    ));
                }
            }
        }
        if let Some((_, head)) = replica::read_head(t, crypto)? {
            for id in referenced(engine, &[head], false)? {
                if !replica_index.contains_key(&id) && !bad_replica.iter().any(|(_, b, _)| *b == id)
                {
                    side.missing.push(format!(
                        "{id}: referenced by the replica's head but not there"
                    ));
                }
            }
        }
        if repair {
            for (id, e) in &bad_primary {
                let Some((no, offset)) = replica_index.get(id) else {
                    continue;
                };
                let at = offset - RECORD_HEADER_LEN as u64;
                let len = e.record_len() as usize;
                let rec = replica::target::read_pack_range(t, *no, at, len)?;
                let re = IndexEntry {
                    pack: *no,
                    offset: *offset,
                    ..*e
                };
                let bases = |b: &ObjectId| engine.store.get(b);
                let raw = check_record(crypto, &rec, Path::new(&t.describe()), id, &re, &bases)?;
                engine.store.rewrite(e.kind, &raw)?;
                report.primary.repaired += 1;
            }
            if report.primary.repaired > 0 {
                engine.commit(true)?;
            }
            side.repaired = repair_replica(engine, t, &bad_replica)?;
        }
        report.replica = Some(side);
    } else if repair && !bad_primary.is_empty() {
        return Err(Error::Store(
            "cannot repair the primary without a replica (give --replica DIR)".into(),
        ));
    }

    let side_clean = |s: &Side, repair: bool| {
        s.missing.is_empty()
            && (s.corrupt.is_empty() || (repair && s.repaired as usize == s.corrupt.len()))
    };
    report.clean = side_clean(&report.primary, repair)
        && report
            .replica
            .as_ref()
            .is_none_or(|s| side_clean(s, repair));
    let stats = &engine.store.stats;
    let found = |s: &Side| (s.corrupt.len() + s.missing.len()) as u64;
    crate::metrics::Stats::add(
        &stats.verify_errors,
        found(&report.primary) + report.replica.as_ref().map_or(0, found),
    );
    if report.clean {
        let now = crate::format::Time::now().secs.max(0) as u64;
        stats
            .verify_last_ok
            .store(now, std::sync::atomic::Ordering::Relaxed);
        // Kept in the catalog, also by an offline `verify` of a store opened
        // read-only (only its data is never written), so that status and
        // the metrics of the next mount show it.
        let mut b = crate::catalog::db::Batch::default();
        b.put_counter(crate::scrub::LAST_OK, now);
        engine.db.apply(b)?;
        if engine.read_only() {
            engine.db.flush()?;
        }
    }
    Ok(report)
}

/// Rewrites damaged replica records from the primary's good copies, one
/// corrected copy of each affected pack object (replaced whole: a
/// directory's temp, fsync, rename; one PUT in a bucket). Parts are left
/// to the replicator, which ships the sealed pack in their place.
/// What one pack object of a replica holds, every record hash-checked.
pub struct ObjectCheck {
    /// Intact records: id and payload offset in the pack.
    pub good: Vec<(ObjectId, u64)>,
    /// Damaged ones, with what is wrong.
    pub bad: Vec<(ObjectId, IndexEntry, String)>,
    /// A whole pack whose scan a damaged record header ended early: where.
    pub short_at: Option<u64>,
}

/// Reads and hash-checks every record of object `o` of pack `no` at `t`;
/// `read(n)` is told of each record's `n` bytes as it goes (for a pace).
pub fn check_replica_object(
    crypto: &crate::crypto::Crypto,
    t: &dyn replica::target::Target,
    no: PackNo,
    o: &replica::remote::Object,
    mut read: impl FnMut(u64),
) -> Result<ObjectCheck> {
    let mut c = ObjectCheck {
        good: Vec::new(),
        bad: Vec::new(),
        short_at: None,
    };
    let path = Path::new(&o.name);
    let end = replica::remote::scan_object(t, o, |h, offset, rec| {
        read(rec.len() as u64);
        let e = IndexEntry::of_record(no, offset, &h);
        match check_record_alone(crypto, rec, path, &h.id, &e) {
            Ok(_) => c.good.push((h.id, offset)),
            Err(err) => c.bad.push((h.id, e, err.to_string())),
        }
        Ok(())
    })?;
    // A part of an open pack may end anywhere; a whole pack ends at a record.
    if end < o.end && o.name.ends_with(".pack") {
        c.short_at = Some(end);
    }
    Ok(c)
}

/// Rewrites the damaged records `bad` of replica pack objects from the
/// primary's copies (each object replaced whole: temp and rename, or one
/// PUT); returns how many it fixed.
pub(crate) fn repair_replica(
    engine: &Engine,
    t: &dyn replica::target::Target,
    bad: &[(String, ObjectId, IndexEntry)],
) -> Result<u64> {
    let mut by_object: HashMap<&str, Vec<(ObjectId, IndexEntry)>> = HashMap::new();
    for (name, id, e) in bad {
        by_object.entry(name).or_default().push((*id, *e));
    }
    let mut fixed = 0;
    for (name, records) in by_object {
        if !name.ends_with(".pack") {
            continue;
        }
        let Some(mut bytes) = t.get(name)? else {
            continue;
        };
        for (id, e) in records {
            let raw = engine.store.get(&id)?;
            // Encoded as that record was (zstd and lz4 are deterministic).
            let cold = !crate::store::codec::is_hot(e.codec & !crate::format::CODEC_SEALED);
            let (hdr, rec) =
                crate::store::encode_record(engine.store.crypto(), e.kind, id, &raw, cold)?;
            let payload = &rec[RECORD_HEADER_LEN..];
            let at = e.offset as usize;
            if hdr.stored_len != e.stored_len
                || hdr.codec != e.codec
                || at + payload.len() > bytes.len()
            {
                tracing::warn!("replica object {id}: cannot rebuild its record in place");
                continue;
            }
            bytes[at..at + payload.len()].copy_from_slice(payload);
            // The record header may be damaged too.
            let h_at = at - RECORD_HEADER_LEN;
            bytes[h_at..at].copy_from_slice(&hdr.encode());
            fixed += 1;
        }
        t.put_replace(name, &bytes)?;
    }
    Ok(fixed)
}
