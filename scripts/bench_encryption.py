#!/usr/bin/env python3
"""Encryption benchmark (scripts/bench.sh encryption): prints one JSON line.

Plain and encrypted stores (`init --encrypt`), alternating, best of ROUNDS
runs each (this disk's speed comes in bursts):
1. sequential write of an incompressible file + fsync through the mount,
   and its sequential read back with a cold cache;
2. ingest of the AI workload (shared/bench/gen_workload.py), step by step
   as a training job writes it, and the bytes each store holds after it
   (the dedup ratio: logical bytes written / store bytes);
3. what opening costs: `revfs status` of an unmounted store (argon2id
   unlock + catalog open) and a mount until it serves.

Usage: bench_encryption.py BIN WORK SCALE GEN_WORKLOAD
"""
import json
import os
import shutil
import subprocess
import sys
import time

import bench_perf as perf  # the same arguments: BIN WORK SCALE GEN

BIN, WORK, SCALE, GEN = perf.BIN, perf.WORK, perf.SCALE, perf.GEN
ROUNDS = 3
KINDS = ["plain", "encrypted"]
os.environ["REVFS_PASSWORD"] = "bench passphrase"


def fresh_store(kind, name):
    store = os.path.join(WORK, name)
    shutil.rmtree(store, ignore_errors=True)
    perf.run(BIN, "init", store, *(["--encrypt"] if kind == "encrypted" else []))
    return store


def order(r):
    return KINDS if r % 2 == 0 else KINDS[::-1]


def main():
    mib = max(int(2048 * SCALE), 64)
    src = os.path.join(WORK, "enc-src.bin")
    with open(src, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(perf.MiB))
    open(src, "rb").read()
    perf.log(f"encryption: sequential write of {mib} MiB, {ROUNDS} alternating rounds")
    write = {k: [] for k in KINDS}
    read = {k: [] for k in KINDS}
    for r in range(ROUNDS):
        for kind in order(r):
            store = fresh_store(kind, f"enc-seq-{kind}")
            m = perf.RevfsMount(store, os.path.join(WORK, "enc-mnt"))
            write[kind].append(perf.seq_write(src, os.path.join(m.mnt, "f"))[0])
            read[kind].append(perf.seq_read(os.path.join(m.mnt, "f")))
            m.close()
            shutil.rmtree(store)
    os.unlink(src)

    perf.log("encryption: the AI workload into each store")
    wl = os.path.join(WORK, "enc-workload")
    subprocess.run([sys.executable, GEN, wl, "--scale", str(SCALE)], check=True, stdout=subprocess.DEVNULL)
    manifest = json.load(open(os.path.join(wl, "manifest.json")))
    logical = sum(sum(os.path.getsize(os.path.join(s["dir"], rel)) for rel in s["sha256"])
                  for s in manifest["step_info"])
    ingest = {k: [] for k in KINDS}
    stored = {}
    for r in range(ROUNDS):
        for kind in order(r):
            store = fresh_store(kind, f"enc-wl-{kind}")
            m = perf.RevfsMount(store, os.path.join(WORK, "enc-mnt"))
            ingest[kind].append(perf.ingest(manifest, m.mnt))
            m.close()
            stored[kind] = perf.du(store)
            if r == ROUNDS - 1:
                continue
            shutil.rmtree(store)

    perf.log("encryption: opening a store")
    opening = {}
    for kind in KINDS:
        store = os.path.join(WORK, f"enc-wl-{kind}")
        st, mt = [], []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            perf.run(BIN, "status", store, "--json")
            st.append(time.perf_counter() - t)
            t = time.perf_counter()
            m = perf.RevfsMount(store, os.path.join(WORK, "enc-mnt"))
            mt.append(time.perf_counter() - t)
            m.close()
        opening[kind] = {"status_seconds": min(st), "mount_seconds": min(mt)}
        shutil.rmtree(store)
    shutil.rmtree(wl)

    best_w = {k: max(v) for k, v in write.items()}
    best_i = {k: min(v) for k, v in ingest.items()}
    dedup = {k: logical / stored[k] for k in KINDS}
    print(json.dumps({
        "section": "encryption", "rounds": ROUNDS, "seq_mib": mib,
        "seq_write_mbs": write, "seq_write_ratio": best_w["encrypted"] / best_w["plain"],
        "seq_read_mbs": read, "seq_read_ratio": max(read["encrypted"]) / max(read["plain"]),
        "ingest_seconds": ingest,
        # Throughput ratio: time plain / time encrypted (>= 0.85 wanted).
        "ingest_ratio": best_i["plain"] / best_i["encrypted"],
        "logical_bytes": logical, "stored_bytes": stored, "dedup_ratio": dedup,
        "dedup_ratio_change": dedup["encrypted"] / dedup["plain"],
        "opening": opening,
    }))


if __name__ == "__main__":
    main()
