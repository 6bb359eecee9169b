"""Virtual addresses for an x86_64 ELF core written from a dump that has none (a kdump
file keeps physical memory only): readers that find kernel symbols through the
PT_LOADs, such as vmcore-dmesg, need the direct map (`page_offset_base` + physical) and
the kernel image (`_stext` onward), as /proc/vmcore gives them. Both come from the
crashed kernel's own page tables (VMCOREINFO: init_top_pgt, mem_section, _stext)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..model import Dump

GIB = 1 << 30


@dataclass(frozen=True)
class KernelMappings:
    direct_map: int  # virtual address of physical 0
    text_vaddr: int  # _stext
    text_paddr: int
    image_size: int  # how far the kernel image mapping may reach from _stext

    def image_overlap(self, start: int, size: int) -> tuple[int, int]:
        """The physical range of [start, start + size) inside the kernel image mapping."""
        return (max(start, self.text_paddr),
                min(start + size, self.text_paddr + self.image_size))


def kernel_mappings(dump: Dump) -> Optional[KernelMappings]:
    """None when the dump is not x86_64 or its tables do not say (best effort)."""
    if dump.arch != "x86_64":
        return None
    from ..pagefilter.errors import FilterUnavailable, TranslationError
    from ..pagefilter.x86_64 import START_KERNEL_MAP, X86_64PageTables

    fields = dump.vmcoreinfo_fields()
    try:
        mmu = X86_64PageTables.from_vmcoreinfo(dump.read_phys, fields)
        direct_va = int(fields["SYMBOL(mem_section)"], 16)  # a direct-map address
        direct_pa, _ = mmu.translate(direct_va)
        stext = int(fields["SYMBOL(_stext)"], 16)
        text_pa, _ = mmu.translate(stext)
    except (KeyError, ValueError, FilterUnavailable, TranslationError, OSError):
        return None
    base = direct_va - direct_pa
    if base % GIB:  # page_offset_base is PUD aligned: anything else is no direct map
        return None
    # _end is not in VMCOREINFO: map up to KERNEL_IMAGE_SIZE (1 GiB) past _stext, as far
    # as the kernel's own image mapping could reach
    raw = fields.get("NUMBER(KERNEL_IMAGE_SIZE)", "")
    size = int(raw) if raw.isdigit() and 0 < int(raw) <= GIB else GIB
    return KernelMappings(base, stext, text_pa, size - (stext - START_KERNEL_MAP) % GIB
                          if stext >= START_KERNEL_MAP else size)
