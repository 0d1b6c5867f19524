//! What the engine holds that the catalog does not show yet: references
//! in open files, in content recorded but not committed, in objects not
//! yet published, and in the history view the kernel holds. A prune keeps
//! everything these reach (`retention::prune`).

use super::{Engine, Handle, lock};
use crate::error::Result;
use crate::format::Node;
use crate::ids::{ObjectId, ObjectKind};

/// The engine with commits and namespace changes held off (the `ns`
/// lock), for the last step of a prune's mark.
pub struct Paused<'a> {
    engine: &'a Engine,
}

impl Paused<'_> {
    /// Contents recorded since the last commit (to publish, and as published).
    pub fn pending_contents(&self) -> Vec<ObjectId> {
        let p = lock(&self.engine.pending);
        p.content
            .values()
            .flat_map(|(to, was)| [to.content, was.content])
            .flatten()
            .chain(p.versions.iter().filter_map(|(_, _, v)| v.manifest))
            .collect()
    }

    /// The nodes of the history views that open handles read (a `cp -a`
    /// out of a snapshot holds its directories open while it copies).
    pub fn held_history(&self) -> Vec<Node> {
        let open: Vec<super::Ino> = lock(&self.engine.handles)
            .values()
            .map(|h| match h {
                Handle::File { ino, .. } | Handle::Dir { ino, .. } => *ino,
            })
            .filter(|i| super::Space::of(*i) == super::Space::History)
            .collect();
        lock(&self.engine.views).in_use(&open)
    }
}

impl Engine {
    /// References held by open files and handles (their base content and
    /// the trees their streams are building). Takes each file's lock, so
    /// it must run without `ns` (lock order: file, then `ns`).
    pub fn memory_refs(&self) -> Vec<(ObjectId, ObjectKind)> {
        let mut states: Vec<_> = lock(&self.files)
            .values()
            .map(|f| f.state.clone())
            .collect();
        states.extend(lock(&self.handles).values().filter_map(|h| match h {
            Handle::File { state, .. } => Some(state.clone()),
            Handle::Dir { .. } => None,
        }));
        let mut out = Vec::new();
        for s in states {
            s.read().unwrap_or_else(|e| e.into_inner()).refs(&mut out);
        }
        out
    }

    /// Runs `f` with commits and namespace changes held off.
    pub fn paused<T>(&self, f: impl FnOnce(&Paused) -> Result<T>) -> Result<T> {
        let _ns = lock(&self.ns);
        f(&Paused { engine: self })
    }

    /// Held by the one prune that runs at a time.
    pub fn prune_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.prune)
    }

    /// What the last prune of this session did.
    pub fn last_prune(&self) -> Option<crate::retention::PruneReport> {
        lock(&self.last_prune).clone()
    }

    pub fn set_last_prune(&self, r: &crate::retention::PruneReport) {
        *lock(&self.last_prune) = Some(r.clone());
    }

    /// Whether a replica is configured (a prune then leaves its deletions
    /// for the replica to take after the grace window).
    pub fn has_replica(&self) -> bool {
        !lock(&self.replicas).is_empty()
    }
}
