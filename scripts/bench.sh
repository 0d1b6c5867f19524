#!/usr/bin/env bash
# Benchmarks of revfs. Every figure is a ratio against a baseline measured in
# the same run (absolute times on shared machines are noisy). Prints a
# Markdown table and writes JSON under bench-results/.
#
#   scripts/bench.sh [--quick] [perf|snapshots|replica|history|bigfile|retention|encryption|s3|reads|small|deltas]...
#     perf       sequential write/read vs direct disk (alternating, best of 3) and bindfs; the AI workload
#                (shared/bench/gen_workload.py) ingested into revfs vs direct, bindfs,
#                direct+restic and direct+borg; stored bytes; close() latency; small
#                files; commit latency in a 100,000-file tree; peak RSS; old checkpoint reads
#     snapshots  naming, ls -lR and cp from a snapshot vs the live tree (10 GiB in 100,000 files)
#     replica    write throughput with an async replica vs none, replication lag over a
#                4 GiB checkpoint sequence, fsync latency with --replica-sync vs without
#     history    revfs log, an .snapshots/at/<t> lookup and revfs status against the number
#                of commits (10^4, 10^5, 10^6), and revfs restore of 1 GiB against cp -a
#     bigfile    daemon RSS after writing a 32 GiB file; 4 KiB pwrite + fsync at random
#                offsets of a 16 GiB file (p50/p99, metadata and chunks stored per version);
#                1,000 fsync'd SQLite updates of a 2 GiB database vs the direct disk;
#                sequential write/read of 4 GiB vs the release before manifest trees
#                (BENCH_BASE_REV, built from this repository's history)
#     retention  the AI workload over many steps with and without a policy (store size per
#                step, plotted to bench-results/retention-store-size.svg), prune throughput
#                (pack GiB examined and freed per second, mounted and offline), peak RSS,
#                and the mark's memory per object
#     encryption sequential write and the AI workload's ingest into an encrypted store vs a
#                plain one (alternating, best of 3), the dedup ratio of each, and what
#                opening costs (argon2id unlock)
#     s3         replication to a real SeaweedFS S3 vs a directory replica: throughput of a
#                1 GiB checkpoint until lag 0, catch-up after its fsync, recover time per GiB,
#                first byte and cold read of a read-only mount of the bucket itself
#     reads      a 1 GiB file, revfs vs direct (alternating, best of 3): cold sequential read,
#                re-read after reopen, random 4 KiB cold reads; a snapshot's re-read vs live
#     small      200,000 files of 2 KiB, revfs vs direct (alternating, best of 2): the
#                create loop, then find and du of the tree cold; the daemon's RSS after
#                1,000,000 files created in one mount
#     deltas     checkpoint histories (bf16 seed 1, f32 seed 42; 12 steps, scale 0.3): stored
#                bytes after every step with a recompressing round after each (zstd, byte
#                planes, old versions as deltas) vs restic, borg (zstd 3) and rustic with
#                64 KiB chunks when installed; each full-training step's bytes against its
#                checkpoint; cold reads of the newest and oldest checkpoint vs stores
#                without deltas (--no-deltas rounds; no rounds)
#   --quick runs a tenth of the size, for development. Default: every section.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SCALE=1
SECTIONS=()
for a in "$@"; do
  case $a in
    --quick) SCALE=0.1 ;;
    perf|snapshots|replica|history|bigfile|retention|encryption|s3|reads|small|deltas) SECTIONS+=("$a") ;;
    *) echo "bench: unknown argument $a" >&2; exit 2 ;;
  esac
done
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(perf snapshots replica history bigfile retention encryption s3 reads small deltas)
want() { [[ " ${SECTIONS[*]} " == *" $1 "* ]]; }
cargo build --release -q
BIN=$ROOT/target/release/revfs
WORK=$(mktemp -d /var/tmp/revfs-bench.XXXXXX)
MNT=$WORK/mnt
PID=""
cleanup() {
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  if [ -n "$PID" ]; then
    for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT" "$ROOT/bench-results"

mount_store() {
  "$BIN" mount "$WORK/store" "$MNT" --daemon >/dev/null
  PID=$(cat "$WORK/store/lock")
}
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
# secs CMD...: wall seconds of one run of CMD.
secs() { python3 - "$@" <<'PY'
import subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.perf_counter() - t:.4f}")
PY
}

RESULTS=$WORK/results.jsonl
: > "$RESULTS"

# The peers the perf and deltas sections run (rustic, for deltas, only if
# installed: `cargo install rustic-rs` builds it for several minutes).
if want perf || want deltas; then
  need=()
  for t in bindfs restic borg; do command -v "$t" >/dev/null || need+=("$t"); done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq bindfs restic borgbackup >/dev/null
  fi
fi

# The workload generator needs numpy (perf and deltas replay its steps).
if want perf || want deltas; then
  python3 -c 'import numpy' 2>/dev/null || python3 -m pip install -q numpy
fi

if want perf; then
  python3 scripts/bench_perf.py "$BIN" "$WORK" "$SCALE" "$ROOT/../shared/bench/gen_workload.py" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); r["section"]="perf"; print(json.dumps(r))' >> "$RESULTS"
fi

if want snapshots; then
"$BIN" init "$WORK/store" >/dev/null
mount_store

FILES=$(python3 -c "print(int(100000 * $SCALE))")
BYTES=$(python3 -c "print(int(10 * 2**30 * $SCALE))")
echo "== populating $FILES files, $((BYTES >> 20)) MiB, through the mount" >&2
python3 - "$MNT/tree" "$FILES" "$BYTES" <<'PY'
import os, sys
root, n, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = total // n
block = os.urandom(size + 4096)
for i in range(n):
    d = f"{root}/d{i // 1000:03d}"
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06d}", "wb") as f:
        # Unique content per file: a rotated window of random bytes plus the index.
        off = (i * 7919) % 4096
        f.write(i.to_bytes(8, "little") + block[off:off + size - 8])
PY
sleep 2
T_MKDIR=$(secs mkdir "$MNT/.snapshots/bench-named")

echo "== ls -lR of a snapshot vs the live tree" >&2
secs ls -lR "$MNT/tree" >/dev/null; secs ls -lR "$MNT/.snapshots/bench-named/tree" >/dev/null  # warm both
T_LS_LIVE=$(secs ls -lR "$MNT/tree")
T_LS_SNAP=$(secs ls -lR "$MNT/.snapshots/bench-named/tree")

echo "== cp of a 1 GiB file out of an old snapshot vs the live tree" >&2
head -c $((1 << 30)) /dev/urandom > "$WORK/v1"
cp "$WORK/v1" "$MNT/big"
sleep 2
T_OLD=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
sleep 1
# The live file gets a new version: the same size, the first 100 MiB rewritten.
head -c $((100 << 20)) /dev/urandom | dd of="$MNT/big" conv=notrunc status=none
sleep 2
cmp "$WORK/v1" "$MNT/.snapshots/at/$T_OLD/big"
# Cold cache each time, alternating, best of two: order effects cancel out.
best=()
for src in "$MNT/big" "$MNT/.snapshots/at/$T_OLD/big" "$MNT/big" "$MNT/.snapshots/at/$T_OLD/big"; do
  drop_caches
  best+=("$(secs cp "$src" "$WORK/out")")
done
T_CP_LIVE=$(python3 -c "print(min(${best[0]}, ${best[2]}))")
T_CP_SNAP=$(python3 -c "print(min(${best[1]}, ${best[3]}))")
rm -f "$WORK/out" "$WORK/v1"

python3 - "$SCALE" "$FILES" "$BYTES" "$T_MKDIR" "$T_LS_LIVE" "$T_LS_SNAP" "$T_CP_LIVE" "$T_CP_SNAP" >> "$RESULTS" <<'PY'
import json, sys
scale, files, nbytes = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
mkdir, ls_live, ls_snap, cp_live, cp_snap = map(float, sys.argv[4:9])
print(json.dumps({"section": "snapshots", "files": files, "bytes": nbytes,
    "snapshot_name_seconds": mkdir,
    "ls_lR_snapshot_over_live": ls_snap / ls_live, "ls_lR_live_seconds": ls_live, "ls_lR_snapshot_seconds": ls_snap,
    "cp_1GiB_snapshot_over_live": cp_snap / cp_live, "cp_live_seconds": cp_live, "cp_snapshot_seconds": cp_snap}))
PY
umount "$MNT"; for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done; PID=""
fi

if want replica; then
  CKPT_BYTES=$(python3 -c "print(int(4 * 2**30 * $SCALE))")
  # write_sequence DIR: a checkpoint sequence of 8 saves (temp file + rename), seconds.
  write_sequence() { python3 - "$1" "$CKPT_BYTES" <<'PY'
import os, sys, time
d, total = sys.argv[1], int(sys.argv[2])
each = total // 8
t = time.perf_counter()
for step in range(8):
    with open(f"{d}/ckpt.tmp", "wb") as f:
        left = each
        while left > 0:
            n = min(left, 8 << 20); f.write(os.urandom(n)); left -= n  # trained weights: no dedup
    os.rename(f"{d}/ckpt.tmp", f"{d}/ckpt.safetensors")
print(f"{time.perf_counter() - t:.4f}")
PY
  }
  # fsync_latency DIR: median and p99 of 200 x (4 KiB write + fsync), milliseconds.
  fsync_latency() { python3 - "$1" <<'PY'
import os, sys, time
fd = os.open(f"{sys.argv[1]}/fsync.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
lat = []
for i in range(200):
    os.write(fd, os.urandom(4096)); t = time.perf_counter(); os.fsync(fd); lat.append(time.perf_counter() - t)
lat.sort()
print(f"{lat[100] * 1000:.3f} {lat[197] * 1000:.3f}")
PY
  }
  echo "== checkpoint sequence of $((CKPT_BYTES >> 20)) MiB without a replica" >&2
  rm -rf "$WORK/store"; "$BIN" init "$WORK/store" >/dev/null; mount_store
  T_NOREP=$(write_sequence "$MNT")
  FSYNC=$(fsync_latency "$MNT"); read -r F_MED F_P99 <<< "$FSYNC"
  umount "$MNT"; for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$WORK/store"
  echo "== the same with an asynchronous replica in another directory" >&2
  mkdir -p "$WORK/replica"; "$BIN" init "$WORK/store" --replica "$WORK/replica" >/dev/null; mount_store
  # Sample the lag while writing.
  ( while mountpoint -q "$MNT"; do "$BIN" status "$WORK/store" --json 2>/dev/null | python3 -c 'import json,sys; r=json.load(sys.stdin)["replica"]; print(r["lag_bytes"], r["lag_seconds"], r["lag_commits"])' || true; sleep 0.5; done ) > "$WORK/lag.txt" 2>/dev/null &
  SAMPLER=$!
  T_REP=$(write_sequence "$MNT")
  T0=$(date +%s.%N)
  for _ in $(seq 1 1200); do
    "$BIN" status "$WORK/store" --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["replica"]; sys.exit(0 if r["lag_commits"]==0 and r["lag_bytes"]==0 else 1)' && break
    sleep 0.1
  done
  T_CATCHUP=$(python3 -c "import time; print(f'{time.time() - $T0:.3f}')")
  umount "$MNT"; for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
  echo "== fsync latency with --replica-sync" >&2
  "$BIN" mount "$WORK/store" "$MNT" --daemon --replica-sync >/dev/null; PID=$(cat "$WORK/store/lock")
  FSYNC=$(fsync_latency "$MNT"); read -r S_MED S_P99 <<< "$FSYNC"
  umount "$MNT"; for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done; PID=""
  python3 - "$CKPT_BYTES" "$T_NOREP" "$T_REP" "$T_CATCHUP" "$F_MED" "$F_P99" "$S_MED" "$S_P99" "$WORK/lag.txt" >> "$RESULTS" <<'PY'
import json, sys
nbytes = int(sys.argv[1]); norep, rep, catchup, fmed, fp99, smed, sp99 = map(float, sys.argv[2:9])
lags = [tuple(map(float, l.split())) for l in open(sys.argv[9]) if len(l.split()) == 3]
print(json.dumps({"section": "replica", "checkpoint_bytes": nbytes,
    "write_seconds_no_replica": norep, "write_seconds_async_replica": rep,
    "write_throughput_replica_over_none": norep / rep,
    "max_lag_bytes": max([l[0] for l in lags], default=0), "max_lag_seconds": max([l[1] for l in lags], default=0),
    "catch_up_seconds_after_last_write": catchup,
    "fsync_ms_median": fmed, "fsync_ms_p99": fp99, "fsync_ms_median_replica_sync": smed, "fsync_ms_p99_replica_sync": sp99,
    "fsync_replica_sync_over_none": smed / fmed}))
PY
fi

if want history; then
  echo "== history: log, at/ lookup and status against the number of commits; restore vs cp -a" >&2
  python3 scripts/bench_history.py "$BIN" "$WORK" "$SCALE" >> "$RESULTS"
fi

if want bigfile; then
  echo "== big file: pwrite + fsync at random offsets, SQLite transactions, RSS" >&2
  python3 -c 'import numpy' 2>/dev/null || python3 -m pip install -q numpy
  # The baseline for "sequential speed unchanged": the last release whose
  # files were one flat manifest (format 2).
  base_rev=${BENCH_BASE_REV:-de77a6c}
  base_bin=()
  if git cat-file -e "$base_rev^{commit}" 2>/dev/null; then
    git worktree add -q --detach "$WORK/base-src" "$base_rev"
    (cd "$WORK/base-src" && CARGO_TARGET_DIR="$WORK/base-target" cargo build --release -q)
    base_bin=("$WORK/base-target/release/revfs")
  fi
  python3 scripts/bench_bigfile.py "$BIN" "$WORK" "$SCALE" "${base_bin[@]}" >> "$RESULTS"
  if [ -d "$WORK/base-src" ]; then git worktree remove --force "$WORK/base-src"; fi
fi

if want retention; then
  command -v rsync >/dev/null || { apt-get update -qq && apt-get install -y -qq rsync >/dev/null; }
  python3 -c 'import numpy' 2>/dev/null || python3 -m pip install -q numpy
  python3 scripts/bench_retention.py "$BIN" "$WORK" "$SCALE" "$ROOT/../shared/bench/gen_workload.py" \
    "$ROOT/bench-results" >> "$RESULTS"
fi

if want encryption; then
  python3 -c 'import numpy' 2>/dev/null || python3 -m pip install -q numpy
  python3 scripts/bench_encryption.py "$BIN" "$WORK" "$SCALE" "$ROOT/../shared/bench/gen_workload.py" \
    >> "$RESULTS"
fi

if want s3; then
  command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
  python3 scripts/bench_s3.py "$BIN" "$WORK" "$SCALE" >> "$RESULTS"
fi

if want reads; then
  python3 scripts/bench_reads.py "$BIN" "$WORK" "$SCALE" >> "$RESULTS"
fi

if want small; then
  python3 scripts/bench_small.py "$BIN" "$WORK" "$SCALE" >> "$RESULTS"
fi

if want deltas; then
  python3 scripts/bench_deltas.py "$BIN" "$WORK" "$SCALE" "$ROOT/../shared/bench/gen_workload.py" >> "$RESULTS"
fi

python3 - "$ROOT/bench-results" "$SCALE" "$RESULTS" <<'PY'
import json, os, platform, subprocess, sys, time
out, scale = sys.argv[1], float(sys.argv[2])
sections = {r["section"]: r for r in map(json.loads, open(sys.argv[3]))}
r = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
     "machine": {"cores": os.cpu_count(), "loadavg": os.getloadavg(), "kernel": platform.release(),
                 "tools": {t: (subprocess.run(v, capture_output=True, text=True).stdout.strip().splitlines() or ["absent"])[0]
                           for t, v in {"revfs": ["target/release/revfs", "--version"], "restic": ["restic", "version"],
                                        "borg": ["borg", "--version"], "bindfs": ["bindfs", "--version"]}.items()
                           if __import__("shutil").which(v[0]) or t == "revfs"}},
     "scale": scale, **sections}
path = f"{out}/bench-{r['date'].replace(':', '')}.json"
json.dump(r, open(path, "w"), indent=2)
print(f"\n## revfs benchmark ({r['date']}, {r['machine']['cores']} cores, load {r['machine']['loadavg'][0]:.2f}, scale {scale})\n")
print("| figure | value | baseline in the same run |")
print("|---|---|---|")
s = sections.get("perf")
if s:
    q, w = s["seq"], s["workload"]
    wm, rm = q["write_mbs"], q["read_mbs"]
    best = f"best of {q['rounds']}, alternating: " if "rounds" in q else ""
    print(f"| (a) sequential write {q['mib']} MiB + fsync, revfs / direct | {wm['revfs'] / wm['direct']:.2f}x (target >= 0.75) | {best}direct {wm['direct']:.0f} MB/s, revfs {wm['revfs']:.0f} MB/s |")
    print(f"| (a) sequential write, revfs / bindfs | {wm['revfs'] / wm['bindfs']:.2f}x (target >= 3) | bindfs {wm['bindfs']:.0f} MB/s |")
    print(f"| (a) sequential read (cold), revfs live / direct | {rm['revfs'] / rm['direct']:.2f}x (target >= 0.8) | {best}direct {rm['direct']:.0f} MB/s, revfs {rm['revfs']:.0f} MB/s, bindfs {rm['bindfs']:.0f} MB/s |")
    print(f"| (a) sequential read (cold), revfs snapshot / direct | {rm['revfs_snapshot'] / rm['direct']:.2f}x (target >= 0.8) | - |")
    t = w["ingest_seconds"]
    print(f"| (b) workload ingest time, revfs / direct | {t['revfs'] / t['direct']:.2f}x | direct {t['direct']:.1f} s |")
    print(f"| (b) workload ingest time, revfs / bindfs | {t['revfs'] / t['bindfs']:.2f}x | bindfs {t['bindfs']:.1f} s |")
    print(f"| (b) direct+restic / revfs, direct+borg / revfs (time) | {t['direct+restic'] / t['revfs']:.2f}x, {t['direct+borg'] / t['revfs']:.2f}x (target >= 2) | restic {t['direct+restic']:.1f} s, borg {t['direct+borg']:.1f} s |")
    sb = w["stored_bytes"]
    print(f"| (c) stored bytes after all steps, revfs / min(restic, borg) | {sb['revfs'] / min(sb['restic'], sb['borg']):.2f}x (target <= 0.9) | revfs {sb['revfs'] / 2**20:.0f} MiB, restic {sb['restic'] / 2**20:.0f} MiB, borg {sb['borg'] / 2**20:.0f} MiB |")
    if "revfs_recompressed" in sb:
        print(f"| (c) stored bytes once recoded cold (prune --recompress), revfs / min(restic, borg) | {sb['revfs_recompressed'] / min(sb['restic'], sb['borg']):.2f}x | revfs {sb['revfs_recompressed'] / 2**20:.0f} MiB ({sb['revfs_recompressed'] / sb['revfs']:.2f} of as written) in {w['recompress_seconds']:.1f} s |")
    per = w["stored_per_step"]
    for i, kind in enumerate(w["steps"]):
        print(f"| (c) step {i} ({kind}) stored MiB: revfs / restic / borg | {per['revfs'][i] / 2**20:.1f} / {per['restic'][i] / 2**20:.1f} / {per['borg'][i] / 2**20:.1f} | checkpoint {w['checkpoint_bytes'] / 2**20:.0f} MiB |")
    print(f"| (d) close() after a {q['close_mib']} MiB sequential write | {q['close_ms_after_1GiB']:.1f} ms (target <= 50) | - |")
    sf = s["small_files"]["per_second"]
    print(f"| (e) create+write+close of {s['small_files']['files']} 4-KiB files, revfs / direct, revfs / bindfs | {sf['revfs'] / sf['direct']:.2f}x, {sf['revfs'] / sf['bindfs']:.2f}x | direct {sf['direct']:.0f}/s, bindfs {sf['bindfs']:.0f}/s, revfs {sf['revfs']:.0f}/s |")
    c = s["commit"]
    print(f"| (f) commit (fsync) after a one-file change in a {c['tree_files']}-file tree | {c['ms_one_file_change_in_tree']:.1f} ms (target <= 10) | alone {c['ms_one_file_change_alone']:.1f} ms |")
    print(f"| (g) peak daemon RSS over the workload | {w['peak_rss_mib']:.0f} MiB (target <= 300) | - |")
    print(f"| (h) read of an old checkpoint from .snapshots / of the live one (cold) | {w['old_checkpoint_read_mbs'] / w['live_checkpoint_read_mbs']:.2f}x | live {w['live_checkpoint_read_mbs']:.0f} MB/s |")
s = sections.get("snapshots")
if s:
    print(f"| name a snapshot (`mkdir .snapshots/NAME`) on {s['bytes'] / 2**30:.1f} GiB in {s['files']} files | {s['snapshot_name_seconds'] * 1000:.1f} ms | - |")
    print(f"| `ls -lR` of a snapshot / of the live tree | {s['ls_lR_snapshot_over_live']:.2f}x | live {s['ls_lR_live_seconds']:.2f} s |")
    print(f"| `cp` of 1 GiB from an old snapshot / from the live tree (cold cache) | {s['cp_1GiB_snapshot_over_live']:.2f}x | live {s['cp_live_seconds']:.2f} s |")
s = sections.get("replica")
if s:
    gib = s["checkpoint_bytes"] / 2**30
    print(f"| write throughput, {gib:.1f} GiB checkpoint sequence, async replica / no replica | {s['write_throughput_replica_over_none']:.2f}x | none {s['checkpoint_bytes'] / s['write_seconds_no_replica'] / 2**20:.0f} MiB/s |")
    print(f"| replication lag while writing (max) | {s['max_lag_bytes'] / 2**20:.0f} MiB, {s['max_lag_seconds']:.1f} s | - |")
    print(f"| replica caught up after the last write | {s['catch_up_seconds_after_last_write']:.1f} s | - |")
    print(f"| fsync latency, --replica-sync / none (median) | {s['fsync_replica_sync_over_none']:.2f}x | none {s['fsync_ms_median']:.2f} ms (p99 {s['fsync_ms_p99']:.2f}); sync {s['fsync_ms_median_replica_sync']:.2f} ms (p99 {s['fsync_ms_p99_replica_sync']:.2f}) |")
s = sections.get("history")
if s:
    for l in s["levels"]:
        print(f"| {l['commits']:,} commits: `revfs log`, `at/` lookup, `revfs status` | {l['log_ms']:.1f} ms, {l['at_lookup_ms']:.2f} ms, {l['status_ms']:.1f} ms (log goal <= 50) | {l['commits_per_second']:.0f} commits/s made |")
    r = s["restore"]
    print(f"| `revfs restore` of a {r['bytes'] / 2**30:.1f} GiB directory / `cp -a` of it | {r['cp_over_restore']:.0f}x faster | restore {r['restore_seconds'] * 1000:.0f} ms, cp -a {r['cp_a_seconds']:.2f} s |")
s = sections.get("bigfile")
if s:
    e, q, t = s["pwrite_fsync"], s["sqlite_commit_ms_median"], s["sqlite_per_transaction"]
    print(f"| 4 KiB pwrite + fsync at random offsets of a {s['file_bytes'] / 2**30:.0f} GiB file, p50 / p99 | {e['p50_ms']:.1f} / {e['p99_ms']:.1f} ms (target p99 <= 20) | metadata {e['metadata_bytes_per_version'] / 1024:.1f} KiB per version (target <= 64), {e['chunks_per_version']:.1f} chunks |")
    print(f"| 1,000 fsync'd SQLite updates of a {s['db_bytes'] / 2**30:.1f} GiB database, median commit revfs / direct | {q['revfs'] / q['direct']:.2f}x (target <= 3) | direct {q['direct']:.2f} ms, revfs {q['revfs']:.2f} ms; {t['chunks']:.2f} chunks (target <= 3), {t['stored_bytes'] / 1024:.0f} KiB stored per transaction |")
    print(f"| daemon RSS after writing a {s['big_bytes'] / 2**30:.0f} GiB file | {s['rss_kib_after_big_write'] / 1024:.0f} MiB (target <= 150) | before {s['rss_kib_before'] / 1024:.0f} MiB |")
    if "seq_mbs" in s:
        n, b = s["seq_mbs"]["revfs"], s["seq_mbs"]["base"]
        print(f"| sequential {s['seq_bytes'] / 2**30:.1f} GiB write + fsync / cold read, this build / release before trees | {n['write'] / b['write']:.2f}x / {n['read'] / b['read']:.2f}x (target 1) | before {b['write']:.0f} / {b['read']:.0f} MB/s; daemon CPU per GiB written {n['cpu_s_per_gib']:.2f} s, before {b['cpu_s_per_gib']:.2f} s |")
s = sections.get("retention")
if s:
    kept, every = s["store_bytes"]["--keep-last 3, pruned every step"], s["store_bytes"]["keep everything"]
    m, o = s["mounted_prunes"], s["offline_prune"]
    print(f"| store after {s['steps']} workload steps, --keep-last 3 / keep everything | {kept[-1] / every[-1]:.2f}x | {kept[-1] / 2**20:.0f} MiB vs {every[-1] / 2**20:.0f} MiB; plot {s['plot']} |")
    print(f"| prune while mounted, after every step | {m['examined_gib_per_s']:.1f} GiB/s examined, {m['freed_gib_per_s']:.1f} GiB/s freed | {m['count']} prunes, longest {m['max_seconds']:.2f} s |")
    print(f"| offline prune of the kept-everything store to its head | {o['examined_gib_per_s']:.1f} GiB/s examined, {o['freed_gib_per_s']:.1f} GiB/s freed | {o['seconds']:.2f} s, peak RSS {o['peak_rss_kib'] / 1024:.0f} MiB |")
    a, b = s["mark_memory"]
    print(f"| prune's memory per reachable object (two store sizes), whole process / the mark set | {s['mark_bytes_per_object']:.0f} B / {b.get('mark_set_bytes', 0) / max(1, b['objects_marked']):.0f} B | {a['objects_marked']:,} objects: {a['peak_rss_kib'] / 1024:.0f} MiB, {b['objects_marked']:,}: {b['peak_rss_kib'] / 1024:.0f} MiB (target <= 300 MiB at 1 M) |")
    c = s.get("chunk_memory")
    if c:
        st = c["stores"]
        lo, hi = st[0], st[-1]
        slope = (hi["peak_rss_kib"] - lo["peak_rss_kib"]) * 1024 / max(1, hi["objects_marked"] - lo["objects_marked"])
        set_b = hi["mark_set_bytes"] / max(1, hi["objects_marked"])
        proj = hi["peak_rss_kib"] * 1024 + max(slope, set_b) * (1e6 - hi["objects_marked"])
        rss = ", ".join(f"{x['objects_marked']:,}: {x['peak_rss_kib'] / 1024:.0f} MiB" for x in st)
        print(f"| prune's peak RSS on one big file's chunks (chunks: RSS) | {rss} | {slope:.0f} B per chunk between the sizes, mark set {set_b:.0f} B per object; empty store {c['empty_store_rss_kib'] / 1024:.0f} MiB; at 1 M chunks about {proj / 2**20:.0f} MiB by this slope (target <= 300) |")
s = sections.get("encryption")
if s:
    w, i = s["seq_write_mbs"], s["ingest_seconds"]
    print(f"| sequential write {s['seq_mib']} MiB + fsync, encrypted / plain store | {s['seq_write_ratio']:.2f}x (target >= 0.85) | best of {s['rounds']}: plain {max(w['plain']):.0f} MB/s, encrypted {max(w['encrypted']):.0f} MB/s |")
    r = s["seq_read_mbs"]
    print(f"| sequential read (cold) of it, encrypted / plain store | {s['seq_read_ratio']:.2f}x | best of {s['rounds']}: plain {max(r['plain']):.0f} MB/s, encrypted {max(r['encrypted']):.0f} MB/s |")
    print(f"| AI workload ingest, encrypted / plain (throughput) | {s['ingest_ratio']:.2f}x (target >= 0.85) | best of {s['rounds']}: plain {min(i['plain']):.2f} s, encrypted {min(i['encrypted']):.2f} s |")
    d, b = s["dedup_ratio"], s["stored_bytes"]
    print(f"| dedup ratio (logical / stored), encrypted / plain | {s['dedup_ratio_change']:.3f}x | plain {d['plain']:.2f} ({b['plain'] / 2**20:.0f} MiB), encrypted {d['encrypted']:.2f} ({b['encrypted'] / 2**20:.0f} MiB) of {s['logical_bytes'] / 2**20:.0f} MiB written |")
    o = s["opening"]
    print(f"| open an unmounted store (`revfs status`), mount until served: encrypted / plain | {o['encrypted']['status_seconds']:.2f} s / {o['plain']['status_seconds']:.2f} s, {o['encrypted']['mount_seconds']:.2f} s / {o['plain']['mount_seconds']:.2f} s | argon2id 64 MiB, t=3 per unlock |")
s = sections.get("s3")
if s:
    d, b = s["best"]["dir"], s["best"]["s3"]
    print(f"| replication of a {s['mib']} MiB checkpoint until lag 0, S3 / directory replica | {b['throughput_mbs'] / d['throughput_mbs']:.2f}x | best of {s['rounds']}: S3 (SeaweedFS {s['seaweedfs']}, 127.0.0.1) {b['throughput_mbs']:.0f} MB/s, directory {d['throughput_mbs']:.0f} MB/s |")
    print(f"| catch-up after the checkpoint's fsync, S3 / directory | {b['catch_up_seconds']:.2f} s / {d['catch_up_seconds']:.2f} s | - |")
    print(f"| recover from the replica alone, per GiB, S3 / directory | {b['recover_seconds_per_gib']:.1f} s / {d['recover_seconds_per_gib']:.1f} s | S3: download, then the same rebuild |")
    if "first_byte_seconds" in b:
        print(f"| read-only mount of the replica: mount command to the first byte, S3 / directory | {b['first_byte_seconds']:.2f} s / {d['first_byte_seconds']:.2f} s | S3: ranged GETs through the block cache |")
        print(f"| cold sequential read of the checkpoint through that mount, S3 / directory | {b['cold_read_mbs'] / d['cold_read_mbs']:.2f}x | S3 {b['cold_read_mbs']:.0f} MB/s, directory {d['cold_read_mbs']:.0f} MB/s (its packs in the page cache) |")
s = sections.get("reads")
if s:
    b, q = s["best"], s["ratios"]
    print(f"| cold sequential read of a {s['mib']} MiB file, revfs / direct | {q['cold_mbs']:.2f}x (target >= 0.8) | best of {s['rounds']}: direct {b['cold_mbs']['direct']:.0f} MB/s, revfs {b['cold_mbs']['revfs']:.0f} MB/s |")
    print(f"| re-read after reopen (pages cached), revfs / direct | {q['reread_mbs']:.2f}x (target >= 0.8) | direct {b['reread_mbs']['direct']:.0f} MB/s, revfs {b['reread_mbs']['revfs']:.0f} MB/s |")
    print(f"| random 4 KiB cold reads, revfs / direct | {q['random_4k_iops']:.2f}x (target >= 0.5) | direct {b['random_4k_iops']['direct']:.0f}/s, revfs {b['random_4k_iops']['revfs']:.0f}/s |")
    if "snapshot_over_live_cold" in q:
        print(f"| cold sequential read of the file in a snapshot, snapshot / live | {q['snapshot_over_live_cold']:.2f}x (target 1) | snapshot {b['snapshot_cold_mbs']:.0f} MB/s |")
    print(f"| re-read after reopen of the file in a snapshot, snapshot / live | {q['snapshot_over_live_reread']:.2f}x (target 1) | snapshot {b['snapshot_reread_mbs']:.0f} MB/s |")
s = sections.get("small")
if s:
    b, q, g = s["best"], s["ratios"], s["big"]
    print(f"| create {s['files']} files of 2 KiB (open/write/close), revfs / direct | {q['create']:.2f}x (target >= 0.3) | best of {s['rounds']}: direct {b['create_per_s']['direct']:.0f}/s, revfs {b['create_per_s']['revfs']:.0f}/s |")
    print(f"| find of that tree, cold, revfs / direct | {q['find']:.2f}x (target >= 0.8) | direct {b['find_s']['direct']:.2f} s, revfs {b['find_s']['revfs']:.2f} s |")
    print(f"| du -s of that tree, cold, revfs / direct | {q['du']:.2f}x (target >= 0.8) | direct {b['du_s']['direct']:.2f} s, revfs {b['du_s']['revfs']:.2f} s |")
    print(f"| daemon RSS after {g['files']} files created in one mount | {g['rss_mib']:.0f} MiB (peak {g['peak_rss_mib']:.0f}; target <= 300) | {g['per_s']:.0f} files/s |")
s = sections.get("deltas")
if s:
    for key, (t_all, t_step) in (("bf16", (0.6, 0.35)), ("f32", (0.8, 0.65))):
        d = s[key]
        sb, per, ck = d["stored_bytes"], d["stored_per_step"], d["checkpoint_bytes"]
        best = "rustic_64k" if "rustic_64k" in sb else min(("restic", "borg"), key=lambda t: sb[t])
        peers = ", ".join(f"{t} {sb[t] / 2**20:.0f} MiB" for t in ("restic", "borg", "rustic_64k") if t in sb)
        print(f"| {key} seed {d['seed']}: stored bytes after {len(d['steps'])} steps, revfs / {best} | {sb['revfs'] / sb[best]:.2f}x (target <= {t_all} of rustic 64K) | revfs {sb['revfs'] / 2**20:.0f} MiB (as written {sb['revfs_as_written'] / 2**20:.0f}), {peers} |")
        full = [per["revfs"][i] / ck for i, k in enumerate(d["steps"]) if k == "train_full"]
        print(f"| {key}: a full-training step's stored bytes / its checkpoint (growth of the store over the step) | {max(full):.2f}x worst, {min(full):.2f}x best (target <= {t_step}) | checkpoint {ck / 2**20:.0f} MiB; {d['deltas_written']} delta records |")
        if "stored_per_version" in d:
            pv = d["stored_per_version"]["revfs"]
            vfull = [pv[i] / ck for i, k in enumerate(d["steps"][:len(pv)]) if k == "train_full"]
            print(f"| {key}: a full-training step's version once old (growth over the step after it) | {max(vfull):.2f}x worst, {min(vfull):.2f}x best | per version: {', '.join(f'{x / ck:.2f}' for x in pv)} |")
        r = d["read_mbs"]
        print(f"| {key}: cold read of the newest / oldest checkpoint, deltas / no deltas (zstd) | {r['newest']['deltas'] / r['newest']['cold']:.2f}x / {r['oldest']['deltas'] / r['oldest']['cold']:.2f}x (target >= 0.8 / 0.5) | no deltas {r['newest']['cold']:.0f} / {r['oldest']['cold']:.0f} MB/s (stored {sb['revfs_no_deltas'] / 2**20:.0f} MiB) |")
        if "middle" in r:
            print(f"| {key}: cold read of the middle version ({len(d['steps']) // 2 + 1} of {len(d['steps'])}), deltas / no deltas | {r['middle']['deltas'] / r['middle']['cold']:.2f}x | no deltas {r['middle']['cold']:.0f} MB/s, deltas {r['middle']['deltas']:.0f} MB/s |")
        print(f"| {key}: the same, deltas / as written (lz4, no rounds) | {r['newest']['deltas'] / r['newest']['plain']:.2f}x / {r['oldest']['deltas'] / r['oldest']['plain']:.2f}x | as written {r['newest']['plain']:.0f} / {r['oldest']['plain']:.0f} MB/s |")
print(f"\nJSON: {path}")
PY
