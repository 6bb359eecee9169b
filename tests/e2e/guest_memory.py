"""The memory of a running s390x Linux 6.12 (Debian 13's kernel) or 7.2 (Debian 14's,
from forky), as QEMU's `dump-guest-memory` writes it: the input of the s390x
page-filter checks on kernels that cannot kdump here.

From Linux 6.10 the s390x kernel image and its direct map no longer sit at their
physical addresses; the only s390x kernel with CRASH_DUMP here is the 6.1 sample, and
Debian's s390x kernels have none, so no kdump of a 6.12 or 7.2 kernel can be made. The page
classes (free, cache, user) are a property of the memory, not of how it was captured,
and QEMU's image of the running guest carries the kernel's VMCOREINFO in memory (the
lowcore points to it), as the 6.1 sample does.

    fetch(line): the newest s390x kernel of that line (LINES) and busybox-static, unpacked
             once into $ZFCPDUMP_E2E_CACHE/s390x-LINE-memory/root
    build(): a busybox initramfs whose /init fills page cache, shmem and a process's
             anonymous memory, boots the kernel under qemu-system-s390x (TCG, 512 MiB,
             2 CPUs), waits for its READY line and has QEMU write the memory (QMP)

`python3 tests/e2e/guest_memory.py --fetch` (stdlib only: `.ci/install-e2e.sh`) fetches
every line; `python tests/e2e/guest_memory.py OUT.elf [LINE]` (in the test venv) builds
one by hand.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from e2e import assets  # noqa: E402

QEMU = "qemu-system-s390x"
MEM_MIB = 512
CPUS = 2
READY = "ZFCPDUMP-MEMORY-READY"
#: kernel line -> (Debian suite, its image packages; the newest that downloads is taken).
#: Not trixie-backports: its s390x index failed apt's size check on both days tried
#: ("Mirror sync in progress?").
LINES = {
    "6.12": ("trixie", r"^linux-image-(6\.12\.\d+)\+deb13-s390x$"),
    "7.2": ("forky", r"^linux-image-(7\.2\.\d+)\+deb14-s390x$"),
}
#: lines of a suite that drops a kernel when the next comes (Debian testing): the day
#: the mirror has none left, fetching them only warns and their test is skipped
MOVING_SUITES = ("forky", "sid")


class LineGone(assets.FetchError):
    """A line of a moving suite that the mirror no longer holds."""


# Page cache and shmem (files in tmpfs), 18 MB of anonymous memory held by this shell
# (PID 1: no background process to wait for; it loops at the end instead of exec'ing
# sleep, which would drop the memory), the rest free. drop_caches first: the classes
# are what the kernel holds afterwards. Each step says so on the console.
INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
echo "init: page cache"
head -c 24000000 /dev/urandom > /tmp/random
dd if=/dev/zero of=/tmp/zeros bs=1M count=8 2>/dev/null
echo "init: user memory"
x=$(head -c 6000000 /dev/urandom | od -An -tx1)
echo "init: holding ${{#x}} bytes"
echo 3 > /proc/sys/vm/drop_caches
grep -E 'MemFree|^Cached|AnonPages|Shmem:' /proc/meminfo
echo {READY}
while :; do sleep 100000; done
"""


class GuestMemoryError(RuntimeError):
    """The image could not be made (with what QEMU or apt said)."""


def cache_dir(line: str) -> Path:
    return assets.cache_dir(assets.ARCHES["s390x"]).parent / f"s390x-{line}-memory"


def kernel_image(root: Path) -> Path | None:
    """The unpacked kernel (assets.find_kernel_image), None if there is none."""
    found = assets.find_kernel_image(root)
    return found[0] if found else None


def fetch(line: str, log=lambda s: None) -> Path:
    """The unpacked packages' root (fetched once). Raises assets.FetchError."""
    suite, pattern = LINES[line]
    base = cache_dir(line)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs share the cache
        root = base / "root"
        if not (kernel_image(root) and (root / "usr/bin/busybox").is_file()):
            try:
                assets.unpack_from_suites(root, [suite], ["busybox-static"], log,
                                          deb_arch="s390x", newest=pattern)
            except assets.FetchError as exc:
                if suite in MOVING_SUITES and "no package matching" in str(exc):
                    raise LineGone(f"Debian {suite} no longer holds an s390x {line} kernel "
                                   f"(a testing suite moves on): {exc}") from None
                raise
        return root


def _initramfs(root: Path, target: Path) -> None:
    from e2e.initramfs import Cpio  # pyelftools: not needed to fetch

    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp"):
        cpio.dir(d)
    cpio.copy("bin/busybox", root / "usr/bin/busybox", 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    cpio.write(target)


class _Qmp:
    def __init__(self, path: Path, timeout: float):
        self.sock = socket.socket(socket.AF_UNIX)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(str(path))
            self.file = self.sock.makefile("rwb")
            self._reply()  # the greeting
            self.execute("qmp_capabilities")
        except BaseException:
            self.sock.close()
            raise

    def _reply(self) -> dict:
        while True:
            line = self.file.readline()
            if not line:
                raise GuestMemoryError("QEMU closed its QMP socket")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command: str, **arguments) -> dict:
        req = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        msg = self._reply()
        if "error" in msg:
            raise GuestMemoryError(f"QMP {command}: {msg['error'].get('desc', msg['error'])}")
        return msg.get("return", {})

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class NotReady(GuestMemoryError):
    """The guest booted but did not reach READY in time."""


def build(out: Path, workdir: Path, line: str = "6.12", *, boot_timeout: float = 180,
          log=lambda s: None) -> dict:
    """Boot, wait for READY, write the guest's memory as ELF to `out`. Returns figures
    (kernel, boot and dump seconds, the guest's meminfo lines, `retried`: why the first
    boot was given up, or None). A guest not ready in time is booted once more (one
    CI run saw the emulated guest stop after starting /init). Raises GuestMemoryError
    or assets.FetchError."""
    if shutil.which(QEMU) is None:
        raise GuestMemoryError(f"{QEMU} not found (bash .ci/install-e2e.sh)")
    root = fetch(line, log)
    try:
        return {**_boot_and_dump(root, out, workdir, boot_timeout), "retried": None}
    except NotReady as first:
        log(f"{first}; booting once more")
        return {**_boot_and_dump(root, out, workdir, boot_timeout), "retried": str(first)}


def _boot_and_dump(root: Path, out: Path, workdir: Path, boot_timeout: float) -> dict:
    kernel, version = assets.find_kernel_image(root)
    initrd, console, qmp_path, qemu_log = (
        workdir / "memory-initrd.gz", workdir / "memory-console.log",
        workdir / "memory-qmp.sock", workdir / "memory-qemu.log")
    _initramfs(root, initrd)
    for stale in (qmp_path, console):  # an earlier run's READY line must not count
        stale.unlink(missing_ok=True)
    cmd = [QEMU, "-M", "s390-ccw-virtio", "-cpu", "max", "-accel", "tcg", "-m", str(MEM_MIB),
           "-smp", str(CPUS), "-nodefaults", "-display", "none", "-serial", "none",
           "-chardev", f"file,id=con,path={console}", "-device", "sclpconsole,chardev=con",
           "-qmp", f"unix:{qmp_path},server=on,wait=off",
           "-kernel", str(kernel), "-initrd", str(initrd),
           "-append", "console=ttysclp0 panic=-1"]
    start = time.monotonic()
    with open(qemu_log, "wb") as out_log:  # a file: QEMU never blocks on a full pipe
        qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_log,
                                stderr=subprocess.STDOUT)
    try:
        while READY not in (console.read_text(errors="replace") if console.exists() else ""):
            if qemu.poll() is not None:
                said = qemu_log.read_text(errors="replace")[-500:]
                raise GuestMemoryError(f"QEMU exited ({qemu.returncode}) before the guest was "
                                       f"ready: {said} (console: {console})")
            if time.monotonic() - start > boot_timeout:
                lines = console.read_text(errors="replace").splitlines() if console.exists() else []
                raise NotReady(f"the guest was not ready in {boot_timeout:.0f} s, its "
                               f"last line {lines[-1] if lines else None!r} "
                               f"(console: {console})")
            time.sleep(0.5)
        booted = time.monotonic()
        qmp = _Qmp(qmp_path, timeout=boot_timeout)
        try:
            out.unlink(missing_ok=True)
            qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{out}")
            dumped = time.monotonic()
            qmp.execute("quit")
        finally:
            qmp.close()
        qemu.wait(timeout=60)
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    text = console.read_text(errors="replace")
    return {"kernel": f"vmlinuz-{version}", "boot_s": booted - start, "dump_s": dumped - booted,
            "meminfo": [ln.strip() for ln in text.splitlines()
                        if re.match(r"\s*(MemFree|Cached|AnonPages|Shmem):", ln)]}


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 3 or (len(sys.argv) == 3 and sys.argv[2] not in LINES):
        sys.exit(f"usage: guest_memory.py --fetch | OUT.elf [{'|'.join(LINES)}]")
    say = lambda s: print(f"guest_memory: {s}", file=sys.stderr)  # noqa: E731
    try:
        if sys.argv[1] == "--fetch":
            found = []
            for line in LINES:
                try:
                    found.append(f"{line} {kernel_image(fetch(line, log=say))}")
                except LineGone as exc:
                    found.append(f"{line} WARNING: {exc}")
            print(f"guest_memory: s390x memory-image guests: {', '.join(found)}")
        else:
            target = Path(sys.argv[1]).resolve()
            line = sys.argv[2] if len(sys.argv) == 3 else "6.12"
            print(json.dumps(build(target, target.parent, line, log=say)))
    except (GuestMemoryError, assets.FetchError) as exc:
        sys.exit(f"guest_memory: {exc}")
