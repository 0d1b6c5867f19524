//! `revfs checkpoints TARGET [--json]`, `revfs checkpoints pin|unpin TARGET NAME`.

use super::decode;
use clap::Subcommand;
use revfs::control::{self, Request};
use revfs::engine::checkpoints::CheckpointInfo;
use revfs::{Result, repo};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CheckpointsArgs {
    #[command(subcommand)]
    pub cmd: Option<CheckpointsCmd>,
    /// A store, or any path in its mount.
    #[arg(required = true)]
    pub target: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum CheckpointsCmd {
    /// Keep checkpoint NAME (as listed) for good, whatever the retention
    /// policy: a named snapshot of that name holds its commit.
    Pin { target: PathBuf, name: String },
    /// Leave checkpoint NAME to the retention policy again.
    Unpin { target: PathBuf, name: String },
}

pub fn run(args: CheckpointsArgs) -> Result<()> {
    match args.cmd {
        Some(CheckpointsCmd::Pin { target, name }) => {
            let store = repo::resolve_store(&target)?;
            let req = Request::CheckpointPin { name: name.clone() };
            let seq: u64 = decode(control::request(&store, req)?)?;
            println!("pinned {name} (commit {seq}); `revfs checkpoints unpin` lets it go");
            Ok(())
        }
        Some(CheckpointsCmd::Unpin { target, name }) => {
            let store = repo::resolve_store(&target)?;
            control::request(&store, Request::CheckpointUnpin { name: name.clone() })?;
            println!("unpinned {name}");
            Ok(())
        }
        None => list(args.target.as_deref().unwrap_or(Path::new(".")), args.json),
    }
}

fn list(target: &Path, json: bool) -> Result<()> {
    // Paths are given inside the mount when TARGET is one.
    let (root, store) = match repo::mount_of(target) {
        Ok((root, store)) if !target.join(revfs::repo::CONF_FILE).exists() => (Some(root), store),
        _ => (None, repo::resolve_store(target)?),
    };
    let list: Vec<CheckpointInfo> = decode(control::request(&store, Request::Checkpoints)?)?;
    let path_of = |c: &CheckpointInfo| match &root {
        Some(r) => r.join(&c.path).display().to_string(),
        None => c.path.clone(),
    };
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "directory": c.directory,
                    "step": c.step,
                    "time": c.time,
                    "size": c.size,
                    "files": c.files,
                    "deleted": c.deleted,
                    "pinned": c.pinned,
                    "commit": c.commit,
                    "marker": c.marker,
                    "path": path_of(c),
                })
            })
            .collect();
        println!("{:#}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if list.is_empty() {
        println!(
            "no completed checkpoints yet (a checkpoint completes when a marker such as \
             .metadata or trainer_state.json is written, or a directory is renamed into place)"
        );
        return Ok(());
    }
    println!(
        "{:<28} {:>8} {:<36} {:>14}  {:<8} path",
        "directory", "step", "time", "size", "state"
    );
    for c in &list {
        let state = match (c.deleted, c.pinned) {
            (_, true) => "pinned",
            (true, _) => "deleted",
            _ => "live",
        };
        let step = c.step.map_or("-".to_string(), |s| s.to_string());
        println!(
            "{:<28} {:>8} {:<36} {:>14}  {:<8} {}",
            c.directory,
            step,
            c.time,
            c.size,
            state,
            path_of(c)
        );
    }
    Ok(())
}
