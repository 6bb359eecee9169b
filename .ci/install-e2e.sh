#!/usr/bin/env bash
# Install what the end-to-end dump-kernel tests (tests/test_e2e_x86_64.py,
# tests/test_e2e_x86_64_612.py, tests/test_e2e_x86_64_backports.py, tests/test_e2e_s390x.py,
# tests/test_e2e_s390x_memory.py) need:
#
# * host packages (Debian 12): qemu-system-x86 (QEMU + SeaBIOS), qemu-system-misc
#   (qemu-system-s390x), kexec-tools (vmcore-dmesg, to read the panic out of the dump),
#   fdisk, zstd (the s390x kernel sample is zstd-compressed), and dpkg/apt (present);
# * the guest software, downloaded with `apt-get download` and unpacked with
#   `dpkg-deb -x` into ${ZFCPDUMP_E2E_CACHE:-/var/cache/zfcpdump-e2e}/<arch>:
#   x86_64: Debian's kernel (linux-image-amd64's image package, with its modules);
#   x86_64-6.12: the same with Debian 13's kernel (its lists in a private apt state);
#   x86_64-6.16, -6.17, -6.18, -7.3: the same with the newest kernel of each line in
#   trixie-backports (tests/e2e/assets.py BACKPORTS_LINES);
#   s390x-6.12-memory, s390x-7.2-memory: Debian 13's s390x 6.12 kernel, Debian 14's
#   (forky) 7.2, and busybox-static, for the guests whose memory QEMU writes
#   (tests/e2e/guest_memory.py --fetch; a line forky no longer holds only warns, and
#   its test says so);
#   all: busybox-static, kexec-tools and its libraries, python3.11-minimal,
#   libpython3.11-stdlib and their libraries, python3-pyelftools (tests/e2e/assets.py
#   has the list). s390x packages come through a separate apt lists directory inside
#   the cache (the host's apt state is untouched), and the s390x kernel is the sample
#   ${ZFCPDUMP_E2E_S390X_KERNEL:-/work/shared/samples/s390x-dump-kernel/bzImage.zst},
#   decompressed into .../s390x/kernel/bzImage. A missing sample only warns (the s390x
#   test then says why it cannot run); everything else failing is fatal.
#
# Idempotent and quiet; safe to re-run. Needs root (apt-get install); works without a
# TTY and with stdin closed. Prints one summary line at the end.
set -euo pipefail
CI_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$CI_DIR/.."

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C
START=$SECONDS

HOST_PKGS=(qemu-system-x86 qemu-system-misc kexec-tools fdisk zstd python3)

NAME=install-e2e
. "$CI_DIR/lib.sh"

# 1. Host packages.
install_host_pkgs "${HOST_PKGS[@]}"

# 2. Guest packages, cached (the script re-downloads only when its package list changed;
#    on stale package lists it runs apt-get update once and retries).
CACHE=${ZFCPDUMP_E2E_CACHE:-/var/cache/zfcpdump-e2e}
"${SUDO[@]}" mkdir -p "$CACHE"
fetch() {
    "${SUDO[@]}" env ZFCPDUMP_E2E_CACHE="$CACHE" python3 tests/e2e/assets.py fetch "$1" \
        2>>"$LOG" </dev/null || die "guest packages: python3 tests/e2e/assets.py fetch $1 failed"
}
summary=$(fetch x86_64)
summary612=$(fetch x86_64-6.12)
# Debian 13's backports kernels (tests/e2e/assets.py BACKPORTS_LINES)
backports=""
lines=$(python3 -c 'import sys; sys.path.insert(0, "tests/e2e"); import assets; print(" ".join(f"{a}.{b}" for a, b in assets.BACKPORTS_LINES))') \
    || die "tests/e2e/assets.py BACKPORTS_LINES could not be read"
for line in $lines; do
    s=$(fetch "x86_64-$line")
    backports+="${s#e2e assets: }; "
done
# the s390x 6.12 and 7.2 kernels whose memory QEMU writes (tests/test_e2e_s390x_memory.py)
memimage=$("${SUDO[@]}" env ZFCPDUMP_E2E_CACHE="$CACHE" python3 tests/e2e/guest_memory.py \
           --fetch 2>>"$LOG" </dev/null) || die "python3 tests/e2e/guest_memory.py --fetch failed"

# 3. s390x: guest packages (separate lists directory) and the sample kernel.
s390x=$("${SUDO[@]}" env ZFCPDUMP_E2E_CACHE="$CACHE" \
        ${ZFCPDUMP_E2E_S390X_KERNEL:+ZFCPDUMP_E2E_S390X_KERNEL="$ZFCPDUMP_E2E_S390X_KERNEL"} \
        python3 tests/e2e/assets.py fetch s390x 2>>"$LOG" </dev/null) || {
    if grep -q "no s390x kernel image" "$LOG"; then
        s390x="WARNING: $(grep "no s390x kernel image" "$LOG" | tail -n1 | sed 's/^e2e assets: //')"
    else
        die "s390x guest packages: python3 tests/e2e/assets.py fetch s390x failed"
    fi
}

qv=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
echo "e2e: qemu-system-x86/misc $qv; ${summary#e2e assets: }; ${summary612#e2e assets: };" \
     "${backports}${memimage#guest_memory: };" \
     "${s390x#e2e assets: } ($((SECONDS - START))s)"
