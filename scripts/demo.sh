#!/usr/bin/env bash
# The main job in one command: build revfs, create ./demo/store, mount it at
# ./demo/mnt, run a small training job that saves checkpoints (atomic
# temp-file + rename, as PyTorch/safetensors users do) and appends metrics
# to a CSV, show what revfs recorded; then a job that rotates its checkpoint
# directories away, and the user restoring the one it deleted; unmount cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO=$ROOT/demo
BIN=$ROOT/target/release/revfs

if [ "$(id -u)" != 0 ] && [ ! -w /dev/fuse ]; then
  echo "demo: mounting needs root or access to /dev/fuse" >&2; exit 1
fi
command -v cargo >/dev/null || { echo "demo: cargo is needed (https://rustup.rs)" >&2; exit 1; }
echo "== building revfs (release)"
cargo build --release -q

# A previous demo may still be mounted: unmount it before starting over.
if mountpoint -q "$DEMO/mnt" 2>/dev/null; then umount "$DEMO/mnt" || umount -l "$DEMO/mnt"; fi
rm -rf "$DEMO"
mkdir -p "$DEMO/mnt"

"$BIN" init "$DEMO/store"
"$BIN" mount "$DEMO/store" "$DEMO/mnt" --daemon
PID=$(cat "$DEMO/store/lock")
cleanup() {
  if mountpoint -q "$DEMO/mnt"; then umount "$DEMO/mnt" 2>/dev/null || umount -l "$DEMO/mnt"; fi
  for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || return 0; sleep 0.1; done
  echo "demo: daemon $PID did not exit after unmount" >&2; return 1
}
trap cleanup EXIT

echo "== running a small training job in $DEMO/mnt"
python3 - "$DEMO/mnt" <<'PY'
import os, random, struct, sys, time
mnt = sys.argv[1]
os.makedirs(f"{mnt}/run/checkpoints", exist_ok=True)
rng = random.Random(42)
# 32 "tensors" of 256 KiB each: an 8 MiB model.
tensors = [bytearray(rng.randbytes(256 * 1024)) for _ in range(32)]
with open(f"{mnt}/run/metrics.csv", "w") as f:
    f.write("step,loss,lr\n")
for step in range(1, 6):
    # Fine-tuning touches a few tensors per step; the rest stay identical.
    for t in rng.sample(range(32), 3):
        tensors[t][:] = rng.randbytes(256 * 1024)
    tmp = f"{mnt}/run/checkpoints/model.safetensors.tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", step))
        for t in tensors:
            f.write(t)
        f.flush(); os.fsync(f.fileno())
    os.rename(tmp, f"{mnt}/run/checkpoints/model.safetensors")
    with open(f"{mnt}/run/metrics.csv", "a") as f:
        f.write(f"{step},{2.5 / step:.4f},{3e-4 * 0.9 ** step:.6f}\n")
    print(f"  step {step}: saved checkpoints/model.safetensors (8 MiB), appended metrics.csv")
    time.sleep(1.2)  # one commit interval, so every step is its own version
PY
sleep 1.5
echo
echo "== the live tree"
ls -la "$DEMO/mnt/run" "$DEMO/mnt/run/checkpoints"
echo
echo "== metrics.csv"
cat "$DEMO/mnt/run/metrics.csv"
echo
echo "== history: ls $DEMO/mnt/.snapshots"
ls "$DEMO/mnt/.snapshots"
echo
echo "== every version of the checkpoint: revfs log $DEMO/mnt/run/checkpoints/model.safetensors"
"$BIN" log "$DEMO/mnt/run/checkpoints/model.safetensors"
FIRST=$("$BIN" log "$DEMO/mnt/run/checkpoints/model.safetensors" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["path"])')
echo
echo "== restore step 1's checkpoint: cp \"$FIRST\" $DEMO/restored-step1.safetensors"
cp "$FIRST" "$DEMO/restored-step1.safetensors"
python3 -c "import struct,sys; print('   restored checkpoint is from step', struct.unpack('<Q', open(sys.argv[1],'rb').read(8))[0])" "$DEMO/restored-step1.safetensors"
echo
echo "== a job that rotates its checkpoints (Hugging Face Trainer layout, save_total_limit=2)"
python3 - "$DEMO/mnt" <<'PY'
import json, os, random, shutil, sys
out = f"{sys.argv[1]}/run/trainer"
for step in (100, 200, 300, 400):
    d = f"{out}/checkpoint-{step}"
    os.makedirs(d)
    with open(f"{d}/model.safetensors", "wb") as f:
        f.write(random.Random(step).randbytes(1 << 20))
    with open(f"{d}/optimizer.pt", "wb") as f:
        f.write(random.Random(-step).randbytes(512 << 10))
    with open(f"{d}/trainer_state.json", "w") as f:  # the Trainer writes it last
        json.dump({"global_step": step}, f)
    if step > 200:
        shutil.rmtree(f"{out}/checkpoint-{step - 200}")  # the job's own rotation
    print(f"  saved checkpoint-{step}; the job keeps {sorted(os.listdir(out))}")
PY
echo
echo "== every checkpoint it ever saved: revfs checkpoints $DEMO/mnt"
"$BIN" checkpoints "$DEMO/mnt"
GONE=$("$BIN" checkpoints "$DEMO/mnt" --json | python3 -c 'import json,sys; print([c for c in json.load(sys.stdin) if c["deleted"]][0]["path"])')
echo
echo "== restore the one the job deleted: cp -a \"$GONE\" $DEMO/checkpoint-100"
cp -a "$GONE" "$DEMO/checkpoint-100"
ls -l "$DEMO/checkpoint-100"
python3 -c "import json,sys; print('   restored trainer_state.json says step', json.load(open(sys.argv[1]))['global_step'])" "$DEMO/checkpoint-100/trainer_state.json"
echo
echo "== what revfs keeps (revfs status $DEMO/store)"
"$BIN" status "$DEMO/store"
"$BIN" status "$DEMO/store" --json > "$DEMO/status.json"
python3 - "$DEMO/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"\n{s['versions']} versions of {s['logical_bytes'] / 2**20:.1f} MiB in all are stored in "
      f"{s['stored_bytes'] / 2**20:.1f} MiB: every checkpoint kept, unchanged tensors stored once.")
PY
echo
cleanup
trap - EXIT
echo "== unmounted cleanly. Look around:"
echo "   store (packs + catalog): $DEMO/store"
echo "   mount it again:          $BIN mount $DEMO/store $DEMO/mnt"
