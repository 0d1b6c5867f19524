#!/usr/bin/env bash
# Runs every fuzz target (fuzz/) for SECONDS each (default 60) with cargo fuzz.
# Needs cargo-fuzz (cargo install cargo-fuzz); RUSTC_BOOTSTRAP lets the
# stable toolchain build with the sanitizer flags cargo fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
for t in $(cargo fuzz list); do
  echo "== fuzzing $t for ${SECONDS_EACH}s"
  cargo fuzz run "$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 2>&1 | grep -E "^(#[0-9]+ +DONE|==|SUMMARY|Done)|panicked|ERROR" || true
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "fuzz target $t failed"; exit 1; }
done
