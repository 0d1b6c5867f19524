#!/usr/bin/env bash
# Installs revfs for use as a service: the binary where mount(8) finds it for
# `mount -t fuse.revfs` and /etc/fstab (mount(8) drops PATH from its helpers'
# environment, so /usr/local/bin or /usr/bin, not a build directory), the man
# page, shell completions, and with --systemd the template unit.
#
#   sudo scripts/install.sh [--systemd]        # PREFIX=/usr/local by default
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
SYSTEMD_DIR=${SYSTEMD_DIR:-/etc/systemd/system}
# REVFS_BIN: a binary built already (the tests give theirs).
if [ -z "${REVFS_BIN:-}" ]; then cargo build --release -q; REVFS_BIN=target/release/revfs; fi
install -D -m 0755 "$REVFS_BIN" "$PREFIX/bin/revfs"
mkdir -p "$PREFIX/share/man/man1" "$PREFIX/share/bash-completion/completions" \
  "$PREFIX/share/zsh/site-functions" "$PREFIX/share/fish/vendor_completions.d"
"$PREFIX/bin/revfs" man > "$PREFIX/share/man/man1/revfs.1"
"$PREFIX/bin/revfs" completions bash > "$PREFIX/share/bash-completion/completions/revfs"
"$PREFIX/bin/revfs" completions zsh > "$PREFIX/share/zsh/site-functions/_revfs"
"$PREFIX/bin/revfs" completions fish > "$PREFIX/share/fish/vendor_completions.d/revfs.fish"
if [ "${1:-}" = "--systemd" ]; then
  sed "s|/usr/local/bin/revfs|$PREFIX/bin/revfs|" ops/revfs@.service > "$SYSTEMD_DIR/revfs@.service"
  mkdir -p /etc/revfs
  echo "installed $SYSTEMD_DIR/revfs@.service; put STORE, MOUNT and OPTS in /etc/revfs/NAME.env"
fi
echo "installed revfs in $PREFIX/bin (man page, completions)"
