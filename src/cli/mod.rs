//! The commands, one file each; here, what they share: the retention
//! flags, durations, the progress bar, answers of the daemon, paths in a
//! mount.

pub mod checkpoints;
pub mod drill;
pub mod fstab;
pub mod init;
pub mod key;
pub mod log;
pub mod mount;
pub mod policy;
pub mod prune;
pub mod recover;
pub mod restore;
pub mod snapshot;
pub mod status;
pub mod verify;

use revfs::retention::{Policy, SizeBound};
use revfs::{Error, Result, repo};
use std::path::PathBuf;
use std::time::Duration;

/// A progress bar on a terminal, hidden otherwise (scripts, logs).
pub fn bar(msg: &'static str, template: &str) -> indicatif::ProgressBar {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(msg);
    bar
}

/// A bar counting bytes.
pub fn byte_bar(msg: &'static str) -> indicatif::ProgressBar {
    bar(msg, "{msg} [{bar:40}] {bytes}/{total_bytes} {eta}")
}

/// A size in bytes (`500M`, `10G`, `123456`), no share.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    match SizeBound::parse(s)? {
        SizeBound::Bytes(b) => Ok(b),
        SizeBound::Percent(_) => Err(format!("{s}: give a size, not a share")),
    }
}

pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
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
        "d" => n * 86400.0,
        "w" => n * 7.0 * 86400.0,
        "y" => n * 365.0 * 86400.0,
        _ => return Err(format!("unknown unit in {s} (use ms, s, m, h, d, w, y)")),
    };
    if !(0.0..=1e10).contains(&secs) {
        return Err(format!("duration out of range: {s}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The retention flags, shared by `prune`, `mount`, `init` and `policy`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PolicyArgs {
    /// Keep the N newest commits.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u64>,
    /// Keep every commit younger than this (e.g. 2h, 7d).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub keep_within: Option<Duration>,
    /// Keep the newest commit of each of the last N minutes that have one.
    #[arg(long, value_name = "N")]
    pub keep_minutely: Option<u64>,
    /// ...of each of the last N hours.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u64>,
    /// ...of each of the last N days (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u64>,
    /// ...of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u64>,
    /// ...of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u64>,
    /// For every live file, keep the commits that first hold its last N versions.
    #[arg(long, value_name = "N")]
    pub keep_versions: Option<u64>,
    /// For every directory that holds training checkpoints, keep the commits that
    /// completed its last N checkpoints (also those the job rotated away).
    #[arg(long, value_name = "N")]
    pub keep_checkpoints: Option<u64>,
    /// Keep the store under this size (100G, 500M, or 80% of its filesystem) by
    /// dropping the oldest automatic snapshots outside the protected set.
    #[arg(long, value_name = "SIZE", value_parser = SizeBound::parse)]
    pub max_size: Option<SizeBound>,
    /// Repack a pack once more than this percentage of it is unused (default 10).
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub max_unused: Option<f64>,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("not a percentage: {s}"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s}: must be 0..100"));
    }
    Ok(v)
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last,
            keep_within: self.keep_within.map(|d| d.as_secs()),
            keep_minutely: self.keep_minutely,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_versions: self.keep_versions,
            keep_checkpoints: self.keep_checkpoints,
            max_size: self.max_size,
            max_unused: self.max_unused,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.policy() == Policy::default()
    }
}

/// An answer of the daemon (or of the store opened here) as `T`.
pub fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Store(format!("unexpected answer: {e}")))
}

/// A path in a mounted revfs: (mount root, store, path relative to the root).
pub fn in_mount(path: &std::path::Path) -> Result<(PathBuf, PathBuf, String)> {
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
