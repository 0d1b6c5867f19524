#!/usr/bin/env bash
# Runs every check of revfs: formatting, lints, unit + engine tests, mount tests
# (real FUSE mounts; need root and /dev/fuse), and the shared acceptance script.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --release --all-targets -q -- -D warnings
# Mount tests run the release binary; two at a time keeps the 2-core machine responsive.
cargo test --release -- --test-threads=2
if [ -x ../shared/acceptance/foundation ] || [ -f ../shared/acceptance/foundation ]; then
  bash ../shared/acceptance/foundation
fi
