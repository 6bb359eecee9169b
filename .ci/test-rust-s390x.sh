#!/usr/bin/env bash
# The Rust core's unit tests on s390x, the platform zfcpdump is for: big-endian, built
# with Debian's s390x cross gcc (zlib and zstd are C) and run under qemu-user.
# qemu-user has no Linux AIO (io_setup: ENOSYS): those tests say "skipped" and the copy
# tests check the engine's fallback to its threads instead.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=test-rust-s390x
. .ci/lib.sh

TARGET=s390x-unknown-linux-gnu
install_host_pkgs gcc-s390x-linux-gnu libc6-dev-s390x-cross qemu-user-static
rustup target list --installed | grep -qx "$TARGET" || quiet rustup target add "$TARGET"

export CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_LINKER=s390x-linux-gnu-gcc
export CC_s390x_unknown_linux_gnu=s390x-linux-gnu-gcc
export CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_RUNNER="qemu-s390x-static -L /usr/s390x-linux-gnu"
cargo test --locked --quiet --target "$TARGET" --target-dir "${CARGO_TARGET_DIR:-target}/cross" 2>&1 | tail -n 20
