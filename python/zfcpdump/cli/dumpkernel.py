"""What only a real dump kernel does (behaviour.md §2.1, §2.5): banner, mounts, the
IPL parameters, and re-IPL or power-off at the end. Portable mode uses the banner only;
everything that changes the machine is opt-in there."""

from __future__ import annotations

import ctypes
import os
import time

from ..capture import Console


def banner(console: Console) -> None:
    console.out("Linux System Dumper starting")
    console.out("")
    console.out("Version 3.0 (64 bit)")


def _mount(source: str, target: str, fstype: str) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    os.makedirs(target, exist_ok=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode(), 0, None) == 0:
        return True
    return ctypes.get_errno() == 16  # EBUSY: already mounted


def start(console: Console) -> None:
    banner(console)
    for source, target, fstype, name in (("proc", "/proc", "proc", "proc"),
                                         ("sysfs", "/sys", "sysfs", "sysfs"),
                                         ("debugfs", "/sys/kernel/debug", "debugfs", "debugfs")):
        if not os.path.ismount(target) and not _mount(source, target, fstype):
            console.err(f"ERROR: Unable to mount {name}")
    try:
        with open("/proc/version") as f:
            console.out(f.read().rstrip("\n"))
    except OSError:
        pass
    console.blank()
    try:
        with open("/proc/cmdline") as f:
            parse_cmdline(console, f.read())
    except OSError:
        pass


DEFAULT_DUMP_DEBUG = 2


def mem_total_bytes() -> int:
    """MemTotal from /proc/meminfo (a large value when it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62


def parse_cmdline(console: Console, cmdline: str) -> int:
    """The dump_debug=1..6 parameter (behaviour.md §2.1 step 4), with upstream's
    warnings (and its typo)."""
    tokens = cmdline[:1024].split()
    if len(tokens) > 100:
        console.err("WARNING: More than 100 kernel parmameters specified")
        tokens = tokens[:100]
    level = DEFAULT_DUMP_DEBUG
    for token in tokens:
        key, sep, value = token.partition("=")
        if key != "dump_debug":
            continue
        if not sep or not value:
            console.err("WARNING: No value for 'dump_debug' parameter specified")
            console.err(f"WARNING: Using default: {DEFAULT_DUMP_DEBUG}")
            continue
        try:
            n = int(value)
        except ValueError:
            console.err("ERROR: Could not parse parmline")
            continue
        if 1 <= n <= 6:
            level = n
        else:
            console.err(f"WARNING: Invalid value ({n}) for dump_debug parameter specified "
                        "(allowed range is 1 - 6)")
            console.err(f"WARNING: Using default: {DEFAULT_DUMP_DEBUG}")
    return level


def print_ipl_parameters(console: Console) -> None:
    for label, name in (("devno....", "device"), ("wwpn.....", "wwpn"), ("lun......", "lun"),
                        ("conf.....", "bootprog")):
        try:
            with open(f"/sys/firmware/ipl/{name}") as f:
                console.out(f" {label}: {f.read().strip()}")
        except OSError:
            pass


def finish(console: Console, *, reipl: bool, poweroff: bool, zcore_dir: str, sleep: bool) -> None:
    if sleep:
        time.sleep(3)
    if reipl:
        path = os.path.join(zcore_dir, "reipl")
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            fd = -1  # upstream skips silently when the file cannot be opened
        if fd >= 0:
            try:
                os.write(fd, b"1")
            except OSError as exc:
                console.err(f"ERROR: Write to {path} failed")
                console.err(exc.strerror or "")
            finally:
                os.close(fd)
    if poweroff:
        os.sync()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF
