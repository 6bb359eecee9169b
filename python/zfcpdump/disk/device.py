"""Block devices and disk images: sysfs facts, sizes, exclusive opening, mount checks."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass
from typing import Optional

from ..errors import DiskRefused

BLKSSZGET = 0x1268
BLKGETSIZE64 = 0x80081272
SYSFS_BLOCK = "/sys/class/block"


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def sysfs_dir(path: str) -> str:
    """/sys/class/block/<name> of a block device node (by its device number)."""
    st = os.stat(path)
    return os.path.realpath(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")


def _read_sysfs(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@dataclass(frozen=True)
class BlockPartitionInfo:
    disk_node: str  # /dev/<disk>
    number: int
    start: int  # bytes
    size: int  # bytes


def partition_info(path: str) -> Optional[BlockPartitionInfo]:
    """For a partition node: its disk and geometry from sysfs (start in 512-byte units,
    always, even on 4 KiB-sector disks: formats.md §6). None for a whole disk."""
    d = sysfs_dir(path)
    if not os.path.exists(os.path.join(d, "partition")):
        return None
    disk_name = os.path.basename(os.path.dirname(d))
    return BlockPartitionInfo(
        disk_node=os.path.join(os.path.dirname(path) or "/dev", disk_name),
        number=int(_read_sysfs(os.path.join(d, "partition"))),
        start=int(_read_sysfs(os.path.join(d, "start"))) * 512,
        size=int(_read_sysfs(os.path.join(d, "size"))) * 512,
    )


def disk_partitions(disk_path: str) -> list[BlockPartitionInfo]:
    """Partitions of a whole-disk block device, enumerated through sysfs."""
    d = sysfs_dir(disk_path)
    name = os.path.basename(d)
    parts = []
    for entry in sorted(os.listdir(d)):
        pdir = os.path.join(d, entry)
        if entry.startswith(name) and os.path.exists(os.path.join(pdir, "partition")):
            parts.append(BlockPartitionInfo(
                disk_node=disk_path,
                number=int(_read_sysfs(os.path.join(pdir, "partition"))),
                start=int(_read_sysfs(os.path.join(pdir, "start"))) * 512,
                size=int(_read_sysfs(os.path.join(pdir, "size"))) * 512,
            ))
    return sorted(parts, key=lambda p: p.number)


def partition_node(disk_path: str, number: int) -> str:
    sep = "p" if disk_path[-1:].isdigit() else ""
    return f"{disk_path}{sep}{number}"


def logical_block_size(fd: int) -> int:
    buf = fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4)
    return struct.unpack("i", buf)[0]


def size_of(fd: int) -> int:
    """Size in bytes of a file or block device (lseek to the end, as zfcpdump does)."""
    return os.lseek(fd, 0, os.SEEK_END)


def mounted_devices() -> dict[tuple[int, int], str]:
    """(major, minor) -> mount point, from /proc/self/mountinfo."""
    mounts: dict[tuple[int, int], str] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4:
                    major, _, minor = fields[2].partition(":")
                    mounts[(int(major), int(minor))] = fields[4]
    except OSError:
        pass
    return mounts


def check_not_mounted(path: str) -> None:
    """Refuse a block device that is mounted, or whose partitions are."""
    st = os.stat(path)
    mounts = mounted_devices()
    devs = [(path, st.st_rdev)]
    info = partition_info(path)
    if info is None:
        devs += [(p_node, os.stat(p_node).st_rdev) for p_node in
                 (partition_node(path, p.number) for p in disk_partitions(path))
                 if os.path.exists(p_node)]
    for node, rdev in devs:
        where = mounts.get((os.major(rdev), os.minor(rdev)))
        if where:
            raise DiskRefused(f"{node} is mounted on {where}")


def open_exclusive(path: str, writable: bool = True) -> int:
    """Open a disk for writing so that nobody else writes it meanwhile: O_EXCL on a
    block device (fails with EBUSY when mounted or held), flock on an image file."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
    block = is_block_device(path)
    if block:
        check_not_mounted(path)
        flags |= os.O_EXCL
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise DiskRefused(f"{path} is in use by another program (mounted or open exclusively)") from None
        raise DiskRefused(f"Cannot open {path}: {exc.strerror}") from None
    if not block:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DiskRefused(f"{path} is in use by another program (locked)") from None
    return fd
