//! A clock for tests of time-based retention rules, which would otherwise
//! need days to run: with `REVFS_TEST_COMMIT_CLOCK=START,STEP` (seconds
//! since the epoch, seconds) in the daemon's environment, commit number N
//! is stamped START + N x STEP. Unset, it costs one comparison with a
//! value read once; nothing else of revfs reads it.

use crate::format::Time;
use std::sync::OnceLock;

/// The time commit `seq` gets under the test clock, if one is set.
pub fn commit_time(seq: u64) -> Option<Time> {
    static CLOCK: OnceLock<Option<(i64, i64)>> = OnceLock::new();
    let (start, step) = (*CLOCK.get_or_init(|| {
        let v = std::env::var("REVFS_TEST_COMMIT_CLOCK").ok()?;
        let (a, b) = v.split_once(',')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    }))?;
    let secs = start.checked_add((seq as i64).checked_mul(step)?)?;
    Some(Time { secs, nanos: 0 })
}
