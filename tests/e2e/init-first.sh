#!/bin/sh
# /init of the FIRST (to be crashed) kernel in the end-to-end test.
#
# 1. leaves known patterns in memory: a file in the initramfs' tmpfs and a process'
#    heap, both made of "E2E-FILE-<nonce>" / "E2E-HEAP-<nonce>" lines;
# 2. loads the dump kernel with `kexec -p` (its initramfs, /boot/kdump.img, runs
#    zfcpdump);
# 3. crashes with sysrq-c.
# /e2e/config (written by the harness) sets NONCE and KDUMP_APPEND.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
. /e2e/config

say() { echo "E2E: $*"; }
fail() { echo "E2E-FAIL: $*"; poweroff -f; sleep 10; }

say "first kernel up: $(cat /proc/version)"
say "crash kernel memory: $(grep -i 'crash kernel' /proc/iomem | sed 's/^ *//' | tr '\n' ' ')"

# Known patterns. The file lives in the rootfs (tmpfs/ramfs page cache), the heap
# pattern in a shell variable of a process that stays alive until the crash.
yes "E2E-FILE-$NONCE" | head -c "$FILE_BYTES" > /tmp/e2e-pattern || fail "file pattern"
sh -c "x=\$(yes E2E-HEAP-$NONCE | head -c $HEAP_BYTES); : > /tmp/heap-ready; while :; do sleep 3600; done" &
n=0
while [ ! -e /tmp/heap-ready ]; do
    n=$((n + 1)); [ $n -gt 600 ] && fail "heap pattern not ready"
    sleep 0.1
done
say "patterns in memory: file $(stat -c %s /tmp/e2e-pattern) bytes, heap $HEAP_BYTES bytes"

kexec -p /boot/vmlinuz --initrd=/boot/kdump.img --append="$KDUMP_APPEND" \
    || fail "kexec -p failed"
[ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || fail "crash kernel not loaded"
say "dump kernel loaded: $KDUMP_APPEND"
say "crashing"
echo c > /proc/sysrq-trigger
fail "still alive after sysrq-c"
