"""`struct page` as VMCOREINFO describes it: where the fields are, what the flag
numbers are. The same fields as the Rust `engine::pageclass::PageStruct`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Optional

from .errors import FilterUnavailable

DL_EXCLUDE_CACHE = 2
DL_EXCLUDE_CACHE_PRIVATE = 4
DL_EXCLUDE_USER = 8
DL_EXCLUDE_FREE = 16
DL_CLASSES = DL_EXCLUDE_CACHE | DL_EXCLUDE_CACHE_PRIVATE | DL_EXCLUDE_USER | DL_EXCLUDE_FREE

#: class names in the order of the counts both classifiers return
CLASSES = ("free", "cache", "cache private", "user", "hwpoison", "offline")

#: buddy orders are below this when VMCOREINFO has no LENGTH(zone.free_area)
DEFAULT_MAX_ORDER = 11
#: larger SIZE(page) values are refused (struct page is 56 to 80 bytes in practice);
#: the same bound as the Rust classifier's
MAX_STRUCT_PAGE = 512


@dataclass(frozen=True)
class PageStruct:
    size: int
    big_endian: bool
    flags: int
    mapping: int
    mapcount: Optional[int]
    private: Optional[int]
    compound_head: Optional[int]
    compound_order: Optional[int]
    compound_dtor: Optional[int]
    pg_lru: int
    pg_private: int
    pg_swapcache: int
    pg_swapbacked: Optional[int]
    pg_slab: Optional[int]  # None: slab is a page type (Linux 6.10 and later)
    pg_hwpoison: Optional[int]
    pg_head_mask: int
    buddy_mapcount: Optional[int]  # as an unsigned 32-bit value
    offline_mapcount: Optional[int]
    hugetlb_dtor: Optional[int]
    max_order: int
    # Linux 6.6 and later: the order is the low byte of the second page's flags, and
    # hugetlb is a flag there (6.6-6.8) or a page type of the head (6.9 and later)
    pg_hugetlb: Optional[int] = None
    hugetlb_type: Optional[int] = None  # PAGE_HUGETLB_MAPCOUNT_VALUE, unsigned
    slab_type: Optional[int] = None  # PAGE_SLAB_MAPCOUNT_VALUE, unsigned

    @classmethod
    def from_vmcoreinfo(cls, fields: Mapping[str, str], big_endian: bool,
                        dump_level: int) -> "PageStruct":
        """Raises FilterUnavailable naming what VMCOREINFO lacks for `dump_level`."""

        def num(key: str) -> Optional[int]:
            raw = fields.get(key)
            if raw is None:
                return None
            try:
                return int(raw, 10)
            except ValueError:
                raise FilterUnavailable(f"VMCOREINFO {key}={raw!r} is not a number") from None

        need = ["SIZE(page)", "OFFSET(page.flags)", "OFFSET(page.mapping)",
                "NUMBER(PG_lru)", "NUMBER(PG_private)", "NUMBER(PG_swapcache)"]
        if "NUMBER(PG_slab)" not in fields:  # Linux 6.10 made slab a page type
            need += ["NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)", "OFFSET(page._mapcount)"]
        if dump_level & DL_EXCLUDE_FREE:
            need += ["OFFSET(page._mapcount)", "OFFSET(page.private)",
                     "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"]
        missing = [k for k in need if k not in fields]
        if missing:
            raise FilterUnavailable(f"VMCOREINFO has no {', '.join(missing)}")

        def u32(v: Optional[int]) -> Optional[int]:
            return None if v is None else v & 0xFFFFFFFF

        def second_page(page_field: str, folio_field: str) -> Optional[int]:
            """Where a compound head's order or destructor is in the page after it:
            OFFSET(page.X), or (Linux 6.3-6.5) OFFSET(folio.Y) less a struct page."""
            off = num(f"OFFSET(page.{page_field})")
            folio, size = num(f"OFFSET(folio.{folio_field})"), num("SIZE(page)")
            if off is None and folio is not None and size and folio >= size:
                off = folio - size
            return off

        return cls(
            size=num("SIZE(page)") or 0,
            big_endian=big_endian,
            flags=num("OFFSET(page.flags)") or 0,
            mapping=num("OFFSET(page.mapping)") or 0,
            mapcount=num("OFFSET(page._mapcount)"),
            private=num("OFFSET(page.private)"),
            compound_head=num("OFFSET(page.compound_head)"),
            compound_order=second_page("compound_order", "_folio_order"),
            compound_dtor=second_page("compound_dtor", "_folio_dtor"),
            pg_lru=num("NUMBER(PG_lru)") or 0,
            pg_private=num("NUMBER(PG_private)") or 0,
            pg_swapcache=num("NUMBER(PG_swapcache)") or 0,
            pg_swapbacked=num("NUMBER(PG_swapbacked)"),
            pg_slab=num("NUMBER(PG_slab)"),
            pg_hwpoison=num("NUMBER(PG_hwpoison)"),
            pg_head_mask=num("NUMBER(PG_head_mask)") or 0,
            buddy_mapcount=u32(num("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)")),
            offline_mapcount=u32(num("NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)")),
            hugetlb_dtor=num("NUMBER(HUGETLB_PAGE_DTOR)"),
            max_order=num("LENGTH(zone.free_area)") or DEFAULT_MAX_ORDER,
            pg_hugetlb=num("NUMBER(PG_hugetlb)"),
            hugetlb_type=u32(num("NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)")),
            slab_type=u32(num("NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)")),
        )

    def validate(self) -> None:
        """The fields the classifier reads lie inside one struct page, and the numbers
        are possible ones (a corrupted VMCOREINFO must not steer the walk)."""
        if not 0 < self.size <= MAX_STRUCT_PAGE:
            raise FilterUnavailable(f"VMCOREINFO SIZE(page)={self.size} is not a struct page "
                                    f"size (1-{MAX_STRUCT_PAGE})")
        if not 0 < self.max_order <= 64:
            raise FilterUnavailable(f"VMCOREINFO LENGTH(zone.free_area)={self.max_order} is "
                                    "not a number of buddy orders (1-64)")
        if not 0 <= self.pg_head_mask < 1 << 64:
            raise FilterUnavailable(f"VMCOREINFO NUMBER(PG_head_mask)={self.pg_head_mask} is "
                                    "not a flags mask")
        if self.hugetlb_dtor is not None and not 0 <= self.hugetlb_dtor <= 255:
            raise FilterUnavailable(f"VMCOREINFO NUMBER(HUGETLB_PAGE_DTOR)={self.hugetlb_dtor} "
                                    "is not a destructor number (0-255)")
        for name, off, width in (("flags", self.flags, 8), ("mapping", self.mapping, 8),
                                 ("_mapcount", self.mapcount, 4), ("private", self.private, 8),
                                 ("compound_head", self.compound_head, 8),
                                 ("compound_order", self.compound_order, 1),
                                 ("compound_dtor", self.compound_dtor, 1)):
            if off is not None and (off < 0 or off + width > self.size):
                raise FilterUnavailable(f"VMCOREINFO OFFSET(page.{name})={off} does not fit "
                                        f"in SIZE(page)={self.size}")
        for name, nr in (("PG_lru", self.pg_lru), ("PG_private", self.pg_private),
                         ("PG_swapcache", self.pg_swapcache), ("PG_slab", self.pg_slab),
                         ("PG_swapbacked", self.pg_swapbacked), ("PG_hwpoison", self.pg_hwpoison),
                         ("PG_hugetlb", self.pg_hugetlb)):
            if nr is not None and not 0 <= nr < 64:
                raise FilterUnavailable(f"VMCOREINFO NUMBER({name})={nr} is not a page flag")

    def as_dict(self) -> dict:
        return asdict(self)
