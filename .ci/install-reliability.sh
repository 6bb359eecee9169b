#!/usr/bin/env bash
# What the reliability suite (tests/test_reliability_*.py, tests/test_fuzz_*.py) needs:
# FUSE 3 (faultfs: tests/faults/faultfs.py), util-linux/fdisk/gdisk/e2fsprogs for loop
# devices and partitions, and mfusepy + hypothesis + atheris in the CI venv ($VENV).
set -euo pipefail
need_apt=()
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
ldconfig -p 2>/dev/null | grep -q 'libfuse3\.so\.3' || need_apt+=(libfuse3-3)
command -v losetup >/dev/null 2>&1 || need_apt+=(util-linux)
command -v sfdisk >/dev/null 2>&1 || need_apt+=(fdisk)
command -v sgdisk >/dev/null 2>&1 || need_apt+=(gdisk)
command -v mkfs.ext2 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}"
fi
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
PIP="${VENV:+$VENV/bin/}pip"
[ -n "${VENV:-}" ] || PIP="python3 -m pip"
$PIP install -q mfusepy hypothesis atheris
