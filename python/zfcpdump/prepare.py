"""`prepare`: make a partition a zfcpdump target, as `zipl -d <partition>` does on a
SCSI disk (behaviour.md §5, formats.md §2-§6).

Write order differs from zipl on purpose: the bootmap area and the zeroed partition
start are flushed before block 0 is written, so a crash part-way never leaves an MBR
that points at an inconsistent superblock. The end state is identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

from .disk import device
from .disk.target import DumpPartition
from .disk.zipl import (
    BUSY_MARKER, ENTRY_EXECUTE, ENTRY_LOAD, BlockPtr, ScsiMbr, Superblock,
    bootmap_header, component_script, program_table,
)
from .errors import DiskRefused
from .fileio import pwrite_all

DEFAULT_IMAGE = "/lib/s390-tools/zfcpdump/zfcpdump-image"
DEFAULT_INITRD = "/lib/s390-tools/zfcpdump/zfcpdump-initrd"
DUMP_PARAM_MAX_LEN = 896
DUMP_PARMLINE = b"root=/dev/ram0 possible_cpus=1 cgroup_disable=memory"
STAGE3_RESERVE_BLOCKS = 0x10000  # zipl counts 0x10000 *blocks* for stage 3
METADATA_ONLY_RESERVED_BLOCKS = 8
ZERO_START_BYTES = 64 << 10
IMAGE_LOAD_ADDRESS = 0x10000
KERNEL_SKIP = 0x10000  # zipl loads the image without its first 64 KiB


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def reserved_blocks(block_size: int, kernel_bytes: Optional[int], initrd_bytes: Optional[int]) -> int:
    """Blocks zipl reserves at the end of the partition (estimate_scsi_dump_size)."""
    if kernel_bytes is None:
        return METADATA_ONLY_RESERVED_BLOCKS
    reserved = STAGE3_RESERVE_BLOCKS
    if initrd_bytes is not None:
        reserved += _ceil_div(initrd_bytes, block_size) + 1
    reserved += _ceil_div(max(kernel_bytes - KERNEL_SKIP, 0), block_size)
    reserved += _ceil_div(DUMP_PARAM_MAX_LEN, block_size)
    reserved += 8
    return reserved


def compute_dump_size(part_size: int, block_size: int, kernel_bytes: Optional[int],
                      initrd_bytes: Optional[int]) -> int:
    part_blocks = part_size // block_size
    reserved = reserved_blocks(block_size, kernel_bytes, initrd_bytes)
    if reserved >= part_blocks:  # zipl allows ==, which leaves no room for a dump
        raise DiskRefused("Partition too small for dump tool")
    return (part_blocks - reserved) * block_size


@dataclass
class PrepareResult:
    partition: DumpPartition
    dump_size: int
    superblock_offset: int


def holds_dump(first_page: bytes) -> Optional[str]:
    if first_page.startswith(b"\x7fELF"):
        return "a dump"
    if first_page.startswith(BUSY_MARKER):
        return "an incomplete dump (busy marker)"
    return None


def prepare(part: DumpPartition, image: Optional[str], initrd: Optional[str], *,
            force: bool = False, log: Callable[[str], None] = print) -> PrepareResult:
    """Write the dump tool area, the superblock and block 0 for `part`.

    `image` None means a metadata-only target (no dump kernel installed, 8 reserved
    blocks): recognised by zfcpdump and zgetdump -d, not IPL-able by itself.
    """
    kernel = _read_component(image) if image else None
    ramdisk = _read_component(initrd) if initrd else None
    bs = part.block_size
    if part.start % bs or part.size % bs:
        raise DiskRefused(f"Partition {part.name} is not aligned to the {bs}-byte block size")
    if part.start < bs:
        # its first 64 KiB would be zeroed over the partition table, and block 0 gets the
        # boot record
        raise DiskRefused(f"Partition {part.name} starts in block 0 of {part.disk}, over the "
                          "partition table")
    dump_size = compute_dump_size(part.size, bs, None if kernel is None else len(kernel),
                                  None if ramdisk is None else len(ramdisk))
    fd = device.open_exclusive(part.disk)
    try:
        disk_size = device.size_of(fd)
        if part.start + part.size > disk_size:
            raise DiskRefused(f"Partition {part.name} extends beyond the end of {part.disk}")
        existing = holds_dump(os.pread(fd, 4096, part.start))
        if existing and not force:
            raise DiskRefused(
                f"Partition {part.name} holds {existing}; use --force to overwrite it"
            )
        area = _bootmap_area(part, dump_size, kernel, ramdisk)
        sb_offset = part.start + dump_size + 2 * bs
        table_block = (part.start + dump_size) // bs + len(area) // bs - 1
        pwrite_all(fd, area, part.start + dump_size)
        # zipl zeroes 64 KiB (or the whole partition); never into the bootmap area.
        pwrite_all(fd, bytes(min(ZERO_START_BYTES, dump_size)), part.start)
        os.fsync(fd)
        block0 = bytearray(os.pread(fd, bs, 0))
        mbr = ScsiMbr(program_table=BlockPtr(table_block, bs), superblock_offset=sb_offset)
        block0[: len(mbr.to_bytes())] = mbr.to_bytes()
        pwrite_all(fd, bytes(block0), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    log(f"Dump target: partition {part.name} with a dump size limit of {dump_size >> 20}MB.")
    return PrepareResult(part, dump_size, sb_offset)


def _read_component(path: str) -> bytes:
    if not os.path.isfile(path):
        raise DiskRefused(f"Need external file '{path}' for partition dump")
    with open(path, "rb") as f:
        return f.read()


def _bootmap_area(part: DumpPartition, dump_size: int, kernel: Optional[bytes],
                  ramdisk: Optional[bytes]) -> bytes:
    """Header, empty block, superblock, [component data and block lists], script, table.
    Block numbers count from the start of the whole disk."""
    bs = part.block_size
    first_block = (part.start + dump_size) // bs
    blocks: list[bytes] = [bootmap_header(bs), bytes(bs)]
    sb = Superblock(part_start=part.start, part_size=part.size, dump_size=dump_size)
    blocks.append(sb.to_bytes() + bytes(bs - len(sb.to_bytes())))
    entries: list[tuple[int, bytes, int]] = []
    if kernel is not None:
        components = [(kernel[KERNEL_SKIP:], IMAGE_LOAD_ADDRESS)]
        components.append((DUMP_PARMLINE + b"\0", IMAGE_LOAD_ADDRESS - 0x1000))
        if ramdisk is not None:
            components.append((ramdisk, 0x2000000))
        for data, address in components:
            start = first_block + len(blocks)
            count = _ceil_div(len(data), bs) or 1
            padded = data + bytes(count * bs - len(data))
            blocks.extend(padded[i : i + bs] for i in range(0, len(padded), bs))
            list_block = first_block + len(blocks)
            blocks.append(_block_list(start, count, bs))
            entries.append((ENTRY_LOAD, BlockPtr(list_block, bs).to_bytes(), address))
    entries.append((ENTRY_EXECUTE, b"", IMAGE_LOAD_ADDRESS))
    script_block = first_block + len(blocks)
    blocks.append(component_script(entries, bs))
    blocks.append(program_table(BlockPtr(script_block, bs), bs))
    return b"".join(blocks)


def _block_list(start: int, count: int, bs: int) -> bytes:
    out = bytearray(bs)
    pos = 0
    while count > 0 and pos + 16 <= bs - 16:
        run = min(count, 0x10000)
        out[pos : pos + 16] = BlockPtr(start, bs, run - 1).to_bytes()
        start += run
        count -= run
        pos += 16
    if count:
        raise DiskRefused("Dump tool component too large for one block list")
    return bytes(out)
