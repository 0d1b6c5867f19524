#!/usr/bin/env python3
"""The deltas section of scripts/bench.sh (issue: checkpoint histories at a
fraction of the best backup tool's size). For the bf16 workload (seed 1) and
the f32 one (seed 42), 12 steps each, in the same run:

* stored bytes after every step: revfs with a recompressing round after each
  step (what a mounted store does in the background: zstd, byte planes, old
  versions as deltas of the next), restic (default compression), borg
  (zstd level 3), and rustic with 64 KiB chunks when `rustic` is installed;
* the bytes each full-training step added, against its checkpoint's size;
* the codec mix and chain lengths (from `revfs prune --json` and `status`);
* cold reads (each in a fresh mount) of the newest, the oldest and the
  middle version of the checkpoint against the same files in a store of the same steps whose
  rounds made no deltas (`--no-deltas`: zstd, byte planes), and in one
  without any round (the write path's lz4).

Usage (from bench.sh): bench_deltas.py REVFS_BIN WORKDIR SCALE WORKLOAD_GENERATOR
Prints one JSON object on stdout; progress on stderr.
"""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_perf as perf  # noqa: E402  (its helpers: replay_step, RevfsMount, du, seq_read)

BIN, WORK, SCALE, GEN = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
STEPS = 12
CKPT = os.path.join("checkpoints", "model.safetensors")


def log(*a):
    print("==", *a, file=sys.stderr, flush=True)


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)


def out(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def commit(m):
    f = os.path.join(m.mnt, CKPT)
    if os.path.exists(f):
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)  # the step is committed before its bytes are counted
        os.close(fd)


def revfs_steps(manifest, name, rounds):
    """Ingests every step; with `rounds` (extra `prune` flags), a
    recompressing prune after each.
    Returns (store bytes after each step, prune reports, the unmounted mount)."""
    m = perf.RevfsMount(os.path.join(WORK, f"store-{name}"), os.path.join(WORK, f"mnt-{name}"))
    sizes, reports = [], []
    try:
        for step in range(len(manifest["step_info"])):
            perf.replay_step(manifest, step, m.mnt)
            commit(m)
            if rounds is not None:
                reports.append(json.loads(out(BIN, "prune", m.mnt, "--recompress", *rounds, "--json")))
            sizes.append(perf.du(os.path.join(m.store, "packs")))
            time.sleep(1.1)  # one commit a step, as a job saving every few minutes
    finally:
        m.close()
    return sizes, reports, m


def peers(manifest, name):
    """Stored bytes after each step for restic, borg and (if installed) rustic."""
    env = dict(os.environ, RESTIC_PASSWORD="bench", RUSTIC_PASSWORD="bench", BORG_PASSPHRASE="",
               BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
    src = perf.fresh(os.path.join(WORK, f"src-{name}"))
    tools = {"restic": os.path.join(WORK, f"restic-{name}"), "borg": os.path.join(WORK, f"borg-{name}")}
    run("restic", "init", "--repo", tools["restic"], "--repository-version", "2", env=env)
    run("borg", "init", "--encryption", "none", tools["borg"], env=env)
    if shutil.which("rustic"):
        tools["rustic_64k"] = os.path.join(WORK, f"rustic-{name}")
        run("rustic", "-r", tools["rustic_64k"], "init", "--set-chunk-size", "64KiB",
            "--set-chunk-min-size", "16KiB", "--set-chunk-max-size", "256KiB", env=env)
    sizes = {t: [] for t in tools}
    for step in range(len(manifest["step_info"])):
        perf.replay_step(manifest, step, src)
        run("restic", "--repo", tools["restic"], "backup", "--quiet", ".", cwd=src, env=env)
        run("borg", "create", "--compression", "zstd,3", f"{tools['borg']}::s{step}", ".", cwd=src, env=env)
        if "rustic_64k" in tools:
            run("rustic", "-r", tools["rustic_64k"], "backup", ".", cwd=src, env=env)
        for t, repo in tools.items():
            sizes[t].append(perf.du(repo))
    for p in [src, *tools.values()]:
        shutil.rmtree(p, ignore_errors=True)
    return sizes


def cold_read(path):
    """MB/s of a cold sequential read (the kernel's caches dropped)."""
    return perf.seq_read(path)


def version(mnt, which):
    """The checkpoint's newest, oldest or middle version (the one halfway
    along its history), by its path."""
    if which == "newest":
        return os.path.join(mnt, CKPT)
    log = json.loads(out(BIN, "log", os.path.join(mnt, CKPT), "--json"))
    return os.path.join(mnt, log[0 if which == "oldest" else len(log) // 2]["path"])


def one(dtype, seed):
    name = f"{dtype}-s{seed}"
    wl = os.path.join(WORK, f"wl-{name}")
    scale = 0.3 * SCALE
    log(f"deltas: workload {name} scale {scale} steps {STEPS}")
    subprocess.run([sys.executable, GEN, wl, "--seed", str(seed), "--dtype", dtype, "--scale", str(scale),
                    "--steps", str(STEPS)], check=True, stdout=subprocess.DEVNULL)
    manifest = json.load(open(os.path.join(wl, "manifest.json")))
    kinds = [s["kind"] for s in manifest["step_info"]]
    ckpt = manifest["step_info"][0]["checkpoint_bytes"]
    log("deltas: revfs with a recompressing round after each step")
    sizes, reports, m = revfs_steps(manifest, name, rounds=[])
    log("deltas: revfs with rounds that make no deltas (--no-deltas), and with none")
    cold_sizes, _, c = revfs_steps(manifest, name + "-cold", rounds=["--no-deltas"])
    plain_sizes, _, p = revfs_steps(manifest, name + "-plain", rounds=None)
    # Cold reads, alternating, best of 3: each read in a fresh mount (the
    # daemon's chunk cache would serve a second read, and a newest read
    # would warm the bases of the oldest).
    reads = {w: {"deltas": 0, "cold": 0, "plain": 0} for w in ("newest", "oldest", "middle")}
    status = None
    for _ in range(3):
        for key, store, mnt in (("deltas", m.store, m.mnt), ("cold", c.store, c.mnt), ("plain", p.store, p.mnt)):
            for which in ("newest", "oldest", "middle"):
                mount = perf.RevfsMount(store, mnt)
                try:
                    path = version(mnt, which)
                    reads[which][key] = max(reads[which][key], cold_read(path))
                    if key == "deltas" and status is None:
                        status = mount.status()
                finally:
                    mount.close()
    peer = peers(manifest, name)
    shutil.rmtree(wl, ignore_errors=True)
    shutil.rmtree(m.store, ignore_errors=True)
    shutil.rmtree(p.store, ignore_errors=True)
    shutil.rmtree(c.store, ignore_errors=True)
    diff = lambda xs: [b - a for a, b in zip([0] + xs[:-1], xs)]
    return {
        "dtype": dtype, "seed": seed, "scale": scale, "steps": kinds, "checkpoint_bytes": ckpt,
        "stored_bytes": {"revfs": sizes[-1], "revfs_as_written": plain_sizes[-1], "revfs_no_deltas": cold_sizes[-1],
                         **{t: s[-1] for t, s in peer.items()}},
        "stored_per_step": {"revfs": diff(sizes), **{t: diff(s) for t, s in peer.items()}},
        # What each version costs once it is old: revfs recodes a version
        # in the round after the next step, so the store's growth over that
        # step is the old version's delta (the newest is always whole).
        "stored_per_version": {"revfs": diff(sizes)[1:]},
        "deltas_written": sum(r.get("deltas_written", 0) for r in reports),
        "prune_seconds": [r["seconds"] for r in reports],
        "read_mbs": reads,
        "status": {k: status.get(k) for k in ("stored_bytes", "chunks", "chunk_bytes")},
    }


def main():
    results = {"section": "deltas", "bf16": one("bf16", 1), "f32": one("f32", 42)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
