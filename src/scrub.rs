//! Scheduled verification (`mount --verify-every DUR`): a thread that
//! re-reads and hash-checks every object of the primary, in id order, at
//! `--verify-rate` bytes a second (gentle by default: a training job does
//! not feel it), once every DUR. A damaged object it finds is counted,
//! logged and healed from a replica when one holds a good copy. Where a
//! pass stands is kept in the catalog (counters `verify_cursor`,
//! `verify_bytes`), so a pass stopped by an unmount or a crash resumes
//! where it stopped; `status` shows the last clean pass, the last damage
//! found, the bytes checked and when the next pass starts.
//!
//! Replicas are not read by this thread (`revfs verify --replica` and
//! `drill` check them).

use crate::catalog::db::Batch;
use crate::engine::Engine;
use crate::error::Result;
use crate::metrics::Stats;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Bytes a second a scheduled pass reads unless told.
pub const DEFAULT_RATE: u64 = 16 << 20;
/// Catalog counters: where the running pass stands (the first 8 bytes of
/// the next id; 0 when no pass is under way), the bytes it checked, when
/// the last pass ended and when one last found everything intact.
pub const CURSOR: &str = "verify_cursor";
pub const BYTES: &str = "verify_bytes";
pub const LAST_PASS: &str = "verify_last_pass";
pub const LAST_OK: &str = "verify_last_ok";
/// Objects between two saves of the cursor.
const SAVE_EVERY: u64 = 64;

#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub every: Duration,
    pub rate: u64,
}

fn now_secs() -> u64 {
    crate::format::Time::now().secs.max(0) as u64
}

/// Starts the thread; it ends when the engine goes away.
pub fn spawn(engine: &Arc<Engine>, schedule: Schedule) -> Result<()> {
    let stats = &engine.store.stats;
    stats
        .verify_last_ok
        .store(engine.db.counter(LAST_OK)?, Ordering::Relaxed);
    let weak = Arc::downgrade(engine);
    std::thread::Builder::new()
        .name("revfs-verify".into())
        .spawn(move || run(weak, schedule))
        .map_err(crate::error::Error::Io)?;
    Ok(())
}

fn run(engine: std::sync::Weak<Engine>, schedule: Schedule) {
    loop {
        let Some(e) = engine.upgrade() else { return };
        let due = match (e.db.counter(CURSOR), e.db.counter(LAST_PASS)) {
            // A pass under way (stopped by an unmount or a crash): on with it.
            (Ok(c), _) if c != 0 => 0,
            (_, Ok(last)) => last.saturating_add(schedule.every.as_secs()),
            _ => 0,
        };
        e.store.stats.scrub_next.store(due, Ordering::Relaxed);
        if now_secs() < due || e.read_only() {
            drop(e);
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        e.store.stats.scrub_next.store(0, Ordering::Relaxed);
        if let Err(err) = pass(&e, &engine, schedule.rate) {
            tracing::warn!("scheduled verify stopped: {err}");
            drop(e);
            std::thread::sleep(Duration::from_secs(10));
        }
    }
}

/// One pass from where the last one stopped; returns at its end, or when
/// the engine is going away (its cursor saved).
fn pass(e: &Engine, alive: &std::sync::Weak<Engine>, rate: u64) -> Result<()> {
    let db = &e.db;
    let stats: &Stats = &e.store.stats;
    let from = db.counter(CURSOR)?;
    let mut bytes = if from == 0 { 0 } else { db.counter(BYTES)? };
    if from == 0 {
        tracing::info!("scheduled verify: a pass begins");
    }
    let mut pace = crate::sys::Pace::new(rate);
    let (mut seen, mut errors) = (0u64, 0u64);
    let save = |cursor: u64, bytes: u64| -> Result<()> {
        let mut b = Batch::default();
        b.put_counter(CURSOR, cursor);
        b.put_counter(BYTES, bytes);
        db.apply(b)
    };
    for entry in db.index_from(from) {
        let (id, x) = entry?;
        let len = x.stored_len as u64 + crate::format::RECORD_HEADER_LEN as u64;
        pace.took(len);
        if let Err(err) = e.store.read_verified(&id, &x) {
            // Moved by a prune since it was listed: not damage.
            if e.store.locate(&id)? == Some(x) {
                errors += 1;
                Stats::add(&stats.verify_errors, 1);
                let healed = e.store.repair(&id, &x);
                tracing::error!(
                    "scheduled verify: {err}{}",
                    if healed {
                        "; healed from the replica"
                    } else {
                        "; no good copy to heal it from"
                    }
                );
                *stats
                    .scrub_last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(format!(
                    "{}: {err}",
                    crate::timefmt::rfc3339(crate::format::Time::now())
                ));
            }
        }
        bytes += len;
        seen += 1;
        if seen % SAVE_EVERY == 0 {
            let next = u64::from_be_bytes(id.0[..8].try_into().unwrap_or([0; 8]));
            save(next.max(1), bytes)?;
            // An unmount: the engine's owners let go; stop here.
            if alive.strong_count() <= 1 {
                return Ok(());
            }
        }
    }
    let now = now_secs();
    let mut b = Batch::default();
    b.put_counter(CURSOR, 0);
    b.put_counter(BYTES, bytes);
    b.put_counter(LAST_PASS, now);
    if errors == 0 {
        b.put_counter(LAST_OK, now);
        stats.verify_last_ok.store(now, Ordering::Relaxed);
    }
    db.apply(b)?;
    tracing::info!("scheduled verify: pass done, {bytes} bytes, {errors} damaged");
    Ok(())
}

/// What `status` shows of scheduled verification.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct VerifyStatus {
    /// When a pass (or a `revfs verify`) last found everything intact.
    pub last_ok: Option<String>,
    /// The last damage a pass found since the mount started.
    pub last_error: Option<String>,
    /// Bytes the running (or last) pass checked.
    pub bytes_checked: u64,
    /// When the next pass starts (none while one runs, or when off).
    pub next: Option<String>,
}

/// `status`'s view of it.
pub fn status(e: &Engine) -> Result<VerifyStatus> {
    let s = &e.store.stats;
    let time = |secs: u64| {
        (secs > 0).then(|| {
            crate::timefmt::rfc3339(crate::format::Time {
                secs: secs as i64,
                nanos: 0,
            })
        })
    };
    let last_ok =
        e.db.counter(LAST_OK)?
            .max(s.verify_last_ok.load(Ordering::Relaxed));
    Ok(VerifyStatus {
        last_ok: time(last_ok),
        last_error: s
            .scrub_last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        bytes_checked: e.db.counter(BYTES)?,
        next: time(s.scrub_next.load(Ordering::Relaxed)),
    })
}
