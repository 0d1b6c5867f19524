#!/usr/bin/env python3
"""Small-files benchmark (scripts/bench.sh small): prints one JSON line.

A dataset of many small files, as image datasets are: FILES files of
2 KiB (Python open/write/close, 1,000 to a directory) created on the disk
itself (direct) and in a revfs mount on the same disk; then `find` and
`du -s` of each tree with cold caches (the mount remounted, so the kernel
forgets what it had looked up). Alternating, best of ROUNDS. Last, the
daemon's resident memory after BIG files are created in one mount (its
VmHWM, the peak).

Usage: bench_small.py BIN WORK SCALE
"""
import json
import os
import shutil
import subprocess
import sys
import time

from mounts import Daemon

BIN, WORK, SCALE = sys.argv[1], sys.argv[2], float(sys.argv[3])
ROUNDS = 2
PER_DIR = 1000
BODY = b"x" * 2048


def log(*a):
    print("==", *a, file=sys.stderr, flush=True)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def create(root, n, seed=0):
    """Creates n files of 2 KiB under root; files per second."""
    t = time.perf_counter()
    for i in range(n):
        d = os.path.join(root, f"d{i // PER_DIR:05}")
        if i % PER_DIR == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"img{i:07}.jpg"), "wb") as f:
            f.write(BODY[: 2048 - (seed % 7)])
    return n / (time.perf_counter() - t)


def timed(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, out


def walk(root, n):
    """(find seconds, du seconds), caches cold for each."""
    drop_caches()
    tf, out = timed(["find", root, "-type", "f"])
    assert out.count("\n") == n, f"find saw {out.count(chr(10))} files of {n}"
    drop_caches()
    td, _ = timed(["du", "-s", root])
    return tf, td


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def main():
    n = max(int(200_000 * SCALE), 2000)
    big = max(int(1_000_000 * SCALE), 10_000)
    res = {k: {"direct": [], "revfs": []} for k in ("create_per_s", "find_s", "du_s")}
    for r in range(ROUNDS):
        for name in (["direct", "revfs"] if r % 2 == 0 else ["revfs", "direct"]):
            log(f"small: {name}, round {r + 1}, {n} files")
            if name == "direct":
                root = os.path.join(WORK, "small-direct")
                shutil.rmtree(root, ignore_errors=True)
                os.makedirs(root)
                res["create_per_s"][name].append(create(root, n, r))
                tf, td = walk(root, n)
                shutil.rmtree(root)
            else:
                store, mnt = os.path.join(WORK, "small-store"), os.path.join(WORK, "small-mnt")
                shutil.rmtree(store, ignore_errors=True)
                subprocess.run([BIN, "init", store], check=True, capture_output=True)
                d = Daemon(BIN, store, mnt)
                try:
                    res["create_per_s"][name].append(create(mnt, n, r))
                finally:
                    d.stop()
                d = Daemon(BIN, store, mnt)
                try:
                    tf, td = walk(mnt, n)
                finally:
                    d.stop()
                shutil.rmtree(store)
            res["find_s"][name].append(tf)
            res["du_s"][name].append(td)

    log(f"small: daemon memory with {big} files created in one mount")
    store, mnt = os.path.join(WORK, "small-big-store"), os.path.join(WORK, "small-big-mnt")
    subprocess.run([BIN, "init", store], check=True, capture_output=True)
    d = Daemon(BIN, store, mnt)
    try:
        t = time.perf_counter()
        big_rate = create(mnt, big)
        big_s = time.perf_counter() - t
        rss = status_kb(d.p.pid, "VmRSS") / 1024
        hwm = status_kb(d.p.pid, "VmHWM") / 1024
    finally:
        d.stop()
    shutil.rmtree(store)

    best = {
        "create_per_s": {k: max(v) for k, v in res["create_per_s"].items()},
        "find_s": {k: min(v) for k, v in res["find_s"].items()},
        "du_s": {k: min(v) for k, v in res["du_s"].items()},
    }
    ratios = {
        "create": best["create_per_s"]["revfs"] / best["create_per_s"]["direct"],
        "find": best["find_s"]["direct"] / best["find_s"]["revfs"],
        "du": best["du_s"]["direct"] / best["du_s"]["revfs"],
    }
    print(json.dumps({"section": "small", "files": n, "rounds": ROUNDS, "runs": res, "best": best,
                      "ratios": ratios, "big": {"files": big, "seconds": big_s, "per_s": big_rate,
                                                "rss_mib": rss, "peak_rss_mib": hwm}}))


if __name__ == "__main__":
    main()
