//! Figures about a store: what it holds and what that costs on disk.

use crate::catalog::db::{Batch, Db};
use crate::engine::Engine;
use crate::error::Result;
use crate::format::{FORMAT_VERSION, FileType};
use crate::ids::{CommitSeq, Ino, ObjectKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub format: u32,
    /// Whether the store is encrypted (`init --encrypt`).
    #[serde(default)]
    pub encrypted: bool,
    /// Bytes of all live regular files.
    pub live_bytes: u64,
    /// Bytes of every recorded file version, added up.
    pub logical_bytes: u64,
    /// Bytes the pack files take on disk.
    pub stored_bytes: u64,
    pub chunks: u64,
    /// Distinct chunk bytes before compression.
    pub chunk_bytes: u64,
    /// logical_bytes / stored_bytes.
    pub dedup_ratio: f64,
    pub files: u64,
    pub versions: u64,
    pub commits: u64,
    pub head: u64,
    pub head_time: Option<String>,
    /// Why the store refuses writes, if it does.
    pub poisoned: Option<String>,
    /// Inodes of the `.snapshots` view the mount holds now (what browsing
    /// history costs in memory; freed as the kernel forgets them).
    #[serde(default)]
    pub history_inodes: u64,
    /// The first replica (state `none` without one).
    pub replica: crate::engine::ReplicaStatus,
    /// Every replica, the first first.
    #[serde(default)]
    pub replicas: Vec<crate::engine::ReplicaStatus>,
    /// The capacity plan under the store's retention policy.
    #[serde(default)]
    pub plan: crate::retention::plan::Plan,
    /// Scheduled verification (`mount --verify-every`).
    #[serde(default)]
    pub verify: crate::scrub::VerifyStatus,
}

/// Sets the counters that `status` reads (kept up to date by every
/// commit) from a scan of the catalog: for a catalog rebuilt from a
/// replica or upgraded from an older layout.
pub fn recount(db: &Db) -> Result<()> {
    let (mut chunks, mut chunk_bytes) = (0u64, 0u64);
    for e in db.index_all() {
        let (_, e) = e?;
        if e.kind == ObjectKind::Chunk {
            chunks += 1;
            chunk_bytes += e.raw_len as u64;
        }
    }
    let (mut versions, mut logical) = (0u64, 0u64);
    for v in db.all_versions() {
        versions += 1;
        logical += v?.size;
    }
    let commits = db.commits()?.len() as u64;
    let mut b = Batch::default();
    b.put_counter(CHUNKS, chunks);
    b.put_counter(CHUNK_BYTES, chunk_bytes);
    b.put_counter(VERSIONS, versions);
    b.put_counter(LOGICAL_BYTES, logical);
    b.put_counter(COMMITS, commits);
    db.apply(b)
}

/// Counter names (in the catalog's "m" keys).
pub const CHUNKS: &str = "chunks";
pub const CHUNK_BYTES: &str = "chunk_bytes";
pub const VERSIONS: &str = "versions";
pub const LOGICAL_BYTES: &str = "logical_bytes";
pub const COMMITS: &str = "commits";

pub fn status(engine: &Engine) -> Result<Status> {
    let db = &engine.db;
    let chunks = db.counter(CHUNKS)?;
    let chunk_bytes = db.counter(CHUNK_BYTES)?;
    // Whole packs, and the parts of a replica's unsealed pack.
    let stored_bytes = engine.store.stored_bytes()?;
    let (live_bytes, files) = live(engine)?;
    let versions = db.counter(VERSIONS)?;
    let logical_bytes = db.counter(LOGICAL_BYTES)?;
    let head = db.counter("head")?;
    let replicas = engine.replicas_status();
    let head_time = db
        .commit(CommitSeq(head))?
        .map(|(_, t)| crate::timefmt::rfc3339(t));
    let plan = plan(engine, stored_bytes, live_bytes)?;
    Ok(Status {
        verify: crate::scrub::status(engine)?,
        plan,
        format: FORMAT_VERSION,
        encrypted: db.crypto().is_encrypted(),
        live_bytes,
        logical_bytes,
        stored_bytes,
        chunks,
        chunk_bytes,
        dedup_ratio: if stored_bytes > 0 {
            logical_bytes as f64 / stored_bytes as f64
        } else {
            0.0
        },
        files,
        versions,
        commits: db.counter(COMMITS)?,
        head,
        head_time,
        poisoned: engine.store.poison_reason(),
        history_inodes: engine.history_inodes() as u64,
        replica: replicas
            .first()
            .cloned()
            .unwrap_or_else(crate::engine::ReplicaStatus::none),
        replicas,
    })
}

/// Bytes and count of the live regular files (a walk of the live tree).
fn live(engine: &Engine) -> Result<(u64, u64)> {
    let (mut live_bytes, mut seen) = (0, std::collections::HashSet::new());
    let mut stack = vec![Ino::ROOT];
    while let Some(dir) = stack.pop() {
        for (_, d) in engine.db.list_dir(dir)? {
            match d.kind {
                FileType::Directory => stack.push(d.ino),
                // Hard links are one file.
                FileType::Regular if seen.insert(d.ino) => {
                    live_bytes += engine.getattr(d.ino).map(|a| a.node.size).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    Ok((live_bytes, seen.len() as u64))
}

/// The capacity plan alone (what the metrics endpoint shows; it walks the
/// live tree, so a caller keeps it a while).
pub fn capacity_plan(engine: &Engine) -> Result<crate::retention::plan::Plan> {
    let stored = engine.store.stored_bytes()?;
    plan(engine, stored, live(engine)?.0)
}

/// The capacity plan of `engine`'s store under the policy it runs with.
fn plan(
    engine: &Engine,
    stored_bytes: u64,
    live_bytes: u64,
) -> Result<crate::retention::plan::Plan> {
    use crate::retention::plan::{self, Inputs, Plan};
    let db = &engine.db;
    let now = crate::format::Time::now();
    let policy = engine.policy();
    let (hour, hour_span) = plan::added_within(db, now, 3600)?;
    let (day, day_span) = plan::added_within(db, now, 86400)?;
    let per_day = |bytes: u64, span: u64| bytes as f64 * 86400.0 / span.max(1) as f64;
    let growth = if day_span >= 3600 {
        per_day(day, day_span)
    } else {
        per_day(hour, hour_span.max(60))
    };
    // The commits held are those the policy keeps (the prune rounds apply
    // it): two point reads, not a walk over every commit at every status.
    let oldest = db.commit_from(CommitSeq(1))?.map(|c| c.2);
    let age_days = oldest.map(|t| (now.as_nanos() - t.as_nanos()).max(0) as f64 / 86400e9);
    let horizon_days = match policy.horizon_secs() {
        Some(s) => Some(s as f64 / 86400.0),
        None if policy.has_rules() => age_days,
        None => None,
    };
    let (fs_total, fs_free) = crate::sys::fs_space(engine.store.packs_dir()).unwrap_or((0, 0));
    let fs_room = fs_free + stored_bytes;
    let max_size = policy.max_size.map(|m| m.bytes(fs_total));
    let (projected_bytes, capacity_bytes, days_until_full) = plan::project(&Inputs {
        stored_bytes,
        live_bytes: live_bytes.min(stored_bytes),
        growth_bytes_per_day: growth,
        horizon_days,
        max_size,
        fs_room,
    });
    Ok(Plan {
        policy: policy.describe(),
        growth_last_hour_bytes: hour,
        growth_last_day_bytes: day,
        growth_bytes_per_day: growth,
        kept_snapshots: db.counter(COMMITS)?,
        horizon: oldest.map(crate::timefmt::rfc3339),
        horizon_days,
        projected_bytes,
        capacity_bytes,
        days_until_full,
        over_max_size: engine.last_prune().is_some_and(|r| r.over_max_size),
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        writeln!(
            f,
            "format:         v{}{}",
            self.format,
            if self.encrypted { ", encrypted" } else { "" }
        )?;
        writeln!(
            f,
            "live files:     {} ({:.1} MiB)",
            self.files,
            mib(self.live_bytes)
        )?;
        writeln!(
            f,
            "versions:       {} ({:.1} MiB logical)",
            self.versions,
            mib(self.logical_bytes)
        )?;
        writeln!(
            f,
            "stored:         {:.1} MiB in packs",
            mib(self.stored_bytes)
        )?;
        writeln!(
            f,
            "chunks:         {} ({:.1} MiB before compression)",
            self.chunks,
            mib(self.chunk_bytes)
        )?;
        writeln!(
            f,
            "dedup ratio:    {:.2}x (logical / stored)",
            self.dedup_ratio
        )?;
        writeln!(
            f,
            "commits:        {} (head {}{})",
            self.commits,
            self.head,
            self.head_time
                .as_ref()
                .map(|t| format!(" at {t}"))
                .unwrap_or_default()
        )?;
        if self.replicas.is_empty() {
            writeln!(f, "replica:        none")?;
        }
        for r in &self.replicas {
            if let Some(p) = &r.path {
                writeln!(f, "replica:        {} ({})", p.display(), r.state)?;
                writeln!(
                    f,
                    "replica lag:    {} commits, {:.1} MiB, {:.1} s",
                    r.lag_commits,
                    r.lag_bytes as f64 / (1 << 20) as f64,
                    r.lag_seconds
                )?;
                if let Some(e) = &r.last_error {
                    writeln!(f, "replica error:  {e}")?;
                }
            }
        }
        let p = &self.plan;
        writeln!(f, "policy:         {}", p.policy)?;
        writeln!(
            f,
            "growth:         {:.1} MiB/day ({:.1} MiB last hour, {:.1} MiB last day)",
            mib(p.growth_bytes_per_day as u64),
            mib(p.growth_last_hour_bytes),
            mib(p.growth_last_day_bytes)
        )?;
        writeln!(
            f,
            "kept:           {} snapshots{}",
            p.kept_snapshots,
            p.horizon
                .as_ref()
                .map(|t| format!(" back to {t}"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "projected:      {:.1} MiB of {:.1} MiB; {}",
            mib(p.projected_bytes),
            mib(p.capacity_bytes),
            match p.days_until_full {
                Some(d) => format!("full in {d:.1} days"),
                None if p.growth_bytes_per_day <= 0.0 => "not growing".into(),
                None => "settles below it".into(),
            }
        )?;
        if p.over_max_size {
            writeln!(
                f,
                "OVER MAX SIZE:  the protected history alone is over --max-size"
            )?;
        }
        let v = &self.verify;
        writeln!(
            f,
            "verified:       {}{}",
            v.last_ok.as_deref().unwrap_or("never clean"),
            v.next
                .as_ref()
                .map(|n| format!("; next pass {n}"))
                .unwrap_or_default()
        )?;
        if let Some(e) = &v.last_error {
            writeln!(f, "DAMAGE FOUND:   {e}")?;
        }
        if let Some(p) = &self.poisoned {
            writeln!(f, "WRITES REFUSED: {p}")?;
        }
        Ok(())
    }
}
