#!/usr/bin/env python3
"""Disaster soak: rounds of (writer with fsyncs, kill -9 of the daemon at a
random moment, `revfs recover` from the replica alone, check every version
fsync'ed before the replica last reported lag 0, verify clean).

Every third round also kills `recover` itself at a random moment and runs
it again. With `--encrypt alternate` (the default) every odd seed makes an
encrypted store (`init --encrypt`, passphrase in REVFS_PASSWORD), so the
recover of an encrypted replica is soaked from the same crash states. Reproducible from the printed seed: `dr_soak.py ROUNDS --seed S`.
Only processes this script started are ended, by PID; every wait has a
timeout; every mount is unmounted in a finally block.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from mounts import Daemon, is_mounted

BIN = os.environ.get("REVFS_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "revfs")


def run(*args, check=True, timeout=300):
    p = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"revfs {' '.join(map(str, args))}: {p.stdout}{p.stderr}")
    return p


def lag_zero(store):
    p = run("status", store, "--json", check=False, timeout=30)
    if p.returncode != 0:
        return False
    r = json.loads(p.stdout)["replica"]
    return r["state"] == "ok" and r["lag_commits"] == 0 and r["lag_bytes"] == 0


def writer(rng, mnt, store, stop, fsynced, marks, errors):
    """Writes versions of a few paths; records every fsync'ed version and,
    when the replica reports lag 0, how many were fsync'ed before."""
    names = [f"small{i}.txt" for i in range(4)] + [f"ckpt/model{i}.bin" for i in range(3)]
    names.append("ckpt/large.bin")
    os.makedirs(os.path.join(mnt, "ckpt"), exist_ok=True)
    # A 40 MiB file edited in place: its content is a manifest tree of
    # several leaves, and each version rewrites only some of them.
    large = None
    n = 0
    try:
        while not stop.is_set():
            name = rng.choice(names)
            path = os.path.join(mnt, name)
            if name == "ckpt/large.bin" and large is not None and os.path.exists(path):
                with open(path, "rb+") as f:
                    for _ in range(rng.randint(1, 3)):
                        edit = rng.randbytes(rng.randint(1, 200 << 10))
                        off = rng.randrange(0, len(large) - len(edit))
                        os.pwrite(f.fileno(), edit, off)
                        large[off:off + len(edit)] = edit
                    os.fsync(f.fileno())
                fsynced.append((name, hashlib.sha256(large).hexdigest()))
                n += 1
                continue
            if name == "ckpt/large.bin":
                large = bytearray(rng.randbytes(40 << 20))
                data = bytes(large)
            else:
                size = rng.randint(1, 64 << 10) if name.startswith("small") else rng.randint(1 << 20, 6 << 20)
                data = rng.randbytes(size)
            if rng.random() < 0.5:
                tmp = path + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, path)
                # The rename is durable at the next commit: an fsync of the
                # renamed file makes that commit now.
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())
            else:
                with open(path, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            fsynced.append((name, hashlib.sha256(data).hexdigest()))
            n += 1
            if n % 5 == 0:
                before = len(fsynced)
                deadline = time.time() + 5
                while time.time() < deadline and not stop.is_set():
                    if lag_zero(store):
                        marks.append(before)
                        break
                    time.sleep(0.05)
    except Exception as e:  # the daemon is killed under us: only an error before that counts
        if not stop.is_set():
            errors.append(repr(e))


def recover(rng, replica, new, kill_first):
    killed = False
    if kill_first:
        p = subprocess.Popen([BIN, "recover", replica, new], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.3))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed = True
        p.wait(timeout=60)
    r = run("recover", replica, new, "--json", check=False)
    # "already a revfs store" is right only when the first run finished
    # (its marker gone) before the kill landed.
    finished = "already a revfs store" in r.stderr and not os.path.exists(
        os.path.join(new, ".revfs-recovering"))
    if r.returncode != 0 and not finished:
        raise RuntimeError(f"recover failed: {r.stdout}{r.stderr}")
    return killed


def one_round(seed, tmp, encrypt):
    rng = random.Random(seed)
    store, replica, mnt = (os.path.join(tmp, x) for x in ("store", "replica", "mnt"))
    os.makedirs(replica)
    run("init", store, "--replica", replica, *(["--encrypt"] if encrypt else []))
    fsynced, marks, errors = [], [], []
    d = Daemon(BIN, store, mnt)
    stop = threading.Event()
    t = threading.Thread(target=writer, args=(rng, mnt, store, stop, fsynced, marks, errors))
    try:
        t.start()
        time.sleep(rng.uniform(1.0, 4.0))
        stop.set()  # the writer is mid-operation; it stops at its next one
        d.crash()  # the disaster: kill -9 mid-write
        t.join(timeout=60)
    finally:
        stop.set()
        d.crash()
    if errors:
        raise RuntimeError(f"writer: {errors}")
    guaranteed = fsynced[: marks[-1]] if marks else []

    new = os.path.join(tmp, "new")
    killed = recover(rng, replica, new, kill_first=seed % 3 == 0)
    m2 = os.path.join(tmp, "mnt2")
    d2 = Daemon(BIN, new, m2, "--read-only")
    try:
        want = {}
        for name, h in guaranteed:
            want.setdefault(name, set()).add(h)
        for name, hashes in want.items():
            p = subprocess.run([BIN, "log", os.path.join(m2, name), "--json"],
                               capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                raise RuntimeError(f"{name}: log failed: {p.stderr}")
            have = set()
            for v in json.loads(p.stdout):
                with open(v["path"], "rb") as f:
                    have.add(hashlib.sha256(f.read()).hexdigest())
            lost = hashes - have
            if lost:
                raise RuntimeError(f"{name}: {len(lost)} fsync'ed versions missing after recover")
    finally:
        d2.stop()
    v = run("verify", new, check=False)
    if v.returncode != 0:
        raise RuntimeError(f"verify of the recovered store: {v.stdout}{v.stderr}")
    return len(guaranteed), len(fsynced), killed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rounds", type=int, nargs="?", default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--encrypt", choices=["none", "all", "alternate"], default="alternate")
    a = ap.parse_args()
    # Every revfs this script starts (and the daemons) read the passphrase here.
    os.environ["REVFS_PASSWORD"] = "dr-soak passphrase"
    base = a.seed if a.seed is not None else random.randrange(1 << 30)
    print(f"dr-soak: {a.rounds} rounds, seed {base}", flush=True)
    start = time.time()
    checked = written = kills = encrypted = 0
    for i in range(a.rounds):
        seed = base + i
        encrypt = a.encrypt == "all" or (a.encrypt == "alternate" and seed % 2 == 1)
        encrypted += encrypt
        tmp = tempfile.mkdtemp(prefix="revfs-drsoak-")
        try:
            g, w, k = one_round(seed, tmp, encrypt)
        except Exception as e:
            print(f"FAIL round {i + 1} (seed {seed}, rerun: dr_soak.py 1 --seed {seed}): {e}")
            sys.exit(1)
        finally:
            for m in ("mnt", "mnt2"):
                p = os.path.join(tmp, m)
                if is_mounted(p):
                    subprocess.run(["umount", "-l", p], capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)
        checked += g
        written += w
        kills += k
        if (i + 1) % 10 == 0 or i + 1 == a.rounds:
            print(f"  {i + 1} rounds: {checked} of {written} fsync'ed versions checked byte for byte, "
                  f"{kills} recovers killed and rerun, {time.time() - start:.0f} s", flush=True)
    print(f"dr-soak: {a.rounds} rounds passed (seed {base}): {checked} versions fsync'ed before a "
          f"lag-0 report all recovered, {kills} recovers killed mid-way and rerun, "
          f"{encrypted} rounds encrypted, "
          f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
