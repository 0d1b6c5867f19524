//! `revfs init STORE [--replica DIR] [--encrypt] [policy flags]`.

use super::PolicyArgs;
use revfs::{Result, repo};
use std::path::Path;

pub fn run(store: &Path, replica: Option<&Path>, encrypt: bool, policy: &PolicyArgs) -> Result<()> {
    repo::init_with_replica(store, replica, encrypt)?;
    let change = super::policy::Change {
        flags: policy,
        prune_interval: None,
        replica_delete_after: None,
        clear: false,
    };
    super::policy::apply(store, &change)?;
    match replica {
        Some(dir) => println!(
            "created revfs store {} replicating to {}",
            store.display(),
            dir.display()
        ),
        None => println!("created revfs store {}", store.display()),
    }
    if encrypt {
        println!(
            "encrypted: keep the passphrase safe; without it neither the store nor its \
             replica can be read (`revfs key add` makes a second one)"
        );
    }
    Ok(())
}
