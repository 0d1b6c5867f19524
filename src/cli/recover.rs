//! `revfs recover REPLICA NEW_STORE [--json]`.

use revfs::{Error, Result};
use std::path::PathBuf;

pub fn run(replica: PathBuf, new_store: PathBuf, json: bool) -> Result<()> {
    let bar = super::byte_bar("recovering");
    let got = revfs::replica::recover::recover(&replica, &new_store, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&got).map_err(|e| Error::Store(e.to_string()))?
        );
    } else {
        println!(
            "recovered {} from {}: {} packs, {} objects, {} commits (head {}), {} files in the live tree",
            new_store.display(),
            replica.display(),
            got.packs,
            got.objects,
            got.commits,
            got.head,
            got.files
        );
    }
    if got.lost_commits + got.damaged_commits + got.corrupt_records > 0 {
        eprintln!(
            "revfs: WARNING: the replica was damaged: {} damaged records left out, \
             {} newest commits lost (replica head {}, recovered head {}), \
             {} older commits with missing objects",
            got.corrupt_records, got.lost_commits, got.replica_head, got.head, got.damaged_commits
        );
    }
    Ok(())
}
