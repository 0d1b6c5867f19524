#!/usr/bin/env python3
"""Read benchmark (scripts/bench.sh reads): prints one JSON line.

A file of MIB MiB of incompressible bytes on the disk itself (direct) and
in a revfs mount on the same disk; alternating, best of ROUNDS:
1. cold sequential read (page cache dropped first), 1 MiB reads;
2. re-read after reopen: the file closed, opened again and read whole
   with its pages still cached (what an epoch loop or a resume does);
3. random 4 KiB cold reads (the same seeded offsets for both);
4. the same file as a past version under .snapshots/: a cold read, then
   a re-read after reopen, in the live file's order (the timed re-read is
   the third read after the drop for both; the first read of a file whose
   pages were just filled is slower for live and snapshot alike, so a
   different order measured the order, not the snapshot).

Usage: bench_reads.py BIN WORK SCALE
"""
import json
import os
import random
import subprocess
import sys
import time

BIN, WORK, SCALE = sys.argv[1], sys.argv[2], float(sys.argv[3])
MiB = 1 << 20
ROUNDS = 3


def log(*a):
    print("==", *a, file=sys.stderr, flush=True)


def run(*cmd):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True).stdout


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def read_all(path):
    buf = bytearray(MiB)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return os.path.getsize(path) / (time.perf_counter() - t) / 1e6


def cold(path):
    drop_caches()
    return read_all(path)


def reread(path):
    read_all(path)  # cached now, whatever it was before
    return read_all(path)


def random_4k(path, n=2000):
    size = os.path.getsize(path)
    offs = random.Random(7).sample(range(size // 4096), n)
    drop_caches()
    fd = os.open(path, os.O_RDONLY)
    t = time.perf_counter()
    for o in offs:
        os.pread(fd, 4096, o * 4096)
    dt = time.perf_counter() - t
    os.close(fd)
    return n / dt


def main():
    mib = max(int(1024 * SCALE), 64)
    direct = os.path.join(WORK, "reads-direct.bin")
    with open(direct, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MiB))
    store, mnt = os.path.join(WORK, "reads-store"), os.path.join(WORK, "reads-mnt")
    os.makedirs(mnt, exist_ok=True)
    run(BIN, "init", store)
    pid = int(run(BIN, "mount", store, mnt, "--daemon").split()[2])
    try:
        live = os.path.join(mnt, "f.bin")
        with open(direct, "rb") as fi, open(live, "wb") as fo:
            while b := fi.read(MiB):
                fo.write(b)
            fo.flush()
            os.fsync(fo.fileno())
        run(BIN, "snapshot", "create", mnt, "bench-reads")
        snap = os.path.join(mnt, ".snapshots", "bench-reads", "f.bin")
        res = {k: {"direct": [], "revfs": []} for k in ("cold_mbs", "reread_mbs", "random_4k_iops")}
        res["snapshot_cold_mbs"], res["snapshot_reread_mbs"] = [], []
        for r in range(ROUNDS):
            order = [("direct", direct), ("revfs", live)]
            for name, path in (order if r % 2 == 0 else order[::-1]):
                log(f"reads: {name}, round {r + 1}")
                res["cold_mbs"][name].append(cold(path))
                res["reread_mbs"][name].append(reread(path))
                res["random_4k_iops"][name].append(random_4k(path))
            res["snapshot_cold_mbs"].append(cold(snap))
            res["snapshot_reread_mbs"].append(reread(snap))
    finally:
        run("umount", mnt)
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
    best = {k: {n: max(v) for n, v in res[k].items()} for k in ("cold_mbs", "reread_mbs", "random_4k_iops")}
    best["snapshot_cold_mbs"] = max(res["snapshot_cold_mbs"])
    best["snapshot_reread_mbs"] = max(res["snapshot_reread_mbs"])
    ratios = {k: best[k]["revfs"] / best[k]["direct"] for k in ("cold_mbs", "reread_mbs", "random_4k_iops")}
    ratios["snapshot_over_live_cold"] = best["snapshot_cold_mbs"] / best["cold_mbs"]["revfs"]
    ratios["snapshot_over_live_reread"] = best["snapshot_reread_mbs"] / best["reread_mbs"]["revfs"]
    print(json.dumps({"section": "reads", "mib": mib, "rounds": ROUNDS, "runs": res, "best": best,
                      "ratios": ratios}))


if __name__ == "__main__":
    main()
