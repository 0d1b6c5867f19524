#!/usr/bin/env python3
"""Big-file benchmark (the figures issue 11 sets targets for): 4 KiB
pwrite + fsync at random offsets of a large file (p50/p99 over 200 offsets,
and the stored bytes each such version adds), 1,000 fsync'd single-row
SQLite transactions on a large database against the same on the direct
disk, and the daemon's RSS after writing the large file.

Usage: bench_bigfile.py BIN WORK SCALE  -> one JSON line on stdout.
Sizes at scale 1: a 16 GiB file, a 2 GiB SQLite database.
"""
import json
import os
import random
import sqlite3
import subprocess
import sys
import time

from mounts import Daemon

BIN, WORK, SCALE = sys.argv[1], sys.argv[2], float(sys.argv[3])
STORE, MNT = os.path.join(WORK, "bstore"), os.path.join(WORK, "bmnt")
FILE_BYTES = int((16 << 30) * SCALE)
DB_BYTES = int((2 << 30) * SCALE)


def stored(store):
    out = subprocess.run([BIN, "status", store, "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["stored_bytes"]


def rss_kib(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
    return 0


def write_big(path, nbytes):
    """Incompressible, never-repeating bytes (trained weights do not dedup)."""
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def pwrite_latency(path, store):
    rng = random.Random(11)
    fd = os.open(path, os.O_RDWR)
    lat, before = [], stored(store)
    for _ in range(200):
        off = rng.randrange(0, FILE_BYTES - 4096) & ~4095
        os.pwrite(fd, os.urandom(4096), off)
        t = time.perf_counter()
        os.fsync(fd)
        lat.append(time.perf_counter() - t)
    os.close(fd)
    lat.sort()
    return {"p50_ms": lat[100] * 1000, "p99_ms": lat[197] * 1000,
            "stored_bytes_per_version": (stored(store) - before) / 200}


def sqlite_latency(path, store=None):
    """Median commit latency (ms) of 1,000 single-row updates, and the stored
    bytes each one added (with `store`)."""
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
    before = stored(store) if store else 0
    for _ in range(1000):
        t = time.perf_counter()
        db.execute("UPDATE t SET v = ? WHERE id = ?", (os.urandom(100), rng.randrange(1, n)))
        lat.append(time.perf_counter() - t)
    db.close()
    lat.sort()
    growth = (stored(store) - before) / 1000 if store else None
    return lat[500] * 1000, growth


os.makedirs(MNT, exist_ok=True)
subprocess.run([BIN, "init", STORE], check=True, stdout=subprocess.DEVNULL)
d = Daemon(BIN, STORE, MNT)
try:
    rss0 = rss_kib(d.p.pid)
    big = os.path.join(MNT, "big.bin")
    print(f"  writing {FILE_BYTES >> 20} MiB", file=sys.stderr, flush=True)
    write_big(big, FILE_BYTES)
    rss_big = rss_kib(d.p.pid)
    edits = pwrite_latency(big, STORE)
    print(f"  pwrite+fsync: {edits}", file=sys.stderr, flush=True)
    os.unlink(big)
    direct_dir = os.path.join(WORK, "direct")
    os.makedirs(direct_dir, exist_ok=True)
    sq_revfs, sq_growth = sqlite_latency(os.path.join(MNT, "db.sqlite"), STORE)
    sq_direct, _ = sqlite_latency(os.path.join(direct_dir, "db.sqlite"))
finally:
    d.stop()
print(json.dumps({"section": "bigfile", "file_bytes": FILE_BYTES, "db_bytes": DB_BYTES,
                  "rss_kib_before": rss0, "rss_kib_after_big_write": rss_big, "pwrite_fsync": edits,
                  "sqlite_commit_ms_median": {"revfs": sq_revfs, "direct": sq_direct},
                  "sqlite_stored_bytes_per_transaction": sq_growth}))
