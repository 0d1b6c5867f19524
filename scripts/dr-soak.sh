#!/usr/bin/env bash
# Disaster soak: N rounds (default 20) of writer with fsyncs, kill -9 of the
# daemon at a random moment, recover from the replica alone (every third
# round kills recover mid-way and runs it again), check every version
# fsync'ed before the last lag-0 report byte for byte, verify clean.
# Usage: scripts/dr-soak.sh [N] [--seed S]   (as root, with /dev/fuse)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
exec python3 scripts/dr_soak.py "$@"
