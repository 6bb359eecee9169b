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

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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
    @property
    def io_engine(self) -> str:
        """What kept the writes in flight: ``"threads"`` or ``"aio"``."""
    @property
    def read_mode(self) -> str:
        """How the source was read: ``"pread"``, ``"mmap"`` (through mmap windows) or
        ``"mmap-direct"`` (chunks written with O_DIRECT straight from the mapping)."""
    @property
    def aio_errno(self) -> int:
        """Why Linux AIO was refused (``io_setup``'s errno: the threads ran instead);
        0 if it was not asked for or worked."""

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
    io_engine: str = "threads",
    mmap: bool = False,
) -> CopyResult:
    """Copy ``length`` bytes from ``src_fd`` at ``src_offset`` to ``dst_fd`` at
    ``dst_offset`` for each ``(src_offset, dst_offset, length)``; ranges are read in list
    order. Destination ranges must not overlap each other. The descriptors are not
    closed and their flags/offsets are not changed.

    Data goes through ``queue_depth + 2`` reused, pre-faulted, page-aligned buffers of
    ``buffer_size`` bytes (rounded down to a multiple of ``max(4096, block_size)``).
    ``io_engine`` says how ``queue_depth`` writes are kept in flight:

    * ``"threads"`` (default): ``queue_depth`` threads each ``pread`` a chunk and
      ``pwrite`` it; with ``digest``, one reader, ``queue_depth`` writers and a hasher
      thread that computes the SHA-256 of each range's bytes;
    * ``"aio"``: one thread ``pread``s the next chunk and queues its O_DIRECT write with
      Linux native AIO, in range order; used only for direct writes without ``digest``
      (threads otherwise; raises ``op="open"`` if the kernel refuses AIO).

    The result's ``io_engine`` says which ran.

    ``mmap``: with ``"threads"`` and no ``digest``, read each chunk through a read-only
    mmap window of the source instead of ``pread`` (performance.md §2.3). O_DIRECT
    writes go straight from the mapping where the kernel can pin its pages (regular
    files: no copy in user space); where it cannot (``/proc/vmcore`` maps memory with
    ``VM_PFNMAP``: ``EFAULT``) the chunk is copied into the pool buffer first. If a
    mapping fails, the rest is read with ``pread``. ``read_mode`` in the result says what
    happened. The bytes written are the same in every mode. The source must not shrink
    while it is copied (a mapped file read past its end raises SIGBUS).

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

class KdumpResult:
    """Result of :func:`kdump_write` (read-only)."""

    @property
    def header(self) -> bytes:
        """Block 0 (``disk_dump_header``, page-size bytes). Not written by the engine:
        the capture writes it last, after everything else is flushed."""
    @property
    def file_size(self) -> int:
        """Size of the whole kdump file (end of the last page's data)."""
    @property
    def pages(self) -> int:
        """Dumpable pages (= page descriptors)."""
    @property
    def zero_pages(self) -> int:
        """Pages that point at the shared zero page."""
    @property
    def compressed_pages(self) -> int:
        """Pages stored compressed (the others are raw: compression did not shrink them)."""
    @property
    def mapped_pages(self) -> int:
        """Pages the compressors read straight from a mapping of the vmcore (mmap=True;
        filtered captures and HSA pages are copied)."""
    @property
    def adaptive_raw_pages(self) -> int:
        """Non-zero pages adaptive=True stored raw without trying to compress them
        (storing raw was the faster way, or the disk was waiting); 0 without it."""
    @property
    def data_offset(self) -> int:
        """File offset of the page data (the shared zero page with dump level 1)."""
    @property
    def direct(self) -> bool:
        """Whether block-aligned parts were written with O_DIRECT."""
    @property
    def threads(self) -> int:
        """Compression threads used."""

def kdump_write(
    src_fd: int,
    dst_fd: int,
    segments: Sequence[Tuple[int, Optional[int], int]],
    *,
    base: int,
    limit: int,
    utsname: Sequence[str],
    tv_sec: int,
    tv_usec: int = 0,
    nr_cpus: int = 0,
    big_endian: bool,
    notes: bytes,
    vmcoreinfo: Optional[Tuple[int, int]] = None,
    phys_base: int = 0,
    compress: str = "zstd",
    level: int = 1,
    dump_level: int = 1,
    page_size: int = 4096,
    threads: int = 0,
    direct: Optional[bool] = None,
    block_size: int = 512,
    batch_pages: int = 256,
    sync: bool = True,
    hsa_pfn: int = 0,
    progress: Optional[Callable[[int], object]] = None,
    on_hsa_read: Optional[Callable[[], object]] = None,
    mmap: bool = False,
    dumpable: Optional[bytes] = None,
) -> KdumpResult:
    """Write a kdump-compressed ("diskdump", header_version 6) dump of the memory in
    ``segments`` into ``dst_fd`` at ``base``, **except block 0**, which is returned in
    :attr:`KdumpResult.header` (formats.md §13).

    ``segments``: sorted, non-overlapping ``(paddr, src_offset, size)``; ``src_offset``
    ``None`` means the range reads as zeroes. A partly covered page gets zeroes in the
    rest. ``utsname``: six strings (sysname, nodename, release, version, machine,
    domainname). ``notes``: the source's PT_NOTE bytes, copied after the sub header;
    ``vmcoreinfo``: ``(offset in notes, size)`` of the VMCOREINFO text. ``big_endian``:
    the dumped machine's byte order. ``compress``: ``none``, ``zlib``, ``snappy`` or
    ``zstd`` (``lz4`` and ``lzo`` raise ``ValueError`` with the reason).
    ``dump_level`` bit 1 elides zero pages (all share one descriptor and the zero page
    that is the first data item).

    Pages are read in pfn order by one thread, compressed by ``threads`` threads (0: the
    available CPUs, never more), each page stored compressed only if that is smaller,
    and written in order by one writer with O_DIRECT where possible (``direct`` as in
    :func:`copy_ranges`). Memory: ``2 * min(4 * threads + 4, 32) * batch_pages *
    page_size`` plus about 6 MiB, whatever the dump size. No write reaches ``base + limit``: a dump that
    does not fit raises ``EngineIOError(op="write", errno=ENOSPC)``; so does one whose
    fixed part (headers, bitmaps, descriptors, zero page) does not fit, before any write.

    ``hsa_pfn``: after every page below it has been read, ``on_hsa_read()`` is called
    (once, on the calling thread) before any other page is read. ``mmap``: the reader
    copies the pages at and above ``hsa_pfn`` out of mmap windows instead of ``pread``
    (``pread`` again once a mapping fails). ``progress`` gets the
    source bytes processed about every 100 ms. Signals and exceptions as in
    :func:`copy_ranges`. ``sync``: ``fdatasync`` at the end.

    ``dumpable``: page-class filtering (``zfcpdump.pagefilter``); bit N (LSB first) set
    if pfn N goes into the dump. The 1st bitmap stays the RAM, the 2nd becomes RAM and
    ``dumpable``, and only those pages get descriptors and data. It must cover every RAM
    page (``ValueError`` otherwise, before any write).
    """

def exclude_pages(
    memmap: bytes,
    first_pfn: int,
    page_struct: Dict[str, Any],
    dump_level: int,
    dumpable: bytearray,
    npages: Optional[int] = None,
) -> Tuple[int, int, int, int, int, int]:
    """Classify the first ``npages`` (default: all) entries of the ``struct page`` array
    ``memmap`` (pfns ``first_pfn`` on; one more entry may follow, where a compound head
    at the end finds its order) with makedumpfile's rules for ``dump_level`` and clear
    the excluded pages' bits in ``dumpable`` (a bitmap by pfn with the RAM set; pages
    whose bit is clear are not looked at). ``page_struct``: ``pagefilter.PageStruct.as_dict()``. Returns the pages
    excluded per class: (free, cache, cache private, user, hwpoison, offline). Twin:
    ``zfcpdump.pagefilter.classify.exclude_pages``. ``ValueError`` for a layout the
    classifier cannot trust (offsets outside ``SIZE(page)``, ``SIZE(page)`` above 512,
    ``max_order`` not 1-64)."""

def kdump_library_versions() -> Tuple[str, int]:
    """(zlib runtime version, ZSTD_versionNumber()) of the libraries behind the
    compressors; the pure-Python twin is byte-identical where Python uses the same."""
