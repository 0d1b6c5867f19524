//! `revfs snapshot create|list|delete`.

use super::decode;
use clap::Subcommand;
use revfs::control::{self, Request};
use revfs::engine::history::SnapshotInfo;
use revfs::{Result, repo};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Name the current state: TARGET is a store or any path in its mount.
    Create { target: PathBuf, name: String },
    /// List named snapshots and the (thinned) automatic ones, newest first.
    List {
        target: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Drop a name (the history itself stays).
    Delete { target: PathBuf, name: String },
}

pub fn run(cmd: SnapshotCmd) -> Result<()> {
    match cmd {
        SnapshotCmd::Create { target, name } => {
            let store = repo::resolve_store(&target)?;
            let req = Request::SnapshotCreate { name: name.clone() };
            let seq: u64 = decode(control::request(&store, req)?)?;
            println!("snapshot {name} = commit {seq}");
            Ok(())
        }
        SnapshotCmd::Delete { target, name } => {
            let store = repo::resolve_store(&target)?;
            control::request(&store, Request::SnapshotDelete { name: name.clone() })?;
            println!("dropped the name {name}");
            Ok(())
        }
        SnapshotCmd::List { target, json } => {
            let store = repo::resolve_store(&target)?;
            let value = control::request(&store, Request::SnapshotList)?;
            if json {
                println!("{value:#}");
                return Ok(());
            }
            let list: Vec<SnapshotInfo> = decode(value)?;
            for s in list {
                let kind = if s.named { "named" } else { "auto" };
                println!(
                    "{:<32} {:<6} commit {:>6}  {}",
                    s.name, kind, s.commit, s.time
                );
            }
            Ok(())
        }
    }
}
