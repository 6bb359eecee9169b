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

# Known patterns, made without a pipe carrying them: the pages a pipe passes data
# through are freed to the page allocator's per-CPU lists, not to the buddy lists, and
# keep their bytes, so even a filtered dump (makedumpfile's too) would keep them.
# repeat UNIT BYTES: at least BYTES of UNIT over and over, from the shell's own printf
repeat() {
    t="$1"; for _ in 1 2 3 4 5 6; do t="$t$t"; done  # 64 units per format
    per=$((64 * ${#1}))
    printf "$t%.0s" $(seq 1 $((($2 + per - 1) / per)))
}
nl='
'
# the file lives in the rootfs (tmpfs/ramfs page cache)
repeat "E2E-FILE-$NONCE$nl" "$FILE_BYTES" > /tmp/e2e-pattern || fail "file pattern"
# the heap: the one buffer of a dd that blocks writing it to a reader that reads one
# byte (so dd holds it all) and sleeps. dd reads it from a file of byte-swapped lines
# and swaps them back (conv=swab), so only the process holds the pattern itself. (The
# line must have an even length, as the nonce's 16 hex digits give it: 26 bytes.)
swapped=$(printf 'E2E-HEAP-%s\n' "$NONCE" | dd conv=swab 2>/dev/null)
repeat "$swapped" "$HEAP_BYTES" > /tmp/e2e-heap.swab || fail "heap pattern"
dd if=/tmp/e2e-heap.swab bs="$HEAP_BYTES" count=1 iflag=fullblock conv=swab 2>/dev/null \
    | { dd bs=1 count=1 of=/dev/null 2>/dev/null; : > /tmp/heap-ready; exec sleep 86400; } &
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
