#!/usr/bin/env python3
"""Big-file benchmark (issue 11's targets): the daemon's RSS after writing a
large file; 4 KiB pwrite + fsync at random offsets of a large file (p50/p99
over 200 offsets, and the metadata and chunks each such version stores);
1,000 fsync'd single-row SQLite transactions on a large database against the
same on the direct disk (median commit latency, chunks stored per
transaction); and, when BASE_BIN (an earlier revfs) is given, sequential write
and read speed of this build against it, best of three alternating runs.

Usage: bench_bigfile.py BIN WORK SCALE [BASE_BIN]  -> one JSON line on stdout.
Sizes at scale 1: a 32 GiB file (RSS), cut to 16 GiB for the edits, a 2 GiB
SQLite database, 4 GiB sequential.
"""
import json
import os
import random
import sqlite3
import subprocess
import sys
import time

import numpy as np

from mounts import Daemon

BIN, WORK, SCALE = sys.argv[1], sys.argv[2], float(sys.argv[3])
BASE_BIN = sys.argv[4] if len(sys.argv) > 4 else None
STORE, MNT = os.path.join(WORK, "bstore"), os.path.join(WORK, "bmnt")
BIG_BYTES = int((32 << 30) * SCALE) & ~4095
EDIT_BYTES = BIG_BYTES // 2
DB_BYTES = int((2 << 30) * SCALE)
SEQ_BYTES = int((4 << 30) * SCALE) & ~((8 << 20) - 1)


def log(*a):
    print(" ", *a, file=sys.stderr, flush=True)


def status(store):
    out = subprocess.run([BIN, "status", store, "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def meta_and_chunks(store):
    """(stored bytes that are not chunk data, chunk count)."""
    s = status(store)
    return s["stored_bytes"] - s["chunk_bytes"], s["chunks"]


def rss_kib(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
    return 0


def write_big(path, nbytes, seed=1):
    """Incompressible, never-repeating bytes (trained weights do not dedup)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            n = min(left, 8 << 20)
            f.write(rng.bytes(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def pwrite_latency(path, store, size):
    rng = random.Random(11)
    fd = os.open(path, os.O_RDWR)
    lat = []
    meta0, chunks0 = meta_and_chunks(store)
    for _ in range(200):
        off = rng.randrange(0, size - 4096) & ~4095
        os.pwrite(fd, os.urandom(4096), off)
        t = time.perf_counter()
        os.fsync(fd)
        lat.append(time.perf_counter() - t)
    os.close(fd)
    meta1, chunks1 = meta_and_chunks(store)
    lat.sort()
    return {"p50_ms": lat[100] * 1000, "p99_ms": lat[197] * 1000,
            "metadata_bytes_per_version": (meta1 - meta0) / 200,
            "chunks_per_version": (chunks1 - chunks0) / 200}


def sqlite_latency(path, store=None):
    """Median commit latency (ms) of 1,000 single-row updates, and the
    chunks and bytes each one stored (with `store`)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
    row = 4000
    n = DB_BYTES // row
    db.execute("BEGIN")
    for i in range(n):
        db.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(row),))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rng = random.Random(5)
    lat = []
    before = status(store) if store else None
    for _ in range(1000):
        t = time.perf_counter()
        db.execute("UPDATE t SET v = ? WHERE id = ?", (os.urandom(100), rng.randrange(1, n)))
        lat.append(time.perf_counter() - t)
    db.close()
    lat.sort()
    growth = None
    if store:
        after = status(store)
        growth = {"chunks": (after["chunks"] - before["chunks"]) / 1000,
                  "stored_bytes": (after["stored_bytes"] - before["stored_bytes"]) / 1000}
    return lat[500] * 1000, growth


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def seq_speed(binary, tag):
    """(write MB/s with fsync, cold read MB/s, daemon CPU seconds per GiB
    written) of one SEQ_BYTES file. CPU time does not follow the disk's
    bursts."""
    store, mnt = os.path.join(WORK, f"seq-{tag}"), os.path.join(WORK, f"seqmnt-{tag}")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run([binary, "init", store], check=True, stdout=subprocess.DEVNULL)
    d = Daemon(binary, store, mnt)
    try:
        src = os.path.join(WORK, "seq-src")
        p = os.path.join(mnt, "f")
        cpu = cpu_seconds(d.p.pid)
        t = time.perf_counter()
        with open(src, "rb") as fi, open(p, "wb") as fo:
            while b := fi.read(8 << 20):
                fo.write(b)
            fo.flush()
            os.fsync(fo.fileno())
        w = SEQ_BYTES / (time.perf_counter() - t) / 1e6
        cpu = (cpu_seconds(d.p.pid) - cpu) / (SEQ_BYTES / 2**30)
        subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=False)
        t = time.perf_counter()
        with open(p, "rb") as f:
            while f.read(8 << 20):
                pass
        r = SEQ_BYTES / (time.perf_counter() - t) / 1e6
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", store, mnt], check=True)
    return w, r, cpu


result = {"section": "bigfile", "big_bytes": BIG_BYTES, "file_bytes": EDIT_BYTES, "db_bytes": DB_BYTES}
os.makedirs(MNT, exist_ok=True)
subprocess.run([BIN, "init", STORE], check=True, stdout=subprocess.DEVNULL)
d = Daemon(BIN, STORE, MNT)
try:
    result["rss_kib_before"] = rss_kib(d.p.pid)
    big = os.path.join(MNT, "big.bin")
    log(f"writing {BIG_BYTES >> 20} MiB")
    write_big(big, BIG_BYTES)
    result["rss_kib_after_big_write"] = rss_kib(d.p.pid)
    os.truncate(big, EDIT_BYTES)
    result["pwrite_fsync"] = pwrite_latency(big, STORE, EDIT_BYTES)
    log(f"pwrite+fsync: {result['pwrite_fsync']}")
    os.unlink(big)
    direct_dir = os.path.join(WORK, "direct")
    os.makedirs(direct_dir, exist_ok=True)
    sq_revfs, sq_growth = sqlite_latency(os.path.join(MNT, "db.sqlite"), STORE)
    sq_direct, _ = sqlite_latency(os.path.join(direct_dir, "db.sqlite"))
    result["sqlite_commit_ms_median"] = {"revfs": sq_revfs, "direct": sq_direct}
    result["sqlite_per_transaction"] = sq_growth
    log(f"sqlite: {result['sqlite_commit_ms_median']} {sq_growth}")
finally:
    d.stop()
subprocess.run(["rm", "-rf", STORE, os.path.join(WORK, "direct")], check=True)
if BASE_BIN:
    write_big(os.path.join(WORK, "seq-src"), SEQ_BYTES, seed=2)
    runs = {"revfs": [], "base": []}
    pair = [("base", BASE_BIN), ("revfs", BIN)]
    for i in range(3):
        # Alternate which goes first: the disk is fastest after a pause.
        for tag, b in (pair if i % 2 == 0 else pair[::-1]):
            runs[tag].append(seq_speed(b, tag))
    result["seq_mbs"] = {tag: {"write": max(x[0] for x in v), "read": max(x[1] for x in v),
                               "cpu_s_per_gib": min(x[2] for x in v), "runs": v}
                         for tag, v in runs.items()}
    result["seq_bytes"] = SEQ_BYTES
    log(f"sequential: {result['seq_mbs']}")
    os.unlink(os.path.join(WORK, "seq-src"))
print(json.dumps(result))
