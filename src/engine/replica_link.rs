//! What the engine asks of its replicas, without knowing how replication
//! works (`replica` implements it: a running replicator, or a replica of a
//! store that is not mounted): a round after each commit, a wait for
//! `--replica-sync`, and the state `status` shows.

use crate::error::Result;
use crate::ids::CommitSeq;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

pub trait ReplicaLink: Send + Sync {
    /// Asks for a round now (after a commit); nothing for an idle link.
    fn kick(&self);

    /// Returns once the replica holds commit `seq`, or fails after
    /// `timeout`.
    fn wait_for(&self, seq: CommitSeq, timeout: Duration) -> Result<()>;

    /// Where the replica stands.
    fn status(&self) -> ReplicaStatus;
}

/// What `status` reports about a replica.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub path: Option<PathBuf>,
    /// "none", "ok", "behind", "missing" or "error".
    pub state: String,
    pub lag_commits: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub replica_head: u64,
    pub last_error: Option<String>,
}

impl ReplicaStatus {
    pub fn none() -> Self {
        ReplicaStatus {
            state: "none".into(),
            ..Default::default()
        }
    }
}
