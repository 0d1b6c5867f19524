//! What a mounted store counts as things happen (`Stats`: atomics and a
//! histogram, bumped by the store and the engine), and its Prometheus view
//! (`collect`), served at `GET /metrics` by `http` when the mount is given
//! `--metrics-addr`. A scrape reads the counters, a few catalog counters
//! (point reads), the replicas' in-memory state and a listing of the pack
//! files: it never walks the store's objects or files.

pub mod http;

use crate::engine::Engine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Counters kept as things happen.
#[derive(Debug)]
pub struct Stats {
    /// Seconds each commit took (made, not skipped).
    pub commit_seconds: Histogram,
    /// File versions recorded since the store was opened.
    pub versions: AtomicU64,
    /// Objects read bad and served (and rewritten) from a replica.
    pub healed: AtomicU64,
    /// Object reads that failed (no good copy anywhere).
    pub read_errors: AtomicU64,
    /// Records a random read took from the disk past the page cache.
    pub direct_reads: AtomicU64,
    /// Random reads served from the pieces of a chunk that hold them.
    pub piece_reads: AtomicU64,
    /// Damaged or missing objects that verify runs found.
    pub verify_errors: AtomicU64,
    /// When a verify run last found everything intact (Unix seconds; 0: never).
    pub verify_last_ok: AtomicU64,
    /// Scheduled verification (`scrub`): when its next pass starts (Unix
    /// seconds; 0: running or off), and the last damage it found.
    pub scrub_next: AtomicU64,
    pub scrub_last_error: std::sync::Mutex<Option<String>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            // 1 ms to ~65 s.
            commit_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17),
            ),
            versions: AtomicU64::new(0),
            healed: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            direct_reads: AtomicU64::new(0),
            piece_reads: AtomicU64::new(0),
            verify_errors: AtomicU64::new(0),
            verify_last_ok: AtomicU64::new(0),
            scrub_next: AtomicU64::new(0),
            scrub_last_error: Default::default(),
        }
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The registry of `engine`'s metrics (names prefixed `revfs_`).
pub fn registry(engine: &Arc<Engine>) -> Registry {
    let mut r = Registry::with_prefix("revfs");
    r.register(
        "commit_duration_seconds",
        "Time a commit took",
        engine.store.stats.commit_seconds.clone(),
    );
    r.register_collector(Box::new(Scrape(Arc::downgrade(engine), Default::default())));
    r
}

/// The text exposition of `registry` (OpenMetrics).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!("metrics: {e}");
    }
    out
}

/// The values read at each scrape (the capacity plan, which walks the
/// live tree, at most once every [`PLAN_EVERY`]).
#[derive(Debug)]
struct Scrape(
    Weak<Engine>,
    std::sync::Mutex<Option<(std::time::Instant, crate::retention::plan::Plan)>>,
);

const PLAN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(engine) = self.0.upgrade() else {
            return Ok(());
        };
        let s = &engine.store.stats;
        let db = &engine.db;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counter_of = |name: &str| db.counter(name).unwrap_or(0);
        let head = counter_of("head");
        let head_time = db
            .commit(crate::ids::CommitSeq(head))
            .ok()
            .flatten()
            .map_or(0.0, |(_, t)| t.secs as f64 + t.nanos as f64 / 1e9);
        gauge(
            &mut e,
            "last_commit_timestamp_seconds",
            "When the newest commit was made (Unix time)",
            head_time,
        )?;
        gauge(
            &mut e,
            "stored_bytes",
            "Bytes the store's packs take",
            engine.store.stored_bytes().unwrap_or(0) as f64,
        )?;
        gauge(
            &mut e,
            "logical_bytes",
            "Bytes of every kept file version",
            counter_of(crate::status::LOGICAL_BYTES) as f64,
        )?;
        gauge(
            &mut e,
            "versions_kept",
            "File versions in kept history",
            counter_of(crate::status::VERSIONS) as f64,
        )?;
        gauge(
            &mut e,
            "commits_kept",
            "Commits in kept history",
            counter_of(crate::status::COMMITS) as f64,
        )?;
        counter(
            &mut e,
            "versions",
            "File versions recorded since the store was opened",
            load(&s.versions),
        )?;
        counter(
            &mut e,
            "healed_chunks",
            "Objects read damaged and served from a replica",
            load(&s.healed),
        )?;
        counter(
            &mut e,
            "read_errors",
            "Object reads that failed (no good copy anywhere)",
            load(&s.read_errors),
        )?;
        counter(
            &mut e,
            "direct_reads",
            "Chunk records random reads took from the disk past the page cache (O_DIRECT)",
            load(&s.direct_reads),
        )?;
        counter(
            &mut e,
            "piece_reads",
            "Random reads served from only the 16 KiB pieces of a chunk that hold them, each checked",
            load(&s.piece_reads),
        )?;
        counter(
            &mut e,
            "verify_errors",
            "Damaged or missing objects verify runs found",
            load(&s.verify_errors),
        )?;
        gauge(
            &mut e,
            "verify_last_success_timestamp_seconds",
            "When a verify run last found everything intact (Unix time; 0: never)",
            load(&s.verify_last_ok) as f64,
        )?;
        let replicas = engine.replicas_status();
        let first = replicas.first();
        gauge(
            &mut e,
            "replica_lag_seconds",
            "Age of the oldest commit the first replica lacks (0: none lacking)",
            first.map_or(0.0, |r| r.lag_seconds),
        )?;
        gauge(
            &mut e,
            "replica_lag_bytes",
            "Pack bytes the first replica lacks",
            first.map_or(0.0, |r| r.lag_bytes as f64),
        )?;
        gauge(
            &mut e,
            "replicas",
            "Replicas configured",
            replicas.len() as f64,
        )?;
        gauge(
            &mut e,
            "replicas_in_error",
            "Replicas that are missing or failing",
            replicas
                .iter()
                .filter(|r| r.state == "missing" || r.state == "error")
                .count() as f64,
        )?;
        let plan = {
            let mut held = self.1.lock().unwrap_or_else(|p| p.into_inner());
            let stale = held.as_ref().is_none_or(|(t, _)| t.elapsed() > PLAN_EVERY);
            if stale && let Ok(p) = crate::status::capacity_plan(&engine) {
                *held = Some((std::time::Instant::now(), p));
            }
            held.as_ref().map(|(_, p)| p.clone())
        };
        if let Some(p) = plan {
            gauge(
                &mut e,
                "plan_growth_bytes_per_day",
                "New stored bytes a day (capacity plan)",
                p.growth_bytes_per_day,
            )?;
            gauge(
                &mut e,
                "plan_projected_bytes",
                "Where the store's size settles under its retention policy",
                p.projected_bytes as f64,
            )?;
            gauge(
                &mut e,
                "plan_capacity_bytes",
                "The bound the plan is against (--max-size, else the filesystem)",
                p.capacity_bytes as f64,
            )?;
            gauge(
                &mut e,
                "plan_seconds_until_full",
                "Time until the store reaches its capacity (-1: it settles below it)",
                p.days_until_full.map_or(-1.0, |d| d * 86400.0),
            )?;
        }
        gauge(
            &mut e,
            "poisoned",
            "1 when a failed write stopped the store from taking writes",
            if engine.store.poison_reason().is_some() {
                1.0
            } else {
                0.0
            },
        )
    }
}
