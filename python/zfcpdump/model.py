"""One model of a dump, whatever its format (as s390-tools zgetdump's dfi layer).

Readers turn an input into a `Dump`: memory chunks (where each byte of physical memory
comes from), CPUs with their registers, and attributes. Writers render a `Dump`; no
format talks to another directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Protocol


class ChunkSource(Protocol):
    """Where a chunk's bytes come from."""

    def read(self, offset: int, size: int) -> bytes:
        """`size` bytes starting `offset` bytes into the chunk."""
        ...


@dataclass(frozen=True)
class FileSpan:
    """A chunk stored verbatim in a file at `file_offset` (ELF, s390 and similar)."""

    fd: int
    file_offset: int

    def read(self, offset: int, size: int) -> bytes:
        data = os.pread(self.fd, size, self.file_offset + offset)
        if len(data) != size:
            from .errors import DumpDamaged

            raise DumpDamaged(
                f"Short read at file offset 0x{self.file_offset + offset:x}: "
                f"{len(data)} of {size} bytes"
            )
        return data


@dataclass
class MemChunk:
    """A range of physical memory; `source` None means the range reads as zeroes."""

    start: int
    size: int
    source: Optional[ChunkSource] = None
    virt_start: Optional[int] = None  # kernel virtual address of `start`, when known

    @property
    def end(self) -> int:
        """Inclusive last address, as zgetdump prints it."""
        return self.start + self.size - 1

    @property
    def is_zero(self) -> bool:
        return self.source is None

    def read(self, offset: int, size: int) -> bytes:
        if self.source is None:
            return bytes(size)
        return self.source.read(offset, size)


@dataclass(frozen=True)
class Note:
    """One ELF note, kept raw so that notes we do not interpret survive a copy."""

    name: bytes  # without the trailing NUL, e.g. b"CORE"
    type: int
    desc: bytes


@dataclass
class S390Regs:
    """An s390x CPU's registers as the dump notes / lowcore save area hold them."""

    psw_mask: int = 0
    psw_addr: int = 0
    gprs: tuple[int, ...] = (0,) * 16
    acrs: tuple[int, ...] = (0,) * 16
    orig_gpr2: int = 0
    fpc: int = 0
    fprs: tuple[int, ...] = (0,) * 16
    timer: int = 0
    todcmp: int = 0
    todpreg: int = 0
    ctrs: tuple[int, ...] = (0,) * 16
    prefix: int = 0
    vxrs_low: Optional[bytes] = None  # 128 bytes: low halves of V0-V15
    vxrs_high: Optional[bytes] = None  # 256 bytes: V16-V31
    gs_cb: Optional[bytes] = None  # 32 bytes


@dataclass
class Cpu:
    """One CPU: its notes in input order, and the decoded s390x registers if any."""

    notes: list[Note] = field(default_factory=list)
    s390: Optional[S390Regs] = None

    @property
    def prefix(self) -> Optional[int]:
        return self.s390.prefix if self.s390 else None


@dataclass
class DumpAttrs:
    """What a dump says about itself; None where the format does not know."""

    time_created: Optional[int] = None  # TOD clock value
    time_ended: Optional[int] = None  # TOD clock value
    cpu_id: Optional[int] = None
    real_cpu_count: Optional[int] = None
    mem_size_real: Optional[int] = None
    volume: Optional[int] = None
    build_arch: Optional[str] = None
    livedump: bool = False
    utsname: dict[str, str] = field(default_factory=dict)  # nodename, release, version, ...
    file_size: Optional[int] = None
    crash_time: Optional[int] = None  # Unix seconds from VMCOREINFO CRASHTIME=
    zlib_version: Optional[int] = None
    zlib_entry_size: Optional[int] = None
    dump_level: Optional[int] = None  # makedumpfile's, from a kdump sub header
    excluded_pages: Optional[int] = None  # RAM pages left out of a kdump dump


@dataclass
class Dump:
    """A dump in memory-model form. Close it (or use `with`) to release its file."""

    format: str  # "elf", "s390", "s390_ext", "kdump", "kdump_flat"
    version: int
    arch: str  # "s390x", "x86_64", ...
    byteorder: str  # "big" or "little"
    page_size: int
    chunks: list[MemChunk]  # ascending, non-overlapping
    cpus: list[Cpu] = field(default_factory=list)
    other_notes: list[Note] = field(default_factory=list)  # PRPSINFO, VMCOREINFO, unknown
    vmcoreinfo: Optional[bytes] = None
    attrs: DumpAttrs = field(default_factory=DumpAttrs)
    path: Optional[str] = None
    # What the CPU list holds (zgetdump's dfi_cpu_content): "all" registers, "lc"
    # (prefixes only: some lowcore lies outside the dumped memory) or "none";
    # None: decided by whether there are CPUs (writers.cpu_content).
    cpu_content: Optional[str] = None
    # Stand-alone dump that contains a kdump kernel: its crashkernel (base, size).
    kdump_area: Optional[tuple[int, int]] = None
    vmcoreinfo_in_memory: bool = False  # found through lowcore 0xE18/0xE0C
    kdump_incomplete: bool = False  # kdump-compressed header status 0x8
    # further virtual mappings of memory the chunks hold: (virtual, physical, size), as
    # the kernel-image PT_LOADs of our x86_64 ELF copies (readers.elf.alias_loads)
    virt_aliases: list[tuple[int, int, int]] = field(default_factory=list)
    _fds: list[int] = field(default_factory=list, repr=False)

    # ---- memory ---------------------------------------------------------------
    @property
    def mem_start(self) -> int:
        return self.chunks[0].start if self.chunks else 0

    @property
    def mem_end(self) -> int:
        """Inclusive highest address."""
        return self.chunks[-1].end if self.chunks else 0

    def read_phys(self, addr: int, size: int) -> bytes:
        """Bytes of physical memory; ranges outside every chunk read as zeroes."""
        out = bytearray(size)
        end = addr + size
        for chunk in self.chunks:
            if chunk.start >= end:
                break
            lo = max(addr, chunk.start)
            hi = min(end, chunk.start + chunk.size)
            if lo < hi and not chunk.is_zero:
                out[lo - addr : hi - addr] = chunk.read(lo - chunk.start, hi - lo)
        return bytes(out)

    def vmcoreinfo_fields(self) -> dict[str, str]:
        """VMCOREINFO as KEY -> VALUE."""
        return vmcoreinfo_fields(self.vmcoreinfo or b"")

    # ---- lifetime -------------------------------------------------------------
    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> "Dump":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def vmcoreinfo_fields(text: bytes) -> dict[str, str]:
    """VMCOREINFO text (`KEY=VALUE` lines) as a dict; the first of a repeated key wins."""
    fields: dict[str, str] = {}
    for line in text.decode("ascii", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


def merge_chunks(chunks: list[MemChunk]) -> list[MemChunk]:
    """Resolve overlaps: where two chunks overlap, the one that starts later wins
    (zgetdump's rule; on equal starts the later in the list wins). Result is sorted."""
    ordered = sorted(enumerate(chunks), key=lambda ic: (ic[1].start, ic[0]))
    result: list[MemChunk] = []
    for _, new in ordered:
        if new.size <= 0:
            continue
        new_end = new.start + new.size
        kept: list[MemChunk] = []
        for old in result:
            old_end = old.start + old.size
            if old_end <= new.start or old.start >= new_end:
                kept.append(old)
                continue
            if old.start < new.start:
                kept.append(_slice(old, 0, new.start - old.start))
            if old_end > new_end:
                kept.append(_slice(old, new_end - old.start, old_end - new_end))
        kept.append(new)
        result = sorted(kept, key=lambda c: c.start)
    return result


def _slice(chunk: MemChunk, offset: int, size: int) -> MemChunk:
    source = chunk.source
    if isinstance(source, FileSpan):
        source = FileSpan(source.fd, source.file_offset + offset)
    elif source is not None:
        source = _OffsetSource(source, offset)
    virt = None if chunk.virt_start is None else chunk.virt_start + offset
    return MemChunk(chunk.start + offset, size, source, virt)


@dataclass(frozen=True)
class _OffsetSource:
    inner: ChunkSource
    base: int

    def read(self, offset: int, size: int) -> bytes:
        return self.inner.read(self.base + offset, size)
