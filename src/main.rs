//! The revfs command line.

use clap::{Parser, Subcommand};
use revfs::Result;
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
    /// An encrypted store's passphrase: the first line of FILE (else
    /// $REVFS_PASSWORD, else a prompt on the terminal).
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// A new passphrase (`init --encrypt`, `key add`, `key passwd`): the first
    /// line of FILE (else $REVFS_NEW_PASSWORD, else a prompt).
    #[arg(long, global = true, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new, empty store in STORE (missing or empty directory).
    Init {
        store: PathBuf,
        /// Replicate to this existing directory (another disk, NFS, CephFS...) or
        /// s3://BUCKET/PREFIX; give it more than once for several replicas.
        #[arg(long)]
        replica: Vec<PathBuf>,
        /// Encrypt everything the store and its replica hold, under a passphrase
        /// (see --password-file; a prompt on a terminal).
        #[arg(long)]
        encrypt: bool,
        /// The retention policy the store keeps (see `revfs policy`).
        #[command(flatten)]
        policy: PolicyArgs,
        /// A file whose close after a write (or rename into place) completes a
        /// training checkpoint: a glob over paths in the mount, given more than
        /// once for several ("none": no markers). Default: **/.metadata,
        /// **/trainer_state.json, **/latest, **/commit_success.txt.
        #[arg(long, value_name = "GLOB")]
        checkpoint_marker: Vec<String>,
    },
    /// List every completed training checkpoint ever saved, oldest first, with
    /// the path under .snapshots to restore each from; pin one for good.
    Checkpoints(cli::checkpoints::CheckpointsArgs),
    /// Drop the history outside a retention policy and give its space back
    /// (TARGET: a store, or a path in its mount: then the daemon does it while serving).
    Prune {
        target: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Say what would go; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also recode the packs still mostly in the write path's lz4 with
        /// zstd and byte planes, and store old versions as deltas of the
        /// next (a mounted store does this by itself).
        #[arg(long)]
        recompress: bool,
        /// With --recompress: recode, but store no new deltas (old
        /// versions read as fast as the newest, and take more room).
        #[arg(long, requires = "recompress")]
        no_deltas: bool,
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
    Mount(Box<cli::mount::MountArgs>),
    /// Make, list or drop named snapshots (on a store or a mounted path).
    Snapshot {
        #[command(subcommand)]
        cmd: cli::snapshot::SnapshotCmd,
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
    /// Manage the passphrases (key slots) of an encrypted store.
    Key {
        #[command(subcommand)]
        cmd: cli::key::KeyCmd,
    },
    /// Show what a store holds (works while it is mounted).
    Status {
        store: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `revfs man > /usr/local/share/man/man1/revfs.1`.
    Man,
}

fn run(cli: Cli) -> Result<()> {
    if let Some(f) = cli.password_file {
        revfs::crypto::passphrase::set_file(f);
    }
    if let Some(f) = cli.new_password_file {
        revfs::crypto::passphrase::set_new_file(f);
    }
    match cli.cmd {
        Cmd::Init {
            store,
            replica,
            encrypt,
            policy,
            checkpoint_marker,
        } => cli::init::run(&store, &replica, encrypt, &policy, &checkpoint_marker),
        Cmd::Checkpoints(args) => cli::checkpoints::run(args),
        Cmd::Key { cmd } => cli::key::run(cmd),
        Cmd::Verify {
            store,
            replica,
            repair,
            json,
        } => cli::verify::run(store, replica, repair, json),
        Cmd::Drill {
            store,
            full,
            sample,
            replica,
            scratch,
            json,
        } => cli::drill::run(store, full, sample, replica, scratch, json),
        Cmd::Recover {
            replica,
            new_store,
            json,
        } => cli::recover::run(replica, new_store, json),
        Cmd::Mount(args) => cli::mount::run(*args),
        Cmd::Status { store, json } => cli::status::run(&store, json),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "revfs", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(revfs::Error::Io)
        }
        Cmd::Snapshot { cmd } => cli::snapshot::run(cmd),
        Cmd::Log { path, json } => cli::log::run(&path, json),
        Cmd::Prune {
            target,
            policy,
            dry_run,
            recompress,
            no_deltas,
            json,
        } => cli::prune::run(
            &target,
            &policy,
            &cli::prune::Modes {
                dry_run,
                recompress,
                no_deltas,
            },
            json,
        ),
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
                markers: &[],
            },
            json,
        ),
        Cmd::Restore { path, at, to, json } => cli::restore::run(&path, &at, to.as_deref(), json),
    }
}

fn main() -> ExitCode {
    revfs::sys::private_umask();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fuser=error,fjall=warn,lsm_tree=warn")
            }),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // `mount -t fuse.revfs` (mount.fuse) runs `revfs STORE MNT -o OPTS`.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let subcommands: Vec<String> = <Cli as clap::CommandFactory>::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .chain(["help".to_string()])
        .collect();
    let effective = cli::fstab::translate(&args, &subcommands).unwrap_or(args);
    let mut cli = Cli::parse_from(&effective);
    if !matches!(cli.cmd, Cmd::Mount(_)) {
        revfs::sys::default_sigpipe();
    }
    if let Cmd::Mount(m) = &mut cli.cmd {
        // What a detached daemon is started with (less --daemon).
        m.argv = effective
            .iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("revfs: {e}");
            ExitCode::FAILURE
        }
    }
}
