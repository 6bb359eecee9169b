"""Finding the dump partition: for `prepare` (a partition node, or an image file plus a
partition number) and for `dump` (the whole disk, found from block 0's superblock
pointer as zfcpdump does, behaviour.md §2.2)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ..errors import DiskRefused
from . import device
from .partitions import Partition, check_label, detect_image_block_size, read_partitions


@dataclass(frozen=True)
class DumpPartition:
    disk: str  # whole disk node or image file
    number: int
    start: int  # bytes from the start of the disk
    size: int  # bytes
    block_size: int  # logical block size of the disk
    is_block_device: bool

    @property
    def name(self) -> str:
        if self.is_block_device:
            return device.partition_node(self.disk, self.number)
        return f"{self.disk} (partition {self.number})"


def _image_partitions(fd: int, block_size: Optional[int], disk_size: int) -> tuple[int, list[Partition]]:
    block0 = os.pread(fd, 512, 0)
    check_label(block0)
    bs = block_size or detect_image_block_size(fd) or 512
    return bs, read_partitions(fd, bs, disk_size)


def partition_for_prepare(path: str, number: Optional[int], block_size: Optional[int]) -> DumpPartition:
    """The partition `prepare` writes: a partition node, or an image plus `number`."""
    if not os.path.exists(path):
        raise DiskRefused(f"Dump device {path} does not exist")
    if device.is_block_device(path):
        info = device.partition_info(path)
        if info is None:
            if number is None:
                raise DiskRefused(f"Dump device {path} is not a partition")
            disk = path
            parts = {p.number: p for p in device.disk_partitions(disk)}
            if number not in parts:
                raise DiskRefused(f"No partition {number} on {disk}; Invalid dump device")
            info = parts[number]
        disk = info.disk_node
        fd = os.open(disk, os.O_RDONLY | os.O_CLOEXEC)
        try:
            bs = device.logical_block_size(fd)
            _, table = _image_partitions(fd, bs, device.size_of(fd))
        finally:
            os.close(fd)
        _refuse_extended(table, info.number)
        return DumpPartition(disk, info.number, info.start, info.size, bs, True)
    if not os.path.isfile(path):
        raise DiskRefused(f"Inappropriate dump device {path} (not a SCSI disk or disk image)")
    if number is None:
        raise DiskRefused(
            f"Dump device {path} is not a partition (for a disk image give --partition N)"
        )
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        bs, table = _image_partitions(fd, block_size, device.size_of(fd))
    finally:
        os.close(fd)
    _refuse_extended(table, number)
    part = next(p for p in table if p.number == number)
    return DumpPartition(path, number, part.start, part.size, bs, False)


def _refuse_extended(table: list[Partition], number: int) -> None:
    part = next((p for p in table if p.number == number), None)
    if part is None:
        raise DiskRefused(f"No partition {number} in the partition table; Invalid dump device")
    if part.extended:
        raise DiskRefused("Extended partitions not allowed; Invalid dump device")


def match_partition(disk: str, fd: int, part_start: int, part_size: int,
                    block_size: Optional[int]) -> DumpPartition:
    """The partition whose start and size equal the superblock's (behaviour.md §2.2
    step 8), from sysfs for block devices, from the partition table for images."""
    if device.is_block_device(disk):
        bs = device.logical_block_size(fd)
        for p in device.disk_partitions(disk):
            if p.start == part_start and p.size == part_size:
                return DumpPartition(disk, p.number, p.start, p.size, bs, True)
        raise DiskRefused("Specified dump partition not found")
    disk_size = device.size_of(fd)
    candidates = [block_size] if block_size else [detect_image_block_size(fd) or 512, 512, 4096]
    for bs in dict.fromkeys(candidates):
        try:
            _, table = _image_partitions(fd, bs, disk_size)
        except DiskRefused:
            continue
        for p in table:
            if p.start == part_start and p.size == part_size and not p.extended:
                return DumpPartition(disk, p.number, p.start, p.size, bs, False)
    raise DiskRefused("Specified dump partition not found")
