#!/usr/bin/env python3
"""History benchmark: `revfs log`, a `.snapshots/at/<t>` lookup and
`revfs status` latency as the number of commits grows (a loop that fsyncs
one tiny file makes one commit per fsync), and `revfs restore` of a 1 GiB
directory against `cp -a` of it inside the same mount.

Usage: bench_history.py BIN WORK SCALE  -> one JSON line on stdout.
Levels: 10^4, 10^5, 10^6 commits at scale 1 (10^3, 10^4 below 0.5).
Every latency is the best of 5 runs (the disk's speed comes in bursts).
"""
import json
import os
import subprocess
import sys
import time

from mounts import Daemon

BIN, WORK, SCALE = sys.argv[1], sys.argv[2], float(sys.argv[3])
STORE, MNT = os.path.join(WORK, "hstore"), os.path.join(WORK, "hmnt")


def best(fn, n=5):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def run(*a):
    subprocess.run([BIN, *a], check=True, stdout=subprocess.DEVNULL)


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


os.makedirs(MNT, exist_ok=True)
subprocess.run([BIN, "init", STORE], check=True, stdout=subprocess.DEVNULL)
d = Daemon(BIN, STORE, MNT)
try:
    with open(os.path.join(MNT, "once.txt"), "w") as f:
        f.write("saved once\n")
        f.flush()
        os.fsync(f.fileno())
    t_first = time.time()
    levels = [10**3, 10**4] if SCALE < 0.5 else [10**4, 10**5, 10**6]
    rows, made = [], 1
    fd = os.open(os.path.join(MNT, "tick"), os.O_WRONLY | os.O_CREAT)
    for level in levels:
        t0 = time.time()
        while made < level:
            os.pwrite(fd, str(made).encode(), 0)
            os.fsync(fd)
            made += 1
        rate = (level - (rows[-1]["commits"] if rows else 1)) / (time.time() - t0)
        span = time.time() - t_first
        k = [0]

        def lookup():
            # A new instant each time: no cache can answer it.
            k[0] += 1
            os.stat(os.path.join(MNT, ".snapshots/at", rfc3339(t_first + span * k[0] / 11), "tick"))

        rows.append({
            "commits": level,
            "commits_per_second": rate,
            "log_ms": best(lambda: run("log", os.path.join(MNT, "once.txt"))) * 1000,
            "at_lookup_ms": best(lookup) * 1000,
            "status_ms": best(lambda: run("status", STORE, "--json")) * 1000,
        })
        print(f"  {level} commits: {rows[-1]}", file=sys.stderr, flush=True)
    os.close(fd)

    # restore of a 1 GiB directory vs cp -a of it, both inside the mount.
    files, each = 64, int((1 << 30) * min(SCALE, 1.0)) // 64
    src = os.path.join(MNT, "data")
    os.makedirs(src)
    for i in range(files):
        with open(os.path.join(src, f"shard{i:02d}.bin"), "wb") as f:
            f.write(os.urandom(each))
    with open(os.path.join(MNT, "once.txt"), "rb+") as f:
        os.fsync(f.fileno())
    at = rfc3339(time.time())
    time.sleep(0.05)
    t_restore, t_cp = [], []
    for i in range(3):
        t = time.perf_counter()
        run("restore", src, "--at", at, "--to", os.path.join(MNT, f"restored{i}"))
        t_restore.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run(["cp", "-a", src, os.path.join(MNT, f"copied{i}")], check=True)
        t_cp.append(time.perf_counter() - t)
    restore = {"bytes": files * each, "restore_seconds": min(t_restore), "cp_a_seconds": min(t_cp),
               "cp_over_restore": min(t_cp) / min(t_restore)}
finally:
    d.stop()
print(json.dumps({"section": "history", "levels": rows, "restore": restore}))
