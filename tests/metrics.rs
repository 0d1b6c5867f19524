//! `revfs mount --metrics-addr`: Prometheus metrics of a mounted store,
//! scraped over HTTP while it works, checked with Prometheus's own
//! `promtool check metrics`, and moving as they should: a commit moves the
//! commit timestamp, the version counter and the commit histogram; a
//! damaged chunk read through a replica moves the heal counter; verify
//! moves its error counter and its last-success time.
// Tests and examples may unwrap, and kill/signal their own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::metrics::{free_port, get, samples};
use common::{Mount, revfs};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The samples of a scrape by name (labels included), checked by promtool.
fn scrape(port: u16) -> HashMap<String, f64> {
    let (status, body) = get(port, "/metrics");
    assert!(status.contains("200"), "{status}");
    promtool_check(&body);
    samples(&body)
}

fn promtool_check(text: &str) {
    let Ok(mut p) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var("CI").is_err(),
            "promtool is missing (scripts/deps.sh installs it)"
        );
        eprintln!("promtool missing: the format is not checked");
        return;
    };
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn save(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn metrics_pass_promtool_and_move_with_commits_heals_and_verify() {
    let Some((mut m, replica)) = Mount::with_replica(&[]) else {
        return;
    };
    m.unmount();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "--replica",
        replica.to_str().unwrap(),
        "--metrics-addr",
        &addr,
    ];
    m.start(&args);
    let before = scrape(port);
    for name in [
        "revfs_replica_lag_seconds",
        "revfs_replica_lag_bytes",
        "revfs_last_commit_timestamp_seconds",
        "revfs_stored_bytes",
        "revfs_logical_bytes",
        "revfs_versions_total",
        "revfs_commit_duration_seconds_count",
        "revfs_verify_last_success_timestamp_seconds",
        "revfs_verify_errors_total",
        "revfs_healed_chunks_total",
        "revfs_read_errors_total",
        "revfs_direct_reads_total",
        "revfs_piece_reads_total",
        "revfs_plan_projected_bytes",
        "revfs_plan_capacity_bytes",
        "revfs_plan_seconds_until_full",
    ] {
        assert!(before.contains_key(name), "{name} missing: {before:?}");
    }
    assert_eq!(get(port, "/other").0.split(' ').nth(1), Some("404"));
    // A commit moves the commit series.
    std::thread::sleep(Duration::from_millis(1100));
    let data = common::bytes(5, 4 << 20);
    save(&m.p("weights.bin"), &data);
    common::wait_replicated(&m.store, Duration::from_secs(30));
    let after = scrape(port);
    assert!(
        after["revfs_last_commit_timestamp_seconds"]
            > before["revfs_last_commit_timestamp_seconds"],
        "{after:?}"
    );
    assert!(after["revfs_versions_total"] > before["revfs_versions_total"]);
    assert!(
        after["revfs_commit_duration_seconds_count"]
            > before["revfs_commit_duration_seconds_count"]
    );
    assert!(after["revfs_stored_bytes"] > before["revfs_stored_bytes"]);
    assert!(after["revfs_logical_bytes"] >= (4 << 20) as f64);
    assert_eq!(after["revfs_replica_lag_bytes"], 0.0);
    // A clean verify through the daemon sets its last-success time.
    let (ok, out) = revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(ok, "{out}");
    let v = scrape(port);
    assert!(
        v["revfs_verify_last_success_timestamp_seconds"] > 0.0,
        "{v:?}"
    );
    assert_eq!(v["revfs_verify_errors_total"], 0.0);
    // Damage: verify counts it; a read heals from the replica (counted).
    m.unmount();
    common::flip_in_largest_pack(&m.store);
    m.start(&args);
    let (ok, out) = revfs(&["verify".as_ref(), m.store.as_os_str()]);
    assert!(!ok, "{out}");
    let bad = scrape(port);
    assert!(bad["revfs_verify_errors_total"] >= 1.0, "{bad:?}");
    assert!(fs::read(m.p("weights.bin")).unwrap() == data);
    let healed = scrape(port);
    assert!(healed["revfs_healed_chunks_total"] >= 1.0, "{healed:?}");
    assert_eq!(healed["revfs_read_errors_total"], 0.0);
    m.unmount();
}

#[test]
fn a_read_with_no_good_copy_is_counted() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    save(&m.p("w.bin"), &common::bytes(6, 4 << 20));
    m.unmount();
    common::flip_in_largest_pack(&m.store);
    let port = free_port();
    m.start(&["--metrics-addr", &format!("127.0.0.1:{port}")]);
    assert_eq!(scrape(port)["revfs_read_errors_total"], 0.0);
    let e = fs::read(m.p("w.bin")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(scrape(port)["revfs_read_errors_total"] >= 1.0);
    m.unmount();
}

#[test]
fn a_taken_metrics_address_fails_the_mount_with_a_clear_error() {
    let Some(mut m) = Mount::new(&[]) else {
        return;
    };
    m.unmount();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(common::BIN)
        .args(["mount", "--metrics-addr", &addr])
        .arg(&m.store)
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-addr"), "{err}");
    assert!(!common::is_mountpoint(&m.mnt));
}

#[test]
fn the_example_alert_rules_pass_promtool() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/alerts.yml");
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => assert!(std::env::var("CI").is_err(), "promtool: {e}"),
    }
}
