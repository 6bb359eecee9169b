#!/bin/sh
# /init of the DUMP (kdump) kernel's initramfs: make /dev/sda appear, then become
# zfcpdump, exactly as s390-tools' zfcpdump runs in its dump kernel: PID 1, no
# arguments (/proc/vmcore -> /dev/sda), power-off at the end.
#
# Kernel parameters read here (all optional):
#   e2e_engine=python       pass --engine python
#   e2e_args=A,B,C          more zfcpdump arguments (commas become spaces)
#   e2e_mem=1               print "E2E-MEM ..." lines: zfcpdump's VmHWM/VmRSS and the
#                           system's free memory, once a second
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "E2E: $*"; }
fail() { echo "E2E-FAIL: $*"; poweroff -f; sleep 10; }

say "dump kernel up: $(grep MemTotal /proc/meminfo | tr -s ' ')"
[ -e /proc/vmcore ] || fail "no /proc/vmcore"
say "vmcore: $(stat -c %s /proc/vmcore) bytes"

while read -r ko; do
    [ -n "$ko" ] && { insmod "$ko" || fail "insmod $ko"; }
done < /e2e/modules

n=0
while [ ! -b /dev/sda ]; do
    n=$((n + 1)); [ $n -gt 300 ] && fail "no /dev/sda"
    sleep 0.1
done
say "/dev/sda present, $(cat /proc/partitions | grep -c 'sda[0-9]') partition(s)"

ARGS=""
MEM=""
for w in $(cat /proc/cmdline); do
    case "$w" in
        e2e_engine=*) ARGS="$ARGS --engine ${w#e2e_engine=}" ;;
        e2e_args=*) ARGS="$ARGS $(echo "${w#e2e_args=}" | tr ',' ' ')" ;;
        e2e_mem=1) MEM=1 ;;
    esac
done

if [ -n "$MEM" ]; then
    (
        while :; do
            st=$(awk '/^Vm(HWM|RSS):/ {sub(":", "", $1); printf "%s=%s ", $1, $2}' /proc/1/status 2>/dev/null)
            mi=$(awk '/^(MemFree|MemAvailable|Cached|Dirty|Writeback):/ {sub(":", "", $1); printf "%s=%s ", $1, $2}' /proc/meminfo)
            echo "E2E-MEM up=$(cut -d' ' -f1 /proc/uptime) $st$mi"
            sleep 1
        done
    ) &
fi

say "exec zfcpdump$ARGS"
# shellcheck disable=SC2086
exec /usr/bin/zfcpdump $ARGS
