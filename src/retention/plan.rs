//! The capacity plan `status` shows: how fast the store grows, how big
//! the policy lets it get, and when its disk (or `--max-size`) is full.
//!
//! The seed's model is C = R·T/N; with dedup and compression the rate that
//! matters is that of *new stored* bytes, which every commit adds to a
//! counter and samples every [`BUCKET_SECS`] (catalog "g" keys), so the
//! rate over the last hour and day is two point reads. Under a policy whose
//! history reaches back T, the store settles at about L + R·T (L: what the
//! live tree needs); with no rule over commits it grows without end, and
//! the projection is for [`OPEN_HORIZON_DAYS`].

use crate::catalog::db::{Batch, Db};
use crate::error::Result;
use crate::format::Time;
use serde::{Deserialize, Serialize};

/// Growth samples are kept per bucket of this many seconds...
pub const BUCKET_SECS: u64 = 300;
/// ...for this long.
pub const KEEP_SAMPLES_SECS: u64 = 8 * 86400;
/// The projection of a store that keeps everything looks this far ahead.
pub const OPEN_HORIZON_DAYS: f64 = 30.0;

/// The counter of stored bytes ever added (never decreases).
pub const STORED_ADDED: &str = "stored_added";

/// Adds `bytes` newly stored at `now` to the growth counter and its sample.
pub fn note_growth(db: &Db, b: &mut Batch, now: Time, bytes: u64) -> Result<()> {
    let total = db.counter(STORED_ADDED)? + bytes;
    b.put_counter(STORED_ADDED, total);
    b.put_growth(now.secs.max(0) as u64 / BUCKET_SECS, total);
    Ok(())
}

/// Drops samples older than [`KEEP_SAMPLES_SECS`].
pub fn forget_old_growth(db: &Db, now: Time) -> Result<()> {
    let keep_from = (now.secs.max(0) as u64).saturating_sub(KEEP_SAMPLES_SECS) / BUCKET_SECS;
    let mut b = Batch::default();
    for (bucket, _) in db.growth(0)? {
        if bucket >= keep_from {
            break;
        }
        b.del_growth(bucket);
    }
    db.apply(b)
}

/// Stored bytes added in the last `secs` seconds, and the span of samples
/// that answer covers (shorter than `secs` for a young store).
pub fn added_within(db: &Db, now: Time, secs: u64) -> Result<(u64, u64)> {
    let now_s = now.secs.max(0) as u64;
    let total = db.counter(STORED_ADDED)?;
    let from = now_s.saturating_sub(secs) / BUCKET_SECS;
    let (base_secs, base) = match db.growth_before(from)? {
        // The last sample before the window is where the window starts.
        Some((_, t)) => (now_s.saturating_sub(secs), t),
        // A store younger than the window: from its first sample on.
        None => match db.growth(0)?.first() {
            Some(&(b, _)) => (b * BUCKET_SECS, 0),
            None => return Ok((0, 0)),
        },
    };
    let span = now_s.saturating_sub(base_secs).clamp(1, secs.max(1));
    Ok((total.saturating_sub(base), span))
}

/// Free space on the store's filesystem below which a mounted store drops
/// its oldest unprotected history by itself (so that history never makes
/// a write fail): a twentieth of the filesystem, at least 64 MiB, at most
/// a quarter of it.
pub fn low_water(fs_total: u64) -> u64 {
    (fs_total / 20).max(64 << 20).min(fs_total / 4)
}

/// With `free` bytes left on a filesystem of `fs_total` and a store of
/// `stored` bytes: the size the store must come down to (None while the
/// free space is above the low-water mark). It frees twice the mark.
pub fn space_bound(fs_total: u64, free: u64, stored: u64) -> Option<u64> {
    let low = low_water(fs_total);
    (free < low).then(|| stored.saturating_sub(2 * low - free))
}

/// The plan, as `status` reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// The policy, in words.
    pub policy: String,
    /// New stored bytes in the last hour and the last day.
    pub growth_last_hour_bytes: u64,
    pub growth_last_day_bytes: u64,
    /// The rate of new stored bytes, per day (from the last day, or the
    /// last hour while the store is younger than a day).
    pub growth_bytes_per_day: f64,
    /// Commits the store keeps now (a mounted store applies its policy every
    /// prune round), and the oldest one's time.
    pub kept_snapshots: u64,
    pub horizon: Option<String>,
    /// How far back the policy keeps history, in days (None: for ever).
    pub horizon_days: Option<f64>,
    /// Where the store's size settles under the policy (or, keeping
    /// everything, where it is in 30 days).
    pub projected_bytes: u64,
    /// The bound the plan is against: `--max-size`, else the filesystem.
    pub capacity_bytes: u64,
    /// Days until the store reaches `capacity_bytes` at this rate; None when
    /// it settles below it (or does not grow).
    pub days_until_full: Option<f64>,
    /// The last prune found the protected history alone over `--max-size`.
    pub over_max_size: bool,
}

/// The inputs of [`project`].
pub struct Inputs {
    pub stored_bytes: u64,
    /// What the live tree alone needs (an estimate).
    pub live_bytes: u64,
    pub growth_bytes_per_day: f64,
    pub horizon_days: Option<f64>,
    pub max_size: Option<u64>,
    /// Bytes the store may reach on its filesystem (used + free).
    pub fs_room: u64,
}

/// (projected_bytes, capacity_bytes, days_until_full).
pub fn project(i: &Inputs) -> (u64, u64, Option<f64>) {
    let r = i.growth_bytes_per_day.max(0.0);
    let settled = match i.horizon_days {
        Some(h) => i.live_bytes as f64 + r * h,
        None => i.stored_bytes as f64 + r * OPEN_HORIZON_DAYS,
    };
    let capacity = i.max_size.map_or(i.fs_room, |m| m.min(i.fs_room));
    let projected = match i.max_size {
        Some(m) => settled.min(m as f64),
        None => settled,
    } as u64;
    let settles_below = i.horizon_days.is_some() && settled < capacity as f64;
    // With --max-size, "full" is the day the bound starts dropping history
    // the rules would keep (writes never fail because of history).
    let days = if r <= 0.0 || settles_below {
        None
    } else {
        Some((capacity.saturating_sub(i.stored_bytes)) as f64 / r)
    };
    (projected, capacity, days)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            stored_bytes: 100,
            live_bytes: 40,
            growth_bytes_per_day: 10.0,
            horizon_days: None,
            max_size: None,
            fs_room: 1000,
        }
    }

    #[test]
    fn keeping_everything_fills_the_disk_at_the_growth_rate() {
        let (p, c, d) = project(&inputs());
        assert_eq!((p, c), (400, 1000));
        assert_eq!(d, Some(90.0));
    }

    #[test]
    fn a_time_horizon_settles_at_live_plus_rate_times_horizon() {
        let i = Inputs {
            horizon_days: Some(7.0),
            ..inputs()
        };
        let (p, _, d) = project(&i);
        assert_eq!(p, 110);
        assert_eq!(d, None, "settles below the disk: never full");
        let tight = Inputs {
            horizon_days: Some(200.0),
            ..inputs()
        };
        let (p, _, d) = project(&tight);
        assert_eq!(p, 2040);
        assert_eq!(d, Some(90.0));
    }

    #[test]
    fn max_size_caps_the_projection() {
        let i = Inputs {
            max_size: Some(300),
            ..inputs()
        };
        let (p, c, d) = project(&i);
        assert_eq!((p, c), (300, 300));
        assert_eq!(d, Some(20.0), "the day the bound starts dropping history");
        let fits = Inputs {
            max_size: Some(900),
            horizon_days: Some(3.0),
            ..inputs()
        };
        assert_eq!(project(&fits), (70, 900, None));
    }

    #[test]
    fn a_nearly_full_disk_asks_for_twice_the_low_water_mark() {
        let gib = 1u64 << 30;
        assert_eq!(low_water(100 * gib), 5 * gib);
        assert_eq!(low_water(96 << 20), 24 << 20, "a quarter of a small disk");
        assert_eq!(space_bound(100 * gib, 6 * gib, 50 * gib), None);
        assert_eq!(space_bound(100 * gib, 4 * gib, 50 * gib), Some(44 * gib));
        assert_eq!(space_bound(100 * gib, 0, 3 * gib), Some(0));
    }

    #[test]
    fn no_growth_is_never_full() {
        let i = Inputs {
            growth_bytes_per_day: 0.0,
            ..inputs()
        };
        assert_eq!(project(&i).2, None);
    }

    #[test]
    fn growth_is_read_from_the_samples() {
        let db = Db::temporary().unwrap();
        let t = |secs: i64| Time { secs, nanos: 0 };
        let start = 1_000_000_000;
        for k in 0..30 {
            let mut b = Batch::default();
            note_growth(&db, &mut b, t(start + k * 600), 1000).unwrap();
            db.apply(b).unwrap();
        }
        let now = t(start + 29 * 600);
        // One sample every 10 min: the hour back from `now` holds 7 of them,
        // both ends included (a window starts at its bucket's start).
        let (h, span) = added_within(&db, now, 3600).unwrap();
        assert_eq!(h, 7000, "span {span}");
        assert_eq!(span, 3600);
        let (d, span) = added_within(&db, now, 86400).unwrap();
        assert_eq!(d, 30_000);
        assert!(span <= 29 * 600 + BUCKET_SECS, "{span}");
        forget_old_growth(&db, t(start + KEEP_SAMPLES_SECS as i64 + 3600)).unwrap();
        assert!(db.growth(0).unwrap().len() < 30);
    }
}
