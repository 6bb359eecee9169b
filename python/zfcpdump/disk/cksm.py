"""CKSM (formats.md §7), pure Python. The Rust twin is zfcpdump._core.cksm."""

from __future__ import annotations

import struct

SUPERBLOCK_SEED = 0x12345678


def cksm(data: bytes, seed: int = SUPERBLOCK_SEED) -> int:
    n = len(data) // 4
    total = seed + sum(struct.unpack_from(f">{n}I", data))
    tail = data[4 * n :]
    if tail:
        total += int.from_bytes(tail + bytes(4 - len(tail)), "big")
    while total > 0xFFFFFFFF:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total
