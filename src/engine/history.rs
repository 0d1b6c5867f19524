//! Kept history: the commits, the versions of each path, and how they are
//! found. The mounted view of it (`.snapshots/`) is `snapshots`; this
//! module answers its questions:
//!
//! * `log(path)`: every state a path had, read from the path-version
//!   index ("h" keys, see `format`): one entry per commit that changed the
//!   content at that path, written by the commit itself (`changed_paths`),
//!   so a lookup costs the versions of that path, not the commits.
//! * `commit_at(t)`: the newest commit at or before an instant, by a
//!   binary search over point reads of the commit records.
//! * `snapshot_list`: named snapshots and the thinned automatic ones, one
//!   binary search per listed entry.
//! * `history()`: every (path, content) in order, by walking the commits'
//!   changed subtrees (recover, drill, and upgrading an old catalog).

use super::Engine;
use crate::catalog::db::{Batch, PathVersion};
use crate::error::{Error, Result};
use crate::format::{Commit, FileType, Node, Time, Tree};
use crate::ids::{CommitSeq, Ino, ObjectId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Which automatic snapshots `ls .snapshots` shows: the newest commit per
/// minute within `minutely`, per hour within `hourly`, per day beyond.
/// Thinning only hides entries; every commit stays reachable via `at/`.
#[derive(Clone, Debug)]
pub struct Thinning {
    pub minutely: Duration,
    pub hourly: Duration,
}

impl Default for Thinning {
    fn default() -> Self {
        Thinning {
            minutely: Duration::from_secs(24 * 3600),
            hourly: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// One snapshot as `revfs snapshot list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub commit: u64,
    pub time: String,
    pub named: bool,
}

/// One version of a path, as `revfs log` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub version: u64,
    pub time: String,
    pub size: u64,
    pub commit: u64,
    /// The path under `.snapshots/` (relative to the mount) holding it.
    pub snapshot_path: String,
}

/// One version found by [`Engine::history`].
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    pub commit: u64,
    pub time: String,
    /// Relative to the mount root.
    pub path: String,
    pub size: u64,
    /// The file's inode number, mtime and content in that commit.
    pub ino: u64,
    pub mtime: Time,
    pub manifest: Option<ObjectId>,
    pub commit_time: Time,
}

/// The name of an automatic snapshot: its commit time to the second, UTC.
pub fn auto_name(t: Time) -> String {
    chrono::DateTime::from_timestamp(t.secs, 0)
        .map(|d| d.format("%Y-%m-%dT%H%M%SZ").to_string())
        .unwrap_or_else(|| t.secs.to_string())
}

pub(super) fn parse_auto_name(s: &str) -> Option<Time> {
    let d = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H%M%SZ").ok()?;
    Some(Time {
        secs: d.and_utc().timestamp(),
        nanos: 0,
    })
}

/// Parses an RFC 3339 instant (offset or Z, optional fraction).
pub fn parse_instant(s: &str) -> Option<Time> {
    let d = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(Time {
        secs: d.timestamp(),
        nanos: d.timestamp_subsec_nanos(),
    })
}

/// The components of a path relative to the mount root.
pub(super) fn components(path: &str) -> Vec<&[u8]> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::as_bytes)
        .collect()
}

fn join(c: &[&[u8]]) -> String {
    c.iter()
        .map(|p| String::from_utf8_lossy(p))
        .collect::<Vec<_>>()
        .join("/")
}

/// A directory rebuilt by a commit: its new tree, and its tree before.
pub(super) struct Rebuilt {
    pub tree: Arc<Tree>,
    pub old: Option<ObjectId>,
}

impl Engine {
    /// The newest commit whose time is at or before `t` (commit times
    /// strictly increase with the sequence number).
    pub fn commit_at(&self, t: Time) -> Result<Option<(CommitSeq, Time)>> {
        let Some((first, _, ft)) = self.db.commit_from(CommitSeq(1))? else {
            return Ok(None);
        };
        if ft > t {
            return Ok(None);
        }
        let mut best = (first, ft);
        let (mut lo, mut hi) = (first.0 + 1, self.db.counter("head")?);
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            match self.db.commit_from(CommitSeq(mid))? {
                Some((s, _, ct)) if s.0 <= hi && ct <= t => {
                    best = (s, ct);
                    lo = s.0 + 1;
                }
                _ => hi = mid - 1,
            }
        }
        Ok(Some(best))
    }

    /// The instant `s` names: an RFC 3339 time, or a snapshot (a name, or
    /// an automatic snapshot's name): that snapshot's commit time.
    pub fn instant_of(&self, s: &str) -> Result<Time> {
        if let Some(t) = parse_instant(s) {
            return Ok(t);
        }
        if let Some(seq) = self.db.name(s)? {
            return Ok(self.db.commit(seq)?.ok_or(Error::NotFound)?.1);
        }
        if let Some(t) = parse_auto_name(s) {
            return Ok(Time {
                secs: t.secs,
                nanos: 999_999_999,
            });
        }
        Err(Error::Store(format!(
            "{s}: neither an RFC 3339 instant (e.g. 2026-11-24T07:30:00Z) nor a snapshot name"
        )))
    }

    /// Named snapshots and thinned automatic ones, newest first.
    pub fn snapshot_list(&self, thin: &Thinning) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        for (name, seq) in self.db.names()? {
            let time = self.db.commit(seq)?.map_or(Time::default(), |c| c.1);
            out.push(SnapshotInfo {
                name,
                commit: seq.0,
                time: crate::timefmt::rfc3339(time),
                named: true,
            });
        }
        let now = Time::now();
        let mut at = Time {
            secs: i64::MAX,
            nanos: 0,
        };
        // Newest first: the newest commit of each period, then on from
        // just before that period's start.
        while let Some((seq, t)) = self.commit_at(at)? {
            out.push(SnapshotInfo {
                name: auto_name(t),
                commit: seq.0,
                time: crate::timefmt::rfc3339(t),
                named: false,
            });
            let age = (now.as_nanos() - t.as_nanos()).max(0) as u128;
            let period = if age < thin.minutely.as_nanos() {
                60
            } else if age < thin.hourly.as_nanos() {
                3600
            } else {
                86400
            };
            let start = t.secs.div_euclid(period) * period;
            at = Time::from_nanos(start as i128 * 1_000_000_000 - 1);
        }
        Ok(out)
    }

    /// The entry (inode number in the commit, node) at `path` (components
    /// relative to the root) under tree `root`.
    pub(super) fn resolve_entry(
        &self,
        root: ObjectId,
        path: &[&[u8]],
    ) -> Result<Option<(u64, Node)>> {
        let mut tree = root;
        for (i, comp) in path.iter().enumerate() {
            let t = self.cached_tree(&tree)?;
            let Ok(at) = t.entries.binary_search_by(|e| e.name.as_slice().cmp(comp)) else {
                return Ok(None);
            };
            let e = &t.entries[at];
            if i + 1 == path.len() {
                return Ok(Some((e.ino, e.node.clone())));
            }
            match (e.node.kind, e.node.content) {
                (FileType::Directory, Some(id)) => tree = id,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The entry (inode number in the commit, node) at `path` (relative
    /// to the root; empty: the root itself) in commit `seq`.
    pub(super) fn entry_at(&self, seq: CommitSeq, path: &str) -> Result<Option<(u64, Node)>> {
        let root = self.commit_root(seq)?;
        let comps = components(path);
        if comps.is_empty() {
            return Ok(Some((Ino::ROOT.0, root)));
        }
        match root.content {
            Some(tree) => self.resolve_entry(tree, &comps),
            None => Ok(None),
        }
    }

    /// Every distinct content `path` had across commits, oldest first.
    /// `path` is relative to the mount root, `/`-separated.
    pub fn log(&self, path: &str) -> Result<Vec<LogEntry>> {
        let comps = components(path);
        if comps.is_empty() {
            return Err(Error::IsDir);
        }
        let path = join(&comps);
        let mut out: Vec<LogEntry> = Vec::new();
        let mut last: Option<(Option<ObjectId>, u64)> = None;
        for (seq, v) in self.db.path_versions(&path)? {
            if last == Some((v.content, v.size)) {
                continue;
            }
            last = Some((v.content, v.size));
            let instant = crate::timefmt::rfc3339(v.time);
            out.push(LogEntry {
                version: out.len() as u64 + 1,
                time: instant.clone(),
                size: v.size,
                commit: seq.0,
                snapshot_path: format!(".snapshots/at/{instant}/{path}"),
            });
        }
        // A file still being written when a commit ran shows up empty first;
        // when content follows, that empty state is not a version to offer.
        if out.len() > 1 && out[0].size == 0 {
            out.remove(0);
            for (i, e) in out.iter_mut().enumerate() {
                e.version = i as u64 + 1;
            }
        }
        Ok(out)
    }

    /// The paths whose content a commit changes, with their new nodes: the
    /// regular files of the rebuilt directories that differ from the old
    /// tree there, and every file under a directory that is new at its
    /// path (made, or moved there). Costs what the commit rebuilt, plus
    /// the subtrees moved.
    pub(super) fn changed_paths(
        &self,
        rebuilt: &HashMap<Ino, Rebuilt>,
    ) -> Result<Vec<(String, Node)>> {
        let mut out = Vec::new();
        let mut stack: Vec<(Ino, String)> = vec![(Ino::ROOT, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let Some(r) = rebuilt.get(&dir) else { continue };
            let old = r.old.map(|id| self.cached_tree(&id)).transpose()?;
            let before = |name: &[u8]| {
                old.as_ref().and_then(|t| {
                    t.entries
                        .binary_search_by(|e| e.name.as_slice().cmp(name))
                        .ok()
                        .map(|i| &t.entries[i])
                })
            };
            for e in &r.tree.entries {
                let path = format!("{prefix}{}", String::from_utf8_lossy(&e.name));
                let prev = before(&e.name);
                match e.node.kind {
                    FileType::Regular => {
                        let same = prev.is_some_and(|p| {
                            p.node.kind == FileType::Regular
                                && p.node.content == e.node.content
                                && p.node.size == e.node.size
                        });
                        if !same {
                            out.push((path, e.node.clone()));
                        }
                    }
                    FileType::Directory => {
                        let moved_here = prev.is_none_or(|p| p.ino != e.ino);
                        if moved_here {
                            if let Some(t) = e.node.content {
                                self.all_files(t, &format!("{path}/"), &mut out)?;
                            }
                        } else if rebuilt.contains_key(&Ino(e.ino)) {
                            stack.push((Ino(e.ino), format!("{path}/")));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Every regular file under tree `id`, with paths under `prefix`.
    pub(crate) fn all_files(
        &self,
        id: ObjectId,
        prefix: &str,
        out: &mut Vec<(String, Node)>,
    ) -> Result<()> {
        let mut stack = vec![(id, prefix.to_string())];
        while let Some((id, prefix)) = stack.pop() {
            for e in self.cached_tree(&id)?.entries.iter() {
                let path = format!("{prefix}{}", String::from_utf8_lossy(&e.name));
                match (e.node.kind, e.node.content) {
                    (FileType::Regular, _) => out.push((path, e.node.clone())),
                    (FileType::Directory, Some(t)) => stack.push((t, format!("{path}/"))),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Every version in history: each (path, content) the first time a
    /// commit holds it. Unchanged subtrees are skipped by tree id, so the
    /// walk costs what changed between commits.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        self.history_of(&self.db.commits()?)
    }

    /// [`Engine::history`] of the commits `commits` (seq, id, time), oldest first.
    pub fn history_of(&self, commits: &[(CommitSeq, ObjectId, Time)]) -> Result<Vec<HistoryEntry>> {
        let mut out = Vec::new();
        let mut seen_trees: HashMap<String, ObjectId> = HashMap::new();
        let mut content: HashMap<String, Option<ObjectId>> = HashMap::new();
        for &(seq, id, time) in commits {
            let c = Commit::decode(&self.store.get(&id)?)?;
            let mut stack = vec![(String::new(), c.root)];
            while let Some((dir, tree_id)) = stack.pop() {
                if seen_trees.get(&dir) == Some(&tree_id) {
                    continue;
                }
                seen_trees.insert(dir.clone(), tree_id);
                for e in self.cached_tree(&tree_id)?.entries.iter() {
                    let path = format!("{dir}{}", String::from_utf8_lossy(&e.name));
                    match (e.node.kind, e.node.content) {
                        (FileType::Directory, Some(t)) => stack.push((format!("{path}/"), t)),
                        (FileType::Regular, c) if content.get(&path) != Some(&c) => {
                            content.insert(path.clone(), c);
                            out.push(HistoryEntry {
                                commit: seq.0,
                                time: crate::timefmt::rfc3339(time),
                                path,
                                size: e.node.size,
                                ino: e.ino,
                                mtime: e.node.mtime,
                                manifest: c,
                                commit_time: time,
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes the path-version index of the whole history (a catalog built
    /// before the index existed, or rebuilt from a replica).
    pub fn index_history(&self, history: &[HistoryEntry]) -> Result<()> {
        for chunk in history.chunks(4096) {
            let mut b = Batch::default();
            put_path_versions(&mut b, chunk);
            self.db.apply(b)?;
        }
        Ok(())
    }
}

/// Puts the path-version entries of `history` into `b`.
pub(crate) fn put_path_versions(b: &mut Batch, history: &[HistoryEntry]) {
    for h in history {
        b.put_path_version(
            &h.path,
            CommitSeq(h.commit),
            &PathVersion {
                time: h.commit_time,
                size: h.size,
                content: h.manifest,
            },
        );
    }
}

/// Brings a catalog of an older layout up to [`CATALOG_VERSION`]: builds
/// the path-version index from history and the status counters (layout
/// 2, even for a read-only open: only the catalog changes, never the
/// data), then gives every value its check (layout 3, at the first
/// writable open: a revfs of format 11 would read checked values wrongly,
/// and only a writable open raises the store's format, before this runs,
/// so that it refuses them). Runs once, when a store made by an earlier
/// revfs is first opened.
///
/// [`CATALOG_VERSION`]: crate::catalog::db::CATALOG_VERSION
pub fn upgrade(engine: &Arc<Engine>) -> Result<()> {
    let version = engine.db.catalog_version()?;
    if version < 2 {
        tracing::info!("upgrading the catalog from layout {version} to 2: indexing history");
        engine.index_history(&engine.history()?)?;
        crate::status::recount(&engine.db)?;
        let mut b = Batch::default();
        b.put_catalog_version(2);
        engine.db.apply(b)?;
        engine.db.flush()?;
    }
    if version < crate::catalog::db::CATALOG_VERSION && !engine.read_only() {
        let n = engine.db.add_value_checks()?;
        tracing::info!(
            "upgraded the catalog to layout {}: {n} values got their check",
            crate::catalog::db::CATALOG_VERSION
        );
    }
    Ok(())
}
