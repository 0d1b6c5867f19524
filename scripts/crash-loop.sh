#!/usr/bin/env bash
# Long crash soak: scripts/crash-loop.sh N runs N kill -9 iterations of the
# crash harness (tests/crash_harness.rs) through real mounts. SEED=S picks the
# first seed (iteration i uses S+i); a failure prints the seed that replays it:
#   SEED=<seed> scripts/crash-loop.sh 1
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
export CRASH_ITERATIONS=$N
export SEED=${SEED:-$(date +%s)}
echo "crash loop: $N iterations, seeds $SEED..$((SEED + N - 1))"
cargo test --release --test crash_harness -- --nocapture 2>&1 | grep -E "seed|crash|panicked|test result|replay"
