#!/usr/bin/env python3
"""Retention benchmark (scripts/bench.sh retention): prints one JSON line.

1. The AI workload (shared/bench/gen_workload.py, STEPS steps) replayed into
   two stores, one keeping everything and one pruned after every step under
   --keep-last 3: the store size after each step (a plot, SVG, in
   bench-results/) and what each prune took while mounted.
2. Prune throughput: the kept-everything store pruned offline to its head:
   pack GiB examined and freed per second, and the process's peak RSS.
3. The mark's memory per object: offline prunes of stores of small files
   (one chunk each) of two sizes; (RSS difference) / (objects difference).

Usage: bench_retention.py BIN WORK SCALE GEN_WORKLOAD RESULTS_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import time

BIN, WORK, SCALE, GEN, OUT = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
STEPS = max(4, int(24 * min(1.0, SCALE * 4)))


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


def du(path):
    return int(run("du", "-sb", path).stdout.split()[0])


def mount(store, mnt):
    run(BIN, "mount", store, mnt, "--daemon")


def umount(store, mnt):
    pid = int(open(os.path.join(store, "lock")).read().strip() or 0)
    run("umount", mnt)
    for _ in range(300):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)


def replay(step_dir, mnt):
    # A job rewrites what changed; rsync writes changed files whole, in place of the old.
    run("rsync", "-a", "--delete", "--whole-file", step_dir + "/", mnt + "/")
    # fsync what the step wrote (a job that saves a checkpoint fsyncs it).
    run("sync", "-f", mnt)


def peak_rss_of(args):
    """(peak RSS in KiB, stdout) of one child."""
    out = os.path.join(WORK, "child.out")
    with open(out, "w") as f:
        p = subprocess.Popen([str(a) for a in args], stdout=f, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, args
    return ru.ru_maxrss, open(out).read()


def svg(path, series, ylabel):
    w, h, pad = 640, 360, 50
    xs = max(len(v) for v in series.values())
    ymax = max(max(v) for v in series.values()) or 1
    colors = ["#d62728", "#1f77b4", "#2ca02c"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="black"/>',
           f'<text x="{w/2}" y="{h-15}" text-anchor="middle">workload step</text>',
           f'<text x="15" y="{h/2}" transform="rotate(-90 15 {h/2})" text-anchor="middle">{ylabel}</text>',
           f'<text x="{pad-5}" y="{pad}" text-anchor="end">{ymax/2**20:.0f}</text>',
           f'<text x="{pad-5}" y="{h-pad}" text-anchor="end">0</text>']
    for i, (name, v) in enumerate(series.items()):
        pts = " ".join(f"{pad + (w-2*pad) * k / max(1, xs-1):.1f},{h-pad - (h-2*pad) * y / ymax:.1f}" for k, y in enumerate(v))
        out.append(f'<polyline fill="none" stroke="{colors[i]}" stroke-width="2" points="{pts}"/>')
        out.append(f'<text x="{w-pad-160}" y="{pad + 16*i}" fill="{colors[i]}">{name}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def main():
    wl = os.path.join(WORK, "wl")
    run(sys.executable, GEN, wl, "--scale", str(SCALE), "--steps", str(STEPS))
    steps = sorted(d for d in os.listdir(wl) if d.startswith("step_"))
    sizes, prunes = {}, []
    for mode in ["keep everything", "--keep-last 3, pruned every step"]:
        store, mnt = os.path.join(WORK, f"s{len(sizes)}"), os.path.join(WORK, f"m{len(sizes)}")
        os.makedirs(mnt)
        run(BIN, "init", store)
        mount(store, mnt)
        series = []
        for s in steps:
            replay(os.path.join(wl, s), mnt)
            if mode.startswith("--keep-last"):
                t = time.perf_counter()
                r = json.loads(run(BIN, "prune", mnt, "--keep-last", "3", "--json").stdout)
                r["wall"] = time.perf_counter() - t
                prunes.append(r)
            series.append(du(store))
        umount(store, mnt)
        sizes[mode] = series
    plot = os.path.join(OUT, "retention-store-size.svg")
    svg(plot, sizes, "store size, MiB")

    # Prune throughput: the kept-everything store down to its head, offline.
    big = os.path.join(WORK, "s0")
    t = time.perf_counter()
    rss, out = peak_rss_of([BIN, "prune", big, "--keep-last", "1", "--json"])
    wall = time.perf_counter() - t
    offline = json.loads(out)
    after = du(big)

    # Mark memory per object: stores of N small files (one chunk each).
    mem = []
    for n in [int(20000 * max(SCALE, 0.25)), int(100000 * max(SCALE, 0.25))]:
        store, mnt = os.path.join(WORK, f"small{n}"), os.path.join(WORK, f"sm{n}")
        os.makedirs(mnt)
        run(BIN, "init", store)
        mount(store, mnt)
        for d in range(100):
            os.makedirs(os.path.join(mnt, f"d{d}"))
        for i in range(n):
            with open(os.path.join(mnt, f"d{i % 100}", f"f{i}"), "wb") as f:
                f.write(os.urandom(4096))
        umount(store, mnt)
        r_rss, out = peak_rss_of([BIN, "prune", store, "--json"])
        r = json.loads(out)
        mem.append({"files": n, "objects_marked": r["objects_marked"], "peak_rss_kib": r_rss,
                    "mark_set_bytes": r["mark_set_bytes"]})
        shutil.rmtree(store)
    a, b = mem
    per_object = (b["peak_rss_kib"] - a["peak_rss_kib"]) * 1024 / max(1, b["objects_marked"] - a["objects_marked"])

    # Per chunk: one big incompressible file (64 KiB chunks), three sizes,
    # against an empty store's prune; flat when the cost is per chunk.
    def chunk_store(gib):
        store, mnt = os.path.join(WORK, f"big{gib}"), os.path.join(WORK, f"bm{gib}")
        os.makedirs(mnt)
        run(BIN, "init", store)
        mount(store, mnt)
        with open(os.path.join(mnt, "weights.bin"), "wb") as f:
            left = int(gib * 2**30)
            while left > 0:
                n = min(left, 64 << 20)
                f.write(os.urandom(n))
                left -= n
            f.flush()
            os.fsync(f.fileno())
        umount(store, mnt)
        rss, out = peak_rss_of([BIN, "prune", store, "--json"])
        r = json.loads(out)
        shutil.rmtree(store)
        return {"gib": gib, "objects_marked": r["objects_marked"], "peak_rss_kib": rss,
                "mark_set_bytes": r["mark_set_bytes"]}
    empty = chunk_store(0)
    per_chunk = []
    for gib in [g * max(SCALE, 0.1) for g in (1, 2, 4)]:
        c = chunk_store(gib)
        c["bytes_per_chunk"] = (c["peak_rss_kib"] - empty["peak_rss_kib"]) * 1024 / max(1, c["objects_marked"])
        per_chunk.append(c)

    examined = sum(p["bytes_examined"] for p in prunes)
    freed = sum(p["bytes_freed"] for p in prunes)
    secs = sum(p["seconds"] for p in prunes)
    print(json.dumps({
        "section": "retention", "steps": len(steps),
        "store_bytes": sizes, "plot": plot,
        "mounted_prunes": {"count": len(prunes), "bytes_examined": examined, "bytes_freed": freed,
                           "seconds": secs, "max_seconds": max(p["seconds"] for p in prunes),
                           "examined_gib_per_s": examined / 2**30 / max(secs, 1e-9),
                           "freed_gib_per_s": freed / 2**30 / max(secs, 1e-9)},
        "offline_prune": {"store_bytes_before": sizes["keep everything"][-1], "store_bytes_after": after,
                          "seconds": offline["seconds"], "wall_seconds": wall, "peak_rss_kib": rss,
                          "bytes_examined": offline["bytes_examined"], "bytes_freed": offline["bytes_freed"],
                          "examined_gib_per_s": offline["bytes_examined"] / 2**30 / max(offline["seconds"], 1e-9),
                          "freed_gib_per_s": offline["bytes_freed"] / 2**30 / max(offline["seconds"], 1e-9)},
        "mark_memory": mem, "mark_bytes_per_object": per_object,
        "chunk_memory": {"empty_store_rss_kib": empty["peak_rss_kib"], "stores": per_chunk},
    }))


main()
