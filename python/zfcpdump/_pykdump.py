"""Pure-Python twin of the native kdump-compressed writer (``_core.kdump_write``).

Same signature, same bytes for ``none`` and ``zlib`` (Python's ``zlib`` module and the
Rust engine's flate2/libz-sys link the same system libz) and for ``zstd`` when the
``zstandard`` module bundles the same libzstd as the engine (1.5.7; compare
``_core.kdump_library_versions()``). It runs in the calling thread, writes buffered,
and ignores ``threads``, ``direct`` and ``batch_pages`` for the bytes it produces.

Also offers ``lzo`` (LZO1X-1 through python-lzo, which makedumpfile and libkdumpfile
read) and ``snappy`` (python-snappy or cramjam) when those modules import; the native
engine has snappy but no LZO.
"""

from __future__ import annotations

import errno as _errno
import os
import zlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

from ._pyengine import _err, _Progress, _pread_into, _pwrite_all
from .formats import kdump_layout as K

__all__ = ["KdumpResult", "kdump_write", "page_compressor"]


@dataclass(frozen=True)
class KdumpResult:
    header: bytes
    file_size: int
    pages: int
    zero_pages: int
    compressed_pages: int
    data_offset: int
    direct: bool = False
    threads: int = 1
    mapped_pages: int = 0  # (the Python twin reads, and copies, every page)
    adaptive_raw_pages: int = 0  # (no adaptive mode here)


def page_compressor(compress: str, level: int) -> Callable[[bytes], bytes]:
    """bytes -> compressed bytes for one page (the caller keeps it only if smaller)."""
    if compress == "zlib":
        lvl = max(0, min(9, level))
        return lambda page: zlib.compress(page, lvl)
    if compress == "zstd":
        try:
            import zstandard
        except ImportError:
            raise ValueError("zstd in the python engine needs the 'zstandard' module") from None
        cctx = zstandard.ZstdCompressor(level=level)
        return cctx.compress
    if compress == "lzo":
        try:
            import lzo  # type: ignore[import-not-found]
        except ImportError:
            raise ValueError("lzo needs the 'python-lzo' module (LZO1X-1)") from None
        return lambda page: lzo.compress(page, 1, False)
    if compress == "snappy":
        try:
            import snappy  # type: ignore[import-not-found]
            return snappy.compress
        except ImportError:
            pass
        try:
            import cramjam  # type: ignore[import-not-found]
        except ImportError:
            raise ValueError("snappy in the python engine needs python-snappy or cramjam") from None
        return lambda page: bytes(cramjam.snappy.compress_raw(page))
    if compress == "lz4":
        raise ValueError(K.LZ4_REFUSED)
    raise ValueError(f"unknown compression {compress!r}; choose none, zlib, lzo, snappy or zstd")


class _Out:
    """Writes at absolute offsets, never at or past `limit`."""

    def __init__(self, fd: int, limit: int):
        self.fd = fd
        self.limit = limit

    def write(self, data: bytes, offset: int) -> None:
        if offset + len(data) > self.limit:
            raise _err("write", self.fd, offset, len(data), _errno.ENOSPC,
                       f"the dump does not fit: it would pass the end of the dump area at "
                       f"0x{self.limit:x}")
        if data:
            _pwrite_all(self.fd, memoryview(data), offset)


def kdump_write(src_fd: int, dst_fd: int, segments: Sequence[Tuple[int, Optional[int], int]], *,
                base: int, limit: int, utsname: Sequence[str], tv_sec: int, tv_usec: int = 0,
                nr_cpus: int = 0, big_endian: bool, notes: bytes,
                vmcoreinfo: Optional[Tuple[int, int]] = None, phys_base: int = 0,
                compress: str = "zstd", level: int = 1, dump_level: int = 1,
                page_size: int = 4096, threads: int = 0, direct: Optional[bool] = None,
                block_size: int = 512, batch_pages: int = 256, sync: bool = True,
                hsa_pfn: int = 0, progress: Optional[Callable[[int], object]] = None,
                on_hsa_read: Optional[Callable[[], object]] = None,
                mmap: bool = False, dumpable: Optional[bytes] = None,
                adaptive: bool = False) -> KdumpResult:
    """Write everything but block 0 of a kdump-compressed dump; return block 0.
    (``mmap`` and ``adaptive`` are accepted for the native engine's signature and
    ignored: this twin reads with ``pread`` and compresses every page, which is what
    the native engine writes when its writer never waits.) ``dumpable``: page-class
    filtering, bit N set if pfn N goes into the dump; it must cover the RAM."""
    if compress not in K.FLAGS:
        page_compressor(compress, level)  # raises the right message
    comp = None if compress == "none" else page_compressor(compress, level)
    ps = max(page_size, 4096)
    if block_size <= 0 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    if vmcoreinfo is not None and vmcoreinfo[0] + vmcoreinfo[1] > len(notes):
        raise ValueError("vmcoreinfo lies outside the notes")
    exclude_zero = bool(dump_level & K.DL_EXCLUDE_ZERO)
    runs = K.page_runs([(int(a), None if s is None else int(s), int(n)) for a, s, n in segments], ps)
    ram = K.pfn_ranges(runs)
    if dumpable is not None:
        need = -(-(runs[-1].pfn + runs[-1].count) // 8) if runs else 0
        if len(dumpable) < need:
            raise ValueError(f"the dumpable bitmap has {len(dumpable)} bytes, the RAM needs {need}")
    layout = K.Layout.of(ps, len(notes), runs, K.count_dumpable(ram, dumpable), exclude_zero)
    end = base + limit
    if base + layout.first_page_off > end:
        raise _err("write", dst_fd, base, layout.first_page_off, _errno.ENOSPC,
                   "the dump metadata alone does not fit in the dump area")
    info = K.header_info(layout, big_endian=big_endian, utsname=utsname, tv_sec=tv_sec,
                         tv_usec=tv_usec, nr_cpus=nr_cpus, phys_base=phys_base,
                         compress=compress, dump_level=dump_level, notes_len=len(notes),
                         vmcoreinfo=vmcoreinfo)
    out = _Out(dst_fd, end)
    prog = _Progress(progress)

    # metadata: sub header + notes, both bitmaps
    out.write(K.encode_sub_header(info, bytes(notes)), base + ps)
    half = layout.bitmap_blocks // 2 * ps
    bm_off = base + ps * (1 + layout.sub_hdr_size)
    window = 1 << 20
    for which in range(2):
        at = 0
        while at < half:
            n = min(window, half - at)
            bits = K.bitmap_window(ram, 8 * at, n)
            if which == 1 and dumpable is not None:  # the 2nd: RAM and dumpable
                mask = bytes(dumpable[at : at + n]).ljust(n, b"\0")
                bits = (int.from_bytes(bits, "little") & int.from_bytes(mask, "little")
                        ).to_bytes(n, "little")
            out.write(bits, bm_off + which * half + at)
            at += n
    if exclude_zero:
        out.write(bytes(ps), base + layout.data_off)

    desc_fmt = (">" if big_endian else "<") + "QIIQ"
    import struct

    pack = struct.Struct(desc_fmt).pack
    desc_pos = base + layout.desc_off
    data_pos = layout.first_page_off  # relative: what the descriptors hold
    zero_desc = pack(layout.data_off, ps, 0, 0)
    zero_page = bytes(ps)
    zeros = compressed = done = 0
    hsa_pending = hsa_pfn > 0
    page = memoryview(bytearray(ps))
    for run in runs:
        for i in range(run.count):
            pfn = run.pfn + i
            if dumpable is not None and not K.bit_set(dumpable, pfn):
                continue  # filtered out: no descriptor, no data
            if hsa_pending and pfn >= hsa_pfn:
                hsa_pending = False
                if on_hsa_read is not None:
                    on_hsa_read()
            if run.kind == "file":
                _pread_into(src_fd, page, run.src + i * ps)
                raw = bytes(page)
            elif run.kind == "zero":
                raw = zero_page
            else:
                buf = bytearray(ps)
                for at, src, length in run.src:
                    if src is not None:
                        _pread_into(src_fd, memoryview(buf)[at : at + length], src)
                raw = bytes(buf)
            if exclude_zero and raw == zero_page:
                desc = zero_desc
                zeros += 1
                stored = b""
            else:
                stored, flag = raw, 0
                if comp is not None:
                    c = comp(raw)
                    if len(c) < ps:
                        stored, flag = c, K.FLAGS[compress]
                        compressed += 1
                desc = pack(data_pos, len(stored), flag, 0)
            out.write(desc, desc_pos)
            desc_pos += K.DESC_SIZE
            if stored:
                out.write(stored, base + data_pos)
                data_pos += len(stored)
            done += ps
            prog.tick(done)
    if hsa_pending and on_hsa_read is not None:
        on_hsa_read()
    if sync:
        try:
            os.fdatasync(dst_fd)
        except OSError as e:
            raise _err("flush", dst_fd, 0, 0, e.errno or _errno.EIO) from None
    prog.final(layout.ndesc * ps)
    return KdumpResult(K.encode_header(info), data_pos, layout.ndesc, zeros, compressed,
                       layout.data_off)
