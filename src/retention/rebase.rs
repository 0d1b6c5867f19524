//! The GC of delta chains. A chunk whose versions are all dropped stays
//! marked while a kept delta is rebuilt from it (a base-only chunk: a key
//! goes when retention drops the oldest versions, or thinning keeps one an
//! hour and drops those between). Before the sweep, a round rebases each
//! kept delta that names such a chunk: onto that chunk's own bases (the
//! segments composed through it, `delta::compose`, as far down as the
//! chain goes), or, where the base-only chunk is whole (a key that goes),
//! onto another kept version (`deltas::replan`: the nearest older key,
//! else the next kept version where that is whole), else it is stored
//! whole; then the base-only chunks no unrebased delta needs are
//! unmarked, and the sweep frees them.
//!
//! Order and crash safety: the new records are written and made durable,
//! and the index switched to them in one batch, before the sweep drops a
//! single index entry; a crash before the switch leaves the old records
//! (and their bases) in place, and a delta whose switch did not happen
//! (its entry moved meanwhile) keeps its bases marked.

use crate::catalog::db::{Batch, IndexEntry};
use crate::engine::Engine;
use crate::error::Result;
use crate::ids::ObjectId;
use crate::reach::Reach;
use crate::store::delta::{self, Segment};
use std::collections::{HashMap, HashSet};

/// Bases composed through for one delta, at most.
const MAX_STEPS: usize = 64;

/// What a rebase did: the deltas now on other bases (or whole).
#[derive(Default)]
pub struct Rebased {
    pub ids: HashSet<ObjectId>,
}

/// New segments for each marked delta (not base-only itself) that names a
/// base-only chunk; None: store it whole.
fn plan(engine: &Engine, reach: &Reach) -> Result<HashMap<ObjectId, Option<Vec<Segment>>>> {
    let store = &engine.store;
    let base_only = reach.base_only();
    // A delta's segments (one read of its head); None for a whole chunk.
    let segments_of = |id: &ObjectId| -> Result<Option<Vec<Segment>>> {
        match store.locate(id)? {
            Some(e) if e.is_delta() => Ok(Some(store.segments(id, &e)?)),
            _ => Ok(None),
        }
    };
    let mut out = HashMap::new();
    // Deltas whose chain ends in a whole base-only chunk: planned again.
    let mut rekey: HashSet<ObjectId> = HashSet::new();
    for (d, bases) in reach.delta_bases() {
        if base_only.contains(d) || !bases.iter().any(|b| base_only.contains(b)) {
            continue;
        }
        let Some(mut segs) = segments_of(d)? else {
            continue;
        };
        // Each step replaces one base by its own bases: a chunk spans a few
        // chunks of its base, down a chain of at most MAX_CHAIN; the bound
        // keeps a damaged graph (a cycle) from looping.
        let mut steps = 0;
        let composed = loop {
            let Some(via) = segs.iter().map(|s| s.base).find(|b| base_only.contains(b)) else {
                break Some(segs);
            };
            steps += 1;
            let of_via = match segments_of(&via)? {
                Some(v) if steps <= MAX_STEPS => v,
                // A whole chunk, or too deep: this delta is stored whole.
                _ => break None,
            };
            match delta::compose(&segs, &via, &of_via) {
                Some(s) if !s.iter().any(|x| x.base == *d) => segs = s,
                _ => break None,
            }
        };
        match composed {
            Some(segs) => {
                out.insert(*d, Some(segs));
            }
            None => {
                rekey.insert(*d);
            }
        }
    }
    if !rekey.is_empty() {
        // The bases every marked delta will have: the composed ones' new.
        let mut bases = reach.delta_bases().clone();
        for (d, segs) in &out {
            if let Some(segs) = segs {
                bases.insert(*d, delta::bases_of(segs));
            }
        }
        let mut replanned = super::deltas::replan(engine, &bases, &rekey)?;
        for d in rekey {
            out.insert(d, replanned.remove(&d));
        }
    }
    Ok(out)
}

/// Rewrites the deltas that name base-only chunks of `reach` (at `pace`),
/// durably, and switches the index to them.
pub fn rebase(engine: &Engine, reach: &Reach, pace: &mut crate::sys::Pace) -> Result<Rebased> {
    if reach.base_only().is_empty() {
        return Ok(Rebased::default());
    }
    let planned = plan(engine, reach)?;
    let store = &engine.store;
    let mut entries: Vec<(ObjectId, IndexEntry)> = Vec::new();
    for id in planned.keys() {
        if let Some(e) = store.locate(id)? {
            entries.push((*id, e));
        }
    }
    if entries.is_empty() {
        return Ok(Rebased::default());
    }
    let deltas: HashMap<ObjectId, Vec<Segment>> = planned
        .into_iter()
        .filter_map(|(id, s)| s.map(|s| (id, s)))
        .collect();
    // Chunks stored whole first: a new key is written before (in a pack
    // no later than) the deltas re-planned on it.
    entries.sort_by_key(|(id, _)| deltas.contains_key(id));
    let moved = store.copy_records(
        &entries,
        Some(crate::store::Recode {
            pace,
            deltas: &deltas,
            rewrite: true,
        }),
    )?;
    crate::crashpoint::crash_point("prune:rebase-copied");
    let mut b = Batch::default();
    store.relocate(&mut b, &entries, &moved)?;
    engine.db.apply(b)?;
    engine.db.flush()?;
    let mut out = Rebased::default();
    for (id, new) in &moved {
        if engine.db.index(id)? == Some(*new) {
            out.ids.insert(*id);
        }
    }
    tracing::debug!(
        "prune: {} deltas rebased off chunks no kept version holds",
        out.ids.len()
    );
    Ok(out)
}

/// Unmarks the base-only chunks that no delta still on its old bases
/// needs (after `rebase`, and after the last marks of the round).
pub fn release(reach: &mut Reach, rebased: &Rebased) {
    let base_only = reach.base_only();
    if base_only.is_empty() {
        return;
    }
    let bases = reach.delta_bases();
    // What the deltas kept for themselves and not rebased rebuild from,
    // down their chains.
    let mut needed: HashSet<ObjectId> = HashSet::new();
    let mut stack: Vec<ObjectId> = bases
        .iter()
        .filter(|(d, _)| !base_only.contains(*d) && !rebased.ids.contains(*d))
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    while let Some(id) = stack.pop() {
        if needed.insert(id)
            && let Some(b) = bases.get(&id)
        {
            stack.extend(b.iter().copied());
        }
    }
    let free: Vec<ObjectId> = base_only
        .iter()
        .filter(|id| !needed.contains(*id))
        .copied()
        .collect();
    reach.release(&free);
}
