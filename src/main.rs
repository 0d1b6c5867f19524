//! The revfs command line.

use clap::{Parser, Subcommand};
use revfs::daemon::{self, MountOptions};
use revfs::engine::Options;
use revfs::{Error, Result, control, repo};
use std::path::PathBuf;
use std::process::ExitCode;
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
enum Cmd {
    /// Create a new, empty store in STORE (missing or empty directory).
    Init { store: PathBuf },
    /// Mount STORE at MOUNTPOINT; stays in the foreground until unmounted.
    Mount {
        store: PathBuf,
        mountpoint: PathBuf,
        /// Detach and run in the background (log in STORE/daemon.log).
        #[arg(long)]
        daemon: bool,
        /// Mount read-only.
        #[arg(long)]
        read_only: bool,
        /// Merge versions of one file closer together than this (e.g. 1s, 500ms, 0).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        min_version_interval: Duration,
        /// Group-commit interval while anything changed.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        commit_interval: Duration,
    },
    /// Show what a store holds (works while it is mounted).
    Status {
        store: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("not a duration: {s}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in {s} (use ms, s, m, h)")),
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration out of range: {s}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Init { store } => {
            repo::init(&store)?;
            println!("created revfs store {}", store.display());
            Ok(())
        }
        Cmd::Mount {
            store,
            mountpoint,
            daemon,
            read_only,
            min_version_interval,
            commit_interval,
        } => {
            let opts = MountOptions {
                engine: Options {
                    min_version_interval,
                    read_only,
                },
                commit_interval,
                ..MountOptions::default()
            };
            if daemon {
                let args: Vec<String> = std::env::args()
                    .skip(1)
                    .filter(|a| a != "--daemon")
                    .collect();
                let pid = daemon::spawn_detached(&store, &mountpoint, &args)?;
                println!(
                    "revfs daemon {pid} serving {} at {}",
                    store.display(),
                    mountpoint.display()
                );
                return Ok(());
            }
            daemon::run(&store, &mountpoint, opts)
        }
        Cmd::Status { store, json } => {
            let value = match control::call(&store, &control::Request::Status)? {
                Some(v) => v,
                None => {
                    let r = repo::Repo::open(
                        &store,
                        Options {
                            read_only: true,
                            ..Options::default()
                        },
                    )?;
                    serde_json::to_value(revfs::status::status(&r.engine)?)
                        .map_err(|e| Error::Store(e.to_string()))?
                }
            };
            if json {
                println!("{value:#}");
            } else {
                let s: revfs::status::Status =
                    serde_json::from_value(value).map_err(|e| Error::Store(e.to_string()))?;
                print!("{s}");
            }
            Ok(())
        }
    }
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
