"""Where each memory section's `struct page` array is (SPARSEMEM_EXTREME, the model
of x86_64 and s390x kernels): `mem_section` is an array of roots, each a page of
`struct mem_section`, whose `section_mem_map` holds the array's address, coded."""

from __future__ import annotations

import struct
from typing import Callable, Iterator, Mapping

from .errors import FilterUnavailable, TranslationError

SECTION_MARKED_PRESENT = 1 << 0
SECTION_HAS_MEM_MAP = 1 << 1
#: the low bits of section_mem_map are flags (5 or 6 of them, by kernel version);
#: the coded address is at least page aligned, so clearing 6 is safe for all
SECTION_FLAG_BITS = 6

ReadVirt = Callable[[int, int], bytes]


def mem_maps(read_virt: ReadVirt, fields: Mapping[str, str], page_size: int,
             page_struct_size: int, max_mapnr: int, big_endian: bool,
             defaults: tuple[int, int]) -> Iterator[tuple[int, int, int]]:
    """(first pfn, pages, virtual address of their struct page array) of every present
    section below `max_mapnr`, in pfn order. `defaults`: the architecture's
    (SECTION_SIZE_BITS, MAX_PHYSMEM_BITS) for a VMCOREINFO without them."""
    try:
        roots_va = int(fields["SYMBOL(mem_section)"], 16)
        nr_roots = int(fields["LENGTH(mem_section)"])
        ms_size = int(fields["SIZE(mem_section)"])
        map_off = int(fields["OFFSET(mem_section.section_mem_map)"])
        # VMCOREINFO has these two since Linux 5.9 / 5.14; before, the architecture's
        # constants (the check against LENGTH(mem_section) below catches a wrong one)
        section_bits = int(fields.get("NUMBER(SECTION_SIZE_BITS)") or defaults[0])
        physmem_bits = int(fields.get("NUMBER(MAX_PHYSMEM_BITS)") or defaults[1])
    except KeyError as exc:
        raise FilterUnavailable(f"VMCOREINFO has no {exc.args[0]}") from None
    except ValueError as exc:
        raise FilterUnavailable(f"VMCOREINFO: {exc}") from None
    page_shift = page_size.bit_length() - 1
    if not (page_shift <= section_bits <= physmem_bits <= 64 and 8 <= ms_size <= page_size
            and 0 <= map_off <= ms_size - 8 and 0 < nr_roots <= 1 << 24):
        raise FilterUnavailable(
            f"VMCOREINFO describes no possible mem_section (SECTION_SIZE_BITS={section_bits}, "
            f"MAX_PHYSMEM_BITS={physmem_bits}, SIZE={ms_size}, LENGTH={nr_roots})")
    per_root = page_size // ms_size
    if nr_roots * per_root != 1 << (physmem_bits - section_bits):
        raise FilterUnavailable("the kernel does not use SPARSEMEM_EXTREME "
                                f"(LENGTH(mem_section)={nr_roots})")
    pages_per_section = 1 << (section_bits - page_shift)
    e = ">" if big_endian else "<"
    needed_roots = min(nr_roots, -(-max_mapnr // (pages_per_section * per_root)))
    try:
        roots = struct.unpack(f"{e}{needed_roots}Q", read_virt(roots_va, 8 * needed_roots))
    except TranslationError as exc:
        raise FilterUnavailable(f"the mem_section roots are unreadable: {exc}") from None
    for r, root in enumerate(roots):
        if not root:
            continue
        try:
            table = read_virt(root, per_root * ms_size)
        except TranslationError:
            continue  # a root the tables do not map: its pages stay in the dump
        for i in range(per_root):
            nr = r * per_root + i
            first_pfn = nr * pages_per_section
            if first_pfn >= max_mapnr:
                return
            coded = struct.unpack_from(f"{e}Q", table, i * ms_size + map_off)[0]
            if not (coded & SECTION_MARKED_PRESENT and coded & SECTION_HAS_MEM_MAP):
                continue
            base = coded & ~((1 << SECTION_FLAG_BITS) - 1)
            vaddr = (base + first_pfn * page_struct_size) & ((1 << 64) - 1)
            yield first_pfn, min(pages_per_section, max_mapnr - first_pfn), vaddr
