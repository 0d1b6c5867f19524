//! `revfs policy TARGET [policy flags] [--prune-interval DUR]
//! [--replica-delete-after DUR] [--clear] [--json]`: shows or sets the
//! retention policy a store keeps in its config. A mounted store reads it
//! at its next prune round.

use super::PolicyArgs;
use revfs::{Error, Result, repo};
use std::path::Path;
use std::time::Duration;

/// What to change.
pub struct Change<'a> {
    pub flags: &'a PolicyArgs,
    pub prune_interval: Option<Duration>,
    pub replica_delete_after: Option<Duration>,
    pub clear: bool,
    /// `--checkpoint-marker` globs: replace the store's markers.
    pub markers: &'a [String],
}

impl Change<'_> {
    fn is_empty(&self) -> bool {
        self.flags.is_empty()
            && self.prune_interval.is_none()
            && self.replica_delete_after.is_none()
            && !self.clear
            && self.markers.is_empty()
    }
}

/// Applies `change` to the config of `store` (written only when it changes).
pub fn apply(store: &Path, change: &Change) -> Result<repo::Config> {
    let (_, mut cfg) = repo::Config::read(store)?;
    if change.is_empty() {
        return Ok(cfg);
    }
    let before = serde_json::to_string(&cfg).unwrap_or_default();
    if change.clear {
        cfg.retention = None;
        cfg.prune_interval_secs = None;
        cfg.replica_delete_after_secs = None;
    }
    let policy = cfg.policy().merged(&change.flags.policy());
    cfg.retention = (policy != Default::default()).then_some(policy);
    if let Some(d) = change.prune_interval {
        if d.is_zero() {
            return Err(Error::Store("--prune-interval must be more than 0".into()));
        }
        cfg.prune_interval_secs = Some(d.as_secs_f64());
    }
    if let Some(d) = change.replica_delete_after {
        cfg.replica_delete_after_secs = Some(d.as_secs_f64());
    }
    if !change.markers.is_empty() {
        revfs::engine::checkpoints::Markers::new(change.markers)?;
        cfg.checkpoint_markers = Some(change.markers.to_vec());
    }
    if serde_json::to_string(&cfg).unwrap_or_default() != before {
        cfg.write(store)?;
    }
    Ok(cfg)
}

pub fn run(target: &Path, change: &Change, json: bool) -> Result<()> {
    let store = repo::resolve_store(target)?;
    let cfg = apply(&store, change)?;
    let policy = cfg.policy();
    if json {
        let v = serde_json::json!({
            "policy": policy,
            "prune_interval_seconds": cfg.prune_interval().as_secs_f64(),
            "replica_delete_after_seconds": cfg.replica_delete_after().as_secs_f64(),
        });
        println!("{v:#}");
        return Ok(());
    }
    println!("policy:               {}", policy.describe());
    println!(
        "prune every:          {:.0} s (while mounted)",
        cfg.prune_interval().as_secs_f64()
    );
    println!(
        "replica keeps pruned: {:.0} s",
        cfg.replica_delete_after().as_secs_f64()
    );
    Ok(())
}
