#!/usr/bin/env bash
# Install the independent readers ("oracles") the interoperability tests use.
# See shared/spec/interop.md §2 (zgetdump under qemu-user) and §3 (libkdumpfile).
#
# * Host packages (Debian 12): qemu-user-static python3-libkdumpfile kexec-tools
#   fdisk gdisk zstd util-linux.
# * s390x s390-tools 2.16 zgetdump, extracted (not installed) into
#   ${ZFCPDUMP_ORACLES:-/var/cache/zfcpdump-oracles}/s390x/root and run with
#   `qemu-s390x-static -L ROOT ROOT/sbin/zgetdump`.
# * x86_64 makedumpfile from Debian sid (the Linux 6.12 page-filter oracle) with
#   Debian 13's libraries, unpacked by tests/e2e/assets.py (private apt lists) into
#   ${ZFCPDUMP_ORACLES:-/var/cache/zfcpdump-oracles}/makedumpfile-sid/root and run
#   through that root's dynamic loader (tests/oracles/makedumpfile_sid.py).
# * s390x makedumpfile from sid likewise, in .../makedumpfile-sid-s390x/root, run under
#   qemu-user (tests/oracles/makedumpfile_s390x.py).
#
# Idempotent and quiet; safe to re-run. Needs root (apt-get install); works without a
# TTY and with stdin closed. Prints one summary line at the end.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C
START=$SECONDS

HOST_PKGS=(qemu-user-static python3-libkdumpfile kexec-tools fdisk gdisk zstd util-linux)
# zgetdump's NEEDED entries: libz.so.1, libfuse.so.2, libpthread.so.0, libc.so.6;
# makedumpfile's (the page-filter oracle): libdw, libelf, liblzo2, libz and theirs.
S390X_PKGS=(s390-tools libc6 libfuse2 zlib1g
            makedumpfile libdw1 libelf1 liblzo2-2 libbz2-1.0 liblzma5 libzstd1)

# makedumpfile (sid) needs glibc >= 2.38: libraries from trixie, a released set
SID_PKGS=(makedumpfile/sid libc6/trixie libdw1t64/trixie libelf1t64/trixie liblzo2-2/trixie
          libzstd1/trixie zlib1g/trixie libbz2-1.0/trixie liblzma5/trixie libgcc-s1/trixie)

CACHE=${ZFCPDUMP_ORACLES:-/var/cache/zfcpdump-oracles}
W=$CACHE/s390x
ROOT=$W/root

NAME=install-oracles
CI_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$CI_DIR/.." && pwd)
. "$CI_DIR/lib.sh"

# ---------------------------------------------------------------------------
# 1. Host packages
# ---------------------------------------------------------------------------
install_host_pkgs "${HOST_PKGS[@]}"

# ---------------------------------------------------------------------------
# 2. s390x zgetdump (s390-tools) extracted under $ROOT, run through qemu-user
# ---------------------------------------------------------------------------
version_of() {
    # "... version 1.7.8 ..." on stdin -> 1.7.8
    sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -n 1
}

zgetdump_version() {
    # -> e.g. "2.16.0"; empty if it does not run
    qemu-s390x-static -L "$ROOT" "$ROOT/sbin/zgetdump" -v </dev/null 2>/dev/null \
        | version_of || true
}

ZG_VER=""
if [ -x "$ROOT/sbin/zgetdump" ] && [ -x "$ROOT/usr/bin/makedumpfile" ]; then
    ZG_VER=$(zgetdump_version)
fi

if [ -z "$ZG_VER" ]; then
    "${SUDO[@]}" mkdir -p "$W"
    [ -w "$W" ] || die "$W is not writable"
    mkdir -p "$W/lists/partial" "$W/cache"
    rm -rf "$W/debs" "$W/root.new"
    mkdir -p "$W/debs" "$W/root.new"
    # A separate lists directory (and package caches) keep the host's apt state
    # untouched. APT::Sandbox::User=root avoids the "unsandboxed as root" warning.
    APTX=(-o APT::Architecture=s390x -o APT::Architectures=s390x
          -o "Dir::State::Lists=$W/lists"
          -o "Dir::Cache=$W/cache" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
    if [ "$(id -u)" -eq 0 ]; then APTX+=(-o APT::Sandbox::User=root); fi
    quiet apt-get "${APTX[@]}" -qq update
    (cd "$W/debs" && quiet apt-get "${APTX[@]}" -qq download "${S390X_PKGS[@]}") \
        || die "apt-get download ${S390X_PKGS[*]} (s390x) failed"
    for f in "$W"/debs/*.deb; do
        quiet dpkg-deb -x "$f" "$W/root.new"
    done
    [ -x "$W/root.new/sbin/zgetdump" ] || die "no sbin/zgetdump in the s390x s390-tools package"
    [ -x "$W/root.new/usr/bin/makedumpfile" ] || die "no usr/bin/makedumpfile in the s390x package"
    # Keep a record of what was extracted.
    (cd "$W/debs" && ls -1 ./*.deb | sed 's|^\./||') >"$W/root.new/.oracle-debs"
    rm -rf "$ROOT"
    mv "$W/root.new" "$ROOT"
    rm -rf "$W/debs"
    ZG_VER=$(zgetdump_version)
    [ -n "$ZG_VER" ] || die "zgetdump does not run under qemu-s390x-static"
fi

# ---------------------------------------------------------------------------
# 3. x86_64 makedumpfile from sid with trixie's libraries (x86_64 hosts only)
# ---------------------------------------------------------------------------
sid_md_version() {
    ZFCPDUMP_ORACLES=$CACHE python3 "$REPO/tests/oracles/makedumpfile_sid.py" -v 2>&1 \
        | version_of || true
}

SID_VER=""
if [ "$(dpkg --print-architecture)" = amd64 ]; then
    SID_VER=$(sid_md_version)
    if [ -z "$SID_VER" ]; then
        "${SUDO[@]}" mkdir -p "$CACHE/makedumpfile-sid"
        quiet "${SUDO[@]}" python3 "$REPO/tests/e2e/assets.py" unpack \
            "$CACHE/makedumpfile-sid/root" trixie,sid "${SID_PKGS[@]}"
        SID_VER=$(sid_md_version)
        [ -n "$SID_VER" ] || die "makedumpfile from sid does not run (tests/oracles/makedumpfile_sid.py -v)"
    fi
fi

# ---------------------------------------------------------------------------
# 3b. s390x makedumpfile from sid (the Linux 6.12 s390x page-filter oracle), run under
#     qemu-user through its root's own dynamic loader (tests/oracles/makedumpfile_s390x.py)
# ---------------------------------------------------------------------------
SR=$CACHE/makedumpfile-sid-s390x/root
sid_s390x_version() {
    qemu-s390x-static "$SR/usr/lib/s390x-linux-gnu/ld64.so.1" \
        --library-path "$SR/usr/lib/s390x-linux-gnu" "$SR/usr/bin/makedumpfile" -v \
        </dev/null 2>/dev/null | version_of || true
}
SID_S390X_VER=$(sid_s390x_version)
if [ -z "$SID_S390X_VER" ]; then
    "${SUDO[@]}" mkdir -p "$CACHE/makedumpfile-sid-s390x"
    quiet "${SUDO[@]}" python3 "$REPO/tests/e2e/assets.py" unpack --arch s390x \
        "$SR" trixie,sid "${SID_PKGS[@]}"
    SID_S390X_VER=$(sid_s390x_version)
    [ -n "$SID_S390X_VER" ] || die "the s390x makedumpfile from sid does not run under qemu-user"
fi

# ---------------------------------------------------------------------------
# 4. Summary
# ---------------------------------------------------------------------------
MD_VER=$(qemu-s390x-static -L "$ROOT" "$ROOT/usr/bin/makedumpfile" -v </dev/null 2>/dev/null \
    | version_of || true)
summary=("zgetdump $ZG_VER (qemu-user)" "makedumpfile s390x ${MD_VER:-MISSING} (qemu-user)")
[ -z "$SID_VER" ] || summary+=("makedumpfile sid $SID_VER")
summary+=("makedumpfile sid s390x $SID_S390X_VER (qemu-user)")
kdf=$(dpkg-query -W -f='${Version}' python3-libkdumpfile 2>/dev/null | sed 's/-[^-]*$//' || true)
if [ -n "$kdf" ] && /usr/bin/python3 -c 'import kdumpfile' </dev/null >/dev/null 2>&1; then
    summary+=("libkdumpfile $kdf")
else
    summary+=("libkdumpfile MISSING")
fi
if command -v vmcore-dmesg >/dev/null 2>&1 || [ -x /usr/sbin/vmcore-dmesg ]; then
    summary+=("vmcore-dmesg")
fi
for t in zstd sfdisk sgdisk losetup; do
    command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || summary+=("$t MISSING")
done

IFS=','
line="${summary[*]}"
unset IFS
echo "oracles: ${line//,/, } [$CACHE] ($((SECONDS - START))s)"
