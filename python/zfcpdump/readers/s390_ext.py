"""s390_ext reader: the DASD single-volume extended dump (formats.md §12), read-only.

After the 4 KiB header come dump segments, each a 4 KiB segment header and its data.
Gaps between segments read as zeroes. Valid only if a segment with the stop marker
appears before 0x1000 + mem_size and a valid end marker follows its data
(zgetdump mem_chunks_add_ext). zlib-compressed segments are refused with a clear message.
"""

from __future__ import annotations

import os
from typing import Optional

from ..errors import DumpDamaged, ZfcpdumpError
from ..formats import s390_dump as S
from ..model import Dump, FileSpan, MemChunk
from .s390 import apply_header, arch_name, check_end_marker, cpus_from_lowcores, read_header, set_cpu_content


def segment_chunks(fd: int, size: int, hdr: S.S390Header, base: int = 0) -> tuple[list[MemChunk], int, int]:
    """(chunks, file offset after the stop segment, bytes of memory in segments)."""
    chunks: list[MemChunk] = []
    off = S.HDR_SIZE
    old = 0
    in_segments = 0
    limit = S.HDR_SIZE + hdr.mem_size - S.PAGE_SIZE
    stopped = False
    while off < limit:
        raw = os.pread(fd, S.SEGMENT_HDR_SIZE, base + off)
        if len(raw) != S.SEGMENT_HDR_SIZE:
            raise DumpDamaged("s390_ext dump segment header truncated")
        seg = S.SegmentHeader.from_bytes(raw)
        off += S.SEGMENT_HDR_SIZE
        if seg.size_on_disk:
            raise ZfcpdumpError("Compressed s390_ext dumps are not supported")
        if seg.start < old or seg.start + seg.length > hdr.mem_size:
            raise DumpDamaged("s390_ext dump segment outside the dump memory")
        if seg.start > old:
            chunks.append(MemChunk(old, seg.start - old, None))
        if seg.length:
            if off + seg.length > size:
                raise DumpDamaged("s390_ext dump segment extends beyond the end of the dump")
            chunks.append(MemChunk(seg.start, seg.length, FileSpan(fd, base + off)))
        old = seg.start + seg.length
        in_segments += seg.length
        off += seg.length
        if seg.stop_marker:
            stopped = True
            break
    if not stopped:
        raise DumpDamaged("s390_ext dump has no stop segment")
    if hdr.mem_size > old:
        chunks.append(MemChunk(old, hdr.mem_size - old, None))
    return chunks, off, in_segments


def read_s390_ext(fd: int, size: int, path: Optional[str] = None, *, base: int = 0) -> Dump:
    hdr = read_header(fd, size, S.MAGIC_EXT, base)
    chunks, em_off, in_segments = segment_chunks(fd, size, hdr, base)
    em_tod = check_end_marker(fd, em_off, size, hdr, base)
    dump = Dump(format="s390_ext", version=hdr.version, arch=arch_name(hdr), byteorder="big",
                page_size=hdr.page_size or S.PAGE_SIZE, chunks=chunks, path=path)
    apply_header(dump, hdr, em_tod)
    dump.attrs.file_size = in_segments
    dump.cpus = cpus_from_lowcores(hdr, hdr.mem_size, dump.read_phys)
    set_cpu_content(dump, hdr, hdr.mem_size)
    return dump
