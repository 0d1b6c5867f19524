#!/usr/bin/env bash
# Runs every check of revfs: formatting, lints, unit + engine tests, mount tests
# (real FUSE mounts; need root and /dev/fuse), and the shared acceptance script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --release --all-targets -q -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Mount tests run the release binary; two at a time keeps the 2-core machine responsive.
cargo test --release --lib --bins --tests -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")
accept=""
# A short run of the disaster soak (scripts/dr-soak.sh N runs more by hand).
if [ "$status" = 0 ]; then
  if python3 scripts/dr_soak.py 20; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi
# The shared acceptance scripts check the issues through a real mount, with the exact CLI.
for a in foundation snapshots replica history encryption; do
  script=../shared/acceptance/$a
  [ "$status" = 0 ] && [ -f "$script" ] || continue
  if bash "$script"; then passed=$((passed + 1)); else failed=$((failed + 1)); accept="$accept $a"; fi
done
# `ops` mounts through mount(8), which finds helpers only on its own PATH
# (/usr/local/bin, ...): under CI this build is installed there first; by
# hand it runs when the installed revfs is this build (scripts/install.sh).
if [ "$status" = 0 ] && [ -f ../shared/acceptance/ops ]; then
  if [ "${CI:-}" = true ]; then REVFS_BIN=target/release/revfs bash scripts/install.sh >/dev/null; fi
  if cmp -s /usr/local/bin/revfs target/release/revfs; then
    if bash ../shared/acceptance/ops; then passed=$((passed + 1)); else failed=$((failed + 1)); accept="$accept ops"; fi
  else
    echo "acceptance ops not run: /usr/local/bin/revfs is not this build (run scripts/install.sh)"
  fi
fi
[ -n "$accept" ] && accept=" (acceptance failed:$accept)"
echo "tests: $passed passed, $failed failed$accept"
[ "$status" = 0 ] && [ "$failed" = 0 ]
