//! Training checkpoints through a real mount: a commit at the instant each
//! one completes (marker files, directories renamed into place), `revfs
//! checkpoints` listing every one ever saved with a path that `cp -a` and
//! the frameworks themselves restore from, `.snapshots/checkpoints/`,
//! `--keep-checkpoints` and pins, kill -9 right after a save, and recover.
// Tests may unwrap; common/ signals its own children with libc.
#![allow(clippy::unwrap_used, unsafe_code)]

mod common;

use common::{BIN, Mount, Rng, digest, os};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `revfs ARGS` that must succeed; its standard output.
fn run(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "revfs {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `revfs checkpoints TARGET --json`.
fn checkpoints(target: &Path) -> Vec<serde_json::Value> {
    let out = run(&[os("checkpoints"), target.as_os_str(), os("--json")]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The checkpoints of `target` once there are `n` (a marker created and
/// closed completes at the kernel's RELEASE of it, which close(2) does not
/// wait for).
fn checkpoints_when(target: &Path, n: usize) -> Vec<serde_json::Value> {
    common::wait_until(
        "the checkpoint to complete",
        Duration::from_secs(10),
        || checkpoints(target).len() >= n,
    );
    checkpoints(target)
}

fn write(p: &Path, b: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, b).unwrap();
}

/// What a Hugging Face Trainer leaves in `checkpoint-STEP/`, in its order
/// (trainer_state.json last).
fn hf_files(step: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Rng::new(step);
    vec![
        ("model.safetensors", rng.bytes(300_000)),
        ("optimizer.pt", rng.bytes(200_000)),
        ("scheduler.pt", format!("lr at {step}").into_bytes()),
        (
            "trainer_state.json",
            format!("{{\"global_step\": {step}}}").into_bytes(),
        ),
    ]
}

/// Saves checkpoint-STEP under `out` as the Trainer does, then rotates
/// (save_total_limit = 2).
fn hf_save(out: &Path, step: u64) {
    let dir = out.join(format!("checkpoint-{step}"));
    for (name, b) in hf_files(step) {
        write(&dir.join(name), &b);
    }
    let old = out.join(format!("checkpoint-{}", step.saturating_sub(200)));
    if step > 200 && old.exists() {
        fs::remove_dir_all(old).unwrap();
    }
}

/// Every file of checkpoint-STEP as saved, under directory `d`.
fn assert_hf_at(d: &Path, step: u64) {
    let mut names: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = hf_files(step).iter().map(|f| f.0.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "{}", d.display());
    for (name, b) in hf_files(step) {
        assert_eq!(
            digest(&fs::read(d.join(name)).unwrap()),
            digest(&b),
            "{name}"
        );
    }
}

#[test]
fn a_job_that_rotates_its_checkpoints_finds_every_one_it_saved_restorable() {
    let Some(mut m) = Mount::new(&["--commit-interval", "1h"]) else {
        return;
    };
    let out = m.p("run/out");
    for step in [100, 200, 300, 400, 500] {
        hf_save(&out, step);
    }
    // DeepSpeed: global_stepN/ then the `latest` tag naming it.
    write(&m.p("ds/global_step7/mp_rank_00_model_states.pt"), b"ds 7");
    write(&m.p("ds/latest"), b"global_step7\n");
    // A directory renamed from a temporary name, and one that is not.
    write(&m.p("atomic/5.tmp/state.bin"), b"five");
    fs::rename(m.p("atomic/5.tmp"), m.p("atomic/5")).unwrap();
    write(&m.p("data/shard-a/x"), b"x");
    fs::rename(m.p("data/shard-a"), m.p("data/shard-b")).unwrap();

    // No commit interval passed: each save made its own commit.
    let list = checkpoints(&m.mnt);
    let dirs: Vec<&str> = list
        .iter()
        .map(|c| c["directory"].as_str().unwrap())
        .collect();
    assert_eq!(
        dirs,
        [
            "run/out/checkpoint-100",
            "run/out/checkpoint-200",
            "run/out/checkpoint-300",
            "run/out/checkpoint-400",
            "run/out/checkpoint-500",
            "ds/global_step7",
            "atomic/5"
        ]
    );
    let steps: Vec<u64> = list.iter().map(|c| c["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [100, 200, 300, 400, 500, 7, 5]);
    let deleted: Vec<bool> = list.iter().map(|c| c["deleted"] == true).collect();
    assert_eq!(deleted, [true, true, true, false, false, false, false]);
    for c in &list[..5] {
        let size: usize = hf_files(c["step"].as_u64().unwrap())
            .iter()
            .map(|f| f.1.len())
            .sum();
        assert_eq!(c["size"], size as u64, "{c}");
        assert_eq!(c["files"], 4, "{c}");
        assert!(c["time"].as_str().unwrap().ends_with('Z'), "{c}");
        assert_eq!(c["pinned"], false);
    }
    assert_eq!(list[5]["marker"], "ds/latest");
    // Oldest first, one commit each.
    let commits: Vec<u64> = list.iter().map(|c| c["commit"].as_u64().unwrap()).collect();
    assert!(commits.windows(2).all(|w| w[0] < w[1]), "{commits:?}");

    // The one the job deleted comes back whole with cp -a.
    let first = PathBuf::from(list[0]["path"].as_str().unwrap());
    assert!(
        first.starts_with(m.p(".snapshots/checkpoints")),
        "{first:?}"
    );
    let restored = m.tmp.path().join("restored");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&first)
        .arg(&restored)
        .status()
        .unwrap();
    assert!(st.success());
    assert_hf_at(&restored, 100);
    for c in &list[..5] {
        assert_hf_at(
            Path::new(c["path"].as_str().unwrap()),
            c["step"].as_u64().unwrap(),
        );
    }
    assert_eq!(
        fs::read(
            PathBuf::from(list[5]["path"].as_str().unwrap()).join("mp_rank_00_model_states.pt")
        )
        .unwrap(),
        b"ds 7"
    );

    // The view is listed under .snapshots and read-only, root included.
    let names: Vec<String> = fs::read_dir(m.p(".snapshots/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(names.contains(&list[0]["name"].as_str().unwrap().to_string()));
    assert!(
        fs::read_dir(m.p(".snapshots"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "checkpoints")
    );
    let e = fs::write(first.join("model.safetensors"), b"x").unwrap_err();
    assert_eq!(common::errno(e), libc::EROFS);
    let e = fs::remove_dir_all(&first).unwrap_err();
    assert_eq!(common::errno(e), libc::EROFS);
    let e = fs::create_dir(m.p(".snapshots/checkpoints/new")).unwrap_err();
    assert_eq!(common::errno(e), libc::EROFS);

    // The table form, and the same after a remount.
    let text = run(&[os("checkpoints"), m.mnt.as_os_str()]);
    assert!(
        text.contains("checkpoint-100") && text.contains("deleted"),
        "{text}"
    );
    m.remount(&[]);
    let again = checkpoints(&m.mnt);
    assert_eq!(again.len(), 7);
    assert_hf_at(Path::new(again[1]["path"].as_str().unwrap()), 200);
    m.unmount();
    // Of the store, unmounted: paths relative to the mount.
    let offline = checkpoints(&m.store);
    assert_eq!(
        offline[0]["path"],
        format!(
            ".snapshots/checkpoints/{}",
            list[0]["name"].as_str().unwrap()
        )
    );
    common::verify_clean(&m.store);
}

#[test]
fn every_checkpoint_of_a_multi_process_job_has_every_shard_in_every_commit() {
    // Commits every 10 ms land in the middle of saves.
    let Some(m) = Mount::new(&["--commit-interval", "10ms"]) else {
        return;
    };
    let (ranks, steps) = (4, 8);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/rank_writer.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&m.mnt)
        .arg(ranks.to_string())
        .arg(steps.to_string())
        .arg("700000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = checkpoints(&m.mnt);
    let listed: Vec<&str> = list
        .iter()
        .map(|c| c["directory"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..steps).map(|s| format!("ckpt/step_{s}")).collect();
    assert_eq!(listed, want);
    for c in &list {
        let dir = PathBuf::from(c["path"].as_str().unwrap());
        let step = c["step"].as_u64().unwrap();
        let shards = saved["shards"][format!("step_{step}")].as_object().unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = shards.keys().cloned().collect();
        want.push(".metadata".into());
        want.sort();
        assert_eq!(names, want, "{c}");
        for (name, h) in shards {
            assert_eq!(sha256(&dir.join(name)), h.as_str().unwrap(), "{c} {name}");
        }
    }
    // Every commit that holds a step's .metadata (as `revfs log` finds
    // them) holds every shard it names, as saved.
    for s in 0..steps {
        let log = run(&[
            os("log"),
            m.p(&format!("ckpt/step_{s}/.metadata")).as_os_str(),
            os("--json"),
        ]);
        let log: serde_json::Value = serde_json::from_str(&log).unwrap();
        for v in log.as_array().unwrap() {
            let meta = PathBuf::from(v["path"].as_str().unwrap());
            let dir = meta.parent().unwrap();
            let names: serde_json::Value =
                serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
            for (name, h) in names.as_object().unwrap() {
                assert_eq!(sha256(&dir.join(name)), h.as_str().unwrap(), "{v} {name}");
            }
        }
    }
}

/// SHA-256 of a file by coreutils' sha256sum (the rank writer hashes with
/// Python's hashlib).
fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", p.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn kill_9_right_after_a_save_returns_keeps_that_checkpoint_whole() {
    // No commit but the checkpoint's own could have made it durable.
    let Some(mut m) = Mount::new(&["--commit-interval", "1h"]) else {
        return;
    };
    let out = m.p("out");
    hf_save(&out, 100);
    hf_save(&out, 200);
    m.crash();
    m.start(&[]);
    let list = checkpoints(&m.mnt);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_hf_at(Path::new(list[1]["path"].as_str().unwrap()), 200);
    assert_hf_at(&m.p("out/checkpoint-200"), 200);
}

#[test]
fn keep_checkpoints_keeps_the_last_n_of_each_directory_and_a_pin_keeps_one_for_good() {
    let Some(mut m) = Mount::new(&["--commit-interval", "1h"]) else {
        return;
    };
    for step in (1..=5).map(|s| s * 100) {
        hf_save(&m.p("a"), step);
        // Churn between saves: commits that hold no checkpoint.
        write(&m.p("log.txt"), format!("after {step}").as_bytes());
        common::commit(&m.store);
    }
    for step in [1, 2, 3] {
        hf_save(&m.p("b"), step);
    }
    let list = checkpoints(&m.mnt);
    assert_eq!(list.len(), 8);
    let first = list[0]["name"].as_str().unwrap().to_string();
    let pinned = run(&[os("checkpoints"), os("pin"), m.mnt.as_os_str(), os(&first)]);
    assert!(pinned.contains("pinned"), "{pinned}");
    let prune = |m: &Mount| {
        let policy = ["--keep-checkpoints", "2", "--keep-last", "1", "--json"];
        let mut args = vec![os("prune"), m.mnt.as_os_str()];
        args.extend(policy.iter().map(os));
        run(&args)
    };
    let out = prune(&m);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["commits_dropped"].as_u64().unwrap() > 0, "{r}");
    let kept: Vec<(String, bool)> = checkpoints(&m.mnt)
        .iter()
        .map(|c| {
            (
                c["directory"].as_str().unwrap().to_string(),
                c["pinned"] == true,
            )
        })
        .collect();
    let want = [
        ("a/checkpoint-100", true),
        ("a/checkpoint-400", false),
        ("a/checkpoint-500", false),
        ("b/checkpoint-2", false),
        ("b/checkpoint-3", false),
    ];
    let want: Vec<(String, bool)> = want.iter().map(|(d, p)| (d.to_string(), *p)).collect();
    assert_eq!(kept, want);
    for c in checkpoints(&m.mnt)
        .iter()
        .filter(|c| c["directory"].as_str().unwrap().starts_with("a/"))
    {
        assert_hf_at(
            Path::new(c["path"].as_str().unwrap()),
            c["step"].as_u64().unwrap(),
        );
    }
    // Unpinned, the next prune lets it go.
    run(&[
        os("checkpoints"),
        os("unpin"),
        m.mnt.as_os_str(),
        os(&first),
    ]);
    prune(&m);
    assert_eq!(checkpoints(&m.mnt).len(), 4);
    let (ok, e) = common::revfs(&[
        os("checkpoints"),
        os("pin"),
        m.mnt.as_os_str(),
        os("nope@2020-01-01T00:00:00Z"),
    ]);
    assert!(!ok && e.contains("no such checkpoint"), "{e}");
    m.unmount();
    common::verify_clean(&m.store);
}

#[test]
fn checkpoints_come_back_with_a_store_recovered_from_the_replica() {
    let Some((mut m, replica)) = Mount::with_replica(&["--commit-interval", "1h"]) else {
        return;
    };
    for step in [100, 200, 300] {
        hf_save(&m.p("out"), step);
    }
    let before = checkpoints(&m.mnt);
    common::wait_replicated(&m.store, Duration::from_secs(60));
    m.unmount();
    let new = m.tmp.path().join("recovered");
    run(&[os("recover"), replica.as_os_str(), new.as_os_str()]);
    let after = checkpoints(&new);
    let key = |l: &[serde_json::Value]| -> Vec<(String, String, u64, bool)> {
        l.iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["directory"].as_str().unwrap().to_string(),
                    c["size"].as_u64().unwrap(),
                    c["deleted"] == true,
                )
            })
            .collect()
    };
    assert_eq!(key(&after), key(&before));
    let mnt2 = m.tmp.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let mut r = Mount::attach(new, mnt2, m.tmp.path().join("daemon2.log"));
    r.start(&[]);
    let list = checkpoints(&r.mnt);
    assert_hf_at(Path::new(list[0]["path"].as_str().unwrap()), 100);
    r.unmount();
}

#[test]
fn a_replica_left_by_a_killed_daemon_recovers_every_checkpoint_it_lists_whole() {
    let Some((mut m, replica)) = Mount::with_replica(&["--commit-interval", "1h"]) else {
        return;
    };
    for step in [100, 200, 300] {
        hf_save(&m.p("out"), step);
    }
    common::wait_replicated(&m.store, Duration::from_secs(60));
    // Two more saves, then kill -9 while the replica may be mid-pack.
    for step in [400, 500] {
        hf_save(&m.p("out"), step);
    }
    m.crash();
    let new = m.tmp.path().join("recovered");
    run(&[os("recover"), replica.as_os_str(), new.as_os_str()]);
    let mnt2 = m.tmp.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let mut r = Mount::attach(new, mnt2, m.tmp.path().join("daemon2.log"));
    r.start(&[]);
    let list = checkpoints(&r.mnt);
    let steps: Vec<u64> = list.iter().map(|c| c["step"].as_u64().unwrap()).collect();
    assert!(
        steps.len() >= 3 && steps[..3] == [100, 200, 300],
        "{steps:?}"
    );
    for c in &list {
        assert_hf_at(
            Path::new(c["path"].as_str().unwrap()),
            c["step"].as_u64().unwrap(),
        );
    }
    r.unmount();
    common::verify_clean(&r.store);
}

#[test]
fn markers_are_the_stores_own_setting_and_none_turns_them_off() {
    let Some(mut m) = Mount::new(&[
        "--checkpoint-marker",
        "runs/*/DONE",
        "--commit-interval",
        "1h",
    ]) else {
        return;
    };
    write(&m.p("runs/a/w.bin"), b"a");
    write(&m.p("runs/a/DONE"), b"");
    hf_save(&m.p("hf"), 100);
    let dirs: Vec<String> = checkpoints_when(&m.mnt, 1)
        .iter()
        .map(|c| c["directory"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dirs, ["runs/a"], "the defaults are replaced");
    // Kept in the config: a plain remount watches the same.
    m.remount(&[]);
    write(&m.p("runs/b/DONE"), b"");
    assert_eq!(checkpoints_when(&m.mnt, 2).len(), 2);
    // From a shell: `touch` (made, never written) completes one; `echo >`
    // (open, the descriptor moved to stdout, which closes the first copy,
    // then the write) completes one, with what was written.
    let sh = |cmd: &str| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&m.mnt)
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh("mkdir -p runs/t runs/e && touch runs/t/DONE && echo step-7 > runs/e/DONE");
    let l = checkpoints_when(&m.mnt, 4);
    let mut dirs: Vec<&str> = l.iter().map(|c| c["directory"].as_str().unwrap()).collect();
    // The kernel sends a close's RELEASE without waiting for it, so the
    // shell's two closes may reach the daemon in either order.
    dirs[2..].sort();
    assert_eq!(dirs, ["runs/a", "runs/b", "runs/e", "runs/t"], "{l:?}");
    let e = l.iter().find(|c| c["directory"] == "runs/e").unwrap();
    let p = PathBuf::from(e["path"].as_str().unwrap());
    assert_eq!(fs::read(p.join("DONE")).unwrap(), b"step-7\n");
    m.remount(&["--checkpoint-marker", "none"]);
    write(&m.p("runs/c/DONE"), b"");
    assert_eq!(checkpoints(&m.mnt).len(), 4);
    m.unmount();
    let (ok, e) = common::revfs(&[
        os("mount"),
        m.store.as_os_str(),
        m.mnt.as_os_str(),
        os("--checkpoint-marker"),
        os("a/[b"),
    ]);
    assert!(!ok && e.contains("checkpoint marker"), "{e}");
    assert!(!common::is_mountpoint(&m.mnt));
}

/// A Python with JAX and orbax-checkpoint (CPU wheels from PyPI), installed
/// once into `target/frameworks-venv/`.
fn frameworks_python() -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/frameworks-venv");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import jax, orbax.checkpoint"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&py) {
        let packages = ["jax==0.10.2", "jaxlib==0.10.2", "orbax-checkpoint==0.12.8"];
        assert!(
            common::pip_venv(&venv, &packages) && ready(&py),
            "installing jax and orbax-checkpoint failed"
        );
    }
    py
}

#[test]
fn orbax_restores_every_step_it_saved_from_the_paths_revfs_lists() {
    let Some(m) = Mount::new(&[]) else {
        return;
    };
    let py = frameworks_python();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/programs/orbax_checkpoints.py"
    );
    let out = Command::new(py)
        .arg(script)
        .arg(BIN)
        .arg(&m.mnt)
        .arg("6")
        .env("JAX_PLATFORMS", "cpu")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        r["live"],
        serde_json::json!([4, 5]),
        "max_to_keep=2 rotated the rest: {r}"
    );
    assert_eq!(r["restored"], serde_json::json!([0, 1, 2, 3, 4, 5]), "{r}");
    assert_eq!(
        r["listed"],
        serde_json::json!([
            [0, true],
            [1, true],
            [2, true],
            [3, true],
            [4, false],
            [5, false]
        ])
    );
}
