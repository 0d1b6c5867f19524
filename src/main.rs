//! The revfs command line.

use clap::{Parser, Subcommand};
use revfs::control::Request;
use revfs::daemon::{self, MountOptions};
use revfs::engine::Options;
use revfs::engine::history::{LogEntry, SnapshotInfo, Thinning};
use revfs::{Error, Result, control, repo};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

use cli::{PolicyArgs, parse_duration};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "revfs",
    version,
    about = "A FUSE filesystem that keeps every version of every file"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum SnapshotCmd {
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

#[derive(Subcommand)]
enum Cmd {
    /// Create a new, empty store in STORE (missing or empty directory).
    Init {
        store: PathBuf,
        /// Replicate to this existing directory (another disk, NFS, CephFS...).
        #[arg(long)]
        replica: Option<PathBuf>,
        /// The retention policy the store keeps (see `revfs policy`).
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Drop the history outside a retention policy and give its space back
    /// (TARGET: a store, or a path in its mount: then the daemon does it while serving).
    Prune {
        target: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Say what would go; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show or set the retention policy a store keeps (a mounted store prunes
    /// itself under it every --prune-interval).
    Policy {
        target: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
        /// How often a mounted store prunes itself (default 10m).
        #[arg(long, value_parser = parse_duration)]
        prune_interval: Option<Duration>,
        /// How long the replica keeps what a prune deleted (default 24h).
        #[arg(long, value_parser = parse_duration)]
        replica_delete_after: Option<Duration>,
        /// Forget the policy (keep everything) before applying the flags.
        #[arg(long)]
        clear: bool,
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every object and check references; exit 0 only when clean.
    Verify {
        store: PathBuf,
        /// Check this replica too (and repair from/to it).
        #[arg(long)]
        replica: Option<PathBuf>,
        /// Fix each side from the other.
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Disaster-recovery drill: recover from the replica into a scratch store,
    /// verify it, compare versions with the primary byte for byte, report RPO and RTO.
    Drill {
        store: PathBuf,
        /// Compare every version, not a sample.
        #[arg(long)]
        full: bool,
        /// How many versions to sample.
        #[arg(long, default_value_t = 20)]
        sample: usize,
        /// Drill against this replica instead of the configured one.
        #[arg(long)]
        replica: Option<PathBuf>,
        /// Recover into a temporary store here (default: the temp directory);
        /// needs room for the whole replica.
        #[arg(long)]
        scratch: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Build a complete, writable store from a replica alone.
    Recover {
        replica: PathBuf,
        new_store: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Mount STORE at MOUNTPOINT; stays in the foreground until unmounted.
    Mount {
        store: PathBuf,
        mountpoint: PathBuf,
        /// Detach and run in the background (log in STORE/daemon.log).
        #[arg(long)]
        daemon: bool,
        /// Mount read-only (a replica can be mounted this way).
        #[arg(long)]
        read_only: bool,
        /// Replicate to this directory (sets or overrides the configured one).
        #[arg(long)]
        replica: Option<PathBuf>,
        /// fsync returns only once the replica holds the data too (RPO 0).
        #[arg(long)]
        replica_sync: bool,
        /// Merge versions of one file closer together than this (e.g. 1s, 500ms, 0).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        min_version_interval: Duration,
        /// Group-commit interval while anything changed.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        commit_interval: Duration,
        /// `ls .snapshots` lists one automatic snapshot per minute this far back...
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        list_minutely: Duration,
        /// ...one per hour this far back, and one per day beyond.
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        list_hourly: Duration,
        /// Retention policy (kept in the store's config: set once).
        #[command(flatten)]
        policy: PolicyArgs,
        /// Prune under the policy this often (default 10m; kept in the config).
        #[arg(long, value_parser = parse_duration)]
        prune_interval: Option<Duration>,
        /// The replica keeps what a prune deleted this long (default 24h).
        #[arg(long, value_parser = parse_duration)]
        replica_delete_after: Option<Duration>,
    },
    /// Make, list or drop named snapshots (on a store or a mounted path).
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// List every version of a file in a mount, with the path to restore each from.
    Log {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Put a file, a directory or the whole mount back to its state at a time,
    /// in place or at --to (metadata only: no data is copied; undo with another restore).
    Restore {
        /// A path in a mounted revfs (the mount itself: the whole tree).
        path: PathBuf,
        /// RFC 3339 instant (e.g. 2026-11-24T07:30:00Z) or a snapshot name.
        #[arg(long)]
        at: String,
        /// Restore there instead (a path in the same mount).
        #[arg(long)]
        to: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show what a store holds (works while it is mounted).
    Status {
        store: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Store(format!("unexpected answer: {e}")))
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Init {
            store,
            replica,
            policy,
        } => {
            repo::init_with_replica(&store, replica.as_deref())?;
            let change = cli::policy::Change {
                flags: &policy,
                prune_interval: None,
                replica_delete_after: None,
                clear: false,
            };
            cli::policy::apply(&store, &change)?;
            match replica {
                Some(dir) => println!(
                    "created revfs store {} replicating to {}",
                    store.display(),
                    dir.display()
                ),
                None => println!("created revfs store {}", store.display()),
            }
            Ok(())
        }
        Cmd::Verify {
            store,
            replica,
            repair,
            json,
        } => {
            let replica = replica.map(|r| std::path::absolute(&r)).transpose()?;
            let req = Request::Verify { replica, repair };
            // Offline, verify runs here and can show progress; mounted, the daemon runs it.
            let value = match control::call(&store, &req)? {
                Some(v) => v,
                None => {
                    let Request::Verify { replica, repair } = req else {
                        unreachable!()
                    };
                    let r = repo::Repo::open(
                        &store,
                        Options {
                            read_only: !repair,
                            ..Options::default()
                        },
                    )?;
                    let bar = cli::byte_bar("verifying");
                    let report =
                        revfs::verify::verify(&r.engine, replica.as_deref(), repair, |d, t| {
                            bar.set_length(t);
                            bar.set_position(d);
                        })?;
                    bar.finish_and_clear();
                    r.engine.shutdown()?;
                    serde_json::to_value(report).map_err(|e| Error::Store(e.to_string()))?
                }
            };
            let clean = value["clean"].as_bool().unwrap_or(false);
            if json {
                println!("{value:#}");
            } else {
                for (side, v) in [
                    ("primary", &value["primary"]),
                    ("replica", &value["replica"]),
                ] {
                    if v.is_null() {
                        continue;
                    }
                    println!(
                        "{side}: {} objects checked, {} corrupt, {} missing, {} repaired",
                        v["objects_checked"],
                        v["corrupt"].as_array().map_or(0, Vec::len),
                        v["missing"].as_array().map_or(0, Vec::len),
                        v["repaired"]
                    );
                    for p in v["corrupt"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .chain(v["missing"].as_array().into_iter().flatten())
                    {
                        println!("  {}", p.as_str().unwrap_or(""));
                    }
                }
                println!("{}", if clean { "clean" } else { "NOT clean" });
            }
            if clean {
                Ok(())
            } else {
                Err(Error::Store("verify found problems (see above)".into()))
            }
        }
        Cmd::Drill {
            store,
            full,
            sample,
            replica,
            scratch,
            json,
        } => {
            let r = revfs::drill::drill(&store, replica, full, sample, scratch)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).map_err(|e| Error::Store(e.to_string()))?
                );
            } else {
                println!("replica:          {}", r.replica.display());
                println!(
                    "compared:         {} of {} versions, {:.1} MiB",
                    r.sampled,
                    r.versions_in_replica,
                    r.bytes_compared as f64 / (1 << 20) as f64
                );
                println!(
                    "RPO (lag):        {} commits, {:.1} MiB, {:.1} s ({})",
                    r.rpo.lag_commits,
                    r.rpo.lag_bytes as f64 / (1 << 20) as f64,
                    r.rpo.lag_seconds,
                    r.rpo.state
                );
                println!(
                    "recovered:        {} commits (head {}), {} objects, verify {}",
                    r.recovered.commits,
                    r.recovered.head,
                    r.recovered.objects,
                    if r.recovered_clean {
                        "clean"
                    } else {
                        "NOT clean"
                    }
                );
                println!("RTO recover:      {:.2} s", r.rto_recover_seconds);
                println!("RTO first byte:   {:.2} s", r.rto_first_byte_seconds);
                println!("RTO whole sample: {:.2} s", r.rto_sample_seconds);
                for m in &r.mismatches {
                    println!("MISMATCH {m}");
                }
                println!(
                    "{}",
                    if r.passed {
                        "drill passed"
                    } else {
                        "DRILL FAILED"
                    }
                );
            }
            if r.passed {
                Ok(())
            } else {
                Err(Error::Store(
                    "drill failed: the replica does not give back what the primary holds".into(),
                ))
            }
        }
        Cmd::Recover {
            replica,
            new_store,
            json,
        } => {
            let bar = cli::byte_bar("recovering");
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
                    got.corrupt_records,
                    got.lost_commits,
                    got.replica_head,
                    got.head,
                    got.damaged_commits
                );
            }
            Ok(())
        }
        Cmd::Mount {
            store,
            mountpoint,
            daemon,
            read_only,
            replica,
            replica_sync,
            min_version_interval,
            commit_interval,
            list_minutely,
            list_hourly,
            policy,
            prune_interval,
            replica_delete_after,
        } => {
            if !read_only {
                // Set once: what the mount is told to keep, the store keeps.
                let change = cli::policy::Change {
                    flags: &policy,
                    prune_interval,
                    replica_delete_after,
                    clear: false,
                };
                cli::policy::apply(&store, &change)?;
            }
            let opts = MountOptions {
                engine: Options {
                    min_version_interval,
                    read_only,
                    thinning: Thinning {
                        minutely: list_minutely,
                        hourly: list_hourly,
                    },
                    replica_sync,
                    policy: Default::default(),
                },
                replica,
                commit_interval,
                ..MountOptions::default()
            };
            if daemon {
                let args: Vec<String> = std::env::args()
                    .skip(1)
                    .filter(|a| a != "--daemon")
                    .collect();
                let (pid, warnings) = daemon::spawn_detached(&store, &args)?;
                for w in warnings {
                    eprintln!("revfs: warning: {w}");
                }
                println!(
                    "revfs daemon {pid} serving {} at {}",
                    store.display(),
                    mountpoint.display()
                );
                return Ok(());
            }
            let mut startup = daemon::Startup::from_env();
            let served = daemon::run(&store, &mountpoint, opts, &mut startup);
            if let Err(e) = &served {
                startup.error(&e.to_string());
            }
            served
        }
        Cmd::Status { store, json } => {
            let value = control::request(&store, Request::Status)?;
            if json {
                println!("{value:#}");
            } else {
                let s: revfs::status::Status = decode(value)?;
                print!("{s}");
            }
            Ok(())
        }
        Cmd::Snapshot { cmd } => match cmd {
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
        },
        Cmd::Log { path, json } => log(&path, json),
        Cmd::Prune {
            target,
            policy,
            dry_run,
            json,
        } => cli::prune::run(&target, &policy, dry_run, json),
        Cmd::Policy {
            target,
            policy,
            prune_interval,
            replica_delete_after,
            clear,
            json,
        } => cli::policy::run(
            &target,
            &cli::policy::Change {
                flags: &policy,
                prune_interval,
                replica_delete_after,
                clear,
            },
            json,
        ),
        Cmd::Restore { path, at, to, json } => restore(&path, &at, to.as_deref(), json),
    }
}

/// A path in a mounted revfs: (mount root, store, path relative to the root).
fn in_mount(path: &std::path::Path) -> Result<(PathBuf, PathBuf, String)> {
    let (root, store) = repo::mount_of(path)?;
    let abs = std::path::absolute(path).map_err(Error::Io)?;
    let rel = abs
        .strip_prefix(&root)
        .map_err(|_| Error::Store(format!("{}: not inside {}", path.display(), root.display())))?;
    if rel.starts_with(".snapshots") {
        return Err(Error::Store(
            "give a path in the live tree, not under .snapshots".into(),
        ));
    }
    Ok((root, store, rel.to_string_lossy().into_owned()))
}

/// `revfs restore PATH --at TIME [--to DEST]`.
fn restore(
    path: &std::path::Path,
    at: &str,
    to: Option<&std::path::Path>,
    json: bool,
) -> Result<()> {
    let (root, store, rel) = in_mount(path)?;
    let to = match to {
        None => None,
        Some(dest) => {
            let abs = std::path::absolute(dest).map_err(Error::Io)?;
            let rel = abs.strip_prefix(&root).map_err(|_| {
                Error::Store(format!(
                    "{}: --to must be inside the same mount ({})",
                    dest.display(),
                    root.display()
                ))
            })?;
            Some(rel.to_string_lossy().into_owned())
        }
    };
    let req = Request::Restore {
        path: rel,
        at: at.to_string(),
        to,
    };
    let value = control::call(&store, &req)?.ok_or_else(|| {
        Error::Store(format!(
            "{}: no daemon answers for this mount",
            store.display()
        ))
    })?;
    if json {
        println!("{value:#}");
        return Ok(());
    }
    let r: revfs::engine::restore::Restored = decode(value)?;
    println!(
        "restored {} as of {} (commit {}): {} files ({:.1} MiB), {} directories, {} other, \
         {} removed; now commit {}",
        path.display(),
        r.from_time,
        r.from_commit,
        r.files,
        r.bytes as f64 / (1 << 20) as f64,
        r.dirs,
        r.others,
        r.removed,
        r.commit
    );
    Ok(())
}

/// `revfs log PATH`: every version of a live file, with a restorable path.
fn log(path: &std::path::Path, json: bool) -> Result<()> {
    let (root, store, rel) = in_mount(path)?;
    let req = Request::Log { path: rel };
    let entries: Vec<LogEntry> = decode(control::request(&store, req)?)?;
    if entries.is_empty() {
        return Err(Error::Store(format!(
            "{}: no recorded versions yet (commits happen every second)",
            path.display()
        )));
    }
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "version": e.version,
                "time": e.time,
                "size": e.size,
                "commit": e.commit,
                "path": root.join(&e.snapshot_path),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!("{:>7}  {:<36} {:>14}  path", "version", "time", "size");
    for (e, r) in entries.iter().zip(&rows) {
        let p = r["path"].as_str().unwrap_or("");
        println!("{:>7}  {:<36} {:>14}  {p}", e.version, e.time, e.size);
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=error")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("revfs: {e}");
            ExitCode::FAILURE
        }
    }
}
