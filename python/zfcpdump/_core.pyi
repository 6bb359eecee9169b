"""Native engine of zfcpdump (Rust, PyO3). Select it through ``zfcpdump.engine.get_engine``.

I/O failures raise ``zfcpdump._pyengine.EngineIOError`` (re-exported as
``zfcpdump.engine.EngineIOError``), an ``OSError`` subclass with ``errno``,
``strerror``, ``filename`` and ``op`` ("read" | "write" | "flush" | "open"),
``offset`` (source offset for reads, destination offset for writes) and ``length``
(bytes requested in the failing call). Bad arguments raise ``ValueError`` (negative
numbers ``OverflowError``). The GIL is released during the copy; every ~100 ms the
engine re-acquires it to run ``signal``-module handlers and the progress callback: any
exception raised there (``KeyboardInterrupt``, an exception from a ``SIGTERM`` handler,
or from ``progress``) stops the copy, all engine threads are joined, and that exception
propagates unchanged.
"""

from typing import Callable, List, Optional, Sequence, Tuple

__version__: str

class CopyResult:
    """Result of :func:`copy_ranges` (read-only)."""

    @property
    def bytes_copied(self) -> int:
        """Sum of the range lengths."""
    @property
    def digests(self) -> List[bytes]:
        """One 32-byte SHA-256 per range, in range order (empty unless ``digest``)."""
    @property
    def direct(self) -> bool:
        """Whether the aligned part of the data was written with O_DIRECT."""

def copy_ranges(
    src_fd: int,
    dst_fd: int,
    ranges: Sequence[Tuple[int, int, int]],
    *,
    direct: Optional[bool] = None,
    buffer_size: int = 4 << 20,
    queue_depth: int = 4,
    block_size: int = 512,
    digest: bool = False,
    sync: bool = True,
    progress: Optional[Callable[[int], object]] = None,
) -> CopyResult:
    """Copy ``length`` bytes from ``src_fd`` at ``src_offset`` to ``dst_fd`` at
    ``dst_offset`` for each ``(src_offset, dst_offset, length)``; ranges are read in list
    order. Destination ranges must not overlap each other. The descriptors are not
    closed and their flags/offsets are not changed.

    A reader thread ``pread``s into ``queue_depth + 2`` reused, pre-faulted, page-aligned
    buffers of ``buffer_size`` bytes (rounded down to a multiple of
    ``max(4096, block_size)``); ``queue_depth`` writer threads ``pwrite`` them at
    disjoint offsets; with ``digest`` a hasher thread computes the SHA-256 of each
    range's bytes.

    ``direct``: ``None`` = try O_DIRECT (a reopen of ``/proc/self/fd/<dst_fd>``) and fall
    back to buffered writes on ``dst_fd`` if the reopen fails or the first direct write
    gives EINVAL; ``True`` = O_DIRECT or raise (``op="open"``); ``False`` = buffered. With
    O_DIRECT, the block-aligned interior of each range is written directly; its partial
    edge blocks (``block_size``) are written at the end, in range order, buffered on
    ``dst_fd``. The resulting bytes are identical either way.

    ``sync``: ``fdatasync(dst_fd)`` at the end (failure: ``op="flush"``).
    ``progress``: called with the cumulative number of bytes written in this call, about
    every 100 ms and once at the end (after the flush) with the total.
    """

def read_digests(
    fd: int,
    ranges: Sequence[Tuple[int, int]],
    *,
    buffer_size: int = 4 << 20,
    progress: Optional[Callable[[int], object]] = None,
) -> List[bytes]:
    """SHA-256 of each ``(offset, length)`` range of ``fd`` (buffered ``pread``, reading
    and hashing overlapped). ``progress`` as for :func:`copy_ranges` (bytes hashed). An
    end of file before a range's end raises ``EngineIOError(op="read", errno=EIO)``."""

def cksm(data: bytes, seed: int = 0x12345678) -> int:
    """s390 CKSM of ``data`` (formats.md §7): one's-complement sum of big-endian 32-bit
    words, a trailing partial word left-justified, starting from ``seed``."""
