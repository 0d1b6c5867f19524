#!/usr/bin/env bash
# Benchmarks of revfs. Every figure is a ratio against a baseline measured in
# the same run (absolute times on shared machines are noisy). Prints a
# Markdown table and writes JSON under bench-results/.
#
#   scripts/bench.sh            full size (snapshots: 10 GiB in 100,000 files)
#   scripts/bench.sh --quick    a tenth of the size, for development
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SCALE=1
[ "${1:-}" = "--quick" ] && SCALE=0.1
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
drop_caches
T_CP_LIVE=$(secs cp "$MNT/big" "$WORK/out-live")
drop_caches
T_CP_SNAP=$(secs cp "$MNT/.snapshots/at/$T_OLD/big" "$WORK/out-snap")
rm -f "$WORK/out-live" "$WORK/out-snap" "$WORK/v1"

STATUS=$("$BIN" status "$WORK/store" --json)
python3 - "$ROOT/bench-results" "$SCALE" "$FILES" "$BYTES" "$T_MKDIR" "$T_LS_LIVE" "$T_LS_SNAP" "$T_CP_LIVE" "$T_CP_SNAP" "$STATUS" <<'PY'
import json, os, platform, subprocess, sys, time
out, scale, files, nbytes = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
mkdir, ls_live, ls_snap, cp_live, cp_snap = map(float, sys.argv[5:10])
status = json.loads(sys.argv[10])
r = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": {"cores": os.cpu_count(), "loadavg": os.getloadavg(), "kernel": platform.release(),
                "revfs": subprocess.run(["target/release/revfs", "--version"], capture_output=True, text=True).stdout.strip()},
    "scale": scale, "files": files, "bytes": nbytes,
    "snapshot_name_seconds": mkdir,
    "ls_lR_snapshot_over_live": ls_snap / ls_live, "ls_lR_live_seconds": ls_live, "ls_lR_snapshot_seconds": ls_snap,
    "cp_1GiB_snapshot_over_live": cp_snap / cp_live, "cp_live_seconds": cp_live, "cp_snapshot_seconds": cp_snap,
    "store": {k: status[k] for k in ("logical_bytes", "stored_bytes", "chunks", "commits")},
}
path = f"{out}/bench-{r['date'].replace(':', '')}.json"
json.dump(r, open(path, "w"), indent=2)
print(f"\n## revfs benchmark ({r['date']}, {r['machine']['cores']} cores, load {r['machine']['loadavg'][0]:.2f}, scale {scale})\n")
print("| figure | value | baseline in the same run |")
print("|---|---|---|")
print(f"| name a snapshot (`mkdir .snapshots/NAME`) on {nbytes / 2**30:.1f} GiB in {files} files | {mkdir * 1000:.1f} ms | - |")
print(f"| `ls -lR` of a snapshot / of the live tree | {ls_snap / ls_live:.2f}x | live {ls_live:.2f} s |")
print(f"| `cp` of 1 GiB from an old snapshot / from the live tree (cold cache) | {cp_snap / cp_live:.2f}x | live {cp_live:.2f} s |")
print(f"\nJSON: {path}")
PY
