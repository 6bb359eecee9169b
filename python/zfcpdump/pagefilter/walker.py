"""What the x86_64 and s390x page-table walkers share: a small cache of the tables a
walk reads, and reading virtual memory piece by piece through `translate`."""

from __future__ import annotations

import struct
from typing import Callable

ReadPhys = Callable[[int, int], bytes]

#: tables kept at once: a handful serve a whole walk
TABLE_CACHE = 64


class PageTableWalker:
    #: struct format of one table entry ("<Q" little-endian, ">Q" big-endian)
    entry_format = "<Q"

    def __init__(self, read_phys: ReadPhys):
        self.read_phys = read_phys
        self._tables: dict[int, bytes] = {}

    def translate(self, va: int) -> tuple[int, int]:
        """(physical address of `va`, bytes from `va` to the end of its mapping);
        raises TranslationError."""
        raise NotImplementedError

    def _entry(self, table: int, index: int, table_bytes: int) -> int:
        raw = self._tables.get(table)
        if raw is None:
            raw = self.read_phys(table, table_bytes)
            if len(self._tables) >= TABLE_CACHE:
                self._tables.clear()
            self._tables[table] = raw
        return struct.unpack_from(self.entry_format, raw, 8 * index)[0]

    def read(self, va: int, size: int) -> bytes:
        """`size` bytes of virtual memory from `va`."""
        out = bytearray()
        while len(out) < size:
            pa, span = self.translate(va + len(out))
            out += self.read_phys(pa, min(span, size - len(out)))
        return bytes(out)
