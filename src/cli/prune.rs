//! `revfs prune TARGET [policy flags] [--dry-run] [--recompress [--no-deltas]] [--json]`.

use super::PolicyArgs;
use revfs::control::{self, Request};
use revfs::engine::Options;
use revfs::retention::{PruneOptions, PruneReport};
use revfs::{Error, Result, repo};
use std::path::Path;

/// What a prune does besides dropping what the policy lets go.
pub struct Modes {
    pub dry_run: bool,
    pub recompress: bool,
    pub no_deltas: bool,
}

pub fn run(target: &Path, flags: &PolicyArgs, modes: &Modes, json: bool) -> Result<()> {
    let &Modes {
        dry_run,
        recompress,
        no_deltas,
    } = modes;
    let store = repo::resolve_store(target)?;
    let (_, config) = repo::Config::read(&store)?;
    // The flags add to the policy the store keeps (set once).
    let policy = config.policy().merged(&flags.policy());
    let req = Request::Prune {
        policy: policy.clone(),
        dry_run,
        recompress,
        no_deltas,
    };
    let value = match control::call(&store, &req)? {
        Some(v) => v,
        None => {
            let r = repo::Repo::open(
                &store,
                Options {
                    read_only: dry_run,
                    ..Options::default()
                },
            )?;
            let bar = super::bar("pruning", "{msg} [{bar:40}] {pos}/{len} {eta}");
            let report = revfs::retention::prune(
                &r.engine,
                &PruneOptions {
                    policy,
                    dry_run,
                    only_if_dropping: false,
                    recompress,
                    no_deltas,
                    recode_rate: None,
                },
                &mut |d, t| {
                    bar.set_length(t);
                    bar.set_position(d);
                },
            );
            bar.finish_and_clear();
            r.engine.shutdown()?;
            serde_json::to_value(report?).map_err(|e| Error::Store(e.to_string()))?
        }
    };
    if json {
        println!("{value:#}");
        return Ok(());
    }
    let r: PruneReport = serde_json::from_value(value)
        .map_err(|e| Error::Store(format!("unexpected answer: {e}")))?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let would = if r.dry_run { "would drop" } else { "dropped" };
    println!(
        "{would} {} commits ({} file versions), kept {}{}",
        r.commits_dropped,
        r.versions_dropped,
        r.commits_kept,
        r.oldest_kept
            .as_ref()
            .map(|t| format!(" back to {t}"))
            .unwrap_or_default()
    );
    println!(
        "{} {:.1} MiB: {} packs deleted, {} repacked ({:.1} MiB copied), {} packs ({:.1} MiB) examined in {:.2} s",
        if r.dry_run { "would free" } else { "freed" },
        mib(r.bytes_freed),
        r.packs_deleted,
        r.packs_repacked,
        mib(r.bytes_repacked),
        r.packs_examined,
        mib(r.bytes_examined),
        r.seconds
    );
    if r.deltas_written > 0 {
        println!(
            "{} chunks of old versions stored as deltas of newer ones",
            r.deltas_written
        );
    }
    if r.over_max_size {
        eprintln!(
            "revfs: warning: the protected history alone is over --max-size ({:.1} MiB); it is kept",
            mib(r.max_size.unwrap_or(0))
        );
    }
    Ok(())
}
