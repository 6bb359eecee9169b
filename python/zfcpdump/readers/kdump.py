"""kdump-compressed ("diskdump") and makedumpfile-flattened readers (formats.md §13, §14).

Both give the full model: memory from the 2nd ("dumpable") bitmap and the page
descriptors, CPUs from the copied ELF notes, VMCOREINFO, utsname and time from the
header. Byte order is that of the dumped machine, detected from `header_version`.
Pages are decompressed one by one: zlib always; LZO, snappy and zstd when a module for
them imports (python-lzo, python-snappy or cramjam, zstandard), else a clear error.
A flattened file is read through an offset map of its records, without rearranging.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import DumpDamaged, NotThisFormat, ZfcpdumpError
from ..formats import elf_notes as N
from ..model import Dump, MemChunk
from .elf import split_cpus

KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"
FLAT_SIGNATURE = b"makedumpfile"
FLAT_HDR_SIZE = 4096
HDR_SIZE = 464
DESC_SIZE = 24
UTS_LEN = 65
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")

FLAG_ZLIB = 0x1
FLAG_LZO = 0x2
FLAG_SNAPPY = 0x4
FLAG_ZSTD = 0x20
STATUS_INCOMPLETE = 0x8

MACHINE_ARCH = {"s390x": "s390x", "x86_64": "x86_64", "aarch64": "aarch64",
                "ppc64le": "ppc64", "ppc64": "ppc64", "riscv64": "riscv64"}

Pread = Callable[[int, int], bytes]  # (size, offset) -> bytes


# ---- decompression ---------------------------------------------------------------
def _decompressor(flag: int, page_size: int) -> Callable[[bytes], bytes]:
    if flag == FLAG_ZLIB:
        return zlib.decompress
    if flag == FLAG_LZO:
        try:
            import lzo  # type: ignore[import-not-found]
        except ImportError:
            raise ZfcpdumpError("This kdump dump is LZO-compressed: install python-lzo "
                                "to read it") from None
        return lambda data: lzo.decompress(data, False, page_size)
    if flag == FLAG_SNAPPY:
        try:
            import snappy  # type: ignore[import-not-found]
            return snappy.decompress
        except ImportError:
            pass
        try:
            import cramjam  # type: ignore[import-not-found]
            return lambda data: bytes(cramjam.snappy.decompress_raw(data))
        except ImportError:
            raise ZfcpdumpError("This kdump dump is snappy-compressed: install "
                                "python-snappy or cramjam to read it") from None
    if flag == FLAG_ZSTD:
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise ZfcpdumpError("This kdump dump is zstd-compressed: install zstandard "
                                "to read it") from None
        dctx = zstandard.ZstdDecompressor()
        return lambda data: dctx.decompress(data, max_output_size=page_size)
    raise DumpDamaged(f"Unknown kdump page compression flags 0x{flag:x}")


# ---- headers ---------------------------------------------------------------------
@dataclass
class KdumpHeader:
    byteorder: str
    version: int
    utsname: dict[str, str]
    tv_sec: int
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    nr_cpus: int
    # sub header
    dump_level: Optional[int] = None
    split: int = 0
    start_pfn: int = 0
    end_pfn: int = 0
    offset_vmcoreinfo: int = 0
    size_vmcoreinfo: int = 0
    offset_note: int = 0
    size_note: int = 0


def parse_header(raw: bytes, sub: bytes) -> KdumpHeader:
    (v_le,) = struct.unpack_from("<i", raw, 8)
    bo = "little" if 0 < v_le < 0x10000 else "big"
    e = "<" if bo == "little" else ">"
    (version,) = struct.unpack_from(e + "i", raw, 8)
    uts = {name: raw[12 + UTS_LEN * i : 12 + UTS_LEN * (i + 1)].split(b"\0")[0]
           .decode("ascii", "replace") for i, name in enumerate(UTS_FIELDS)}
    tv_sec, _usec = struct.unpack_from(e + "qq", raw, 408)
    status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from(
        e + "IiiII", raw, 424)
    (nr_cpus,) = struct.unpack_from(e + "i", raw, 460)
    if block_size <= 0 or block_size & (block_size - 1) or block_size > (1 << 20):
        raise DumpDamaged(f"Invalid kdump block size {block_size}")
    hdr = KdumpHeader(bo, version, uts, tv_sec, status, block_size, sub_hdr_size,
                      bitmap_blocks, max_mapnr, nr_cpus)
    if len(sub) >= 104:
        (hdr.dump_level,) = struct.unpack_from(e + "I", sub, 8)
    if len(sub) >= 104 and version >= 2:
        hdr.split, hdr.start_pfn, hdr.end_pfn = struct.unpack_from(e + "iQQ", sub, 12)
    if len(sub) >= 104 and version >= 3:
        hdr.offset_vmcoreinfo, hdr.size_vmcoreinfo = struct.unpack_from(e + "QQ", sub, 32)
    if len(sub) >= 104 and version >= 4:
        hdr.offset_note, hdr.size_note = struct.unpack_from(e + "QQ", sub, 48)
    if len(sub) >= 104 and version >= 6:
        start64, end64, mapnr64 = struct.unpack_from(e + "QQQ", sub, 80)
        if mapnr64:
            hdr.max_mapnr = mapnr64
        if hdr.split:
            hdr.start_pfn, hdr.end_pfn = start64, end64
    return hdr


# ---- page source -----------------------------------------------------------------
def _desc_format(hdr: KdumpHeader) -> str:
    """struct format of a page descriptor: offset, size, flags, page flags."""
    return ("<" if hdr.byteorder == "little" else ">") + "QIIQ"


class KdumpPages:
    """Reads pages through their descriptors; a run of dumpable pfns is one chunk whose
    first page has descriptor number `first_desc`."""

    def __init__(self, pread: Pread, hdr: KdumpHeader, desc_base: int):
        self.pread = pread
        self.hdr = hdr
        self.page_size = hdr.block_size
        self.desc_base = desc_base
        self.fmt = _desc_format(hdr)
        self._decomp: dict[int, Callable[[bytes], bytes]] = {}

    def pages(self, first_desc: int, count: int) -> bytes:
        raw = self.pread(DESC_SIZE * count, self.desc_base + DESC_SIZE * first_desc)
        if len(raw) != DESC_SIZE * count:
            raise DumpDamaged("kdump page descriptor table truncated")
        out = bytearray()
        for i in range(count):
            offset, size, flags, _pf = struct.unpack_from(self.fmt, raw, DESC_SIZE * i)
            out += self._page(offset, size, flags)
        return bytes(out)

    def _page(self, offset: int, size: int, flags: int) -> bytes:
        ps = self.page_size
        if offset == 0:  # lost page of an incomplete dump
            return bytes(ps)
        if size > ps:
            raise DumpDamaged(f"Invalid kdump page descriptor (size {size})")
        data = self.pread(size, offset)
        if len(data) != size:
            raise DumpDamaged(f"kdump page data at 0x{offset:x} truncated")
        flag = flags & (FLAG_ZLIB | FLAG_LZO | FLAG_SNAPPY | FLAG_ZSTD)
        if not flag:
            return data if size == ps else data + bytes(ps - size)
        fn = self._decomp.get(flag)
        if fn is None:
            fn = self._decomp[flag] = _decompressor(flag, ps)
        try:
            page = fn(data)
        except ZfcpdumpError:
            raise
        except Exception as exc:
            raise DumpDamaged(f"kdump page at 0x{offset:x} cannot be decompressed: {exc}") from None
        if len(page) != ps:
            raise DumpDamaged(f"kdump page at 0x{offset:x} decompresses to {len(page)} bytes")
        return page


@dataclass(frozen=True)
class KdumpRunSource:
    """ChunkSource for a run of dumpable pages."""

    pages: KdumpPages
    first_desc: int

    def read(self, offset: int, size: int) -> bytes:
        ps = self.pages.page_size
        first = offset // ps
        last = (offset + size - 1) // ps
        out = bytearray()
        i = first
        while i <= last:  # at most 256 pages per descriptor batch
            n = min(last + 1 - i, 256)
            out += self.pages.pages(self.first_desc + i, n)
            i += n
        skip = offset - first * ps
        return bytes(out[skip : skip + size])


# ---- bitmaps -> chunks -----------------------------------------------------------
def bit_runs(bitmap: bytes, limit: int) -> list[tuple[int, int]]:
    """(first pfn, count) of runs of set bits (LSB first), below `limit`."""
    runs: list[tuple[int, int]] = []
    for m in re.finditer(rb"[^\x00]+", bitmap):
        base = m.start() * 8
        bits = int.from_bytes(m.group(), "little")
        pos = 0
        while True:
            rest = bits >> pos
            if not rest:
                break
            start = pos + (rest & -rest).bit_length() - 1
            inv = ~(bits >> start)  # trailing zeros of inv = the run's length
            length = (inv & -inv).bit_length() - 1
            if runs and runs[-1][0] + runs[-1][1] == base + start:
                runs[-1] = (runs[-1][0], runs[-1][1] + length)
            else:
                runs.append((base + start, length))
            pos = start + length
    out = []
    for first, count in runs:
        if first >= limit:
            break
        out.append((first, min(count, limit - first)))
    return out


def _bitmaps(pread: Pread, hdr: KdumpHeader) -> tuple[bytes, bytes, int, int]:
    """(1st bitmap: RAM, 2nd bitmap: dumpable, pfn limit of both, file offset of the
    page descriptors): the layout after the header and sub-header."""
    bs = hdr.block_size
    half = hdr.bitmap_blocks // 2 * bs
    bm_off = (1 + hdr.sub_hdr_size) * bs
    bitmap1 = pread(half, bm_off)
    bitmap2 = pread(half, bm_off + half)
    if len(bitmap1) != half or len(bitmap2) != half:
        raise DumpDamaged("kdump bitmaps truncated")
    return bitmap1, bitmap2, min(hdr.max_mapnr, 8 * half), bm_off + 2 * half


def memory_chunks(pread: Pread, hdr: KdumpHeader) -> list[MemChunk]:
    bs = hdr.block_size
    bitmap1, bitmap2, limit, desc_base = _bitmaps(pread, hdr)
    pages = KdumpPages(pread, hdr, desc_base)
    dumpable = bit_runs(bitmap2, limit)
    chunks: list[MemChunk] = []
    desc = 0
    for first, count in dumpable:
        chunks.append(MemChunk(first * bs, count * bs, KdumpRunSource(pages, desc)))
        desc += count
    # RAM that is not dumpable (excluded pages) reads as zeroes.
    for first, count in bit_runs(bitmap1, limit):
        chunks.extend(_zero_gaps(first, count, dumpable, bs))
    return sorted(chunks, key=lambda c: c.start)


def _zero_gaps(first: int, count: int, dumpable: list[tuple[int, int]], bs: int) -> list[MemChunk]:
    out = []
    pos, end = first, first + count
    for d_first, d_count in dumpable:
        d_end = d_first + d_count
        if d_end <= pos or d_first >= end:
            continue
        if d_first > pos:
            out.append(MemChunk(pos * bs, (d_first - pos) * bs, None))
        pos = max(pos, d_end)
    if pos < end:
        out.append(MemChunk(pos * bs, (end - pos) * bs, None))
    return out


# ---- flattened format ------------------------------------------------------------
class FlatFile:
    """The rearranged file that a makedumpfile-flattened stream describes, read in place."""

    def __init__(self, fd: int, size: int, base: int = 0):
        from ..layout import Layout
        from ..model import FileSpan

        self.layout = Layout()
        pos = FLAT_HDR_SIZE
        while True:
            rec = os.pread(fd, 16, base + pos)
            if len(rec) != 16:
                raise DumpDamaged("Flattened dump truncated (no end marker)")
            offset, length = struct.unpack(">qq", rec)
            if offset == -1 and length == -1:
                break
            if offset < 0 or length < 0 or pos + 16 + length > size:
                raise DumpDamaged("Flattened dump has an invalid record")
            self.layout.add_chunk(offset, MemChunk(0, length, FileSpan(fd, base + pos + 16)))
            pos += 16 + length

    def pread(self, size: int, offset: int) -> bytes:
        return self.layout.read(offset, size)


# ---- entry points ----------------------------------------------------------------
def is_kdump(head: bytes) -> bool:
    return head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE) or head[:5] == b"KDUMP"


def _bounded(pread: Pread, size: int) -> Pread:
    """Every offset and length in a kdump header is the input's claim: read only what
    the file really holds, and call anything beyond it damage."""
    def read(n: int, offset: int) -> bytes:
        if n < 0 or offset < 0 or offset + n > size:
            raise DumpDamaged(f"kdump dump refers to bytes 0x{max(offset, 0):x}+0x{max(n, 0):x} "
                              f"beyond its end (0x{size:x})")
        return pread(n, offset)
    return read


def read_kdump_from(pread: Pread, size: int, fmt: str, path: Optional[str]) -> Dump:
    head = pread(HDR_SIZE, 0) if size >= HDR_SIZE else b""
    if len(head) < HDR_SIZE or not is_kdump(head):
        raise NotThisFormat("not a kdump dump")
    pread = _bounded(pread, size)
    hdr = _read_header(pread, head)
    machine = hdr.utsname.get("machine", "")
    arch = MACHINE_ARCH.get(machine, MACHINE_ARCH.get(machine.lower(), machine))
    if not arch:
        # makedumpfile leaves utsname empty without VMCOREINFO: guess from byte order
        # (big endian: s390x; little endian: x86_64, the only other producer we test).
        arch = "s390x" if hdr.byteorder == "big" else "x86_64"
    dump = Dump(format=fmt, version=hdr.version, arch=arch, byteorder=hdr.byteorder,
                page_size=hdr.block_size, chunks=memory_chunks(pread, hdr), path=path)
    if hdr.size_note and hdr.size_note < (64 << 20):
        notes = list(N.iter_notes(pread(hdr.size_note, hdr.offset_note), hdr.byteorder))
        dump.cpus, dump.other_notes, dump.vmcoreinfo = split_cpus(notes, arch)
    if dump.vmcoreinfo is None and hdr.size_vmcoreinfo and hdr.size_vmcoreinfo < (1 << 20):
        dump.vmcoreinfo = pread(hdr.size_vmcoreinfo, hdr.offset_vmcoreinfo).rstrip(b"\0")
    a = dump.attrs
    a.utsname = {k: v for k, v in hdr.utsname.items() if v}
    a.real_cpu_count = hdr.nr_cpus or None
    if hdr.tv_sec > 0:
        from ..formats.s390_dump import unix_us_to_tod
        a.time_created = unix_us_to_tod(hdr.tv_sec * 1_000_000)
    a.file_size = size
    a.dump_level = hdr.dump_level
    # RAM not in the dump is what memory_chunks made zero chunks of (no second read
    # of the bitmaps)
    a.excluded_pages = sum(c.size for c in dump.chunks if c.is_zero) // hdr.block_size
    dump.kdump_incomplete = bool(hdr.status & STATUS_INCOMPLETE)
    return dump


def _read_header(pread: Pread, head: bytes) -> KdumpHeader:
    """The header `head` (block 0) and its sub-header, read through a bounded pread."""
    (v_le,) = struct.unpack_from("<i", head, 8)
    (v_be,) = struct.unpack_from(">i", head, 8)
    if not (0 < v_le < 0x10000 or 0 < v_be < 0x10000):
        raise DumpDamaged("Invalid kdump header version")
    bs = struct.unpack_from("<i" if 0 < v_le < 0x10000 else ">i", head, 428)[0]
    sub = pread(104, bs) if 0 < bs <= (1 << 20) else b""
    return parse_header(head, sub)


def data_extent(pread: Pread, size: int) -> tuple[int, int]:
    """(page descriptors, end of the last byte any of them points at) of the kdump
    dump in the first `size` bytes (read_kdump_from has read it); DumpDamaged for a
    descriptor that points outside them or stores more than a page. Reads the
    descriptor table in pieces."""
    pread = _bounded(pread, size)
    hdr = _read_header(pread, pread(HDR_SIZE, 0))
    bs = hdr.block_size
    _, bitmap2, limit, desc_base = _bitmaps(pread, hdr)
    ndesc = sum(count for _, count in bit_runs(bitmap2, limit))
    fmt = struct.Struct(_desc_format(hdr))
    extent = desc_base + DESC_SIZE * ndesc
    step = 65536
    for first in range(0, ndesc, step):
        n = min(step, ndesc - first)
        for i, (offset, stored, _flags, _pf) in enumerate(
                fmt.iter_unpack(pread(DESC_SIZE * n, desc_base + DESC_SIZE * first))):
            if stored > bs or offset + stored > size:
                raise DumpDamaged(f"kdump page descriptor {first + i} points at "
                                  f"0x{offset:x}+0x{stored:x}, outside the dump (0x{size:x})")
            extent = max(extent, offset + stored)
    return ndesc, extent


def read_kdump(fd: int, size: int, path: Optional[str] = None, *, base: int = 0) -> Dump:
    return read_kdump_from(lambda n, off: os.pread(fd, n, base + off), size, "kdump", path)


def read_kdump_flat(fd: int, size: int, path: Optional[str] = None, *, base: int = 0) -> Dump:
    head = os.pread(fd, 32, base)
    if len(head) < 32 or head[:12] != FLAT_SIGNATURE or struct.unpack_from(">q", head, 16)[0] != 1:
        raise NotThisFormat("not a flattened dump")
    flat = FlatFile(fd, size, base)
    try:
        return read_kdump_from(flat.pread, flat.layout.size(), "kdump_flat", path)
    except NotThisFormat:
        raise DumpDamaged("Flattened dump does not hold a kdump dump") from None
