"""Virtual to physical addresses of a crashed s390x kernel, through its own DAT tables
(`swapper_pg_dir`, the kernel ASCE's top table): region-first/second/third tables of
2048 entries, a segment table of 2048, page tables of 256; 2 GiB (region-third) and
1 MiB (segment) large pages. Needed for the `struct page` array (vmemmap); the kernel
image and the direct map of the kernels handled here are identity mapped.

The ASCE itself is not in VMCOREINFO: the top table's type is read from the table-type
bits its valid entries carry."""

from __future__ import annotations

import struct
from typing import Mapping

from .errors import FilterUnavailable, TranslationError
from .walker import PageTableWalker, ReadPhys

ENTRY_INVALID = 0x20  # region and segment table entries
TYPE_MASK = 0x0C  # region entries: 3 first, 2 second, 1 third; segment entries 0
LARGE = 0x400  # FC: a region-third entry maps 2 GiB, a segment entry 1 MiB
PTE_INVALID = 0x400
#: index shift of each table level: 3 region-first ... 0 segment
SHIFTS = {3: 53, 2: 42, 1: 31, 0: 20}
TABLE_BYTES = 2048 * 8


class S390xPageTables(PageTableWalker):
    entry_format = ">Q"

    def __init__(self, read_phys: ReadPhys, root: int, top_level: int):
        super().__init__(read_phys)
        self.root = root
        self.top_level = top_level

    @classmethod
    def from_vmcoreinfo(cls, read_phys: ReadPhys, fields: Mapping[str, str]) -> "S390xPageTables":
        try:
            root = int(fields["SYMBOL(swapper_pg_dir)"], 16)
        except KeyError:
            raise FilterUnavailable("VMCOREINFO has no SYMBOL(swapper_pg_dir)") from None
        except ValueError as exc:
            raise FilterUnavailable(f"VMCOREINFO: {exc}") from None
        table = read_phys(root, TABLE_BYTES)
        types = {(e & TYPE_MASK) >> 2 for (e,) in struct.iter_unpack(">Q", table)
                 if e and not e & ENTRY_INVALID}
        if len(types) != 1:
            raise FilterUnavailable(f"swapper_pg_dir at {root:#x} is no DAT table "
                                    f"(entry types {sorted(types)})")
        return cls(read_phys, root, types.pop())

    def translate(self, va: int) -> tuple[int, int]:
        """(physical address of `va`, bytes from `va` to the end of its mapping)."""
        if va >> (SHIFTS[self.top_level] + 11):
            raise TranslationError(f"{va:#x} is beyond the kernel's address space")
        table = self.root
        for level in range(self.top_level, -1, -1):
            shift = SHIFTS[level]
            entry = self._entry(table, (va >> shift) & 0x7FF, TABLE_BYTES)
            if entry & ENTRY_INVALID or (entry & TYPE_MASK) >> 2 != level:
                raise TranslationError(f"{va:#x} is not mapped (level {level} entry {entry:#x})")
            if level in (1, 0) and entry & LARGE:
                size = 1 << shift
                offset = va & (size - 1)
                return (entry & ~(size - 1) & ((1 << 64) - 1)) + offset, size - offset
            table = entry & ~(0x7FF if level == 0 else 0xFFF)
            if table == 0:
                # empty entries are 0x20 (invalid); a table at 0 (the lowcore) is none:
                # reading one would classify the wrong memory
                raise TranslationError(f"{va:#x}: level {level} entry {entry:#x} has no table")
        pte = self._entry(table, (va >> 12) & 0xFF, 256 * 8)
        if pte & PTE_INVALID or pte == 0:
            raise TranslationError(f"{va:#x} is not mapped (page table entry {pte:#x})")
        offset = va & 0xFFF
        return (pte & ~0xFFF) + offset, 0x1000 - offset
