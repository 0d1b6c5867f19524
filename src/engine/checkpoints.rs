//! Training checkpoints: where one ends, and every one ever saved.
//!
//! A checkpoint is complete when a *marker* says so: a file whose path
//! matches one of the marker globs is closed after a write or renamed into
//! place, or a directory is renamed into place. The defaults cover the
//! frameworks' own completion signals:
//!
//! | marker | written last by |
//! |---|---|
//! | `**/.metadata` | torch.distributed.checkpoint (after every rank's shards) |
//! | `**/trainer_state.json` | Hugging Face Trainer (`checkpoint-N/`) |
//! | `**/latest` | DeepSpeed (the tag file naming `global_stepN/`) |
//! | `**/commit_success.txt` | orbax on filesystems without atomic rename (GCS) |
//! | a directory renamed into place | orbax (`N.orbax-checkpoint-tmp` -> `N`), any atomic save of a directory |
//!
//! At that instant a commit is made, before the close or the rename
//! returns, and the commit names the checkpoint (format 9): the state right
//! after every completed save exists as a commit, and is durable once the
//! save returns. Every file the checkpoint directory held then is in that
//! commit, with the content it was closed with.
//!
//! The directory of a marker file is its parent, except for a tag file
//! (`latest`) whose content names a directory beside it: that one. A
//! directory renamed into place is a checkpoint when its old name says it
//! was temporary (a word "tmp" or "temp" in it: `3.orbax-checkpoint-tmp`)
//! or its new path matches a marker; any other directory rename makes a
//! commit and no checkpoint. Nothing inside a directory that is still
//! temporary completes a checkpoint (orbax writes `commit_success.txt` and
//! `_CHECKPOINT_METADATA` in its temporary directory, the latter when it
//! starts): the rename that follows does.
//!
//! Names: `<directory's name>@<commit time, UTC seconds>`, with `~<commit>`
//! after a second one of that name in the same second.

use super::{Engine, lock};
use crate::error::{Error, Result};
use crate::format::{CheckpointMark, FileType};
use crate::ids::{CommitSeq, Ino};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// The markers a store watches unless told otherwise.
pub const DEFAULT_MARKERS: &[&str] = &[
    "**/.metadata",
    "**/trainer_state.json",
    "**/latest",
    "**/commit_success.txt",
];

/// The name under `.snapshots/` of the checkpoint view.
pub const VIEW_DIR: &str = "checkpoints";

/// The largest tag file whose content is read as a directory's name.
const TAG_MAX: u64 = 256;

/// Compiled marker globs, matched against paths relative to the mount
/// root (`*` does not cross `/`; `**/x` also matches `x` at the root).
#[derive(Clone, Debug)]
pub struct Markers {
    full: GlobSet,
    /// The globs' last components: a cheap test of a name alone, so that
    /// only files whose name can match are watched at all.
    names: GlobSet,
    count: usize,
}

fn glob(s: &str) -> Result<Glob> {
    GlobBuilder::new(s)
        .literal_separator(true)
        .build()
        .map_err(|e| Error::Store(format!("checkpoint marker {s:?}: {e}")))
}

impl Markers {
    /// Markers from globs; none (or only "none") watches nothing.
    pub fn new<S: AsRef<str>>(globs: &[S]) -> Result<Markers> {
        let mut full = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        let mut count = 0;
        for g in globs {
            let g = g.as_ref().trim().trim_start_matches('/');
            if g.is_empty() || g == "none" {
                continue;
            }
            full.add(glob(g)?);
            let last = g.rsplit('/').next().unwrap_or(g);
            names.add(glob(if last.contains("**") { "*" } else { last })?);
            count += 1;
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Store(format!("checkpoint markers: {e}")))
        };
        Ok(Markers {
            full: build(full)?,
            names: build(names)?,
            count,
        })
    }

    pub fn defaults() -> Markers {
        Markers::new(DEFAULT_MARKERS).expect("the default markers are valid globs")
    }

    /// Whether a file of this name could be a marker somewhere.
    pub fn name_may_match(&self, name: &[u8]) -> bool {
        self.count > 0 && std::str::from_utf8(name).is_ok_and(|n| self.names.is_match(n))
    }

    /// Whether `path` (relative to the root) is a marker.
    pub fn matches(&self, path: &str) -> bool {
        self.count > 0 && self.full.is_match(path)
    }
}

impl Default for Markers {
    fn default() -> Self {
        Markers::defaults()
    }
}

/// One completed checkpoint, as `revfs checkpoints` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Its name under `.snapshots/checkpoints/`.
    pub name: String,
    /// Its directory, relative to the mount root ("" for the root).
    pub directory: String,
    /// The number in the directory's name (`checkpoint-500`, `global_step500`, `500`).
    pub step: Option<u64>,
    /// When it completed (the commit's time, RFC 3339).
    pub time: String,
    /// Bytes of its files, and how many.
    pub size: u64,
    pub files: u64,
    /// The live tree no longer has its directory (the job rotated it out).
    pub deleted: bool,
    /// Where `cp -a` restores it from, relative to the mount root.
    pub path: String,
    pub commit: u64,
    /// What said it was complete.
    pub marker: String,
    /// A named snapshot keeps its commit for good.
    pub pinned: bool,
}

/// A checkpoint before it is measured: its name, commit and mark.
pub(super) struct Entry {
    pub name: String,
    pub seq: CommitSeq,
    pub time: crate::format::Time,
    pub mark: CheckpointMark,
}

/// The number in a checkpoint directory's name: its last run of digits.
pub fn step_of(name: &str) -> Option<u64> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = name[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    name[start..end].parse().ok()
}

fn base_name(dir: &str) -> &str {
    match dir.rsplit('/').next() {
        Some(b) if !b.is_empty() => b,
        _ => "root",
    }
}

/// The directory that holds a checkpoint directory (its group for
/// `--keep-checkpoints`): "" for one at the root.
pub fn group_of(dir: &str) -> &str {
    dir.rsplit_once('/').map_or("", |(p, _)| p)
}

fn second_of(t: crate::format::Time) -> String {
    chrono::DateTime::from_timestamp(t.secs, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.secs.to_string())
}

/// Whether a name says its directory is still being written: a word
/// "tmp" or "temp" in it (words split at anything but letters and digits).
fn is_temporary_name(name: &[u8]) -> bool {
    String::from_utf8_lossy(name)
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w == "tmp" || w == "temp")
}

/// Whether checkpoint directory `dir` or the one holding it is temporary.
fn in_temporary(dir: &str) -> bool {
    dir.rsplit('/')
        .take(2)
        .any(|c| is_temporary_name(c.as_bytes()))
}

/// A watched file's state since its last completing close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MarkerState {
    Quiet,
    /// Made by this mount, nothing written yet.
    Created,
    /// A version was recorded.
    Written,
}

/// What happened to a path that may complete a checkpoint.
pub(super) enum Event<'a> {
    /// A watched file was closed after a write.
    Closed,
    /// Something was renamed into place; the old name.
    Renamed(&'a [u8]),
}

impl Engine {
    /// A file of this name was looked up, made (`created`: then the last
    /// close of that open completes it even when nothing was written, as
    /// `touch DONE`) or renamed to: watch it.
    pub(super) fn note_name(&self, ino: Ino, name: &[u8], created: bool) {
        if self.opts.markers.name_may_match(name) {
            let mut w = lock(&self.marker_inos);
            let state = w.entry(ino).or_insert(MarkerState::Quiet);
            if created && *state == MarkerState::Quiet {
                *state = MarkerState::Created;
            }
        }
    }

    /// Whether `ino` is a watched file.
    pub(super) fn is_watched(&self, ino: Ino) -> bool {
        lock(&self.marker_inos).contains_key(&ino)
    }

    /// A version of `ino` was recorded (by a close or an fsync).
    pub(super) fn note_marker_write(&self, ino: Ino) {
        if let Some(w) = lock(&self.marker_inos).get_mut(&ino) {
            *w = MarkerState::Written;
        }
    }

    /// At a close (`last`: the last of its open, a release): whether `ino`
    /// is a watched file that completes now (then quiet again). A marker
    /// made and not written yet completes only at the last close: a shell's
    /// `echo step > DONE` opens, moves the descriptor (closing the first
    /// copy, which flushes) and only then writes.
    pub(super) fn take_marker_write(&self, ino: Ino, last: bool) -> bool {
        let mut w = lock(&self.marker_inos);
        let Some(state) = w.get_mut(&ino) else {
            return false;
        };
        let now = match *state {
            MarkerState::Written => true,
            MarkerState::Created => last,
            MarkerState::Quiet => false,
        };
        if now {
            *state = MarkerState::Quiet;
        }
        now
    }

    /// The path of `ino` in the live tree (relative to the root), by its
    /// first parent links; None once it is unlinked.
    fn live_path(&self, ino: Ino) -> Result<Option<String>> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut cur = ino;
        while cur != Ino::ROOT {
            let Some(inode) = self.db.inode(cur)? else {
                return Ok(None);
            };
            let Some(&parent) = inode.parents.first() else {
                return Ok(None);
            };
            let Some((name, _)) = self
                .db
                .list_dir(parent)?
                .into_iter()
                .find(|(_, d)| d.ino == cur)
            else {
                return Ok(None);
            };
            parts.push(name);
            if parts.len() > 4096 {
                return Ok(None);
            }
            cur = parent;
        }
        parts.reverse();
        Ok(Some(
            parts
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect::<Vec<_>>()
                .join("/"),
        ))
    }

    /// The live directory at `path`, if there is one.
    fn live_dir(&self, path: &str) -> Result<Option<Ino>> {
        let mut cur = Ino::ROOT;
        for c in super::history::components(path) {
            match self.db.dentry(cur, c)? {
                Some(d) if d.kind == FileType::Directory => cur = d.ino,
                _ => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The checkpoint directory a marker file at `path` completes: the
    /// directory its content names when it is a small tag file naming a
    /// directory beside it (DeepSpeed's `latest`), else its parent.
    fn marked_dir(&self, ino: Ino, path: &str) -> Result<String> {
        let parent = group_of(path).to_string();
        let node = self.inode(ino)?.node;
        if node.kind == FileType::Regular && node.size > 0 && node.size <= TAG_MAX {
            let file = super::file::FileState::new(self.load_manifest(node.content)?);
            let mut buf = vec![0u8; node.size as usize];
            let n = file.read_into(&self.store, 0, &mut buf, crate::store::Access::Sequential)?;
            let tag = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            let plain = !tag.is_empty()
                && !tag.contains('\n')
                && super::history::components(&tag)
                    .iter()
                    .all(|c| *c != b"..".as_slice());
            if plain {
                let dir = if parent.is_empty() {
                    tag.trim_matches('/').to_string()
                } else {
                    format!("{parent}/{}", tag.trim_matches('/'))
                };
                if self.live_dir(&dir)?.is_some() {
                    return Ok(dir);
                }
            }
        }
        Ok(parent)
    }

    /// `ino` (a watched file closed after a write, or anything renamed
    /// into place) may complete a checkpoint: if it does, commit now,
    /// naming it. A directory renamed into place always gets its commit.
    /// The close or rename itself has happened: a failure here (the file
    /// gone meanwhile, a commit that failed and that the commit loop will
    /// retry) is logged, not made the caller's error.
    pub(super) fn checkpoint_event(&self, ino: Ino, event: Event) {
        if let Err(e) = self.try_checkpoint_event(ino, event) {
            tracing::warn!("inode {}: checkpoint commit: {e}", ino.0);
        }
    }

    fn try_checkpoint_event(&self, ino: Ino, event: Event) -> Result<()> {
        if self.opts.read_only || self.opts.markers.count == 0 {
            return Ok(());
        }
        let Some(path) = self.live_path(ino)? else {
            return Ok(());
        };
        let kind = self.inode(ino)?.node.kind;
        let mark = match (kind, &event) {
            (FileType::Directory, Event::Renamed(old)) => {
                let placed = is_temporary_name(old) || self.opts.markers.matches(&path);
                if placed && !in_temporary(&path) {
                    Some(CheckpointMark {
                        dir: path.clone(),
                        marker: path,
                    })
                } else {
                    None
                }
            }
            (FileType::Regular, _) if self.opts.markers.matches(&path) => {
                let dir = self.marked_dir(ino, &path)?;
                if in_temporary(&dir) {
                    return Ok(());
                }
                Some(CheckpointMark { dir, marker: path })
            }
            _ => return Ok(()),
        };
        if let Some(m) = &mark {
            tracing::info!(dir = %m.dir, marker = %m.marker, "checkpoint complete");
            let _ns = lock(&self.ns);
            lock(&self.pending).checkpoints.push(m.clone());
        }
        self.commit(mark.is_some())?;
        Ok(())
    }

    /// The checkpoints kept history holds, oldest first, named.
    pub(super) fn checkpoint_entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (seq, marks) in self.db.checkpoint_commits()? {
            let Some((_, t)) = self.db.commit(seq)? else {
                continue;
            };
            for mark in marks {
                let mut name = format!("{}@{}", base_name(&mark.dir), second_of(t));
                if !seen.insert(name.clone()) {
                    name = format!("{name}~{}", seq.0);
                    seen.insert(name.clone());
                }
                out.push(Entry {
                    name,
                    seq,
                    time: t,
                    mark,
                });
            }
        }
        Ok(out)
    }

    /// Checkpoint `e`'s directory (number in its commit, node) in the
    /// commit that completed it; None if it went before that commit ran.
    pub(super) fn checkpoint_dir(&self, e: &Entry) -> Result<Option<(u64, crate::format::Node)>> {
        Ok(self
            .entry_at(e.seq, &e.mark.dir)?
            .filter(|(_, n)| n.kind == FileType::Directory))
    }

    /// The checkpoint named `name`.
    pub(super) fn checkpoint_entry(&self, name: &str) -> Result<Option<Entry>> {
        Ok(self
            .checkpoint_entries()?
            .into_iter()
            .find(|e| e.name == name))
    }

    /// Every completed checkpoint kept history holds, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointInfo>> {
        let pinned: HashSet<CommitSeq> = self.db.names()?.into_iter().map(|n| n.1).collect();
        let mut out = Vec::new();
        for e in self.checkpoint_entries()? {
            // Removed before its commit ran: nothing to restore.
            let Some((_, node)) = self.checkpoint_dir(&e)? else {
                continue;
            };
            let mut files = Vec::new();
            if let Some(t) = node.content {
                self.all_files(t, "", &mut files)?;
            }
            out.push(CheckpointInfo {
                step: step_of(base_name(&e.mark.dir)),
                directory: e.mark.dir.clone(),
                time: crate::timefmt::rfc3339(e.time),
                size: files.iter().map(|(_, n)| n.size).sum(),
                files: files.len() as u64,
                deleted: self.live_dir(&e.mark.dir)?.is_none(),
                path: format!(".snapshots/{VIEW_DIR}/{}", e.name),
                commit: e.seq.0,
                marker: e.mark.marker,
                pinned: pinned.contains(&e.seq),
                name: e.name,
            });
        }
        Ok(out)
    }

    /// For `--keep-checkpoints`: per directory that holds checkpoints, the
    /// commits of its checkpoints, oldest first.
    pub fn checkpoint_groups(&self) -> Result<Vec<Vec<CommitSeq>>> {
        let mut groups: HashMap<String, Vec<CommitSeq>> = HashMap::new();
        for (seq, marks) in self.db.checkpoint_commits()? {
            for m in marks {
                groups
                    .entry(group_of(&m.dir).to_string())
                    .or_default()
                    .push(seq);
            }
        }
        Ok(groups.into_values().collect())
    }

    /// Keeps checkpoint `name`'s commit for good: a named snapshot of that
    /// name (`revfs checkpoints pin`).
    pub fn checkpoint_pin(&self, name: &str) -> Result<CommitSeq> {
        self.check_writable()?;
        let e = self.checkpoint_entry(name)?.ok_or_else(|| {
            Error::Store(format!(
                "{name}: no such checkpoint (see `revfs checkpoints`)"
            ))
        })?;
        self.name_commit(name, e.seq)?;
        Ok(e.seq)
    }

    /// Drops the pin of checkpoint `name` (its snapshot name).
    pub fn checkpoint_unpin(&self, name: &str) -> Result<()> {
        self.snapshot_delete(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_markers_match_the_frameworks_files_anywhere() {
        let m = Markers::defaults();
        for p in [
            ".metadata",
            "ckpt/step_100/.metadata",
            "out/checkpoint-500/trainer_state.json",
            "ds/latest",
            "orbax/3/commit_success.txt",
        ] {
            assert!(m.matches(p), "{p}");
            let name = p.rsplit('/').next().unwrap();
            assert!(m.name_may_match(name.as_bytes()), "{p}");
        }
        for p in [
            "ckpt/.metadata.tmp",
            "out/latest.txt",
            "trainer_state.json.bak",
        ] {
            assert!(!m.matches(p), "{p}");
        }
        assert!(!m.name_may_match(b"model.safetensors"));
    }

    #[test]
    fn globs_do_not_cross_directories_and_none_watches_nothing() {
        let m = Markers::new(&["runs/*/DONE"]).unwrap();
        assert!(m.matches("runs/a/DONE"));
        assert!(!m.matches("runs/a/b/DONE"));
        assert!(m.name_may_match(b"DONE"));
        assert!(!m.name_may_match(b"done"));
        let all = Markers::new(&["ckpt/**"]).unwrap();
        assert!(all.name_may_match(b"anything"));
        assert!(all.matches("ckpt/x/y"));
        let none = Markers::new(&["none"]).unwrap();
        assert!(!none.matches(".metadata") && !none.name_may_match(b".metadata"));
        assert!(Markers::new(&["a/[b"]).is_err());
    }

    #[test]
    fn steps_are_the_last_number_of_the_name() {
        assert_eq!(step_of("checkpoint-500"), Some(500));
        assert_eq!(step_of("global_step1200"), Some(1200));
        assert_eq!(step_of("7"), Some(7));
        assert_eq!(step_of("step_000100"), Some(100));
        assert_eq!(step_of("run2-ckpt-30"), Some(30));
        assert_eq!(step_of("final"), None);
        assert_eq!(group_of("out/checkpoint-500"), "out");
        assert_eq!(group_of("checkpoint-500"), "");
        assert_eq!(base_name(""), "root");
        assert!(is_temporary_name(b"3.orbax-checkpoint-tmp-1733"));
        assert!(is_temporary_name(b"ckpt.TMP"));
        assert!(!is_temporary_name(b"checkpoint-500"));
        assert!(!is_temporary_name(b"template") && !is_temporary_name(b"attempt_3"));
        assert!(in_temporary("run/3.orbax-checkpoint-tmp/default"));
        assert!(in_temporary("run/3.orbax-checkpoint-tmp"));
        assert!(!in_temporary("tmp/run/3") && !in_temporary("run/3"));
    }
}
