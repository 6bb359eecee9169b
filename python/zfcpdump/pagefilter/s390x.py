"""Virtual to physical addresses of a crashed s390x kernel, through its own DAT tables
(`swapper_pg_dir`, the kernel ASCE's top table): region-first/second/third tables of
2048 entries, a segment table of 2048, page tables of 256; 2 GiB (region-third) and
1 MiB (segment) large pages. Needed for the `struct page` array (vmemmap) and, from
Linux 6.10, for everything else: the kernel image and the direct map left their
physical addresses then.

The walk starts at swapper_pg_dir's physical address. Up to Linux 6.9 the kernel image
is mapped at its physical address, so SYMBOL(swapper_pg_dir) is that; from 6.10 the
image is at KERNELOFFSET in virtual memory and at KERNELOFFPHYS in physical memory,
both in VMCOREINFO. The ASCE itself is not in VMCOREINFO: the top table's type is read
from the table-type bits its valid entries carry."""

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


def _hex(fields: Mapping[str, str], key: str) -> int:
    try:
        return int(fields[key], 16)
    except KeyError:
        raise FilterUnavailable(f"VMCOREINFO has no {key}") from None
    except ValueError:
        raise FilterUnavailable(f"VMCOREINFO {key}={fields[key]!r} is not a hex number") from None


def kernel_image_phys(fields: Mapping[str, str], key: str) -> int:
    """Physical address of the kernel image symbol VMCOREINFO names `key`."""
    va = _hex(fields, key)
    if "KERNELOFFPHYS" not in fields:
        return va  # up to Linux 6.9: the image is where its addresses say
    offset, phys = _hex(fields, "KERNELOFFSET"), _hex(fields, "KERNELOFFPHYS")
    if va < offset:
        raise FilterUnavailable(f"VMCOREINFO {key}={va:#x} is below the kernel image "
                                f"(KERNELOFFSET={offset:#x})")
    return va - offset + phys


class S390xPageTables(PageTableWalker):
    entry_format = ">Q"

    def __init__(self, read_phys: ReadPhys, root: int, top_level: int):
        super().__init__(read_phys)
        self.root = root
        self.top_level = top_level

    @classmethod
    def from_vmcoreinfo(cls, read_phys: ReadPhys, fields: Mapping[str, str]) -> "S390xPageTables":
        root = kernel_image_phys(fields, "SYMBOL(swapper_pg_dir)")
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
