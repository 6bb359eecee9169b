"""Create disk image files with an MBR partition table (for the demo and for users
without root): a PC-BIOS label, primary partitions in 512- or 4096-byte blocks."""

from __future__ import annotations

import os
import struct


def create_mbr_image(path: str, size: int, partitions: list[tuple[int, int]],
                     block_size: int = 512, exist_ok: bool = False) -> None:
    """`partitions`: (start_bytes, size_bytes) of up to four primary Linux partitions."""
    if len(partitions) > 4:
        raise ValueError("at most four primary partitions")
    flags = os.O_RDWR | os.O_CREAT | (0 if exist_ok else os.O_EXCL)
    fd = os.open(path, flags, 0o644)
    try:
        os.ftruncate(fd, size)
        block0 = bytearray(512)
        struct.pack_into("<I", block0, 0x1B8, 0x5A46_4350)  # disk signature
        for i, (start, length) in enumerate(partitions):
            if start % block_size or length % block_size or start + length > size:
                raise ValueError(f"partition {i + 1} is not block aligned or does not fit")
            entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                                start // block_size, length // block_size)
            block0[0x1BE + 16 * i : 0x1CE + 16 * i] = entry
        block0[510:512] = b"\x55\xaa"
        os.pwrite(fd, bytes(block0), 0)
    finally:
        os.close(fd)
