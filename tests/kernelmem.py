"""A synthetic x86_64 kernel vmcore for the page-class filter: real 4-level page tables
(2 MiB direct map, 4 KiB vmemmap), SPARSEMEM_EXTREME mem_section roots, a struct page
for every pfn, and pages of every class makedumpfile knows, at known pfns.

The expected classes come from how the memory is built here (`KernelCore.classes`),
not from the code under test.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

PAGE = 4096
RAM = 32 << 20
NPFN = RAM // PAGE
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
DIRECT_MAP = 0xFFFF_8880_0000_0000
VMEMMAP = 0xFFFF_EA00_0000_0000
UNMAPPED = 0xFFFF_EB00_0000_0000
SECTION_BITS, PHYSMEM_BITS = 24, 40  # 16 MiB sections: two of them
PAGES_PER_SECTION = 1 << (SECTION_BITS - 12)
PER_ROOT = PAGE // 32
NR_ROOTS = (1 << (PHYSMEM_BITS - SECTION_BITS)) // PER_ROOT

# physical layout of the metadata
PGD, PUD_DIRECT, PMD_DIRECT, PUD_VMEMMAP, PMD_VMEMMAP, PTE_VMEMMAP, PUD_KERNEL, PMD_KERNEL = (
    0x100000 + i * PAGE for i in range(8))
STEXT_PHYS = 0x1000000  # the kernel image: _stext, one 2 MiB page
STEXT = START_KERNEL_MAP + STEXT_PHYS
MEMMAP_PHYS = 0x200000  # NPFN * 64 bytes = 512 KiB
ROOTS_PHYS = 0x280000
ROOT0_PHYS = ROOTS_PHYS + 8 * NR_ROOTS

# struct page (Linux 6.1 x86_64)
SIZE_PAGE = 64
OFF = {"flags": 0, "compound_head": 8, "compound_dtor": 16, "compound_order": 17,
       "mapping": 24, "private": 40, "_mapcount": 48, "_refcount": 52, "lru": 8}
PG = {"lru": 4, "slab": 9, "swapcache": 10, "private": 13, "swapbacked": 19, "hwpoison": 23}
HEAD_MASK = 1 << 16
BUDDY = 0xFFFF_FF7F  # PAGE_BUDDY_MAPCOUNT_VALUE (-129)
OFFLINE = 0xFFFF_FEFF  # (-257)
HUGETLB_DTOR = 2
FILE_MAPPING = DIRECT_MAP + 0x123400  # an address_space (not anon)
ANON_MAPPING = DIRECT_MAP + 0x123500 | 1


def vmcoreinfo(release: str = "6.1.0-synthetic", drop: tuple = ()) -> bytes:
    lines = {
        "OSRELEASE": release,
        "PAGESIZE": str(PAGE),
        "SYMBOL(init_top_pgt)": f"{START_KERNEL_MAP + PGD:x}",
        "SYMBOL(_stext)": f"{STEXT:x}",
        "NUMBER(phys_base)": "0",
        "NUMBER(pgtable_l5_enabled)": "0",
        "NUMBER(sme_mask)": "0",
        "SYMBOL(mem_section)": f"{DIRECT_MAP + ROOTS_PHYS:x}",
        "LENGTH(mem_section)": str(NR_ROOTS),
        "SIZE(mem_section)": "32",
        "OFFSET(mem_section.section_mem_map)": "0",
        "NUMBER(SECTION_SIZE_BITS)": str(SECTION_BITS),
        "NUMBER(MAX_PHYSMEM_BITS)": str(PHYSMEM_BITS),
        "SIZE(page)": str(SIZE_PAGE),
        **{f"OFFSET(page.{k})": str(v) for k, v in OFF.items()},
        **{f"NUMBER(PG_{k})": str(v) for k, v in PG.items()},
        "NUMBER(PG_head_mask)": str(HEAD_MASK),
        "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)": "-129",
        "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)": "-257",
        "NUMBER(HUGETLB_PAGE_DTOR)": str(HUGETLB_DTOR),
        "LENGTH(zone.free_area)": "11",
        "CRASHTIME": "1795000000",
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items() if k not in drop).encode()


@dataclass
class KernelCore:
    mem: bytearray = field(default_factory=lambda: bytearray(RAM))
    #: pfn -> class name, for every page a full filter leaves out
    classes: dict = field(default_factory=dict)

    # ---- struct pages --------------------------------------------------------------
    def page(self, pfn: int, *, flags: int = 0, mapping: int = 0, mapcount: int = 0xFFFFFFFF,
             private: int = 0, head: int = 0) -> None:
        at = MEMMAP_PHYS + SIZE_PAGE * pfn
        struct.pack_into("<QQ", self.mem, at, flags, head)
        struct.pack_into("<Q", self.mem, at + OFF["mapping"], mapping)
        struct.pack_into("<Q", self.mem, at + OFF["private"], private)
        struct.pack_into("<I", self.mem, at + OFF["_mapcount"], mapcount)

    def compound(self, pfn: int, order: int, *, flags: int, mapping: int, dtor: int = 0) -> None:
        self.page(pfn, flags=flags | HEAD_MASK, mapping=mapping)
        head_va = VMEMMAP + SIZE_PAGE * pfn
        for t in range(pfn + 1, pfn + (1 << order)):
            self.page(t, head=head_va | 1, mapping=0x400)  # TAIL_MAPPING poison
        second = MEMMAP_PHYS + SIZE_PAGE * (pfn + 1)
        self.mem[second + OFF["compound_dtor"]] = dtor
        self.mem[second + OFF["compound_order"]] = order

    def mark(self, first: int, count: int, cls: str) -> None:
        for p in range(first, first + count):
            self.classes[p] = cls

    # ---- the whole image -----------------------------------------------------------
    @classmethod
    def build(cls, *, unmapped_section: int | None = None) -> "KernelCore":
        k = cls()
        for pfn in range(NPFN):  # recognisable contents
            stamp = b"pfn %08x kernel memory " % pfn
            k.mem[pfn * PAGE : (pfn + 1) * PAGE] = (stamp * (PAGE // len(stamp) + 1))[:PAGE]
        for pfn in range(0x100, 0x300):
            k.mem[pfn * PAGE : (pfn + 1) * PAGE] = bytes(PAGE)  # metadata lives here
        k._page_tables()
        k._mem_section(unmapped_section)
        for pfn in range(NPFN):
            k.page(pfn)
        lru = 1 << PG["lru"]
        k.page(1024, mapcount=BUDDY, private=4)
        k.mark(1024, 16, "free")
        k.page(1100, mapcount=BUDDY, private=0)
        k.mark(1100, 1, "free")
        k.page(1101, flags=1 << PG["slab"], mapcount=BUDDY)  # slab: kept
        k.page(1102, mapcount=BUDDY, private=30)  # no such order: kept
        for p in range(1200, 1210):
            k.page(p, flags=lru, mapping=FILE_MAPPING)
        k.mark(1200, 10, "cache")
        for p in range(1210, 1215):
            k.page(p, flags=lru | 1 << PG["private"], mapping=FILE_MAPPING)
        k.mark(1210, 5, "cache private")
        k.page(1215, flags=1 << PG["swapcache"] | 1 << PG["swapbacked"])
        k.mark(1215, 1, "cache")
        k.page(1216, flags=1 << PG["swapcache"])  # swapcache without swapbacked: kept
        for p in range(1300, 1320):
            k.page(p, flags=lru, mapping=ANON_MAPPING)
        k.mark(1300, 20, "user")
        k.page(1400, flags=1 << PG["hwpoison"])
        k.mark(1400, 1, "hwpoison")
        k.page(1401, mapcount=OFFLINE)
        k.mark(1401, 1, "offline")
        k.compound(2048, 9, flags=lru, mapping=ANON_MAPPING)  # a THP
        k.mark(2048, 512, "user")
        k.compound(4608, 9, flags=0, mapping=0, dtor=HUGETLB_DTOR)  # hugetlbfs, section 1
        k.mark(4608, 512, "user")
        k.page(6000, mapcount=BUDDY, private=3)
        k.mark(6000, 8, "free")
        if unmapped_section is not None:
            first = unmapped_section * PAGES_PER_SECTION
            for p in [p for p in k.classes if first <= p < first + PAGES_PER_SECTION]:
                del k.classes[p]  # its struct pages cannot be read: everything stays
        return k

    def _put(self, table: int, index: int, entry: int) -> None:
        struct.pack_into("<Q", self.mem, table + 8 * index, entry)

    def _page_tables(self) -> None:
        present_rw = 0x3
        ps = 0x80
        idx = lambda va, level: (va >> (12 + 9 * (level - 1))) & 511  # noqa: E731
        # direct map: 2 MiB pages over all the RAM
        self._put(PGD, idx(DIRECT_MAP, 4), PUD_DIRECT | present_rw)
        self._put(PUD_DIRECT, idx(DIRECT_MAP, 3), PMD_DIRECT | present_rw)
        for i in range(RAM >> 21):
            self._put(PMD_DIRECT, idx(DIRECT_MAP, 2) + i, (i << 21) | present_rw | ps)
        # the kernel image: _stext in a 2 MiB page
        self._put(PGD, idx(START_KERNEL_MAP, 4), PUD_KERNEL | present_rw)
        self._put(PUD_KERNEL, idx(STEXT, 3), PMD_KERNEL | present_rw)
        self._put(PMD_KERNEL, idx(STEXT, 2), STEXT_PHYS | present_rw | ps)
        # vmemmap: 4 KiB pages onto the struct page array
        self._put(PGD, idx(VMEMMAP, 4), PUD_VMEMMAP | present_rw)
        self._put(PUD_VMEMMAP, idx(VMEMMAP, 3), PMD_VMEMMAP | present_rw)
        self._put(PMD_VMEMMAP, idx(VMEMMAP, 2), PTE_VMEMMAP | present_rw)
        for i in range(NPFN * SIZE_PAGE // PAGE):
            self._put(PTE_VMEMMAP, i, (MEMMAP_PHYS + i * PAGE) | present_rw | (1 << 63))

    def _mem_section(self, unmapped_section: int | None) -> None:
        struct.pack_into("<Q", self.mem, ROOTS_PHYS, DIRECT_MAP + ROOT0_PHYS)
        for nr in range(NPFN // PAGES_PER_SECTION):
            base = UNMAPPED if nr == unmapped_section else VMEMMAP
            struct.pack_into("<Q", self.mem, ROOT0_PHYS + 32 * nr, base | 0x3)

    def excluded(self, dump_level: int) -> set:
        """The pfns a filter at `dump_level` leaves out (hwpoison and offline always)."""
        want = {"hwpoison", "offline"}
        if dump_level & 2:
            want.add("cache")
        if dump_level & 4:
            want |= {"cache", "cache private"}
        if dump_level & 8:
            want.add("user")
        if dump_level & 16:
            want.add("free")
        return {p for p, c in self.classes.items() if c in want}

    def write(self, path: Path, info: bytes | None = None) -> int:
        """An ELF core: PT_NOTE (PRSTATUS, VMCOREINFO) and one PT_LOAD of the RAM."""
        info = vmcoreinfo() if info is None else info

        def note(name: bytes, ntype: int, desc: bytes) -> bytes:
            pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
            return struct.pack("<III", len(name) + 1, len(desc), ntype) + pad(name + b"\0") + pad(desc)

        notes = note(b"CORE", 1, bytes(336)) + note(b"VMCOREINFO", 0, info)
        data_off = PAGE * (1 + -(-len(notes) // PAGE) + 1)
        ph = [struct.pack("<IIQQQQQQ", 4, 0, PAGE, 0, 0, len(notes), len(notes), 0),
              struct.pack("<IIQQQQQQ", 1, 7, data_off, DIRECT_MAP, 0, RAM, RAM, PAGE)]
        eh = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
              + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, len(ph), 0, 0, 0))
        with open(path, "wb") as f:
            head = eh + b"".join(ph)
            f.write(head + bytes(PAGE - len(head)))
            f.write(notes + bytes(data_off - PAGE - len(notes)))
            f.write(self.mem)
        return data_off + RAM
