"""Virtual to physical addresses of a crashed x86_64 kernel, through its own page
tables (`init_top_pgt`), the way the CPU does it: 4 or 5 levels, 1 GiB and 2 MiB
pages. Needed for the `struct page` array (vmemmap) and the `mem_section` roots
(direct map), whose bases KASLR randomises.

The root table is in the kernel image, whose physical address is its virtual one
minus __START_KERNEL_map plus `phys_base` (both from VMCOREINFO)."""

from __future__ import annotations

from typing import Mapping

from .errors import FilterUnavailable, TranslationError
from .walker import PageTableWalker, ReadPhys

START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
MASK64 = (1 << 64) - 1
PRESENT = 1
PAGE_SIZE_BIT = 1 << 7  # PS: this entry maps a 1 GiB (PUD) or 2 MiB (PMD) page
ADDR_MASK = 0x000F_FFFF_FFFF_F000


class X86_64PageTables(PageTableWalker):
    entry_format = "<Q"

    def __init__(self, read_phys: ReadPhys, root: int, levels: int, sme_mask: int = 0):
        super().__init__(read_phys)
        self.root = root
        self.levels = levels
        self.addr_mask = ADDR_MASK & ~sme_mask

    @classmethod
    def from_vmcoreinfo(cls, read_phys: ReadPhys, fields: Mapping[str, str]) -> "X86_64PageTables":
        try:
            top = int(fields["SYMBOL(init_top_pgt)"], 16)
            phys_base = int(fields["NUMBER(phys_base)"], 10) & MASK64
        except KeyError as exc:
            raise FilterUnavailable(f"VMCOREINFO has no {exc.args[0]}") from None
        except ValueError as exc:
            raise FilterUnavailable(f"VMCOREINFO: {exc}") from None
        if top < START_KERNEL_MAP:
            raise FilterUnavailable(f"SYMBOL(init_top_pgt)={top:#x} is not in the kernel image")
        levels = 5 if fields.get("NUMBER(pgtable_l5_enabled)", "0").strip() == "1" else 4
        sme = fields.get("NUMBER(sme_mask)", "0")
        sme_mask = int(sme, 10) & MASK64 if sme.lstrip("-").isdigit() else 0
        root = (top - START_KERNEL_MAP + phys_base) & MASK64
        return cls(read_phys, root, levels, sme_mask)

    def translate(self, va: int) -> tuple[int, int]:
        """(physical address of `va`, bytes from `va` to the end of its mapping)."""
        table = self.root
        for level in range(self.levels, 0, -1):  # 5/4: top, 3: PUD, 2: PMD, 1: PTE
            shift = 12 + 9 * (level - 1)
            entry = self._entry(table, (va >> shift) & 511, 4096)
            if not entry & PRESENT:
                raise TranslationError(f"{va:#x} is not mapped (level {level} entry {entry:#x})")
            base = entry & self.addr_mask
            if level == 1 or (level in (2, 3) and entry & PAGE_SIZE_BIT):
                size = 1 << shift
                offset = va & (size - 1)
                return (base & ~(size - 1)) + offset, size - offset
            table = base
        raise AssertionError("unreachable")
