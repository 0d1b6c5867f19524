//! `revfs mount STORE MOUNTPOINT [...]`: serve a store (foreground, or
//! detached with --daemon); the retention flags are kept in its config.

use super::{PolicyArgs, parse_duration, parse_size};
use revfs::Result;
use revfs::daemon::{self, MountOptions};
use revfs::engine::Options;
use revfs::engine::history::Thinning;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct MountArgs {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    /// Detach and run in the background (log in STORE/daemon.log).
    #[arg(long)]
    pub daemon: bool,
    /// Mount read-only (a replica can be mounted this way).
    #[arg(long)]
    pub read_only: bool,
    /// Replicate to this directory or s3://BUCKET/PREFIX; more than once for
    /// several replicas (sets or overrides the configured ones).
    #[arg(long)]
    pub replica: Vec<PathBuf>,
    /// fsync returns only once the replica holds the data too (RPO 0).
    #[arg(long)]
    pub replica_sync: bool,
    /// Merge versions of one file closer together than this (e.g. 1s, 500ms, 0).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub min_version_interval: Duration,
    /// Group-commit interval while anything changed.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub commit_interval: Duration,
    /// `ls .snapshots` lists one automatic snapshot per minute this far back...
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub list_minutely: Duration,
    /// ...one per hour this far back, and one per day beyond.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub list_hourly: Duration,
    /// Retention policy (kept in the store's config: set once).
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// A file whose close after a write (or rename into place) completes a
    /// training checkpoint (a glob; more than once for several; "none": no
    /// markers; kept in the config). Default: **/.metadata,
    /// **/trainer_state.json, **/latest, **/commit_success.txt.
    #[arg(long, value_name = "GLOB")]
    pub checkpoint_marker: Vec<String>,
    /// Prune under the policy this often (default 10m; kept in the config).
    #[arg(long, value_parser = parse_duration)]
    pub prune_interval: Option<Duration>,
    /// The replica keeps what a prune deleted this long (default 24h).
    #[arg(long, value_parser = parse_duration)]
    pub replica_delete_after: Option<Duration>,
    /// A bucket mount (s3://... --read-only) caches what it reads here
    /// (default ~/.cache/revfs/STORE_ID).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// ...at most this much (e.g. 500M, 10G; default 1G).
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Memory for decoded chunks (e.g. 64M, 1G; default 1/32 of the
    /// machine's memory, 32M to 256M). Old versions stored as deltas read
    /// faster with more.
    #[arg(long, value_parser = parse_size)]
    pub chunk_cache: Option<u64>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Re-read and hash-check every object this often (e.g. 1d), healing
    /// damage from a replica; resumes after a remount.
    #[arg(long, value_parser = parse_duration)]
    pub verify_every: Option<Duration>,
    /// ...at most this many bytes a second (default 16M).
    #[arg(long, value_parser = parse_size, requires = "verify_every")]
    pub verify_rate: Option<u64>,
    /// ...and every pack of each replica each pass (by default an eighth
    /// of them, a different eighth each pass).
    #[arg(long, requires = "verify_every")]
    pub verify_replica_full: bool,
    /// The command line as given (after the fstab form's translation).
    #[arg(skip)]
    pub argv: Vec<String>,
}

pub fn run(args: MountArgs) -> Result<()> {
    let MountArgs {
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
        checkpoint_marker,
        prune_interval,
        replica_delete_after,
        cache_dir,
        cache_size,
        chunk_cache,
        metrics_addr,
        verify_every,
        verify_rate,
        verify_replica_full,
        argv,
    } = args;
    let s3 = revfs::replica::target::is_s3(&store.to_string_lossy());
    if s3 && !read_only {
        return Err(revfs::Error::Store(format!(
            "{}: a bucket is mounted with --read-only; make a writable store from it \
             with `revfs recover {} NEWSTORE`",
            store.display(),
            store.display()
        )));
    }
    // An encrypted store's passphrase is checked before anything is
    // written or mounted (and handed to a detached daemon).
    let (crypto, passphrase) = if s3 {
        let t = revfs::replica::target_of(&store)?;
        let (_, crypto, pass) = revfs::replica::remote::open_config(&*t, &store)?;
        (crypto, pass)
    } else {
        let (_, cfg) = revfs::repo::Config::read(&store)?;
        revfs::crypto::slots::unlock_keeping(&store, cfg.cipher.as_deref())?
    };
    if !read_only {
        // Set once: what the mount is told to keep, the store keeps.
        let change = super::policy::Change {
            flags: &policy,
            prune_interval,
            replica_delete_after,
            clear: false,
            markers: &checkpoint_marker,
        };
        super::policy::apply(&store, &change)?;
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
            chunk_cache: chunk_cache.unwrap_or_else(revfs::store::cache::default_bytes),
            // From the store's config, where the flags above put them.
            markers: Default::default(),
        },
        replicas: replica,
        commit_interval,
        crypto: Some(crypto),
        cache: revfs::repo::CacheOptions {
            dir: cache_dir,
            size: cache_size.unwrap_or(daemon::DEFAULT_CACHE_SIZE),
        },
        metrics_addr,
        verify: verify_every.map(|every| revfs::scrub::Schedule {
            every,
            rate: verify_rate.unwrap_or(revfs::scrub::DEFAULT_RATE),
            replica_full: verify_replica_full,
        }),
        ..MountOptions::default()
    };
    if daemon {
        let args: Vec<String> = argv.into_iter().filter(|a| a != "--daemon").collect();
        let env: Vec<(&str, &str)> = passphrase
            .as_ref()
            .map(|p| (revfs::crypto::passphrase::ENV, p.as_str()))
            .into_iter()
            .collect();
        let (pid, warnings) = daemon::spawn_detached(&store, &args, &env)?;
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
