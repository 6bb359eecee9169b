"""The per-page loop: pure-Python twin of the Rust `engine::pageclass::exclude_pages`
(same rules, same bits cleared, same counts; tests compare the two). The rules are
documented there."""

from __future__ import annotations

import struct
from typing import Callable, Optional

from ..formats.kdump_layout import bit_set
from .page_struct import (DL_EXCLUDE_CACHE, DL_EXCLUDE_CACHE_PRIVATE, DL_EXCLUDE_FREE,
                          DL_EXCLUDE_USER)

FREE, CACHE, CACHE_PRIVATE, USER, HWPOISON, OFFLINE = range(6)
#: Linux 4.18-6.11: page types are bits cleared under this base in page_type
PAGE_TYPE_BASE = 0xF0000000

Classifier = Callable[[bytes, int, dict, int, bytearray, Optional[int]], list]


def _clear_range(bitmap: bytearray, lo: int, hi: int) -> int:
    hi = min(hi, 8 * len(bitmap))
    cleared = 0
    for pfn in range(lo, hi):
        m = 1 << (pfn & 7)
        if bitmap[pfn >> 3] & m:
            bitmap[pfn >> 3] &= ~m & 0xFF
            cleared += 1
    return cleared


def is_page_type(mapcount: int, value: int) -> bool:
    """Is `mapcount` (page_type) the buddy or offline type whose VMCOREINFO value is
    `value`? Linux 6.12 and later keep the type in the top byte (value = type << 24);
    before, the whole word is the value."""
    if value & 0xFFFFFF == 0:
        return mapcount >> 24 == value >> 24
    return mapcount == value


def has_page_type(mapcount: int, value: int) -> bool:
    """The kernel's own test for the slab and hugetlb types: the top byte from 6.12;
    in 6.9-6.11 the type's bit (~value) cleared under PAGE_TYPE_BASE, the low bits
    carrying other data (a slab's count of objects in use)."""
    if value & 0xFFFFFF == 0:
        return mapcount >> 24 == value >> 24
    return mapcount & (PAGE_TYPE_BASE | (~value & 0xFFFFFFFF)) == PAGE_TYPE_BASE


def exclude_pages(memmap: bytes, first_pfn: int, ps: dict, dump_level: int,
                  dumpable: bytearray, npages: Optional[int] = None) -> list:
    """Classify the first `npages` struct pages of `memmap` (all whole ones if None;
    one more may follow, for a compound head's order) and clear the excluded pages'
    bits in `dumpable`; return the pages excluded per class."""
    size = ps["size"]
    e = ">" if ps["big_endian"] else "<"
    u64 = struct.Struct(e + "Q").unpack_from
    u32 = struct.Struct(e + "I").unpack_from
    whole = len(memmap) // size
    n = whole if npages is None else min(npages, whole)
    counts = [0] * 6
    buddy = (ps["buddy_mapcount"] if dump_level & DL_EXCLUDE_FREE and ps["mapcount"] is not None
             and ps["private"] is not None else None)
    off_flags, off_mapping, off_mapcount = ps["flags"], ps["mapping"], ps["mapcount"]
    off_private, off_head = ps["private"], ps["compound_head"]
    off_order, off_dtor = ps["compound_order"], ps["compound_dtor"]
    lru, private_bit, swapcache = 1 << ps["pg_lru"], 1 << ps["pg_private"], 1 << ps["pg_swapcache"]
    swapbacked = None if ps["pg_swapbacked"] is None else 1 << ps["pg_swapbacked"]
    slab_bit = None if ps["pg_slab"] is None else 1 << ps["pg_slab"]
    slab_type = ps["slab_type"]
    hwpoison = None if ps["pg_hwpoison"] is None else 1 << ps["pg_hwpoison"]
    head_mask, offline_value, hugetlb_dtor = ps["pg_head_mask"], ps["offline_mapcount"], ps["hugetlb_dtor"]
    hugetlb_type, pg_hugetlb = ps["hugetlb_type"], ps["pg_hugetlb"]
    order_in_flags = hugetlb_type is not None or pg_hugetlb is not None
    for i in range(n):
        pfn = first_pfn + i
        if not bit_set(dumpable, pfn):
            continue
        at = i * size
        flags = u64(memmap, at + off_flags)[0]
        mapping = u64(memmap, at + off_mapping)[0]
        mapcount = None if off_mapcount is None else u32(memmap, at + off_mapcount)[0]
        private = 0 if off_private is None else u64(memmap, at + off_private)[0]
        if off_head is not None and u64(memmap, at + off_head)[0] & 1:
            continue
        order, hugetlb = 0, False
        if flags & head_mask and i + 1 < whole:
            nxt = at + size
            if order_in_flags:
                flags_1 = u64(memmap, nxt + off_flags)[0]
                order = flags_1 & 0xFF
                if hugetlb_type is not None:
                    hugetlb = mapcount is not None and has_page_type(mapcount, hugetlb_type)
                else:
                    hugetlb = bool(flags_1 >> pg_hugetlb & 1)
            else:
                order = 0 if off_order is None else memmap[nxt + off_order]
                dtor = 0 if off_dtor is None else memmap[nxt + off_dtor]
                hugetlb = dtor != 0 and hugetlb_dtor == dtor
            if order >= 64 or pfn & ((1 << order) - 1):
                order = 0
        if slab_bit is not None:
            slab = bool(flags & slab_bit)
        else:
            slab = mapcount is not None and slab_type is not None and has_page_type(mapcount, slab_type)
        anon = bool(mapping & 1) and not slab
        cache = bool(flags & lru) or ((swapbacked is None or bool(flags & swapbacked))
                                      and bool(flags & swapcache))
        is_private = bool(flags & private_bit)
        nr_pages = 1 << order
        if buddy is not None and not slab and is_page_type(mapcount, buddy):
            if private >= ps["max_order"] or pfn & ((1 << private) - 1):
                continue
            nr_pages = 1 << private
            cls = FREE
        elif dump_level & DL_EXCLUDE_CACHE and cache and not is_private and not anon:
            cls = CACHE
        elif dump_level & DL_EXCLUDE_CACHE_PRIVATE and cache and not anon:
            cls = CACHE_PRIVATE if is_private else CACHE
        elif dump_level & DL_EXCLUDE_USER and (anon or hugetlb):
            cls = USER
        elif hwpoison is not None and flags & hwpoison:
            cls = HWPOISON
        elif (offline_value is not None and mapcount is not None and not slab
              and is_page_type(mapcount, offline_value)):
            cls = OFFLINE
        else:
            continue
        counts[cls] += _clear_range(dumpable, pfn, pfn + nr_pages)
    return counts


def classifier(engine: str) -> Classifier:
    """`exclude_pages` of the named engine ("rust" falls back to this twin, as the
    capture engines do)."""
    if engine == "rust":
        from .. import engine as engines

        if engines.rust_available():
            from .. import _core

            return lambda mm, pfn, ps, level, bm, n=None: list(
                _core.exclude_pages(mm, pfn, ps, level, bm, n))
    return exclude_pages
