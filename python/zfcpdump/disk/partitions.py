"""Partition tables: MBR (with logical partitions) and GPT, read from block 0 on."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Optional

from ..errors import DiskRefused

MBR_SIGNATURE = b"\x55\xaa"
EXTENDED_TYPES = {0x05, 0x0F, 0x85}
GPT_PROTECTIVE = 0xEE
MAX_GPT_ENTRIES = 4096


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes from the start of the disk
    size: int  # bytes
    extended: bool = False


def has_pc_bios_label(block0: bytes) -> bool:
    return len(block0) >= 512 and block0[510:512] == MBR_SIGNATURE


def check_label(block0: bytes) -> None:
    """zipl accepts only a PC-BIOS layout (formats.md §2); Sun/SGI labels are refused."""
    if len(block0) >= 512 and block0[508:510] == b"\xda\xbe" and not has_pc_bios_label(block0):
        raise DiskRefused("Unsupported SCSI disk layout (Sun disk label)")
    if block0[:4] == b"\x0b\xe5\xa9\x41":
        raise DiskRefused("Unsupported SCSI disk layout (SGI disk label)")
    if not has_pc_bios_label(block0):
        raise DiskRefused("Could not read partition table (no 55 AA signature in block 0)")


def read_partitions(fd: int, block_size: int, disk_size: int) -> list[Partition]:
    """All partitions of the disk open on `fd`, GPT if block 0 is a protective MBR."""
    block0 = os.pread(fd, 512, 0)
    check_label(block0)
    entries = [struct.unpack_from("<B3xB3xII", block0, 0x1BE + 16 * i) for i in range(4)]
    if any(e[1] == GPT_PROTECTIVE for e in entries):
        return _read_gpt(fd, block_size, disk_size)
    parts: list[Partition] = []
    for i, (_boot, ptype, lba, count) in enumerate(entries, 1):
        if ptype == 0 or count == 0:
            continue
        extended = ptype in EXTENDED_TYPES
        parts.append(Partition(i, lba * block_size, count * block_size, extended))
        if extended:
            parts.extend(_read_logical(fd, block_size, lba, disk_size))
    return parts


def _read_logical(fd: int, block_size: int, ext_lba: int, disk_size: int) -> list[Partition]:
    parts: list[Partition] = []
    ebr_lba = ext_lba
    seen = set()
    number = 5
    while ebr_lba not in seen and ebr_lba * block_size < disk_size and number < 64:
        seen.add(ebr_lba)
        ebr = os.pread(fd, 512, ebr_lba * block_size)
        if not has_pc_bios_label(ebr):
            break
        _b, ptype, lba, count = struct.unpack_from("<B3xB3xII", ebr, 0x1BE)
        if ptype and count:
            parts.append(Partition(number, (ebr_lba + lba) * block_size, count * block_size))
            number += 1
        _b, ntype, nlba, _n = struct.unpack_from("<B3xB3xII", ebr, 0x1CE)
        if ntype not in EXTENDED_TYPES or nlba == 0:
            break
        ebr_lba = ext_lba + nlba
    return parts


def _read_gpt(fd: int, block_size: int, disk_size: int) -> list[Partition]:
    hdr = os.pread(fd, 92, block_size)
    if len(hdr) < 92 or hdr[:8] != b"EFI PART":
        raise DiskRefused("Could not read partition table (GPT header missing)")
    entries_lba, count, entry_size = struct.unpack_from("<QII", hdr, 72)
    # Bound what the header claims by what the disk really holds before reading it.
    table_end = entries_lba * block_size + count * entry_size
    if (not 128 <= entry_size <= 4096 or entry_size % 8 or count > MAX_GPT_ENTRIES
            or entries_lba == 0 or table_end > disk_size):
        raise DiskRefused("Could not read partition table (GPT header invalid)")
    table = os.pread(fd, count * entry_size, entries_lba * block_size)
    parts = []
    for i in range(min(count, len(table) // entry_size)):
        e = table[i * entry_size : (i + 1) * entry_size]
        if e[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", e, 32)
        if last >= first:
            parts.append(Partition(i + 1, first * block_size, (last - first + 1) * block_size))
    return parts


def detect_image_block_size(fd: int) -> Optional[int]:
    """For an image file: 4096 if a GPT header sits at 4096, 512 if at 512, else None."""
    if os.pread(fd, 8, 512) == b"EFI PART":
        return 512
    if os.pread(fd, 8, 4096) == b"EFI PART":
        return 4096
    return None
