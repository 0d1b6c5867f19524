//! A store's config (`revfs.conf`): what it is, how it is kept and where
//! it replicates; read and written atomically.

use crate::error::{Error, Result};
use crate::format::{CONF_MAGIC, FORMAT_VERSION, check_magic};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether `spec` names a bucket (`s3://BUCKET/PREFIX`) rather than a
/// directory: a replica, or a bucket mounted read-only.
pub fn is_s3(spec: &str) -> bool {
    spec.starts_with("s3://")
}

/// A store or replica spec as every process sees the same thing: a path
/// made absolute (a daemon's working directory is not the caller's), a
/// bucket as it is.
pub fn absolute_spec(spec: &Path) -> Result<PathBuf> {
    if is_s3(&spec.to_string_lossy()) {
        return Ok(spec.to_path_buf());
    }
    std::path::absolute(spec).map_err(Error::io_at(spec))
}

pub const CONF_FILE: &str = "revfs.conf";

/// The JSON body of `revfs.conf`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub store_id: String,
    pub created: String,
    #[serde(default)]
    pub id_key: Option<String>,
    #[serde(default)]
    pub cipher: Option<String>,
    /// The first replica (the `replica` of status).
    #[serde(default)]
    pub replica: Option<PathBuf>,
    /// Replicas after the first, each replicated to on its own (an older
    /// revfs ignores this key and replicates to the first alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_replicas: Vec<PathBuf>,
    /// "replica" in a replica's copy of the config; absent in a primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The retention policy, set once (`init`, `mount`, `policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::Policy>,
    /// How often a mounted store prunes itself under its policy (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_interval_secs: Option<f64>,
    /// How long what a prune deletes stays on the replica (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_delete_after_secs: Option<f64>,
    /// The checkpoint marker globs (`--checkpoint-marker`; absent: the
    /// defaults of `engine::checkpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_markers: Option<Vec<String>>,
}

/// A mounted store prunes itself this often by default.
pub const DEFAULT_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// What a prune deletes reaches the replica this much later by default.
pub const DEFAULT_REPLICA_DELETE_AFTER: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

impl Config {
    /// Every replica, the first first.
    pub fn replicas(&self) -> Vec<PathBuf> {
        self.replica
            .iter()
            .chain(&self.more_replicas)
            .cloned()
            .collect()
    }

    /// The policy, or the empty one (keep everything).
    pub fn policy(&self) -> crate::retention::Policy {
        self.retention.clone().unwrap_or_default()
    }

    /// The checkpoint markers the store watches.
    pub fn markers(&self) -> Result<crate::engine::checkpoints::Markers> {
        match &self.checkpoint_markers {
            Some(globs) => crate::engine::checkpoints::Markers::new(globs),
            None => Ok(crate::engine::checkpoints::Markers::defaults()),
        }
    }

    pub fn prune_interval(&self) -> std::time::Duration {
        self.prune_interval_secs
            .map_or(DEFAULT_PRUNE_INTERVAL, std::time::Duration::from_secs_f64)
    }

    pub fn replica_delete_after(&self) -> std::time::Duration {
        self.replica_delete_after_secs.map_or(
            DEFAULT_REPLICA_DELETE_AFTER,
            std::time::Duration::from_secs_f64,
        )
    }
}

impl Config {
    pub fn read(store: &Path) -> Result<(u32, Config)> {
        if is_s3(&store.to_string_lossy()) {
            return Err(Error::Store(format!(
                "{}: a bucket is not a store; mount it with --read-only, or make a \
                 store from it with `revfs recover {} NEWSTORE`",
                store.display(),
                store.display()
            )));
        }
        let path = store.join(CONF_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Store(format!(
                    "{}: not a revfs store (no {CONF_FILE}); create one with `revfs init`",
                    store.display()
                ))
            } else {
                Error::IoAt {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        let (version, cfg) = Config::decode(&bytes, &path.display().to_string())?;
        if cfg.id_key.is_some() {
            return Err(Error::Store(format!(
                "{}: store uses an id key, which this revfs does not support",
                store.display()
            )));
        }
        Ok((version, cfg))
    }

    /// The version and config in the bytes of a `revfs.conf` (`path` names
    /// it in messages).
    pub fn decode(bytes: &[u8], path: &str) -> Result<(u32, Config)> {
        let version = check_magic(bytes, CONF_MAGIC, path).map_err(|e| match e {
            Error::Corrupt { detail, .. } => Error::Store(format!(
                "{path}: damaged config ({detail}); restore it from the replica's \
                 revfs.conf or run `revfs recover`"
            )),
            other => other,
        })?;
        let cfg: Config = serde_json::from_slice(&bytes[12..]).map_err(|e| {
            Error::Store(format!(
                "{path}: config is not valid ({e}); restore it from the replica or run `revfs recover`"
            ))
        })?;
        Ok((version, cfg))
    }

    /// The bytes of `revfs.conf` for this config (this format version).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut bytes = CONF_MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(
            &serde_json::to_vec_pretty(self).map_err(|e| Error::Store(e.to_string()))?,
        );
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Writes the config atomically (temp file, fsync, rename, fsync dir).
    pub fn write(&self, store: &Path) -> Result<()> {
        let path = store.join(CONF_FILE);
        let tmp = store.join(format!("{CONF_FILE}.tmp"));
        let bytes = self.encode()?;
        let mut f = File::create(&tmp).map_err(Error::io_at(&tmp))?;
        f.write_all(&bytes).map_err(Error::io_at(&tmp))?;
        f.sync_all().map_err(Error::io_at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io_at(&path))?;
        crate::sys::sync_dir(store)
    }
}
