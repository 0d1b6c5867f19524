//! Which chunks a recompressing prune stores as deltas (`store::delta`),
//! and of which bytes.
//!
//! **Keys and the versions after them.** Along each path, a version
//! stored whole (a key) is the base of the next up to [`KEY_SPAN`]
//! versions: when a version stops being the newest, every chunk of it
//! that the next version does not hold as it is becomes a delta of the
//! key's bytes at the same place. A read of any kept version so follows
//! at most one base (a chain of versions would cost one decode a version
//! down it: reverse deltas bounded at four bases read the oldest of 12
//! checkpoints at a quarter of the speed of whole ones). The newest
//! version is always whole (it has no next version to be planned with),
//! so what a job resumes from never follows a base, and the oldest kept
//! version of a path is a key. A full-training step flips about the same
//! low bits whatever the distance, so a delta of a key 11 steps back costs
//! little more than one of the step before (0.29 against 0.19 of a bf16
//! checkpoint on the benchmark workload).
//!
//! **The same place** is the same offset, except between two safetensors
//! files, where it is the same tensor (name, dtype and shape) wherever its
//! offset moved (a tensor added in front shifts all the others).
//!
//! **Re-keying.** When retention drops a key and keeps versions that
//! were deltas of it, a prune plans them again ([`replan`]): on the
//! nearest older kept key, else on the next kept version where it is
//! whole, else they are stored whole (the first of them is a new key).
//!
//! **Chains stay short** also across files (a chunk is one record
//! whatever files hold it, so a key's chunk may be a delta planned along
//! another path): a chunk becomes a delta only if the longest chain
//! through it stays within [`MAX_CHAIN`] bases: its new bases' own depth
//! plus the deltas already hanging below it. No chunk is a delta of a
//! chain that leads back to itself.
//!
//! Deduplication stays: an unchanged chunk is one record, whole or delta,
//! whatever files hold it; the mark (`reach`) keeps every base a kept
//! delta needs, also when the versions that held it are dropped.

use crate::engine::Engine;
use crate::error::Result;
use crate::format::Extent;
use crate::ids::{CommitSeq, ObjectId};
use crate::manifest::Visit;
use crate::store::ObjectStore;
use crate::store::delta::{MAX_SEGMENTS, NO_BASE, Segment};
use std::collections::{HashMap, HashSet};

/// Bases a read of a delta follows at most, across files (along one
/// path a read follows one: see the module's notes).
pub const MAX_CHAIN: usize = 4;
/// Versions after a key stored as deltas of it, at most: a key every
/// `KEY_SPAN + 1` versions along a path. A delta of a key grows little
/// with the distance (the benchmark workload's checkpoints against the
/// first: bf16 0.19 of the checkpoint 1 step on, 0.27 at 4, 0.29 at 11;
/// f32 0.56, 0.61, 0.62), while a key costs the whole version (0.76 and
/// 0.92): rare keys store less, and a read follows one base whatever
/// the distance.
pub const KEY_SPAN: usize = 16;
/// Chunks smaller than this are not worth a delta.
const MIN_CHUNK: u64 = 4096;
/// The biggest safetensors header looked at.
const MAX_HEADER: u64 = 16 << 20;

/// The chunks to store as deltas, with their segments.
pub type Plan = HashMap<ObjectId, Vec<Segment>>;

/// The plan for the store's kept history as the path-version index holds
/// it (after this round's drop): each version whose next version came
/// with commit `since` or later (each version is planned by one round
/// that finishes, so a chunk whose delta did not pay is not tried again).
pub fn plan(engine: &Engine, since: CommitSeq) -> Result<Plan> {
    let store = &engine.store;
    let mut g = Graph::default();
    for entry in engine.db.index_all() {
        let (id, e) = entry?;
        if e.is_delta() {
            match store.bases(&id, &e) {
                Ok(b) => g.add(id, b),
                // The mark reads it too and stops the round.
                Err(err) => tracing::warn!("delta record {id}: {err}"),
            }
        }
    }
    let mut plan = Plan::new();
    for (_, entries) in engine.db.path_version_groups()? {
        let mut path = PathVersions::new(store, &entries);
        // Oldest first: whether a version is a key is settled before the
        // versions after it look for theirs.
        for i in 0..path.len().saturating_sub(1) {
            if path.seq(i + 1) >= since {
                path.plan_version(i, &mut g, &mut plan, None)?;
            }
        }
    }
    Ok(plan)
}

/// New segments for the deltas in `rekey` (marked deltas whose key no
/// kept version holds any more), planned along the kept versions that
/// hold them; a chunk left out is to be stored whole. `bases` are the
/// bases of every marked delta, as the rebase leaves them.
pub fn replan(
    engine: &Engine,
    bases: &HashMap<ObjectId, Vec<ObjectId>>,
    rekey: &HashSet<ObjectId>,
) -> Result<Plan> {
    let mut g = Graph::default();
    for (id, b) in bases {
        g.add(*id, b.clone());
    }
    let mut plan = Plan::new();
    for (_, entries) in engine.db.path_version_groups()? {
        let mut path = PathVersions::new(&engine.store, &entries);
        if path.len() < 2 {
            // Nothing to plan on: its chunks are stored whole.
            continue;
        }
        for i in 0..path.len() {
            path.plan_version(i, &mut g, &mut plan, Some(rekey))?;
        }
    }
    Ok(plan)
}

/// The delta graph: each delta chunk's bases, and who has each as a base.
#[derive(Default)]
struct Graph {
    bases: HashMap<ObjectId, Vec<ObjectId>>,
    dependents: HashMap<ObjectId, Vec<ObjectId>>,
}

impl Graph {
    fn add(&mut self, id: ObjectId, bases: Vec<ObjectId>) {
        for b in &bases {
            self.dependents.entry(*b).or_default().push(id);
        }
        self.bases.insert(id, bases);
    }

    /// `id` is whole from now on.
    fn remove(&mut self, id: &ObjectId) {
        for b in self.bases.remove(id).unwrap_or_default() {
            if let Some(d) = self.dependents.get_mut(&b) {
                d.retain(|x| x != id);
            }
        }
    }

    /// How many bases a read of `id` follows at most; None when that is
    /// over `limit` or the chain reaches `avoid`.
    fn depth(&self, id: &ObjectId, avoid: &ObjectId, limit: usize) -> Option<usize> {
        if id == avoid {
            return None;
        }
        let Some(bases) = self.bases.get(id) else {
            return Some(0);
        };
        if limit == 0 {
            return None;
        }
        let mut d = 0;
        for b in bases {
            d = d.max(self.depth(b, avoid, limit - 1)? + 1);
        }
        Some(d)
    }

    /// The longest chain of deltas below `id` (None: over `limit`).
    fn height(&self, id: &ObjectId, limit: usize) -> Option<usize> {
        let Some(deps) = self.dependents.get(id) else {
            return Some(0);
        };
        if limit == 0 {
            return None;
        }
        let mut h = 0;
        for d in deps {
            h = h.max(self.height(d, limit - 1)? + 1);
        }
        Some(h)
    }

    /// Whether `id` may become a delta of `bases`.
    fn allows(&self, id: &ObjectId, bases: &[ObjectId]) -> bool {
        let mut depth = 0;
        for b in bases {
            match self.depth(b, id, MAX_CHAIN) {
                Some(d) => depth = depth.max(d + 1),
                None => return false,
            }
        }
        self.height(id, MAX_CHAIN)
            .is_some_and(|h| depth + h <= MAX_CHAIN)
    }
}

/// A file version's extents: (offset, length, chunk or None for a hole).
type Extents = Vec<(u64, u64, Option<ObjectId>)>;

fn extents(store: &ObjectStore, root: ObjectId) -> Result<Extents> {
    let mut out = Vec::new();
    let mut pos = 0;
    crate::manifest::walk(store, root, |v| {
        if let Visit::Extent(x) = v {
            let id = match x {
                Extent::Chunk { id, .. } => Some(*id),
                Extent::Hole { .. } => None,
            };
            out.push((pos, x.len(), id));
            pos += x.len();
        }
        Ok(true)
    })?;
    Ok(out)
}

/// The kept content versions of one path, oldest first (a version equal
/// to the one before it is the same version), their extents read once.
struct PathVersions<'a> {
    store: &'a ObjectStore,
    /// (commit, content, size).
    versions: Vec<(CommitSeq, ObjectId, u64)>,
    extents: HashMap<usize, Extents>,
}

impl<'a> PathVersions<'a> {
    fn new(
        store: &'a ObjectStore,
        entries: &[(CommitSeq, crate::catalog::db::PathVersion)],
    ) -> PathVersions<'a> {
        let mut versions: Vec<(CommitSeq, ObjectId, u64)> = Vec::new();
        for (seq, v) in entries {
            if let Some(c) = v.content
                && versions.last().map(|l| l.1) != Some(c)
            {
                versions.push((*seq, c, v.size));
            }
        }
        PathVersions {
            store,
            versions,
            extents: HashMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.versions.len()
    }

    fn seq(&self, i: usize) -> CommitSeq {
        self.versions[i].0
    }

    fn extents(&mut self, i: usize) -> Result<&Extents> {
        if !self.extents.contains_key(&i) {
            let x = extents(self.store, self.versions[i].1)?;
            self.extents.insert(i, x);
        }
        Ok(&self.extents[&i])
    }

    fn ids(&mut self, i: usize) -> Result<HashSet<ObjectId>> {
        if i >= self.len() {
            return Ok(HashSet::new());
        }
        Ok(self.extents(i)?.iter().filter_map(|x| x.2).collect())
    }

    /// Whether version `i` is whole: none of its chunks is a delta (every
    /// chunk planned this round is in `g` too).
    fn whole(&mut self, i: usize, g: &Graph) -> Result<bool> {
        if self.versions[i].2 < MIN_CHUNK {
            return Ok(false);
        }
        Ok(self
            .extents(i)?
            .iter()
            .filter_map(|x| x.2)
            .all(|id| !g.bases.contains_key(&id)))
    }

    /// Whether a delta already names a chunk of version `i` (it is a key).
    fn is_base(&mut self, i: usize, g: &Graph) -> Result<bool> {
        Ok(self
            .extents(i)?
            .iter()
            .filter_map(|x| x.2)
            .any(|id| g.dependents.get(&id).is_some_and(|d| !d.is_empty())))
    }

    /// The version whose bytes version `i`'s deltas are made of: the
    /// nearest older key within KEY_SPAN; when re-keying, else the next
    /// version if it is whole. None: `i` is a key.
    ///
    /// Keys are counted along the path from the nearest older whole
    /// version that deltas already name (or from 4 x KEY_SPAN back): a
    /// version is a key when no key is within KEY_SPAN before it. Being
    /// whole is not enough: a version whose chunks the next one holds has
    /// nothing planned (a re-save, a fine-tune of two layers), and its
    /// chunks become the next one's deltas later.
    fn base_of(&mut self, i: usize, g: &Graph, rekeying: bool) -> Result<Option<usize>> {
        let floor = i.saturating_sub(4 * KEY_SPAN);
        let mut start = floor;
        for j in (floor..i).rev() {
            if self.whole(j, g)? && self.is_base(j, g)? {
                start = j;
                break;
            }
        }
        // The keys from `start` on that are whole (bases to be).
        let mut keys: Vec<usize> = Vec::new();
        for j in start..i {
            let covered = keys.last().is_some_and(|k| j - k <= KEY_SPAN);
            if !covered && self.whole(j, g)? {
                keys.push(j);
            }
        }
        if let Some(&k) = keys.last()
            && i - k <= KEY_SPAN
        {
            return Ok(Some(k));
        }
        if rekeying && i + 1 < self.len() && self.whole(i + 1, g)? {
            return Ok(Some(i + 1));
        }
        Ok(None)
    }

    /// Plans the chunks of version `i` that the next version does not
    /// hold as deltas of its key's bytes: the chunks still whole, or when
    /// re-keying, those of `rekey` (whole from now on unless planned).
    fn plan_version(
        &mut self,
        i: usize,
        g: &mut Graph,
        plan: &mut Plan,
        rekey: Option<&HashSet<ObjectId>>,
    ) -> Result<()> {
        if self.versions[i].2 < MIN_CHUNK {
            return Ok(());
        }
        let next_ids = self.ids(i + 1)?;
        let mut candidates: Vec<(u64, u64, ObjectId)> = self
            .extents(i)?
            .iter()
            .filter_map(|&(off, len, id)| Some((off, len, id?)))
            .filter(|(_, len, id)| {
                *len >= MIN_CHUNK
                    && !next_ids.contains(id)
                    && !plan.contains_key(id)
                    && match rekey {
                        Some(r) => r.contains(id),
                        None => !g.bases.contains_key(id),
                    }
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let base = self.base_of(i, g, rekey.is_some())?;
        if rekey.is_some() {
            for c in &candidates {
                g.remove(&c.2);
            }
        }
        tracing::debug!(
            "deltas: version {i} of {}: {} candidates, base {base:?}",
            self.len(),
            candidates.len()
        );
        let Some(b) = base else {
            return Ok(());
        };
        let base_ids = self.ids(b)?;
        candidates.retain(|c| !base_ids.contains(&c.2));
        let store = self.store;
        let old_x = self.extents(i)?.clone();
        let base_x = self.extents(b)?;
        let map = OffsetMap::new(store, &old_x, base_x)?;
        let planned: Vec<_> = candidates
            .into_iter()
            .filter_map(|(off, len, id)| Some((id, segments(&map, base_x, off, len)?)))
            .collect();
        if !pays(store, &planned)? {
            tracing::debug!("deltas: version {i} on {b}: does not pay");
            return Ok(());
        }
        let mut n = 0;
        for (id, segments) in planned {
            let bases = crate::store::delta::bases_of(&segments);
            if g.allows(&id, &bases) {
                g.add(id, bases);
                plan.insert(id, segments);
                n += 1;
            }
        }
        tracing::debug!("deltas: version {i} on {b}: {n} chunks planned");
        Ok(())
    }
}

/// Chunks of a pair tried before planning it.
const SAMPLES: usize = 3;
/// The head of each tried chunk that is encoded both ways.
const SAMPLE_BYTES: usize = 16 << 10;

/// Whether deltas pay for a pair of versions, judged on the heads of a few
/// of its planned chunks spread over the file: their residuals must come
/// out at most 3/4 of the chunks' own cold encoding (two unrelated versions
/// are not repacked for nothing).
fn pays(store: &ObjectStore, planned: &[(ObjectId, Vec<Segment>)]) -> Result<bool> {
    if planned.is_empty() {
        return Ok(false);
    }
    let (mut whole, mut delta) = (0usize, 0usize);
    for k in 0..SAMPLES.min(planned.len()) {
        let (id, segs) = &planned[k * (planned.len() - 1) / (SAMPLES - 1).max(1)];
        let raw = store.get(id)?;
        let n = raw.len().min(SAMPLE_BYTES);
        whole += crate::store::codec::encode_cold(&raw[..n])?.1.len();
        delta += crate::store::delta::residual_len(&raw[..n], segs, |b| store.get(b))?;
    }
    Ok(delta * 4 <= whole * 3)
}

/// The segments of a version's bytes `off..off + len` in its base
/// version's extents `new_x`; None when under half of them have a base
/// there, or when they would take too many segments.
fn segments(map: &OffsetMap, new_x: &Extents, off: u64, len: u64) -> Option<Vec<Segment>> {
    let mut out: Vec<Segment> = Vec::new();
    let mut based = 0u64;
    let mut pos = off;
    let end = off + len;
    while pos < end {
        let (to, run) = map.to_base(pos);
        let run = run.min(end - pos);
        let mut piece = Segment {
            base: NO_BASE,
            start: 0,
            len: run as u32,
        };
        if let Some(q) = to {
            // The base's extent holding q.
            let i = new_x.partition_point(|x| x.0 <= q);
            if i > 0 {
                let (x_off, x_len, x_id) = new_x[i - 1];
                if q < x_off + x_len {
                    piece.len = run.min(x_off + x_len - q) as u32;
                    if let Some(b) = x_id {
                        piece.base = b;
                        piece.start = (q - x_off) as u32;
                        based += piece.len as u64;
                    }
                }
            }
        }
        pos += piece.len as u64;
        match out.last_mut() {
            Some(last) if last.base == NO_BASE && piece.base == NO_BASE => last.len += piece.len,
            Some(last)
                if last.base == piece.base
                    && piece.base != NO_BASE
                    && last.start + last.len == piece.start =>
            {
                last.len += piece.len
            }
            _ => out.push(piece),
        }
        if out.len() > MAX_SEGMENTS {
            return None;
        }
    }
    (based * 2 >= len).then_some(out)
}

/// Where a version's bytes are in its base version: the same offset,
/// or, between two safetensors files, the same tensor's.
struct OffsetMap {
    /// (start, end, start in the base), sorted, for safetensors.
    tensors: Option<Vec<(u64, u64, u64)>>,
}

impl OffsetMap {
    fn new(store: &ObjectStore, old_x: &Extents, new_x: &Extents) -> Result<OffsetMap> {
        let tensors = match (safetensors(store, old_x)?, safetensors(store, new_x)?) {
            (Some(old), Some(new)) => {
                let mut ranges: Vec<(u64, u64, u64)> = old
                    .iter()
                    .filter_map(|(name, (key, s, e))| {
                        let (nkey, ns, ne) = new.get(name)?;
                        (nkey == key && ne - ns == e - s).then_some((*s, *e, *ns))
                    })
                    .collect();
                ranges.sort();
                Some(ranges)
            }
            _ => None,
        };
        Ok(OffsetMap { tensors })
    }

    /// Where offset `pos` is in the base version (None: nowhere),
    /// and for how many bytes on that holds.
    fn to_base(&self, pos: u64) -> (Option<u64>, u64) {
        let Some(t) = &self.tensors else {
            return (Some(pos), u64::MAX);
        };
        let i = t.partition_point(|r| r.0 <= pos);
        if i > 0 && pos < t[i - 1].1 {
            let (s, e, ns) = t[i - 1];
            return (Some(ns + pos - s), e - pos);
        }
        let next = t.get(i).map_or(u64::MAX, |r| r.0);
        (None, next - pos)
    }
}

/// The tensors of a safetensors file: name -> (dtype and shape, absolute
/// start, end); None when it is not one.
type Tensors = HashMap<String, (String, u64, u64)>;

fn safetensors(store: &ObjectStore, x: &Extents) -> Result<Option<Tensors>> {
    let Some(len8) = read_prefix(store, x, 8)? else {
        return Ok(None);
    };
    let n = u64::from_le_bytes(len8[..8].try_into().unwrap_or([0; 8]));
    let size = x.last().map_or(0, |l| l.0 + l.1);
    if !(2..=MAX_HEADER).contains(&n) || 8 + n > size {
        return Ok(None);
    }
    let Some(head) = read_prefix(store, x, 8 + n)? else {
        return Ok(None);
    };
    if head[8] != b'{' {
        return Ok(None);
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&head[8..]) else {
        return Ok(None);
    };
    let mut out = Tensors::new();
    for (name, t) in map {
        if name == "__metadata__" {
            continue;
        }
        let (Some(dtype), Some(shape), Some(offs)) = (
            t.get("dtype").and_then(|d| d.as_str()),
            t.get("shape"),
            t.get("data_offsets").and_then(|o| o.as_array()),
        ) else {
            return Ok(None);
        };
        let (Some(s), Some(e)) = (
            offs.first().and_then(|v| v.as_u64()),
            offs.get(1).and_then(|v| v.as_u64()),
        ) else {
            return Ok(None);
        };
        if s > e {
            return Ok(None);
        }
        out.insert(name, (format!("{dtype}{shape}"), 8 + n + s, 8 + n + e));
    }
    Ok(Some(out))
}

/// The first `n` bytes of a file version (None: it is shorter, or starts
/// with a hole).
fn read_prefix(store: &ObjectStore, x: &Extents, n: u64) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(n as usize);
    for &(_, len, id) in x {
        if out.len() as u64 >= n {
            break;
        }
        let Some(id) = id else {
            return Ok(None);
        };
        let data = store.get(&id)?;
        let take = (n - out.len() as u64).min(len) as usize;
        out.extend_from_slice(data.get(..take).unwrap_or(&data[..]));
    }
    Ok((out.len() as u64 >= n).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> ObjectId {
        ObjectId([b; 32])
    }

    #[test]
    fn chains_stay_within_the_bound_and_never_loop() {
        let mut g = Graph::default();
        // v1 <- v2 <- v3 ... as reverse deltas: chunk k is a delta of k+1.
        let mut made = Vec::new();
        for k in (1..=10u8).rev() {
            if g.allows(&id(k), &[id(k + 1)]) {
                g.add(id(k), vec![id(k + 1)]);
                made.push(k);
            }
        }
        for k in &made {
            assert!(g.depth(&id(*k), &id(0), 64).unwrap() <= MAX_CHAIN);
        }
        // Newest first: chunks 10..7 join one chain, 6 is a key, 5..2 ...
        assert_eq!(made.len(), 10 - 10 / (MAX_CHAIN + 1));
        // A base whose chain leads back is refused.
        assert!(!g.allows(&id(11), &[id(10)]));
    }

    #[test]
    fn segments_follow_the_newer_extents() {
        let new_x: Extents = vec![
            (0, 100, Some(id(1))),
            (100, 50, None),
            (150, 100, Some(id(2))),
        ];
        let same = OffsetMap { tensors: None };
        let s = segments(&same, &new_x, 80, 100).unwrap();
        assert_eq!(
            s,
            vec![
                Segment {
                    base: id(1),
                    start: 80,
                    len: 20
                },
                Segment {
                    base: NO_BASE,
                    start: 0,
                    len: 50
                },
                Segment {
                    base: id(2),
                    start: 0,
                    len: 30
                },
            ]
        );
        // Past the newer end: no base; under half based: no delta.
        assert!(segments(&same, &new_x, 200, 200).is_none());
        // A tensor that moved by 7 bytes.
        let moved = OffsetMap {
            tensors: Some(vec![(10, 90, 17)]),
        };
        let s = segments(&moved, &new_x, 10, 80).unwrap();
        assert_eq!(
            s,
            vec![Segment {
                base: id(1),
                start: 17,
                len: 80
            }]
        );
    }
}
