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
//! After the primary, each replica: every record of a sample of its pack
//! objects (an eighth of its packs a pass, by pack number, a different
//! eighth each pass, so every record is checked once in eight passes), or
//! of all of them with `--verify-replica-full`, hash-checked at the same
//! rate. A damaged replica record is rewritten from the primary's copy.
//! (`revfs verify --replica` and `drill` check the replica's whole head.)

use crate::catalog::db::Batch;
use crate::engine::Engine;
use crate::error::Result;
use crate::metrics::Stats;
use crate::replica::target::Target;
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
/// The replica phase of the running pass: `replica << 48 | pack + 1` of
/// the next replica pack to check (0: not there yet); the damage the pass
/// found so far; passes done (which eighth of the replica packs is next).
pub const REPLICA_CURSOR: &str = "verify_replica_cursor";
pub const PASS_ERRORS: &str = "verify_pass_errors";
pub const PASSES: &str = "verify_passes";
/// The primary's cursor once its objects are done and the replicas' turn.
const PRIMARY_DONE: u64 = u64::MAX;
/// Objects between two saves of the cursor.
const SAVE_EVERY: u64 = 64;
/// A sampled pass checks the replica packs whose number is its pass
/// number modulo this.
pub const SAMPLE: u64 = 8;

#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub every: Duration,
    pub rate: u64,
    /// Every replica pack each pass (`--verify-replica-full`), not an
    /// eighth.
    pub replica_full: bool,
}

fn now_secs() -> u64 {
    crate::format::Time::now().secs.max(0) as u64
}

/// Starts the thread (checking `replicas` too); it ends when the engine
/// goes away.
pub fn spawn(
    engine: &Arc<Engine>,
    schedule: Schedule,
    replicas: Vec<Arc<dyn Target>>,
) -> Result<()> {
    let stats = &engine.store.stats;
    stats
        .verify_last_ok
        .store(engine.db.counter(LAST_OK)?, Ordering::Relaxed);
    let weak = Arc::downgrade(engine);
    std::thread::Builder::new()
        .name("revfs-verify".into())
        .spawn(move || run(weak, schedule, replicas))
        .map_err(crate::error::Error::Io)?;
    Ok(())
}

fn run(engine: std::sync::Weak<Engine>, schedule: Schedule, replicas: Vec<Arc<dyn Target>>) {
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
        if let Err(err) = pass(&e, &engine, schedule, &replicas) {
            tracing::warn!("scheduled verify stopped: {err}");
            drop(e);
            std::thread::sleep(Duration::from_secs(10));
        }
    }
}

/// One pass from where the last one stopped; returns at its end, or when
/// the engine is going away (its cursor saved).
fn pass(
    e: &Engine,
    alive: &std::sync::Weak<Engine>,
    schedule: Schedule,
    replicas: &[Arc<dyn Target>],
) -> Result<()> {
    let db = &e.db;
    let from = db.counter(CURSOR)?;
    if from == 0 {
        tracing::info!("scheduled verify: a pass begins");
        let mut b = Batch::default();
        b.put_counter(BYTES, 0);
        b.put_counter(PASS_ERRORS, 0);
        b.put_counter(REPLICA_CURSOR, 0);
        db.apply(b)?;
    }
    let mut pace = crate::sys::Pace::new(schedule.rate);
    let gone = || alive.strong_count() <= 1;
    if from != PRIMARY_DONE {
        if !primary(e, from, &mut pace, &gone)? {
            return Ok(());
        }
        let mut b = Batch::default();
        b.put_counter(CURSOR, PRIMARY_DONE);
        db.apply(b)?;
    }
    let number = db.counter(PASSES)?;
    for (r, t) in replicas.iter().enumerate() {
        match replica(
            e,
            r as u64,
            &**t,
            number,
            schedule.replica_full,
            &mut pace,
            &gone,
        ) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            // An unreachable replica is the replicator's to report; the
            // next pass tries again.
            Err(err) => tracing::warn!("scheduled verify of replica {}: {err}", t.describe()),
        }
    }
    let now = now_secs();
    let errors = db.counter(PASS_ERRORS)?;
    let mut b = Batch::default();
    b.put_counter(CURSOR, 0);
    b.put_counter(REPLICA_CURSOR, 0);
    b.put_counter(LAST_PASS, now);
    b.put_counter(PASSES, number + 1);
    if errors == 0 {
        b.put_counter(LAST_OK, now);
        e.store.stats.verify_last_ok.store(now, Ordering::Relaxed);
    }
    db.apply(b)?;
    tracing::info!(
        "scheduled verify: pass done, {} bytes, {errors} damaged",
        db.counter(BYTES)?
    );
    Ok(())
}

/// Damage found: counted, logged, and kept for `status`.
fn found(e: &Engine, what: String) -> Result<()> {
    let stats: &Stats = &e.store.stats;
    Stats::add(&stats.verify_errors, 1);
    tracing::error!("scheduled verify: {what}");
    *stats
        .scrub_last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(format!(
        "{}: {what}",
        crate::timefmt::rfc3339(crate::format::Time::now())
    ));
    let mut b = Batch::default();
    b.put_counter(PASS_ERRORS, e.db.counter(PASS_ERRORS)? + 1);
    e.db.apply(b)
}

/// The primary's objects from `from` on; false when stopped by an unmount.
fn primary(
    e: &Engine,
    from: u64,
    pace: &mut crate::sys::Pace,
    gone: &dyn Fn() -> bool,
) -> Result<bool> {
    let db = &e.db;
    let mut bytes = db.counter(BYTES)?;
    let mut seen = 0u64;
    // The cursor, and the piece tables of chunks read that lacked one.
    let mut b = Batch::default();
    let save = |mut b: Batch, cursor: u64, bytes: u64| -> Result<()> {
        b.put_counter(CURSOR, cursor);
        b.put_counter(BYTES, bytes);
        db.apply(b)
    };
    for entry in db.index_from(from) {
        let (id, x) = entry?;
        let len = x.record_len();
        pace.took(len);
        match e.store.read_verified(&id, &x) {
            Ok(raw) => e.store.mend_table(&mut b, &id, &x, &raw)?,
            // Moved by a prune since it was listed: not damage.
            Err(err) if e.store.locate(&id)? == Some(x) => {
                let healed = e.store.repair(&id, &x);
                found(
                    e,
                    format!(
                        "{err}{}",
                        if healed {
                            "; healed from the replica"
                        } else {
                            "; no good copy to heal it from"
                        }
                    ),
                )?;
            }
            Err(_) => {}
        }
        bytes += len;
        seen += 1;
        if seen.is_multiple_of(SAVE_EVERY) {
            let next = u64::from_be_bytes(id.0[..8].try_into().unwrap_or([0; 8]));
            save(
                std::mem::take(&mut b),
                next.clamp(1, PRIMARY_DONE - 1),
                bytes,
            )?;
            if gone() {
                return Ok(false);
            }
        }
    }
    save(b, db.counter(CURSOR)?.max(1), bytes)?;
    Ok(true)
}

/// The packs of replica number `r` at `t` this pass checks (its `number`
/// says which eighth, unless `full`), from where the cursor stands; false
/// when stopped by an unmount.
fn replica(
    e: &Engine,
    r: u64,
    t: &dyn Target,
    number: u64,
    full: bool,
    pace: &mut crate::sys::Pace,
    gone: &dyn Fn() -> bool,
) -> Result<bool> {
    let db = &e.db;
    let cursor = db.counter(REPLICA_CURSOR)?;
    let (at_r, next_pack) = (cursor >> 48, cursor & ((1 << 48) - 1));
    if cursor != 0 && at_r > r {
        return Ok(true);
    }
    let from = if cursor != 0 && at_r == r {
        next_pack.saturating_sub(1)
    } else {
        0
    };
    let crypto = e.store.crypto();
    for (no, objects) in crate::replica::remote::pack_objects(t)? {
        if no.0 < from || !(full || no.0 % SAMPLE == number % SAMPLE) {
            continue;
        }
        for o in &objects {
            let mut read = 0;
            let checked = crate::verify::check_replica_object(crypto, t, no, o, |n| {
                read += n;
                pace.took(n);
            });
            let c = match checked {
                Ok(c) => c,
                // Deleted by the replicator since the listing (a pack the
                // primary pruned): not damage.
                Err(_) if !t.list(&o.name)?.iter().any(|(n, _)| *n == o.name) => continue,
                Err(err) => return Err(err),
            };
            let mut b = Batch::default();
            b.put_counter(BYTES, db.counter(BYTES)? + read);
            db.apply(b)?;
            let bad: Vec<_> = c
                .bad
                .iter()
                .map(|(id, x, _)| (o.name.clone(), *id, *x))
                .collect();
            let fixed = if bad.is_empty() {
                0
            } else {
                crate::verify::repair_replica(e, t, &bad)?
            };
            Stats::add(&e.store.stats.healed, fixed);
            for (id, _, err) in &c.bad {
                found(
                    e,
                    format!(
                        "replica {} {}: {id}: {err}{}",
                        t.describe(),
                        o.name,
                        if fixed > 0 {
                            "; rewritten from the primary"
                        } else {
                            ""
                        }
                    ),
                )?;
            }
            if let Some(at) = c.short_at {
                found(
                    e,
                    format!(
                        "replica {} {}: a damaged record header at offset {at}",
                        t.describe(),
                        o.name
                    ),
                )?;
            }
        }
        let mut b = Batch::default();
        b.put_counter(REPLICA_CURSOR, r << 48 | (no.0 + 2));
        db.apply(b)?;
        if gone() {
            return Ok(false);
        }
    }
    Ok(true)
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
