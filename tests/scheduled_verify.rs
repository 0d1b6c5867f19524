//! `mount --verify-every`: scheduled verification re-reads every object at
//! a paced rate; damage it finds is counted, healed from the replica and
//! shown by `status`; a pass stopped by an unmount resumes where it stopped;
//! a damaged replica record is found (by every pass with
//! `--verify-replica-full`, within eight sampled passes without) and
//! rewritten from the primary.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{Mount, status, verify_clean, wait_until};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn save(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_scheduled_pass_finds_damage_heals_it_and_status_shows_it() {
    let Some((mut m, replica)) = Mount::with_replica(&[]) else {
        return;
    };
    let data = common::bytes(8, 6 << 20);
    save(&m.p("weights.bin"), &data);
    common::wait_replicated(&m.store, Duration::from_secs(30));
    m.unmount();
    assert!(status(&m.store)["verify"]["last_ok"].is_null());
    common::flip_in_largest_pack(&m.store);
    m.start(&[
        "--replica",
        replica.to_str().unwrap(),
        "--verify-every",
        "1h",
        "--verify-rate",
        "1G",
    ]);
    wait_until(
        "the pass to find the damage",
        Duration::from_secs(60),
        || !status(&m.store)["verify"]["last_error"].is_null(),
    );
    let s = status(&m.store);
    assert!(s["verify"]["bytes_checked"].as_u64().unwrap() > 0, "{s}");
    assert!(
        m.log_text().contains("healed from the replica"),
        "{}",
        m.log_text()
    );
    wait_until(
        "the next pass to be scheduled",
        Duration::from_secs(60),
        || !status(&m.store)["verify"]["next"].is_null(),
    );
    // A pass with damage is not a clean one.
    assert!(status(&m.store)["verify"]["last_ok"].is_null());
    assert!(fs::read(m.p("weights.bin")).unwrap() == data);
    m.unmount();
    // The healed copy is in the store now.
    verify_clean(&m.store);
}

#[test]
fn a_pass_stopped_by_an_unmount_resumes_where_it_stopped() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    save(&m.p("a.bin"), &common::bytes(9, 24 << 20));
    m.unmount();
    // 24 MiB at 4 MiB/s: about 6 s a pass; stopped after about 3.
    let args = ["--verify-every", "1h", "--verify-rate", "4M"];
    m.start(&args);
    wait_until(
        "the pass to save where it is",
        Duration::from_secs(60),
        || {
            status(&m.store)["verify"]["bytes_checked"]
                .as_u64()
                .unwrap()
                > 0
        },
    );
    m.unmount();
    let mid = status(&m.store)["verify"].clone();
    assert!(mid["last_ok"].is_null(), "{mid}");
    let checked = mid["bytes_checked"].as_u64().unwrap();
    assert!(checked > 0 && checked < 24 << 20, "{mid}");
    m.start(&args);
    wait_until("the pass to end", Duration::from_secs(60), || {
        !status(&m.store)["verify"]["last_ok"].is_null()
    });
    m.unmount();
    let log = m.log_text();
    assert_eq!(log.matches("a pass begins").count(), 1, "{log}");
    assert_eq!(log.matches("pass done").count(), 1, "{log}");
    let done = status(&m.store)["verify"]["bytes_checked"]
        .as_u64()
        .unwrap();
    assert!((24 << 20..30 << 20).contains(&done), "{done}");
}

/// `revfs verify STORE --replica REPLICA`: whether clean, and what it said.
fn verify_with_replica(store: &Path, replica: &Path) -> (bool, String) {
    common::revfs(&[
        "verify".as_ref(),
        store.as_os_str(),
        "--replica".as_ref(),
        replica.as_os_str(),
    ])
}

/// A replica whose largest pack has a flipped bit, found and rewritten by
/// scheduled verification mounted with `args` (plus the replica).
fn replica_damage_found_and_rewritten(args: &[&str]) {
    let Some((mut m, replica)) = Mount::with_replica(&[]) else {
        return;
    };
    let data = common::bytes(11, 6 << 20);
    save(&m.p("weights.bin"), &data);
    common::wait_replicated(&m.store, Duration::from_secs(30));
    m.unmount();
    common::flip_in_largest_pack(&replica);
    let (ok, out) = verify_with_replica(&m.store, &replica);
    assert!(!ok, "the flipped bit is not found by verify: {out}");
    let mut with = vec!["--replica", replica.to_str().unwrap()];
    with.extend_from_slice(args);
    m.start(&with);
    wait_until(
        "a pass to find the replica's damage",
        Duration::from_secs(90),
        || {
            status(&m.store)["verify"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("replica"))
        },
    );
    wait_until(
        "the log to say it was rewritten",
        Duration::from_secs(10),
        || m.log_text().contains("rewritten from the primary"),
    );
    assert!(fs::read(m.p("weights.bin")).unwrap() == data);
    m.unmount();
    let (ok, out) = verify_with_replica(&m.store, &replica);
    assert!(ok, "the replica is still damaged: {out}");
}

#[test]
fn every_pass_with_verify_replica_full_finds_and_rewrites_a_damaged_replica_record() {
    replica_damage_found_and_rewritten(&[
        "--verify-every",
        "1h",
        "--verify-rate",
        "1G",
        "--verify-replica-full",
    ]);
}

#[test]
fn sampled_passes_find_a_damaged_replica_record_within_eight_passes() {
    replica_damage_found_and_rewritten(&["--verify-every", "1s", "--verify-rate", "1G"]);
}

#[test]
fn an_offline_verify_that_finds_everything_intact_is_the_last_ok_status_shows() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    save(&m.p("a.bin"), &common::bytes(3, 1 << 20));
    m.unmount();
    assert!(status(&m.store)["verify"]["last_ok"].is_null());
    verify_clean(&m.store);
    let s = status(&m.store);
    assert!(s["verify"]["last_ok"].is_string(), "{s}");
}
