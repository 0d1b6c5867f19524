//! Which commits a policy keeps. Every commit is a snapshot of the tree;
//! the rules are restic's and sanoid's, over commits:
//!
//! * `keep_last N`: the N newest commits.
//! * `keep_within D`: every commit younger than D.
//! * `keep_minutely/hourly/daily/weekly/monthly N`: the newest commit of
//!   each of the last N such periods (UTC; ISO weeks) that hold a commit.
//! * `keep_versions N`: for every file of the live tree, the commits that
//!   first hold its last N versions (a deleted file's versions are left to
//!   the other rules: a job that rotates checkpoint files would otherwise
//!   keep every one it ever wrote).
//!
//! * `keep_checkpoints N`: for every directory that holds training
//!   checkpoints (`engine::checkpoints`), the commits that completed its
//!   last N checkpoints, whether the job still has them or rotated them out.
//!
//! Named snapshots (a pinned checkpoint is one) and the head are always kept. A policy with no rule
//! keeps everything. `max_size` is not a rule over commits: it drops the
//! oldest commits outside the protected set (named, within, versions,
//! head) until the store fits (`prune`).

use crate::format::Time;
use crate::ids::CommitSeq;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};

/// A size bound: bytes, or a share of the filesystem that holds the store.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeBound {
    Bytes(u64),
    Percent(f64),
}

impl SizeBound {
    /// Parses `500G`, `100M`, `1.5TiB`, `123456` (bytes) or `80%`.
    pub fn parse(s: &str) -> Result<SizeBound, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| format!("not a size: {s}"))?;
            if !(0.0 < v && v <= 100.0) {
                return Err(format!("{s}: a share must be in (0, 100]%"));
            }
            return Ok(SizeBound::Percent(v));
        }
        let at = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
        let (num, unit) = s.split_at(at);
        let n: f64 = num.trim().parse().map_err(|_| format!("not a size: {s}"))?;
        let unit = unit.trim().to_ascii_lowercase();
        let mult: f64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
            "" => 1.0,
            "k" => 1024.0,
            "m" => 1024.0 * 1024.0,
            "g" => 1024.0 * 1024.0 * 1024.0,
            "t" => 1024.0f64.powi(4),
            "p" => 1024.0f64.powi(5),
            _ => return Err(format!("unknown unit in {s} (use K, M, G, T or %)")),
        };
        let b = n * mult;
        if !(b.is_finite() && b >= 1.0) {
            return Err(format!("size out of range: {s}"));
        }
        Ok(SizeBound::Bytes(b as u64))
    }

    /// The bound in bytes for a store on a filesystem of `fs_bytes`.
    pub fn bytes(&self, fs_bytes: u64) -> u64 {
        match self {
            SizeBound::Bytes(b) => *b,
            SizeBound::Percent(p) => (fs_bytes as f64 * p / 100.0) as u64,
        }
    }
}

impl std::fmt::Display for SizeBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeBound::Bytes(b) => write!(f, "{b} bytes"),
            SizeBound::Percent(p) => write!(f, "{p}% of the filesystem"),
        }
    }
}

/// A retention policy, as set once (`init`, `mount`, `policy`) and kept in
/// the store's config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub keep_last: Option<u64>,
    /// Seconds.
    pub keep_within: Option<u64>,
    pub keep_minutely: Option<u64>,
    pub keep_hourly: Option<u64>,
    pub keep_daily: Option<u64>,
    pub keep_weekly: Option<u64>,
    pub keep_monthly: Option<u64>,
    pub keep_versions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_checkpoints: Option<u64>,
    pub max_size: Option<SizeBound>,
    /// Repack a pack once more than this share of it is unused (0..=100).
    pub max_unused: Option<f64>,
}

/// Share of a pack that may be dead before `prune` repacks it.
pub const DEFAULT_MAX_UNUSED: f64 = 10.0;

impl Policy {
    /// Whether any rule over commits is set (without one, nothing is
    /// dropped but for `max_size`).
    pub fn has_rules(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_within.is_some()
            || self.periods().iter().any(|(n, _)| n.is_some())
            || self.keep_versions.is_some()
            || self.keep_checkpoints.is_some()
    }

    /// Whether the policy lets anything go at all.
    pub fn drops_anything(&self) -> bool {
        self.has_rules() || self.max_size.is_some()
    }

    /// `other`'s settings over this one's.
    pub fn merged(&self, other: &Policy) -> Policy {
        Policy {
            keep_last: other.keep_last.or(self.keep_last),
            keep_within: other.keep_within.or(self.keep_within),
            keep_minutely: other.keep_minutely.or(self.keep_minutely),
            keep_hourly: other.keep_hourly.or(self.keep_hourly),
            keep_daily: other.keep_daily.or(self.keep_daily),
            keep_weekly: other.keep_weekly.or(self.keep_weekly),
            keep_monthly: other.keep_monthly.or(self.keep_monthly),
            keep_versions: other.keep_versions.or(self.keep_versions),
            keep_checkpoints: other.keep_checkpoints.or(self.keep_checkpoints),
            max_size: other.max_size.or(self.max_size),
            max_unused: other.max_unused.or(self.max_unused),
        }
    }

    pub fn max_unused(&self) -> f64 {
        self.max_unused.unwrap_or(DEFAULT_MAX_UNUSED)
    }

    fn periods(&self) -> [(Option<u64>, Period); 5] {
        [
            (self.keep_minutely, Period::Minute),
            (self.keep_hourly, Period::Hour),
            (self.keep_daily, Period::Day),
            (self.keep_weekly, Period::Week),
            (self.keep_monthly, Period::Month),
        ]
    }

    /// How far back the time rules reach, in seconds (None: no time rule).
    pub fn horizon_secs(&self) -> Option<u64> {
        let mut h: Option<u64> = self.keep_within;
        for (n, p) in self.periods() {
            if let Some(n) = n {
                h = Some(h.unwrap_or(0).max(n * p.approx_secs()));
            }
        }
        h
    }

    /// One line for people: the rules that are set.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, v: Option<u64>| {
            if let Some(v) = v {
                parts.push(format!("{name} {v}"));
            }
        };
        add("keep-last", self.keep_last);
        add("keep-minutely", self.keep_minutely);
        add("keep-hourly", self.keep_hourly);
        add("keep-daily", self.keep_daily);
        add("keep-weekly", self.keep_weekly);
        add("keep-monthly", self.keep_monthly);
        add("keep-versions", self.keep_versions);
        add("keep-checkpoints", self.keep_checkpoints);
        if let Some(w) = self.keep_within {
            parts.push(format!("keep-within {w}s"));
        }
        if let Some(m) = self.max_size {
            parts.push(format!("max-size {m}"));
        }
        if parts.is_empty() {
            "keep everything".into()
        } else {
            parts.join(", ")
        }
    }
}

#[derive(Clone, Copy)]
enum Period {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    /// The period a time falls in, as a number that orders periods.
    fn key(self, t: Time) -> i64 {
        use chrono::Datelike;
        match self {
            Period::Minute => t.secs.div_euclid(60),
            Period::Hour => t.secs.div_euclid(3600),
            Period::Day => t.secs.div_euclid(86400),
            Period::Week => chrono::DateTime::from_timestamp(t.secs, 0).map_or(0, |d| {
                let w = d.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }),
            Period::Month => chrono::DateTime::from_timestamp(t.secs, 0)
                .map_or(0, |d| d.year() as i64 * 12 + d.month0() as i64),
        }
    }

    fn approx_secs(self) -> u64 {
        match self {
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86400,
            Period::Week => 7 * 86400,
            Period::Month => 30 * 86400,
        }
    }
}

/// What the policy decided.
#[derive(Debug, Default)]
pub struct Kept {
    /// Every commit kept.
    pub kept: BTreeSet<CommitSeq>,
    /// Those that `max_size` may not drop: named, head, within, versions,
    /// checkpoints.
    pub protected: BTreeSet<CommitSeq>,
}

/// The inputs of a decision.
pub struct History<'a> {
    /// Every commit, oldest first: (seq, time).
    pub commits: &'a [(CommitSeq, Time)],
    pub named: &'a [CommitSeq],
    /// For `keep_versions`: per live file, the commits that first hold
    /// each of its versions, oldest first.
    pub versions: &'a [Vec<CommitSeq>],
    /// For `keep_checkpoints`: per directory that holds checkpoints, the
    /// commits that completed them, oldest first.
    pub checkpoints: &'a [Vec<CommitSeq>],
    pub now: Time,
}

/// The commits `policy` keeps of `h`.
pub fn decide(policy: &Policy, h: &History) -> Kept {
    let mut out = Kept::default();
    let exists: HashSet<CommitSeq> = h.commits.iter().map(|c| c.0).collect();
    if !policy.has_rules() {
        out.kept = h.commits.iter().map(|c| c.0).collect();
    }
    let protect = |out: &mut Kept, s: CommitSeq| {
        if exists.contains(&s) {
            out.kept.insert(s);
            out.protected.insert(s);
        }
    };
    if let Some((head, _)) = h.commits.last() {
        protect(&mut out, *head);
    }
    for s in h.named {
        protect(&mut out, *s);
    }
    if let Some(w) = policy.keep_within {
        let from = h.now.as_nanos() - w as i128 * 1_000_000_000;
        for (s, t) in h.commits {
            if t.as_nanos() > from {
                protect(&mut out, *s);
            }
        }
    }
    if let Some(n) = policy.keep_versions {
        for file in h.versions {
            for s in file.iter().rev().take(n as usize) {
                protect(&mut out, *s);
            }
        }
    }
    if let Some(n) = policy.keep_checkpoints {
        for group in h.checkpoints {
            for s in group.iter().rev().take(n as usize) {
                protect(&mut out, *s);
            }
        }
    }
    if let Some(n) = policy.keep_last {
        for (s, _) in h.commits.iter().rev().take(n as usize) {
            out.kept.insert(*s);
        }
    }
    for (n, period) in policy.periods() {
        let Some(mut left) = n else { continue };
        let mut last: Option<i64> = None;
        for (s, t) in h.commits.iter().rev() {
            if left == 0 {
                break;
            }
            let k = period.key(*t);
            if last != Some(k) {
                last = Some(k);
                out.kept.insert(*s);
                left -= 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time { secs, nanos: 0 }
    }

    /// Commits 1..=n at the given times.
    fn commits(times: &[i64]) -> Vec<(CommitSeq, Time)> {
        times
            .iter()
            .enumerate()
            .map(|(i, s)| (CommitSeq(i as u64 + 1), t(*s)))
            .collect()
    }

    fn kept(p: &Policy, c: &[(CommitSeq, Time)], named: &[u64], now: i64) -> Vec<u64> {
        let named: Vec<CommitSeq> = named.iter().map(|s| CommitSeq(*s)).collect();
        let h = History {
            commits: c,
            named: &named,
            versions: &[],
            checkpoints: &[],
            now: t(now),
        };
        decide(p, &h).kept.into_iter().map(|s| s.0).collect()
    }

    #[test]
    fn sizes_parse_with_units_and_shares() {
        assert_eq!(SizeBound::parse("100M"), Ok(SizeBound::Bytes(100 << 20)));
        assert_eq!(SizeBound::parse("2GiB"), Ok(SizeBound::Bytes(2 << 30)));
        assert_eq!(SizeBound::parse("1.5k"), Ok(SizeBound::Bytes(1536)));
        assert_eq!(SizeBound::parse("4096"), Ok(SizeBound::Bytes(4096)));
        assert_eq!(SizeBound::parse("80%"), Ok(SizeBound::Percent(80.0)));
        assert!(SizeBound::parse("0%").is_err());
        assert!(SizeBound::parse("12 parsecs").is_err());
        assert!(SizeBound::parse("-5G").is_err());
        assert_eq!(SizeBound::Percent(50.0).bytes(1000), 500);
    }

    #[test]
    fn no_rule_keeps_everything() {
        let c = commits(&[10, 20, 30]);
        assert_eq!(kept(&Policy::default(), &c, &[], 100), [1, 2, 3]);
        let only_size = Policy {
            max_size: Some(SizeBound::Bytes(1)),
            ..Default::default()
        };
        assert_eq!(kept(&only_size, &c, &[], 100), [1, 2, 3]);
    }

    #[test]
    fn keep_last_keeps_the_newest_and_the_named_and_the_head() {
        let c = commits(&[10, 20, 30, 40, 50]);
        let p = Policy {
            keep_last: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&p, &c, &[], 100), [4, 5]);
        assert_eq!(kept(&p, &c, &[1], 100), [1, 4, 5]);
        let zero = Policy {
            keep_last: Some(0),
            ..Default::default()
        };
        assert_eq!(kept(&zero, &c, &[], 100), [5], "the head is always kept");
    }

    #[test]
    fn keep_within_keeps_every_commit_younger_than_the_duration() {
        let c = commits(&[10, 20, 30, 40, 50]);
        let p = Policy {
            keep_within: Some(25),
            ..Default::default()
        };
        // now 60: younger than 25 s means after 35.
        assert_eq!(kept(&p, &c, &[], 60), [4, 5]);
    }

    #[test]
    fn periods_keep_the_newest_commit_of_each_of_the_last_n_periods_that_have_one() {
        // Minutes 0, 0, 1, 3, 3 (seconds 5, 50, 70, 190, 200).
        let c = commits(&[5, 50, 70, 190, 200]);
        let p = Policy {
            keep_minutely: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&p, &c, &[], 300), [3, 5]);
        let p3 = Policy {
            keep_minutely: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&p3, &c, &[], 300), [2, 3, 5]);
        // Hours, days: 3 commits an hour apart, then a day later.
        let c = commits(&[0, 3600, 3700, 90_000]);
        let h = Policy {
            keep_hourly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&h, &c, &[], 100_000), [3, 4]);
        let d = Policy {
            keep_daily: Some(5),
            ..Default::default()
        };
        assert_eq!(kept(&d, &c, &[], 100_000), [3, 4]);
    }

    #[test]
    fn weeks_are_iso_weeks_and_months_calendar_months() {
        // 2026-11-29 is a Sunday (ISO week 48), 2026-11-30 a Monday (week 49),
        // 2026-12-01 in the same week, and in December.
        let base = chrono::NaiveDate::from_ymd_opt(2026, 11, 29)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        let c = commits(&[base, base + 86400, base + 2 * 86400]);
        let w = Policy {
            keep_weekly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&w, &c, &[], base + 3 * 86400), [1, 3]);
        let m = Policy {
            keep_monthly: Some(2),
            ..Default::default()
        };
        // Nov 29 and Nov 30 are November, Dec 1 December.
        assert_eq!(kept(&m, &c, &[], base + 3 * 86400), [2, 3]);
    }

    #[test]
    fn keep_versions_keeps_the_commits_that_first_hold_each_files_last_versions() {
        let c = commits(&[10, 20, 30, 40, 50, 60]);
        let versions = vec![
            vec![CommitSeq(1), CommitSeq(2), CommitSeq(4)],
            vec![CommitSeq(3)],
        ];
        let p = Policy {
            keep_versions: Some(2),
            ..Default::default()
        };
        let h = History {
            commits: &c,
            named: &[],
            versions: &versions,
            checkpoints: &[],
            now: t(100),
        };
        let k = decide(&p, &h);
        let got: Vec<u64> = k.kept.iter().map(|s| s.0).collect();
        assert_eq!(got, [2, 3, 4, 6]);
        assert_eq!(k.protected, k.kept, "versions and the head are protected");
    }

    #[test]
    fn rules_add_up_and_only_some_are_protected() {
        let c = commits(&[10, 20, 30, 40, 50]);
        let p = Policy {
            keep_last: Some(1),
            keep_within: Some(15),
            ..Default::default()
        };
        let named = [CommitSeq(1)];
        let h = History {
            commits: &c,
            named: &named,
            versions: &[],
            checkpoints: &[],
            now: t(50),
        };
        let k = decide(&p, &h);
        assert_eq!(k.kept.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 4, 5]);
        assert_eq!(
            k.protected.iter().map(|s| s.0).collect::<Vec<_>>(),
            [1, 4, 5]
        );
        let p2 = Policy {
            keep_last: Some(2),
            ..Default::default()
        };
        let k = decide(&p2, &h);
        assert_eq!(k.kept.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 4, 5]);
        assert_eq!(k.protected.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 5]);
    }

    #[test]
    fn keep_checkpoints_keeps_the_last_n_of_each_checkpoint_directory() {
        let c = commits(&[10, 20, 30, 40, 50, 60, 70]);
        // Two runs: checkpoints at commits 1, 3, 5 and at 2, 4.
        let groups = vec![
            vec![CommitSeq(1), CommitSeq(3), CommitSeq(5)],
            vec![CommitSeq(2), CommitSeq(4)],
        ];
        let p = Policy {
            keep_checkpoints: Some(1),
            ..Default::default()
        };
        let h = History {
            commits: &c,
            named: &[CommitSeq(1)],
            versions: &[],
            checkpoints: &groups,
            now: t(100),
        };
        let k = decide(&p, &h);
        let got: Vec<u64> = k.kept.iter().map(|s| s.0).collect();
        assert_eq!(
            got,
            [1, 4, 5, 7],
            "pinned 1, the last of each run, the head"
        );
        assert_eq!(k.protected, k.kept);
        assert!(p.describe().contains("keep-checkpoints 1"));
    }
}
