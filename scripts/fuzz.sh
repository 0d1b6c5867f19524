#!/usr/bin/env bash
# Runs every fuzz target (fuzz/) for SECONDS each (default 60) with cargo fuzz.
# Needs cargo-fuzz (cargo install cargo-fuzz); RUSTC_BOOTSTRAP lets the
# stable toolchain build with the sanitizer flags cargo fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in $(cargo fuzz list); do
  echo "== fuzzing $t for ${SECONDS_EACH}s"
  if ! cargo fuzz run -O "$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 >"$log" 2>&1; then
    grep -E "panicked|ERROR|SUMMARY|Test unit" "$log"
    echo "fuzz target $t failed"
    exit 1
  fi
  grep -E "^Done" "$log"
done
