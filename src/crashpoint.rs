//! Named crash points, for crash tests: when the environment variable
//! `REVFS_CRASH_AT` names a point, the process aborts there (no destructor,
//! no flush), as close to a power cut between two steps as a process gets.
//! Unset, a point costs one comparison with a value read once.
//!
//! Points, in the order a commit passes them:
//! `record:chunks-written`, `commit:objects-written`, `commit:packs-synced`,
//! `commit:catalog-applied`, `commit:flushed`; and in replication:
//! `replica:packs-shipped`, `replica:head-written`; in `recover`:
//! `recover:pack-copied`, `recover:packs-copied`, `recover:catalog-built`,
//! `recover:config-written`; in prune: `prune:dropped`, `prune:index-swept`,
//! `prune:packs-deleted`, `prune:repack-copied`, `prune:repack-switched`,
//! `prune:rebase-copied` (deltas rebased off base-only chunks, not switched),
//! and `recode:encoded` (a chunk recoded cold, not yet appended); in the move
//! of a format-9 catalog: `catalog:copied`, `catalog:renamed`,
//! `catalog:config-raised`; in the upgrade of a format-11 catalog:
//! `catalog:checks-written` (every value checked, the layout not raised).

use std::sync::OnceLock;

pub fn crash_point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("REVFS_CRASH_AT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("revfs: crash point {name}: aborting");
        std::process::abort();
    }
}
