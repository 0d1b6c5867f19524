//! `revfs init STORE [--replica DIR]... [--encrypt] [policy flags]`.

use super::PolicyArgs;
use revfs::{Result, repo};
use std::path::{Path, PathBuf};

pub fn run(
    store: &Path,
    replicas: &[PathBuf],
    encrypt: bool,
    policy: &PolicyArgs,
    markers: &[String],
) -> Result<()> {
    // A bad glob is refused before anything is made.
    revfs::engine::checkpoints::Markers::new(markers)?;
    repo::init_with_replica(store, replicas, encrypt)?;
    let change = super::policy::Change {
        flags: policy,
        prune_interval: None,
        replica_delete_after: None,
        clear: false,
        markers,
    };
    super::policy::apply(store, &change)?;
    if replicas.is_empty() {
        println!("created revfs store {}", store.display());
    } else {
        let to: Vec<String> = replicas.iter().map(|d| d.display().to_string()).collect();
        println!(
            "created revfs store {} replicating to {}",
            store.display(),
            to.join(" and ")
        );
    }
    if encrypt {
        println!(
            "encrypted: keep the passphrase safe; without it neither the store nor its \
             replica can be read (`revfs key add` makes a second one)"
        );
    }
    Ok(())
}
