"""Pure-Python twin of the native bulk-copy engine (``zfcpdump._core``).

Same signatures and the same observable results as the Rust engine: identical bytes on
the destination, identical SHA-256 digests, the same :class:`EngineIOError` (with
``op``/``offset``/``length``/``errno``) for I/O failures. It always writes buffered
(``direct`` is accepted and ignored; the result reports ``direct=False``) and runs
synchronously in the calling thread, so ``queue_depth``, ``io_engine`` and ``mmap`` are
ignored as well (the result reports ``io_engine="sequential"``, ``read_mode="pread"``).

This module must not import ``zfcpdump._core``: the native engine imports
:class:`EngineIOError` from here to raise it.
"""

from __future__ import annotations

import errno as _errno
import hashlib
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["EngineIOError", "CopyResult", "copy_ranges", "read_digests", "cksm"]

#: how often progress callbacks are made during a copy (seconds), like the Rust engine
_TICK = 0.1
_I64_MAX = (1 << 63) - 1
#: what the native engine accepts for ``io_engine``
IO_ENGINES = ("threads", "aio")


class EngineIOError(OSError):
    """An I/O failure in a bulk copy, raised by both engines.

    ``errno``, ``strerror`` and ``filename`` are those of a normal :class:`OSError`.
    ``op`` is ``"read"``, ``"write"``, ``"flush"`` or ``"open"``; ``offset`` is the byte
    offset in the file that failed (source offset for reads, destination offset for
    writes); ``length`` is the number of bytes requested in the failing call.
    """

    def __init__(self, errno: int, strerror: str, filename: Optional[str] = None, *,
                 op: str = "", offset: int = 0, length: int = 0) -> None:
        super().__init__(errno, strerror, filename)
        self.op = op
        self.offset = offset
        self.length = length

    def __str__(self) -> str:
        return f"{super().__str__()} ({self.op} at offset=0x{self.offset:016x} bytes=0x{self.length:016x})"


@dataclass(frozen=True)
class CopyResult:
    """Result of :func:`copy_ranges`."""

    bytes_copied: int
    digests: List[bytes] = field(default_factory=list)
    direct: bool = False
    io_engine: str = "sequential"
    read_mode: str = "pread"
    aio_errno: int = 0  # (no AIO here: nothing to refuse)


def _fd_path(fd: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _err(op: str, fd: int, offset: int, length: int, errno: int, strerror: Optional[str] = None) -> EngineIOError:
    return EngineIOError(errno, strerror if strerror is not None else os.strerror(errno), _fd_path(fd),
                         op=op, offset=offset, length=length)


def _pread_into(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``fd`` at ``offset``; EOF before the end is an error."""
    done, want = 0, len(view)
    while done < want:
        off = offset + done
        try:
            n = os.preadv(fd, [view[done:]], off)
        except OSError as e:  # EINTR is retried by Python itself (PEP 475)
            raise _err("read", fd, off, want - done, e.errno or _errno.EIO) from None
        if n == 0:
            raise _err("read", fd, off, want - done, _errno.EIO, "unexpected end of file")
        done += n


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    """Write all of ``view`` at ``offset``, continuing short writes; 0 is an error."""
    done, want = 0, len(view)
    while done < want:
        off = offset + done
        try:
            n = os.pwrite(fd, view[done:], off)
        except OSError as e:
            raise _err("write", fd, off, want - done, e.errno or _errno.EIO) from None
        if n == 0:
            raise _err("write", fd, off, want - done, _errno.EIO)
        done += n


def _check_ranges(ranges: Sequence[Tuple[int, ...]]) -> int:
    total = 0
    for r in ranges:
        if any(v < 0 for v in r):
            raise OverflowError("can't convert negative int to unsigned")
        if any(v + r[-1] > _I64_MAX for v in r[:-1]):
            raise ValueError(f"range {tuple(r)!r} overflows")
        total += r[-1]
    return total


class _Progress:
    def __init__(self, cb: Optional[Callable[[int], None]]) -> None:
        self.cb = cb
        self.next = time.monotonic() + _TICK

    def tick(self, done: int) -> None:
        if self.cb is not None:
            now = time.monotonic()
            if now >= self.next:
                self.next = now + _TICK
                self.cb(done)

    def final(self, done: int) -> None:
        if self.cb is not None:
            self.cb(done)


def copy_ranges(src_fd: int, dst_fd: int, ranges: Sequence[Tuple[int, int, int]], *,
                direct: Optional[bool] = None, buffer_size: int = 4 << 20, queue_depth: int = 4,
                block_size: int = 512, digest: bool = False, sync: bool = True,
                progress: Optional[Callable[[int], None]] = None,
                io_engine: str = "threads", mmap: bool = False) -> CopyResult:
    """Copy ``length`` bytes from ``src_fd`` at ``src_offset`` to ``dst_fd`` at
    ``dst_offset`` for each ``(src_offset, dst_offset, length)`` in list order."""
    if block_size <= 0 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    if buffer_size <= 0:
        raise ValueError("buffer_size must be positive")
    if queue_depth <= 0:
        raise ValueError("queue_depth must be positive")
    if io_engine not in IO_ENGINES:
        raise ValueError(f"unknown io_engine {io_engine!r}; choose threads or aio")
    ranges = [(int(s), int(d), int(n)) for s, d, n in ranges]
    total = _check_ranges(ranges)
    align = max(4096, block_size)
    bufsize = max(1, buffer_size // align) * align
    buf = memoryview(bytearray(min(bufsize, max((n for _, _, n in ranges), default=0)) or 1))
    prog = _Progress(progress)
    digests: List[bytes] = []
    done = 0
    for src, dst, length in ranges:
        h = hashlib.sha256() if digest else None
        pos = 0
        while pos < length:
            n = min(bufsize, length - pos)
            chunk = buf[:n]
            _pread_into(src_fd, chunk, src + pos)
            if h is not None:
                h.update(chunk)
            _pwrite_all(dst_fd, chunk, dst + pos)
            pos += n
            done += n
            prog.tick(done)
        if h is not None:
            digests.append(h.digest())
    if sync:
        try:
            os.fdatasync(dst_fd)
        except OSError as e:
            raise _err("flush", dst_fd, 0, 0, e.errno or _errno.EIO) from None
    prog.final(total)
    return CopyResult(bytes_copied=total, digests=digests, direct=False)


def read_digests(fd: int, ranges: Sequence[Tuple[int, int]], *, buffer_size: int = 4 << 20,
                 progress: Optional[Callable[[int], None]] = None) -> List[bytes]:
    """SHA-256 of each ``(offset, length)`` range of ``fd``."""
    if buffer_size <= 0:
        raise ValueError("buffer_size must be positive")
    ranges = [(int(o), int(n)) for o, n in ranges]
    total = _check_ranges(ranges)
    bufsize = max(1, buffer_size // 4096) * 4096
    buf = memoryview(bytearray(min(bufsize, max((n for _, n in ranges), default=0)) or 1))
    prog = _Progress(progress)
    out: List[bytes] = []
    done = 0
    for off, length in ranges:
        h = hashlib.sha256()
        pos = 0
        while pos < length:
            n = min(bufsize, length - pos)
            chunk = buf[:n]
            _pread_into(fd, chunk, off + pos)
            h.update(chunk)
            pos += n
            done += n
            prog.tick(done)
        out.append(h.digest())
    prog.final(total)
    return out


def cksm(data: bytes, seed: int = 0x12345678) -> int:
    """s390 CKSM (formats.md §7): one's-complement sum of big-endian u32 words, a
    trailing partial word left-justified."""
    data = bytes(data)
    if not 0 <= seed <= 0xFFFFFFFF:
        raise OverflowError("seed out of range for u32")
    rest = len(data) % 4
    if rest:
        data += b"\0" * (4 - rest)
    s = seed + sum(struct.unpack(f">{len(data) // 4}I", data))
    while s > 0xFFFFFFFF:
        s = (s & 0xFFFFFFFF) + (s >> 32)
    return s
