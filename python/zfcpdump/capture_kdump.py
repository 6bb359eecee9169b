"""`dump --compress`: capture the vmcore as a kdump-compressed ("diskdump") file
(formats.md §13) with zfcpdump's protocol (capture.py, behaviour.md §2-§3):

  boot record -> superblock -> partition match -> checksum check (Capture.locate)
  -> metadata size check -> busy marker + checksum (flushed)
  -> sub header, bitmaps, page descriptors and page data, pages in pfn order, so the
     HSA-backed low memory is read first and the HSA released right after it
  -> fdatasync -> block 0 (disk_dump_header) -> checksum -> flush.

Until block 0 is written the dump area starts with the busy marker, so an interrupted
or failed capture never looks like a dump (neither ELF nor `KDUMP   `).

Size: a compressed dump's size is unknown until the end. Before writing, only the
fixed part (headers, notes, both bitmaps, descriptor table, shared zero page) is checked
against dump_size ("Disk too small", nothing written). While writing, every write is
checked against dump_size by the writer itself, which fails with ENOSPC *before* it
would pass the end of the dump area; that is reported as "Disk too small" and the dump
stays invalid (busy marker in block 0).

Page filtering (--dump-level, makedumpfile's bits): bit 1 (zero pages) is applied while
writing. Bits 2, 4, 8 and 16 (cache, cache private, user and free pages) are decided
before the first write by walking the crashed kernel's struct pages (`pagefilter`);
where that walk is not possible (no VMCOREINFO, another architecture or kernel) a
WARNING says why and only zero pages are excluded.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import engine as engines
from . import pagefilter
from .capture import (Capture, CaptureOptions, CaptureResult, Console, copy_table,
                      read_hsa_size)
from .errors import DiskRefused, DumpFailed
from .formats import elf_notes as N
from .formats import kdump_layout as K
from .progress import mib
from .readers.elf import ElfCore, PT_NOTE, memory_chunks, read_elf
from .model import Dump, FileSpan, vmcoreinfo_fields

COMPRESSIONS = ("zstd", "zlib", "lzo", "snappy", "none")


def kdump_writer(engine: str) -> Callable[..., Any]:
    """`kdump_write` of the named engine (same signature in both)."""
    if engine == "rust" and engines.rust_available():
        from . import _core

        return _core.kdump_write
    if engine == "rust":
        engines.get_engine("rust")  # prints the fallback WARNING once
        engine = "python"
    if engine == "python":
        from . import _pykdump

        return _pykdump.kdump_write
    raise ValueError(f"unknown engine {engine!r}")


@dataclass
class KdumpCaptureOptions(CaptureOptions):
    compress: str = "zstd"
    level: Optional[int] = None  # None: 1, makedumpfile's level for zlib and zstd
    dump_level: int = 1
    threads: int = 0  # 0: all available CPUs
    adaptive: bool = False  # compress or store raw, whichever the capture finds faster


@dataclass
class KdumpCaptureResult(CaptureResult):
    file_size: int = 0
    pages: int = 0
    zero_pages: int = 0
    compressed_pages: int = 0
    elapsed_s: float = 0.0


@dataclass
class KdumpPlan:
    """Everything both engines need besides the descriptors and the options."""

    segments: list[tuple[int, Optional[int], int]]
    notes: bytes
    vmcoreinfo: Optional[tuple[int, int]]
    utsname: list[str]
    tv_sec: int
    nr_cpus: int
    big_endian: bool
    phys_base: int
    page_size: int
    fields: dict  # VMCOREINFO, empty without it

    def writer_kwargs(self) -> dict:
        return dict(utsname=self.utsname, tv_sec=self.tv_sec, tv_usec=0,
                    nr_cpus=self.nr_cpus, big_endian=self.big_endian, notes=self.notes,
                    vmcoreinfo=self.vmcoreinfo, phys_base=self.phys_base,
                    page_size=self.page_size)


def read_memory(src_fd: int, vmcore_size: int) -> Optional[Dump]:
    """The vmcore's memory model for the utsname and the page walk (parsed once), or
    None if it cannot be built: both are best effort, the capture reads the segments."""
    try:
        return read_elf(src_fd, vmcore_size)
    except Exception:  # noqa: BLE001 - the capture reports a bad vmcore itself
        return None


def build_plan(src_fd: int, core: ElfCore, memory: Optional[Dump], *,
               now: Optional[float] = None) -> KdumpPlan:
    """Memory segments, notes and header fields of an ELF core."""
    notes = b"".join(os.pread(src_fd, ph.filesz, ph.offset) for ph in core.phdrs
                     if ph.type == PT_NOTE and ph.filesz)
    vmci = K.find_vmcoreinfo(notes, core.byteorder)
    text = notes[vmci[0] : vmci[0] + vmci[1]].rstrip(b"\0") if vmci else b""
    fields = vmcoreinfo_fields(text)
    nr_cpus = sum(1 for n in N.iter_notes(notes, core.byteorder) if n.type == N.NT_PRSTATUS
                  and n.name in (b"CORE", b"LINUX"))
    uts: dict[str, str] = {}
    if text and memory is not None:
        from .readers.enrich import utsname_from_memory

        try:
            uts = utsname_from_memory(memory, text) or {}
        except Exception:  # noqa: BLE001 - best effort: the header falls back on VMCOREINFO
            uts = {}
    utsname = [
        "Linux",  # libkdumpfile needs exactly this to set up the architecture
        uts.get("nodename") or "(none)",
        uts.get("release") or fields.get("OSRELEASE") or "unknown",
        uts.get("version") or "unknown",
        core.arch,
        uts.get("domainname") or "(none)",
    ]
    crash_time = fields.get("CRASHTIME", "")
    tv_sec = int(crash_time) if crash_time.isdigit() else int(now if now is not None else time.time())
    page_size = int(fields["PAGESIZE"]) if fields.get("PAGESIZE", "").isdigit() else 4096
    phys_base = 0
    if core.arch == "x86_64" and fields.get("NUMBER(phys_base)", "").lstrip("-").isdigit():
        phys_base = int(fields["NUMBER(phys_base)"]) & (2**64 - 1)
    segments: list[tuple[int, Optional[int], int]] = []
    for chunk in memory_chunks(src_fd, core):
        src = chunk.source.file_offset if isinstance(chunk.source, FileSpan) else None
        segments.append((chunk.start, src, chunk.size))
    return KdumpPlan(segments, notes, vmci, utsname, tv_sec, nr_cpus, core.byteorder == "big",
                     phys_base, page_size, fields)


def class_names(dump_level: int) -> str:
    return ", ".join(n for bit, n in ((2, "cache"), (4, "cache private"), (8, "user"),
                                      (16, "free")) if dump_level & bit)


def page_filter(core: ElfCore, memory: Optional[Dump], plan: KdumpPlan,
                ram: list[tuple[int, int]], dump_level: int, engine: str
                ) -> tuple[int, Optional[pagefilter.FilterResult], Optional[str]]:
    """(dump level applied, the walk's result or None, WARNING or None). A walk that
    cannot be done, or fails, leaves every RAM page (`ram`, (first pfn, count)) in the
    dump, never fewer."""
    zero = dump_level & K.DL_EXCLUDE_ZERO
    if not dump_level & pagefilter.DL_CLASSES:
        return zero, None, None
    try:
        if memory is None:
            raise pagefilter.FilterUnavailable("the vmcore's memory cannot be read as a model")
        res = pagefilter.filter_pages(memory.read_phys, plan.fields, arch=core.arch,
                                      big_endian=plan.big_endian, page_size=plan.page_size,
                                      ram=ram, dump_level=dump_level, engine=engine)
    except pagefilter.FilterUnavailable as exc:
        why = str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure of the walk keeps every page
        why = f"the page walk failed: {type(exc).__name__}: {exc}"
    else:
        return dump_level & 31, res, None
    return zero, None, (f"--dump-level {dump_level}: excluding {class_names(dump_level)} pages "
                        f"is not possible ({why}); only zero pages are "
                        f"{'excluded' if zero else 'kept'} (dump level {zero})")


def filter_summary(res: pagefilter.FilterResult, page_size: int) -> str:
    parts = [f"{n} {name}" for name, n in res.excluded.items() if n]
    text = (f" filter...: {', '.join(parts) or 'no'} pages excluded "
            f"({mib(res.excluded_pages * page_size)} MB), {res.sections} sections "
            f"walked in {res.seconds:.2f} s")
    if res.sections_skipped:
        text += (f"; {res.sections_skipped} sections unreadable, their pages are kept")
    return text


class KdumpCapture(Capture):
    """Capture.run() with a kdump-compressed writer instead of the byte copy."""

    opts: KdumpCaptureOptions

    def __init__(self, opts: KdumpCaptureOptions, console: Console):
        super().__init__(opts, console)
        self.writer = kdump_writer(opts.engine)

    def _capture(self, src_fd: int, disk_fd: int, core: ElfCore, vmcore_size: int) -> CaptureResult:
        o, c = self.opts, self.console
        part, sb = self.locate(disk_fd)
        c.out(f" partition: {part.name}")
        hsa_size = read_hsa_size(o.zcore_dir)
        copy_table(core, vmcore_size, hsa_size)  # the same HSA checks as the raw capture
        memory = read_memory(src_fd, vmcore_size)
        plan = build_plan(src_fd, core, memory)
        runs = K.page_runs(plan.segments, plan.page_size)
        ram = K.pfn_ranges(runs)
        level_applied, filtered, warning = page_filter(core, memory, plan, ram, o.dump_level,
                                                       o.engine)
        if warning:
            c.err(f"WARNING: {warning}")
        if filtered is not None:
            c.out(filter_summary(filtered, plan.page_size))
        exclude_zero = bool(level_applied & K.DL_EXCLUDE_ZERO)
        ndesc = K.count_dumpable(ram, None if filtered is None else filtered.dumpable)
        layout = K.Layout.of(plan.page_size, len(plan.notes), runs, ndesc, exclude_zero)
        if layout.first_page_off > sb.dump_size:
            raise DiskRefused(f"Disk too small: dump metadata={mib(layout.first_page_off)}MB "
                              f"(diskspace={mib(sb.dump_size)}MB)")
        if hsa_size == 0:
            self.hsa_released = True
        mem_bytes = layout.ndesc * plan.page_size
        c.out(f" format...: kdump-compressed, {o.compress}"
              f"{'' if o.level is None else f' level {o.level}'}"
              f"{', adaptive' if o.adaptive else ''}, dump level {level_applied}")
        base = part.start + sb.dump_offset
        progress = self._start_writing(mem_bytes)
        start = time.monotonic()
        with self._dump_in_progress(disk_fd, sb, base):
            try:
                res = self.writer(
                    src_fd, disk_fd, plan.segments, base=base, limit=sb.dump_size,
                    compress=o.compress, level=1 if o.level is None else o.level,
                    dump_level=level_applied, threads=o.threads, direct=o.direct, mmap=o.mmap,
                    block_size=part.block_size, hsa_pfn=-(-hsa_size // plan.page_size),
                    progress=progress.update,
                    on_hsa_read=self._release_hsa if hsa_size else None,
                    dumpable=None if filtered is None else filtered.dumpable,
                    adaptive=o.adaptive,
                    **plan.writer_kwargs(),
                )
            except engines.EngineIOError as exc:
                raise DumpFailed(self._kdump_io_message(exc, base, sb.dump_size, mem_bytes)) from None
            # Block 0 makes the dump valid: only after everything else is durable
            # (the writer ended with fdatasync); it and its checksum together (_commit).
            self._commit(disk_fd, sb, base, bytes(res.header))
        progress.finish()
        elapsed = time.monotonic() - start
        ram_bytes = K.count_dumpable(ram, None) * plan.page_size
        ratio = res.file_size / ram_bytes if ram_bytes else 1.0
        c.out(f" written..: {mib(res.file_size)} MB of {mib(ram_bytes)} MB memory "
              f"({100 * ratio:.1f}%), {res.zero_pages} zero pages elided, "
              f"{res.compressed_pages} of {res.pages} pages compressed")
        if res.mapped_pages:
            c.out(f" reads....: mmap windows, no copy: {res.mapped_pages} of {res.pages} pages")
        if o.adaptive:
            c.out(f" adaptive.: {res.adaptive_raw_pages} of {res.pages} pages stored raw without "
                  f"compressing them (the faster way, or the disk was waiting)")
        return KdumpCaptureResult(part, vmcore_size, direct=res.direct, file_size=res.file_size,
                                  pages=res.pages, zero_pages=res.zero_pages,
                                  compressed_pages=res.compressed_pages, elapsed_s=elapsed)

    def _kdump_io_message(self, exc: "engines.EngineIOError", base: int, dump_size: int,
                          mem_bytes: int) -> str:
        import errno

        if exc.op == "write" and exc.errno == errno.ENOSPC:
            return (f"Disk too small: the compressed dump does not fit "
                    f"(memory={mib(mem_bytes)}MB, diskspace={mib(dump_size)}MB, "
                    f"full at offset=0x{exc.offset - base:016x})"
                    "\nTry a stronger --compress or a larger dump partition")
        return self._io_message(exc, base)


def read_kdump_header(raw: bytes) -> Optional[dict]:
    """Minimal check of a block 0 (for messages and tests): None if not kdump."""
    if raw[:8] != K.SIGNATURE:
        return None
    big = struct.unpack_from("<i", raw, 8)[0] != K.HEADER_VERSION
    e = ">" if big else "<"
    return {"version": struct.unpack_from(e + "i", raw, 8)[0], "big_endian": big,
            "status": struct.unpack_from(e + "I", raw, 424)[0]}
