"""kdump-compressed ("diskdump") layout as the writers produce it (formats.md §13).

Twin of the Rust `src/engine/kdump/{header,bitmap,mod}.rs`: the same offsets, the same
bytes. The pure-Python writer (`_pykdump`) and the capture (`capture_kdump`) use it; the
reader (`readers/kdump.py`) has its own decoder on purpose.

    block 0              disk_dump_header (written last by the capture)
    block 1..            kdump_sub_header + copy of the ELF notes
    bitmap_blocks        1st bitmap (RAM), 2nd bitmap (dumpable)
    desc_off             page_desc[ndesc]
    data_off             [shared zero page] page data ... (not block aligned)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

from . import elf_notes as N

SIGNATURE = b"KDUMP   "
HEADER_VERSION = 6
HEADER_SIZE = 464
SUB_HEADER_SIZE = 104
DESC_SIZE = 24
UTS_FIELD = 65

FLAG_ZLIB = 0x1
FLAG_LZO = 0x2
FLAG_SNAPPY = 0x4
FLAG_ZSTD = 0x20
DL_EXCLUDE_ZERO = 1

#: compression name -> page_desc flag / header status bit
FLAGS = {"none": 0, "zlib": FLAG_ZLIB, "lzo": FLAG_LZO, "snappy": FLAG_SNAPPY, "zstd": FLAG_ZSTD}

#: the same sentence as src/engine/kdump/compress.rs LZ4_REFUSED
LZ4_REFUSED = ("lz4 cannot be used: the kdump-compressed format has no LZ4 page flag (only zlib "
               "0x1, lzo 0x2, snappy 0x4, zstd 0x20), so crash, drgn, libkdumpfile and "
               "makedumpfile could not read the dump; use zstd instead")

# (offset in page, source offset or None, length)
Piece = Tuple[int, Optional[int], int]


@dataclass(frozen=True)
class Run:
    """Pages [pfn, pfn + count) and where they come from: ("file", offset),
    ("zero", None) or ("pieces", [Piece, ...]) for one partly covered page."""

    pfn: int
    count: int
    kind: str
    src: Union[int, None, list]


def page_runs(segments: Sequence[Tuple[int, Optional[int], int]], page_size: int) -> list[Run]:
    """Sorted, non-overlapping `(paddr, src_offset or None, size)` -> runs in pfn order."""
    ps = page_size
    runs: list[Run] = []
    partial: Optional[tuple[int, list]] = None
    prev_end = 0
    for i, (paddr, src, size) in enumerate(segments):
        end = paddr + size
        if i and paddr < prev_end:
            raise ValueError(f"segment {i} is not sorted / overlaps the previous one")
        prev_end = end
        a = paddr
        while a < end:
            pfn = a // ps
            page_start = pfn * ps
            src_at = None if src is None else src + (a - paddr)
            if a == page_start and end - a >= ps:
                if partial is not None:
                    runs.append(Run(partial[0], 1, "pieces", partial[1]))
                    partial = None
                n = (end - a) // ps
                runs.append(Run(pfn, n, "zero" if src_at is None else "file", src_at))
                a += n * ps
            else:
                take = min(end, page_start + ps) - a
                piece = (a - page_start, src_at, take)
                if partial is not None and partial[0] == pfn:
                    partial[1].append(piece)
                else:
                    if partial is not None:
                        runs.append(Run(partial[0], 1, "pieces", partial[1]))
                    partial = (pfn, [piece])
                a += take
    if partial is not None:
        runs.append(Run(partial[0], 1, "pieces", partial[1]))
    return runs


def bit_set(bitmap: bytes, pfn: int) -> bool:
    """Bit `pfn` of a bitmap by pfn (LSB first); bits past its end are clear."""
    i = pfn >> 3
    return i < len(bitmap) and bool(bitmap[i] & (1 << (pfn & 7)))


def count_dumpable(ranges: Sequence[tuple[int, int]], dumpable: Optional[bytes]) -> int:
    """Pages of the `(first pfn, count)` ranges whose bit is set in `dumpable` (all of
    them without a bitmap): the descriptors of the dump."""
    if dumpable is None:
        return sum(count for _first, count in ranges)
    n = 0
    for first, count in ranges:
        pfn, end = first, first + count
        while pfn < end:
            if not pfn & 7 and end - pfn >= 8:
                whole = (end - pfn) // 8
                n += int.from_bytes(dumpable[pfn >> 3 : (pfn >> 3) + whole], "little").bit_count()
                pfn += 8 * whole
            else:
                n += bit_set(dumpable, pfn)
                pfn += 1
    return n


def pfn_ranges(runs: Sequence[Run]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for r in runs:
        if out and out[-1][0] + out[-1][1] == r.pfn:
            out[-1][1] += r.count
        else:
            out.append([r.pfn, r.count])
    return [(p, n) for p, n in out]


@dataclass(frozen=True)
class Layout:
    page_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    ndesc: int
    desc_off: int
    data_off: int
    first_page_off: int

    @classmethod
    def of(cls, page_size: int, notes_len: int, ram: Sequence[Run], ndesc: int,
           exclude_zero: bool) -> "Layout":
        """For the RAM in `ram`, of which `ndesc` pages go into the dump."""
        ps = page_size
        max_mapnr = ram[-1].pfn + ram[-1].count if ram else 0
        sub_hdr_size = -(-(SUB_HEADER_SIZE + notes_len) // ps)
        bitmap_blocks = 2 * -(-max_mapnr // (8 * ps))
        desc_off = ps * (1 + sub_hdr_size + bitmap_blocks)
        data_off = desc_off + DESC_SIZE * ndesc
        return cls(ps, sub_hdr_size, bitmap_blocks, max_mapnr, ndesc, desc_off, data_off,
                   data_off + (ps if exclude_zero else 0))


def bitmap_window(ranges: Sequence[tuple[int, int]], first_bit: int, nbytes: int) -> bytes:
    """Bytes [first_bit/8, first_bit/8 + nbytes) of a bitmap with `ranges` set (LSB first)."""
    value = 0
    end_bit = first_bit + 8 * nbytes
    for pfn, count in ranges:
        lo, hi = max(pfn, first_bit), min(pfn + count, end_bit)
        if lo < hi:
            value |= ((1 << (hi - lo)) - 1) << (lo - first_bit)
    return value.to_bytes(nbytes, "little")


@dataclass
class HeaderInfo:
    big_endian: bool
    utsname: Sequence[str]  # sysname, nodename, release, version, machine, domainname
    tv_sec: int
    tv_usec: int
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    nr_cpus: int
    phys_base: int
    dump_level: int
    offset_vmcoreinfo: int
    size_vmcoreinfo: int
    size_note: int


def header_info(layout: Layout, *, big_endian: bool, utsname: Sequence[str], tv_sec: int,
                tv_usec: int, nr_cpus: int, phys_base: int, compress: str, dump_level: int,
                notes_len: int, vmcoreinfo: Optional[tuple[int, int]]) -> HeaderInfo:
    off, size = vmcoreinfo if vmcoreinfo else (0, 0)
    return HeaderInfo(
        big_endian, list(utsname), tv_sec, tv_usec, FLAGS[compress], layout.page_size,
        layout.sub_hdr_size, layout.bitmap_blocks, layout.max_mapnr, nr_cpus, phys_base,
        dump_level, layout.page_size + SUB_HEADER_SIZE + off if size else 0, size, notes_len)


def encode_header(h: HeaderInfo) -> bytes:
    """Block 0: disk_dump_header, zero-padded to block_size."""
    e = ">" if h.big_endian else "<"
    b = bytearray(max(h.block_size, HEADER_SIZE))
    b[0:8] = SIGNATURE
    struct.pack_into(e + "I", b, 8, HEADER_VERSION)
    for i, field in enumerate(h.utsname):
        raw = field.encode()[: UTS_FIELD - 1]
        b[12 + UTS_FIELD * i : 12 + UTS_FIELD * i + len(raw)] = raw
    struct.pack_into(e + "QQIIIII", b, 408, h.tv_sec & (2**64 - 1), h.tv_usec & (2**64 - 1),
                     h.status, h.block_size, h.sub_hdr_size, h.bitmap_blocks,
                     h.max_mapnr & 0xFFFFFFFF)
    struct.pack_into(e + "I", b, 460, h.nr_cpus)
    return bytes(b)


def encode_sub_header(h: HeaderInfo, notes: bytes) -> bytes:
    """Block 1..: kdump_sub_header + the notes, zero-padded to sub_hdr_size blocks."""
    e = ">" if h.big_endian else "<"
    b = bytearray(h.sub_hdr_size * h.block_size)
    struct.pack_into(e + "QI", b, 0, h.phys_base, h.dump_level)
    struct.pack_into(e + "QQQQ", b, 32, h.offset_vmcoreinfo, h.size_vmcoreinfo,
                     h.block_size + SUB_HEADER_SIZE if notes else 0, h.size_note)
    struct.pack_into(e + "Q", b, 96, h.max_mapnr)
    b[SUB_HEADER_SIZE : SUB_HEADER_SIZE + len(notes)] = notes
    return bytes(b)


def find_vmcoreinfo(notes: bytes, byteorder: str) -> Optional[tuple[int, int]]:
    """(offset of the VMCOREINFO descriptor inside `notes`, its size), or None."""
    for desc_off, note in N.iter_notes_at(notes, byteorder):
        if note.type == N.NT_VMCOREINFO and note.name == N.VMCOREINFO_NAME:
            return desc_off, len(note.desc)
    return None
