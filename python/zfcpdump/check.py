"""`check`: validate a dump on a prepared disk end to end, without writing.

Structure: boot record, superblock, partition match, checksum (capture.locate, the
same checks zfcpdump makes); the superblock's areas inside the partition; then the dump
area: busy marker (incomplete), fresh (no dump), an ELF64 core whose headers parse
and whose every PT_LOAD/PT_NOTE lies inside dump_size (and so inside the partition), or
a kdump-compressed dump (`dump --compress`) whose header, bitmaps and notes read and
whose every page descriptor points inside dump_size.
Content: with an ngdump.meta-style file (`version=1`, `file=`, `sha256sum=`, written by
`dump --meta`), the SHA-256 of the dump's bytes must match.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

from .capture import PAGE, locate
from .disk.zipl import BUSY_MARKER
from .errors import DumpDamaged, InvalidCore, NotThisFormat, ZfcpdumpError
from .fileio import open_for_reading
from .formats import elf_notes
from .readers import kdump
from .readers.elf import EHDR_SIZE, MAX_NOTE_BYTES, PHDR_SIZE, parse_elf_core


class CheckFailed(ZfcpdumpError):
    """The disk holds no valid dump; the message says why."""


@dataclass
class Meta:
    version: int
    file: Optional[str]
    sha256: Optional[str]


@dataclass
class CheckResult:
    partition: str
    dump_size: int  # the superblock's dump_size (space)
    size: int  # bytes the dump occupies (ELF extent, or kdump data end)
    loads: int
    notes: int
    sha256: Optional[str] = None
    lines: list[str] = field(default_factory=list)


def read_meta(path: str) -> Meta:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 16)
    except OSError as exc:
        raise CheckFailed(f"Cannot read {path}: {exc.strerror}") from None
    kv = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            kv[key.strip()] = value.strip()
    if kv.get("version") != "1":
        raise CheckFailed(f"{path}: unsupported meta version {kv.get('version')!r} (expected 1)")
    digest = kv.get("sha256sum")
    if digest is not None and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower())):
        raise CheckFailed(f"{path}: sha256sum is not 64 hex digits")
    return Meta(1, kv.get("file"), digest.lower() if digest else None)


class _Window:
    """pread at an offset inside the disk, refusing to read past `limit`."""

    def __init__(self, fd: int, base: int, limit: int):
        self.fd, self.base, self.limit = fd, base, limit

    def pread(self, size: int, offset: int) -> bytes:
        if offset < 0 or offset >= self.limit:
            return b""
        size = max(0, min(size, self.limit - offset))
        try:
            return os.pread(self.fd, size, self.base + offset)
        except OSError as exc:
            raise CheckFailed(f"Read of dump failed: offset=0x{offset:016x} bytes=0x{size:016x}: "
                              f"{exc.strerror}") from None


def check_disk(disk: str, *, meta_path: Optional[str] = None, block_size: Optional[int] = None,
               out: Callable[[str], None] = lambda _line: None) -> CheckResult:
    """Raise CheckFailed (or DiskRefused from locate) unless `disk` holds a valid dump."""
    meta = read_meta(meta_path) if meta_path else None
    try:
        fd = open_for_reading(disk)
    except OSError as exc:
        raise CheckFailed(f"Cannot open {disk}: {exc.strerror}") from None
    try:
        return _check(fd, disk, meta, block_size, out)
    finally:
        os.close(fd)


def _check(fd: int, disk: str, meta: Optional[Meta], block_size: Optional[int],
           out: Callable[[str], None]) -> CheckResult:
    part, sb = locate(disk, fd, block_size)
    out(f" partition: {part.name}")
    out(f" superblock: dump_size={sb.dump_size} csum=0x{sb.csum:08x} (matches)")
    win = _Window(fd, part.start + sb.dump_offset, sb.dump_size)
    first = win.pread(PAGE, 0)
    if first.startswith(BUSY_MARKER):
        raise CheckFailed("No valid dump: the dump area holds the busy marker "
                          "(a capture was interrupted or failed)")
    if kdump.is_kdump(first):
        result = _check_kdump(win, part.name, sb.dump_size, out)
    else:
        result = _check_elf(win, first, part.name, sb.dump_size, out)
    if meta is not None and meta.sha256 is not None:
        _check_sha256(win, result, meta, out)
    elif meta is not None:
        out(" sha256...: the meta file records no dump (no sha256sum)")
    return result


def _check_kdump(win: _Window, partition: str, dump_size: int,
                 out: Callable[[str], None]) -> CheckResult:
    try:
        dump = kdump.read_kdump_from(win.pread, dump_size, "kdump", None)
        pages, extent = kdump.data_extent(win.pread, dump_size)
    except (DumpDamaged, NotThisFormat) as exc:
        raise CheckFailed(f"Invalid dump: {exc}") from None
    if dump.kdump_incomplete:
        raise CheckFailed("Invalid dump: the kdump dump says it is incomplete")
    notes = len(dump.cpus) + len(dump.other_notes) + (dump.vmcoreinfo is not None)
    out(f" dump.....: kdump-compressed, {pages} page descriptors, {notes} notes, dump level "
        f"{dump.attrs.dump_level}, {extent} bytes (all inside dump_size {dump_size})")
    return CheckResult(partition, dump_size, extent, 0, notes)


def _check_elf(win: _Window, first: bytes, partition: str, dump_size: int,
               out: Callable[[str], None]) -> CheckResult:
    if not first.startswith(b"\x7fELF"):
        if not first.strip(b"\0"):
            raise CheckFailed("No dump: the dump area is empty (freshly prepared)")
        raise CheckFailed("No valid dump: the dump area holds neither an ELF core nor a "
                          "kdump-compressed dump")
    head = win.pread(EHDR_SIZE, 0)
    if len(head) < EHDR_SIZE:
        raise CheckFailed("Invalid dump: ELF header truncated")
    bo = ">" if head[5] == 2 else "<"
    phoff = struct.unpack_from(bo + "Q", head, 0x20)[0]
    phnum = struct.unpack_from(bo + "H", head, 0x38)[0]
    table_end = phoff + phnum * PHDR_SIZE
    if phoff < EHDR_SIZE or table_end > dump_size:
        raise CheckFailed(f"Invalid dump: ELF program headers (offset 0x{phoff:x}, {phnum} "
                          f"entries) lie outside the dump area (dump_size 0x{dump_size:x})")
    # The headers, copied to a memory file, parsed against the real dump area size.
    mfd = os.memfd_create("zfcpdump-check-headers", os.MFD_CLOEXEC)
    try:
        os.pwrite(mfd, win.pread(table_end, 0), 0)
        try:
            core = parse_elf_core(mfd, dump_size)
        except (InvalidCore, NotThisFormat) as exc:
            raise CheckFailed(f"Invalid dump: {exc}") from None
    finally:
        os.close(mfd)
    extent = table_end
    for ph in core.phdrs:
        if ph.type in (1, 4):
            extent = max(extent, ph.offset + ph.filesz)
    notes = 0
    for ph in core.note_headers:
        if ph.filesz > MAX_NOTE_BYTES:
            raise CheckFailed(f"Invalid dump: PT_NOTE of {ph.filesz} bytes")
        try:
            notes += sum(1 for _ in elf_notes.iter_notes(win.pread(ph.filesz, ph.offset), core.byteorder))
        except DumpDamaged as exc:
            raise CheckFailed(f"Invalid dump: {exc}") from None
    out(f" dump.....: ELF64 core, {len(core.loads)} PT_LOAD, {notes} notes, "
        f"{extent} bytes (all inside dump_size {dump_size})")
    return CheckResult(partition, dump_size, extent, len(core.loads), notes)


def _check_sha256(win: _Window, result: CheckResult, meta: Meta,
                  out: Callable[[str], None]) -> None:
    """The SHA-256 of the dump's bytes (its extent) against the meta file's."""
    h = hashlib.sha256()
    pos = 0
    while pos < result.size:
        chunk = win.pread(min(4 << 20, result.size - pos), pos)
        if not chunk:
            raise CheckFailed(f"Read of dump failed: offset=0x{pos:016x}: unexpected end")
        h.update(chunk)
        pos += len(chunk)
    result.sha256 = h.hexdigest()
    if result.sha256 != meta.sha256:
        raise CheckFailed(f"Content check failed: sha256 of the dump is {result.sha256}, "
                          f"the meta file says {meta.sha256}")
    out(f" sha256...: {result.sha256} (matches the meta file)")
