"""`dump`: zfcpdump v3's capture protocol (behaviour.md §2.2-§2.5, §3, §4).

  boot record -> superblock -> partition match -> checksum check -> size check
  -> busy marker + checksum (flushed) -> HSA ranges, release HSA -> other ranges
  -> flush -> page 0 -> checksum -> flush.

Until page 0 is written the partition starts with the busy marker, so an interrupted
or failed capture never looks like a dump. Everything that can refuse happens before
the first byte is written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import engine as engines
from .disk import device
from .disk.cksm import cksm
from .disk.target import DumpPartition, match_partition
from .disk.zipl import BUSY_MARKER, CSUM_SEED, SUPERBLOCK_SIZE, ScsiMbr, Superblock, SUPERBLOCK_MAGIC
from .errors import DiskRefused, DumpFailed, InvalidCore, NotThisFormat
from .fileio import TogetherWriteError, open_for_reading, pwrite_all, pwrite_together
from .progress import Progress, mib
from .readers.elf import ElfCore, parse_elf_core

PAGE = 4096
MAX_CSUM_SIZE = 1 << 20  # zipl writes 4096; bounds what a hostile superblock makes us read


@dataclass(frozen=True)
class CopyEntry:
    offset: int  # file offset in the vmcore == offset in the partition
    size: int
    hsa: bool


def copy_table(core: ElfCore, vmcore_size: int, hsa_size: int) -> list[CopyEntry]:
    """The order in which the vmcore is copied (behaviour.md §2.3 step 5, §3.2):
    HSA-backed file ranges first, then the rest, bytes [0, 4096) last. Ranges are
    disjoint and cover [0, vmcore_size) exactly once."""
    page0 = min(PAGE, vmcore_size)
    hsa: list[tuple[int, int]] = []
    if hsa_size > 0:
        for ph in core.loads:
            if ph.paddr < hsa_size and ph.filesz:
                start = max(ph.offset, page0)
                end = ph.offset + min(ph.filesz, hsa_size - ph.paddr)
                if end > start:
                    hsa.append((start, end))
        if not hsa:
            raise InvalidCore("Could not find ELF LOAD segments containing HSA")
    merged: list[list[int]] = []
    for start, end in sorted(hsa):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    table = [CopyEntry(s, e - s, True) for s, e in merged]
    pos = page0
    for s, e in merged:
        if s > pos:
            table.append(CopyEntry(pos, s - pos, False))
        pos = max(pos, e)
    if vmcore_size > pos:
        table.append(CopyEntry(pos, vmcore_size - pos, False))
    table.append(CopyEntry(0, page0, False))
    return table


# The capture's request shape (`zfcpdump bench` sweeps others): 2 MiB requests, 8 in
# flight. Measured against 4 MiB x 4 on the loop device of the 2-vCPU test VM once the
# engine's buffers sat in huge pages: more requests in flight kept the device busier
# (benches/results/shape-*.txt), and 8 + 2 buffers of 2 MiB hold less memory than 4 + 2
# of 4 MiB.
DEFAULT_BUFFER_SIZE = 2 << 20
DEFAULT_QUEUE_DEPTH = 8
# Bounds the CLI checks before anything is opened: (queue depth + 2) buffers are
# allocated up front, and one thread runs per write in flight.
MAX_BUFFER_SIZE = 256 << 20
MAX_QUEUE_DEPTH = 64


@dataclass
class CaptureOptions:
    vmcore: str = "/proc/vmcore"
    disk: str = "/dev/sda"
    engine: str = "rust"
    zcore_dir: str = "/sys/kernel/debug/zcore"
    release_hsa: bool = True
    verify: bool = False
    direct: Optional[bool] = None
    buffer_size: int = DEFAULT_BUFFER_SIZE
    queue_depth: int = DEFAULT_QUEUE_DEPTH
    io_engine: str = "threads"  # rust engine: "threads" or "aio" (see _core.pyi)
    mmap: bool = False  # rust engine: read through mmap windows, HSA ranges excepted
    progress_interval_s: float = 10.0
    block_size: Optional[int] = None  # image files: override the detected block size
    meta_path: Optional[str] = None
    live_bar: bool = True  # a bar on a terminal stderr; off on a dump kernel's console
    # Once the dump is complete, block SIGINT/SIGTERM/SIGHUP so that a late signal cannot
    # turn a valid dump into a reported failure; the caller ends it with release_signals().
    hold_signals_after_commit: bool = False


@dataclass
class CaptureResult:
    partition: DumpPartition
    vmcore_size: int
    digest: Optional[str] = None  # SHA-256 of the dump as written (with --verify)
    direct: bool = False
    ranges: list[CopyEntry] = field(default_factory=list)
    read_mode: str = "pread"  # of the ranges past the HSA: "pread", "mmap", "mmap-direct"


class Console:
    """Where capture messages go: text to `out`, ERROR:/WARNING: lines to `err`.
    Empty lines are a space and a newline so that the SCLP console shows them."""

    def __init__(self, out: Callable[[str], None], err: Callable[[str], None]):
        self.out = out
        self.err = err

    def blank(self) -> None:
        self.out(" ")


def read_hsa_size(zcore_dir: str) -> int:
    try:
        with open(os.path.join(zcore_dir, "hsa")) as f:
            return int(f.read().strip() or "0", 16)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        raise DumpFailed(f"Cannot read {zcore_dir}/hsa: {exc}") from None


def release_hsa(zcore_dir: str) -> None:
    with open(os.path.join(zcore_dir, "hsa"), "w") as f:
        f.write("0")


def _read_or_refuse(fd: int, size: int, offset: int, what: str) -> bytes:
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        raise DiskRefused(f"{what}: offset=0x{offset:016x} bytes=0x{size:016x}\n"
                          f"{exc.strerror}") from None
    except (OverflowError, ValueError):
        return b""


def locate(disk: str, disk_fd: int, block_size: Optional[int] = None) -> tuple[DumpPartition, Superblock]:
    """zfcpdump's checks of block 0, the superblock, the partition and the checksum
    (behaviour.md §2.2), in its order and words. Reads only; raises DiskRefused."""
    raw = _read_or_refuse(disk_fd, 152, 0, "Cannot read MBR")
    if len(raw) < 152:
        raise DiskRefused("Cannot read MBR")
    mbr = ScsiMbr.from_bytes(raw)
    mbr.check_dump_boot_info()
    raw_sb = _read_or_refuse(disk_fd, SUPERBLOCK_SIZE, mbr.superblock_offset,
                             "Cannot read superblock")
    if len(raw_sb) < SUPERBLOCK_SIZE:
        raise DiskRefused("Cannot read superblock")
    sb = Superblock.from_bytes(raw_sb)
    if sb.magic != SUPERBLOCK_MAGIC:
        raise DiskRefused("Dump data block wrong magic")
    part = match_partition(disk, disk_fd, sb.part_start, sb.part_size, block_size)
    if sb.csum_size > MAX_CSUM_SIZE:
        raise DiskRefused("Error reading checksum from disk; Getting Checksum failed")
    try:
        area = os.pread(disk_fd, sb.csum_size, sb.part_start + sb.csum_offset)
    except (OSError, OverflowError, ValueError):
        raise DiskRefused("Error reading checksum from disk; Getting Checksum failed") from None
    if len(area) != sb.csum_size:
        raise DiskRefused("Error reading checksum from disk; Getting Checksum failed")
    if cksm(area, CSUM_SEED) != sb.csum:
        raise DiskRefused("Checksum wrong, filesystem changed")
    # The areas we will write must lie inside the partition (a superblock that says
    # otherwise was not written by zipl, whatever its checksum).
    if (sb.dump_offset + sb.dump_size > sb.part_size
            or sb.csum_offset + sb.csum_size > sb.part_size):
        raise DiskRefused("Dump data block describes areas outside the partition")
    return part, sb


class Capture:
    """One capture run. `run()` raises DiskRefused/InvalidCore before anything is
    written, DumpFailed (or the interrupting exception) after."""

    def __init__(self, opts: CaptureOptions, console: Console):
        self.opts = opts
        self.console = console
        self.engine = engines.get_engine(opts.engine)
        self.hsa_released = False
        self._busy_page: Optional[bytes] = None
        self._page0_issued = False

    # ---- validation (nothing written) ------------------------------------------
    def locate(self, disk_fd: int) -> tuple[DumpPartition, Superblock]:
        return locate(self.opts.disk, disk_fd, self.opts.block_size)

    # ---- the run --------------------------------------------------------------------
    def run(self) -> CaptureResult:
        o = self.opts
        try:
            src_fd = open_for_reading(o.vmcore)
        except OSError as exc:
            raise InvalidCore(f"Cannot open {o.vmcore}: {exc.strerror}") from None
        try:
            vmcore_size = device.size_of(src_fd)
            try:
                core = parse_elf_core(src_fd, vmcore_size)
            except NotThisFormat:
                raise InvalidCore("Only 64 bit core dump files are supported "
                                  f"({o.vmcore} is not an ELF file)") from None
            if device.is_block_device(o.disk) and device.partition_info(o.disk) is not None:
                raise DiskRefused(f"{o.disk} is a partition: give the whole disk "
                                  f"(e.g. {device.partition_info(o.disk).disk_node})")
            if not os.path.exists(o.disk):
                raise DiskRefused(f"Cannot open {o.disk}: No such file or directory")
            disk_fd = device.open_exclusive(o.disk)
            try:
                return self._capture(src_fd, disk_fd, core, vmcore_size)
            finally:
                os.close(disk_fd)
        finally:
            os.close(src_fd)
            if not self.hsa_released:
                self._release_hsa_quietly()

    def _capture(self, src_fd: int, disk_fd: int, core: ElfCore, vmcore_size: int) -> CaptureResult:
        o, c = self.opts, self.console
        part, sb = self.locate(disk_fd)
        c.out(f" partition: {part.name}")
        hsa_size = read_hsa_size(o.zcore_dir)
        table = copy_table(core, vmcore_size, hsa_size)
        if vmcore_size > sb.dump_size:
            raise DiskRefused(
                f"Disk too small: dump={mib(vmcore_size)}MB (diskspace={mib(sb.dump_size)}MB)"
            )
        if hsa_size == 0:
            self.hsa_released = True  # nothing to release
        base = part.start + sb.dump_offset
        progress = self._start_writing(vmcore_size)
        with self._dump_in_progress(disk_fd, sb, base):
            result = self._copy(src_fd, disk_fd, table, base, part, progress, sb)
        progress.finish()
        result.ranges = table
        return result

    @contextlib.contextmanager
    def _dump_in_progress(self, disk_fd: int, sb: Superblock, base: int):
        """The protocol around every capture's writes: the busy marker first; the body
        writes the dump and commits its first block (`_commit`); any failure or signal
        until the body has ended makes the dump invalid again and the checksum match
        (`_undo_after_failure`), then goes on up."""
        try:
            self._write_busy(disk_fd, sb, base)
            yield
            self._committed()
        except BaseException:
            with signals_deferred():
                self._undo_after_failure(disk_fd, sb, base)
            raise

    def _start_writing(self, total: int) -> Progress:
        """`Writing dump:` and the first progress line (0 of `total` bytes)."""
        self.console.blank()
        self.console.out("Writing dump:")
        progress = Progress(total, self.console.out, interval_s=self.opts.progress_interval_s,
                            tty=_stderr_if_tty() if self.opts.live_bar else None)
        progress.update(0)
        return progress

    def _write_busy(self, disk_fd: int, sb: Superblock, base: int) -> None:
        """The busy marker and the checksum that matches it, together (the checksum
        computed beforehand; no signal in between, and a SIGKILL cannot part them:
        `pwrite_together`), then flushed."""
        self._page0_issued = False
        self._superblock_offset = ScsiMbr.from_bytes(
            self._pread(disk_fd, 152, 0, "Read of MBR")).superblock_offset
        # What the first page holds from now on until page 0 is written: restored if the
        # capture fails after page 0 went out, so a failed dump never looks valid.
        page = bytearray(self._pread(disk_fd, min(PAGE, sb.dump_size), base, "Read of partition"))
        page[: len(BUSY_MARKER)] = BUSY_MARKER
        self._busy_page = bytes(page)
        with signals_deferred():
            self._write_with_checksum(disk_fd, sb, base, BUSY_MARKER,
                                      "Write of busy marker to partition")
        self._flush(disk_fd)

    def _commit(self, disk_fd: int, sb: Superblock, base: int, first: bytes) -> None:
        """Write what makes the dump valid (page 0, or a kdump header) and the checksum
        that matches it, together (no signal in between, and a SIGKILL cannot part
        them), then flush. Everything else must be durable before this."""
        with signals_deferred():
            self._page0_issued = True
            self._write_with_checksum(disk_fd, sb, base, first, "Write to partition")
        self._flush(disk_fd)

    def _committed(self) -> None:
        if self.opts.hold_signals_after_commit:
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING_SIGNALS)
            except (OSError, ValueError):
                pass

    def _overlay(self, disk_fd: int, sb: Superblock, base: int, data: bytes) -> bytes:
        """The checksummed area as it will be once `data` is written at `base`."""
        area_start = sb.part_start + sb.csum_offset
        area = bytearray(self._pread(disk_fd, sb.csum_size, area_start, "Read of checksum area"))
        lo, hi = max(base, area_start), min(base + len(data), area_start + len(area))
        if hi > lo:
            area[lo - area_start : hi - area_start] = data[lo - base : hi - base]
        return bytes(area)

    def _copy(self, src_fd: int, disk_fd: int, table: list[CopyEntry], base: int,
              part: DumpPartition, progress: Progress, sb: Superblock) -> CaptureResult:
        o = self.opts
        page0 = table[-1]
        bulk = table[:-1]
        hsa = [e for e in bulk if e.hsa]
        rest = [e for e in bulk if not e.hsa]
        done = 0
        digests: list[bytes] = []
        direct_used = False
        read_mode = "pread"
        aio_warned = False
        for group in (hsa, rest):
            if group is rest and not self.hsa_released:
                self._release_hsa()
            if not group:
                continue
            ranges = [(e.offset, base + e.offset, e.size) for e in group]
            start_done = done
            try:
                res = self.engine.copy_ranges(
                    src_fd, disk_fd, ranges, direct=o.direct, buffer_size=o.buffer_size,
                    queue_depth=o.queue_depth, block_size=part.block_size,
                    io_engine=o.io_engine,
                    # HSA pages are not mapped by the kernel (performance.md §2.1)
                    mmap=o.mmap and group is rest,
                    digest=o.verify, sync=True,
                    progress=lambda n, s=start_done: progress.update(s + n),
                )
            except engines.EngineIOError as exc:
                raise DumpFailed(self._io_message(exc, base)) from None
            if res.aio_errno and not aio_warned:
                # the engine fell back to its threads (no AIO in this kernel)
                self.console.err(f"WARNING: --io-engine aio: Linux AIO is not available "
                                 f"here ({os.strerror(res.aio_errno)}); threads kept the "
                                 "writes in flight")
                aio_warned = True
            done += res.bytes_copied
            digests.extend(res.digests)
            direct_used = direct_used or res.direct
            if group is rest:
                read_mode = res.read_mode
        # Everything but page 0 is durable now (copy_ranges ended with fdatasync).
        # Page 0 makes the dump valid: it and the checksum that matches it are written
        # together (no signal in between, not even SIGKILL: _commit), then flushed.
        head = self._pread(src_fd, page0.size, 0, f"Read from {o.vmcore}")
        if len(head) != page0.size:
            raise DumpFailed(f"Read from {o.vmcore} failed: offset=0x{0:016x} bytes=0x{page0.size:016x}"
                             "\nunexpected end of file")
        self._commit(disk_fd, sb, base, head)
        progress.update(done + page0.size)
        result = CaptureResult(part, page0.size + done, direct=direct_used, read_mode=read_mode)
        if o.verify:
            digests.append(hashlib.sha256(head).digest())
            result.digest = self._verify(disk_fd, table, base, digests)
        return result

    def _verify(self, disk_fd: int, table: list[CopyEntry], base: int, digests: list[bytes]) -> str:
        """Read the written dump back (past the page cache) and compare each range's
        SHA-256 with the one computed while copying. Returns the whole-dump digest."""
        order = [e for e in table[:-1] if e.hsa] + [e for e in table[:-1] if not e.hsa] + [table[-1]]
        total = sum(e.size for e in table)
        os.posix_fadvise(disk_fd, base, total, os.POSIX_FADV_DONTNEED)
        try:
            back = self.engine.read_digests(disk_fd, [(base + e.offset, e.size) for e in order])
            whole = self.engine.read_digests(disk_fd, [(base, total)])[0]
        except engines.EngineIOError as exc:
            raise DumpFailed(f"Verification read failed: offset=0x{exc.offset - base:016x} "
                             f"bytes=0x{exc.length:016x}\n{exc.strerror}") from None
        for entry, want, got in zip(order, digests, back):
            if want != got:
                raise DumpFailed(
                    f"Verification failed: partition bytes 0x{entry.offset:016x}-"
                    f"0x{entry.offset + entry.size - 1:016x} differ from {self.opts.vmcore}"
                )
        return whole.hex()

    # ---- helpers ------------------------------------------------------------------
    def _update_checksum(self, disk_fd: int, sb: Superblock) -> None:
        raw = self._pread(disk_fd, 152, 0, "Read of MBR")
        self._superblock_offset = ScsiMbr.from_bytes(raw).superblock_offset
        area = self._pread(disk_fd, sb.csum_size, sb.part_start + sb.csum_offset,
                           "Read of checksum area")
        new = sb.with_csum(cksm(area, CSUM_SEED))
        self._pwrite(disk_fd, new.to_bytes(), self._superblock_offset, "Write of superblock")

    def _undo_after_failure(self, disk_fd: int, sb: Superblock, base: int) -> None:
        """On any failure: if page 0 may have gone out, put the busy page back (the dump
        must not look valid); then make the checksum match what is there, so the next
        capture is allowed, and flush. Errors here are reported, not raised."""
        try:
            if self._page0_issued and self._busy_page is not None:
                self._write_with_checksum(disk_fd, sb, base, self._busy_page,
                                          "Write of busy marker to partition")
            else:
                self._update_checksum(disk_fd, sb)
            os.fsync(disk_fd)
        except (OSError, DumpFailed) as exc:
            text = str(exc).replace("\n", ": ")
            self.console.err(f"ERROR: Checksum update after failure failed: {text}")

    def _pread(self, fd: int, size: int, offset: int, what: str) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except OSError as exc:
            raise DumpFailed(f"{what} failed: offset=0x{offset:016x} bytes=0x{size:016x}"
                             f"\n{exc.strerror}") from None

    def _write_with_checksum(self, disk_fd: int, sb: Superblock, base: int, data: bytes,
                             what: str) -> None:
        """`data` at `base` (the busy marker, page 0, a kdump header) and the superblock
        with the checksum of the area as it will be, together: pwrite_together, so that
        not even a SIGKILL leaves one without the other."""
        new_sb = sb.with_csum(cksm(self._overlay(disk_fd, sb, base, data), CSUM_SEED))
        writes = [(data, base, what),
                  (new_sb.to_bytes(), self._superblock_offset, "Write of superblock")]
        try:
            pwrite_together(disk_fd, [(d, off) for d, off, _ in writes])
        except TogetherWriteError as exc:
            data, offset, what = writes[exc.index]
            raise _write_failed(what, offset, len(data), exc) from None

    def _pwrite(self, fd: int, data: bytes, offset: int, what: str) -> None:
        try:
            pwrite_all(fd, data, offset)
        except OSError as exc:
            raise _write_failed(what, offset, len(data), exc) from None

    def _flush(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            raise DumpFailed(f"Flush of partition failed (fsync)\n{exc.strerror}") from None

    def _io_message(self, exc: "engines.EngineIOError", base: int) -> str:
        text = exc.strerror or os.strerror(exc.errno or errno.EIO)
        if exc.op == "read":
            return (f"Read from {self.opts.vmcore} failed: offset=0x{exc.offset:016x} "
                    f"bytes=0x{exc.length:016x}\n{text}")
        if exc.op == "write":
            return (f"Write to partition failed: offset=0x{exc.offset - base:016x} "
                    f"bytes=0x{exc.length:016x}\n{text}")
        if exc.op == "flush":
            return f"Flush of partition failed (fdatasync)\n{text}"
        return f"I/O failed ({exc.op}): {text}"

    def _release_hsa(self) -> None:
        if not self.opts.release_hsa:
            self.hsa_released = True
            return
        try:
            release_hsa(self.opts.zcore_dir)
        except OSError as exc:
            self.console.err(f"WARNING: Could not release HSA: {exc.strerror}")
        self.hsa_released = True

    def _release_hsa_quietly(self) -> None:
        if self.opts.release_hsa and os.path.exists(os.path.join(self.opts.zcore_dir, "hsa")):
            try:
                if read_hsa_size(self.opts.zcore_dir):
                    release_hsa(self.opts.zcore_dir)
            except (OSError, DumpFailed):
                pass
        self.hsa_released = True


TERMINATING_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def release_signals() -> None:
    """End hold_signals_after_commit: a signal that came after the dump was complete
    is discarded (the dump stands), and delivery is unblocked."""
    try:
        if not signal.pthread_sigmask(signal.SIG_BLOCK, set()) & TERMINATING_SIGNALS:
            return
        old = {s: signal.signal(s, signal.SIG_IGN) for s in TERMINATING_SIGNALS}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, TERMINATING_SIGNALS)
        for s, handler in old.items():
            signal.signal(s, handler)
    except (OSError, ValueError):
        pass


def _write_failed(what: str, offset: int, length: int, exc: OSError) -> DumpFailed:
    return DumpFailed(f"{what} failed: offset=0x{offset:016x} bytes=0x{length:016x}"
                      f"\n{exc.strerror}")


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM/SIGHUP back for a few system calls that belong together
    (page 0 and its checksum; the clean-up after a failure). They are delivered, and
    their handlers run, when the block ends."""
    sigs = TERMINATING_SIGNALS
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stderr_if_tty():
    import sys

    return sys.stderr if sys.stderr.isatty() else None
