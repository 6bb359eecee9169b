"""Page-class filtering (`--dump-level` bits 2, 4, 8, 16): which RAM pages a
compressed dump leaves out, decided from the crashed kernel's own `struct page`s
with makedumpfile's rules.

    VMCOREINFO   -> the struct page layout and flag numbers       page_struct.py
    page tables  -> virtual to physical              x86_64.py, s390x.py (walker.py)
    mem_section  -> each section's struct page array               sparsemem.py
    each page    -> free, cache, user, ... or kept                 classify.py (+ Rust)

The result is the "dumpable" bitmap the kdump writers take. Whatever cannot be read
keeps its pages: an unmapped root or section is skipped and counted, and a dump
that lacks what the walk needs raises FilterUnavailable before anything is decided.

Scope: x86_64 dumps of Linux 4.16 to 7.3, s390x dumps of 4.16 to 7.2 (struct page as
makedumpfile 1.7.8 reads it: from 6.6 a folio's order in its second page's flags, from
6.9 slab, buddy, offline and hugetlb as page types; from 6.10 the s390x kernel image
away from its physical address, s390x.py). Checked page for page against makedumpfile
1.7.2 on a Debian 12 (6.1) x86_64 vmcore and on the s390x sample dump (qemu-user), and
against makedumpfile 1.7.8 on Debian 13's 6.12 and its backports' 6.16, 6.17, 6.18 and
7.3 x86_64 vmcores and on the memory of Debian's s390x 6.12 and 7.2 kernels (under
qemu-system-s390x; the s390x makedumpfile under qemu-user), in the end-to-end tests.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from ..formats import kdump_layout as K
from .classify import classifier
from .errors import FilterUnavailable, TranslationError
from .page_struct import CLASSES, DL_CLASSES, PageStruct
from .sparsemem import mem_maps
from .s390x import S390xPageTables
from .x86_64 import X86_64PageTables

__all__ = ["CLASSES", "DL_CLASSES", "FilterResult", "FilterUnavailable", "filter_pages",
           "ram_bitmap"]

#: kernels the rules are verified on, by architecture: [first, past the last)
VERIFIED_KERNELS = {"x86_64": ((4, 16), (7, 4)), "s390x": ((4, 16), (7, 3))}
PAGE_TABLES = {"x86_64": X86_64PageTables, "s390x": S390xPageTables}
#: (SECTION_SIZE_BITS, MAX_PHYSMEM_BITS) of kernels whose VMCOREINFO lacks them
SPARSEMEM_DEFAULTS = {"x86_64": (27, 46), "s390x": (28, 46)}
#: struct pages read and classified at a time (2 MiB of 64-byte ones), so that memory
#: stays bounded whatever the section size
CHUNK_PAGES = 32768


@dataclass
class FilterResult:
    #: one bit per page frame up to the highest RAM page: 32 MiB per TiB
    dumpable: bytearray
    excluded: dict = field(default_factory=dict)  # class name -> pages
    sections: int = 0
    sections_skipped: int = 0
    seconds: float = 0.0

    @property
    def excluded_pages(self) -> int:
        return sum(self.excluded.values())


def ram_bitmap(ram: Sequence[tuple[int, int]], max_mapnr: int) -> bytearray:
    """Bitmap by pfn (LSB first) with the `(first pfn, count)` ranges set: the kdump
    1st bitmap, which the walk then clears page by page."""
    return bytearray(K.bitmap_window(ram, 0, -(-max_mapnr // 8)))


def kernel_version(fields: Mapping[str, str]) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", fields.get("OSRELEASE", ""))
    if not m:
        raise FilterUnavailable("VMCOREINFO has no OSRELEASE")
    return int(m.group(1)), int(m.group(2))


def filter_pages(read_phys: Callable[[int, int], bytes], fields: Mapping[str, str], *,
                 arch: str, big_endian: bool, page_size: int,
                 ram: Sequence[tuple[int, int]], dump_level: int,
                 engine: str = "rust") -> FilterResult:
    """Walk the crashed kernel's struct pages; return the dumpable bitmap (RAM minus
    the pages of the classes in `dump_level`). Raises FilterUnavailable."""
    start = time.monotonic()
    if not fields:
        raise FilterUnavailable("the dump has no VMCOREINFO")
    if arch not in PAGE_TABLES:
        raise FilterUnavailable(f"this version walks x86_64 and s390x page tables only, "
                                f"the dump is {arch}")
    version = kernel_version(fields)
    lo, hi = VERIFIED_KERNELS[arch]
    if not lo <= version < hi:
        raise FilterUnavailable(
            f"the page rules are verified for {arch} Linux {lo[0]}.{lo[1]} to "
            f"{hi[0]}.{hi[1] - 1}, the dump is from {fields.get('OSRELEASE')}")
    ps = PageStruct.from_vmcoreinfo(fields, big_endian, dump_level)
    ps.validate()
    ps_fields = ps.as_dict()
    mmu = PAGE_TABLES[arch].from_vmcoreinfo(read_phys, fields)
    max_mapnr = max((pfn + n for pfn, n in ram), default=0)
    dumpable = ram_bitmap(ram, max_mapnr)
    exclude = classifier(engine)
    counts = [0] * len(CLASSES)
    sections = skipped = 0
    defaults = SPARSEMEM_DEFAULTS[arch]
    if fields.get("NUMBER(pgtable_l5_enabled)", "0").strip() == "1":
        defaults = (defaults[0], 52)
    for first_pfn, npages, vaddr in mem_maps(mmu.read, fields, page_size, ps.size, max_mapnr,
                                             big_endian, defaults):
        lo_byte, hi_byte = first_pfn >> 3, -(-(first_pfn + npages) // 8)
        if not any(dumpable[lo_byte:hi_byte]):
            continue  # no RAM in this section (e.g. the crash kernel's own memory)
        sections += 1
        try:
            for at in range(0, npages, CHUNK_PAGES):
                n = min(CHUNK_PAGES, npages - at)
                # one struct page more, where a compound head at the end finds its order
                more = 1 if at + n < npages else 0
                memmap = mmu.read(vaddr + at * ps.size, (n + more) * ps.size)
                found = exclude(memmap, first_pfn + at, ps_fields, dump_level, dumpable, n)
                counts = [a + b for a, b in zip(counts, found)]
        except TranslationError:
            skipped += 1  # the pages not yet classified stay in the dump
    if sections == 0:
        raise FilterUnavailable("no memory section of the dump has a struct page array")
    if skipped == sections:
        raise FilterUnavailable(f"none of the {sections} sections' struct pages can be read")
    return FilterResult(dumpable, dict(zip(CLASSES, counts)), sections, skipped,
                        time.monotonic() - start)
