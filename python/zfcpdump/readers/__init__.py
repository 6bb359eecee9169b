"""Readers of dump formats; `open_dump` probes them in zgetdump's fixed order.

Order (behaviour.md §6.2): s390_ext, s390, elf, kdump, kdump_flat. Each reader says
"not mine" (NotThisFormat: try the next), returns a Dump, or says "mine but damaged"
(DumpDamaged: stop). After a hit, readers/enrich.py adds what the s390x memory tells.

A DUMP may be a file, a block device (whole disk or partition), or a partition inside
a disk image, given as `IMAGE:N` or with `partition=N`.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Callable, Optional

from ..disk import device
from ..disk.partitions import check_label, detect_image_block_size, read_partitions
from ..errors import DiskRefused, DumpDamaged, NotThisFormat, ZfcpdumpError
from ..fileio import open_for_reading
from ..model import Dump
from .elf import read_elf
from .enrich import enrich
from .kdump import read_kdump, read_kdump_flat
from .s390 import read_s390
from .s390_ext import read_s390_ext

Reader = Callable[[int, int, Optional[str]], Dump]
READERS: list[tuple[str, Reader]] = [
    ("s390_ext", read_s390_ext),
    ("s390", read_s390),
    ("elf", read_elf),
    ("kdump", read_kdump),
    ("kdump_flat", read_kdump_flat),
]
INCOMPLETE = "Dump cannot be processed (is not complete)"


class NoDumpFound(NotThisFormat):
    """No reader recognised the input."""

    def __init__(self, path: str):
        super().__init__(f'No valid dump found on "{path}"')
        self.path = path


class DumpIncomplete(DumpDamaged):
    """Recognised but damaged. `partial` holds what could be read (for `-i`),
    `detail` says what is wrong."""

    def __init__(self, fmt: str, detail: str, partial: Optional[Dump] = None):
        super().__init__(INCOMPLETE)
        self.format = fmt
        self.detail = detail
        self.partial = partial


def split_image_partition(path: str) -> tuple[str, Optional[int]]:
    """`IMAGE:N` -> (IMAGE, N) when IMAGE exists and the whole name does not."""
    m = re.fullmatch(r"(.+):(\d+)", path)
    if m and not os.path.exists(path) and os.path.exists(m.group(1)):
        return m.group(1), int(m.group(2))
    return path, None


def _image_partition(fd: int, size: int, number: int, path: str) -> tuple[int, int]:
    block0 = os.pread(fd, 512, 0)
    try:
        check_label(block0)
        bs = detect_image_block_size(fd) or 512
        parts = read_partitions(fd, bs, size)
    except DiskRefused as exc:
        raise ZfcpdumpError(f'No partition table on "{path}": {exc}') from None
    for p in parts:
        if p.number == number and not p.extended:
            return p.start, p.size
    raise ZfcpdumpError(f'No partition {number} on "{path}"')


def open_input(path: str, partition: Optional[int] = None) -> tuple[int, int, int]:
    """(fd, size, base) of the dump input: `base` is where the dump starts in the
    file, non-zero for a partition inside a disk image (read in place, no root needed).
    Raises ZfcpdumpError with zgetdump's words."""
    path, from_name = split_image_partition(path)
    number = partition if partition is not None else from_name
    try:
        fd = open_for_reading(path)
    except OSError as exc:
        raise ZfcpdumpError(f"Open of dump \"{path}\" failed ({exc.strerror})") from None
    try:
        size = device.size_of(fd)
        if number is None:
            return fd, size, 0
        if device.is_block_device(path) and device.partition_info(path) is None:
            node = device.partition_node(path, number)
            if os.path.exists(node):
                os.close(fd)
                fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
                return fd, device.size_of(fd), 0
        start, length = _image_partition(fd, size, number, path)
        return fd, length, start
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise


def _elf_precheck(fd: int, s390x_only: bool, base: int = 0) -> None:
    """zgetdump's ELF gate: not ELF/core/version 1 -> not mine; not s390x -> error."""
    head = os.pread(fd, 64, base)
    if len(head) < 64 or head[:4] != b"\x7fELF":
        raise NotThisFormat("not ELF")
    bo = "<" if head[5] == 1 else ">"
    e_type, e_machine, e_version = struct.unpack_from(bo + "HHI", head, 0x10)
    if e_version != 1 or e_type != 4:
        raise NotThisFormat("not an ELF core")
    if s390x_only and not (e_machine == 22 and head[4] == 2 and head[5] == 2):
        raise ZfcpdumpError("Only s390x (64 bit) core dump files are supported")


def _partial(fmt: str, fd: int, size: int, base: int = 0) -> Optional[Dump]:
    """What `-i` can still show of a damaged dump (zgetdump prints a partial block)."""
    try:
        if fmt == "elf":
            from .elf import MACHINES
            from .partial import partial_elf
            return partial_elf(fd, size, MACHINES, base)
        if fmt in ("s390", "s390_ext"):
            from .partial import partial_s390
            return partial_s390(fd, fmt, base)
    except Exception:  # a best effort only: the damage is reported anyway
        return None
    return Dump(format=fmt, version=0, arch="unknown", byteorder="big", page_size=4096, chunks=[])


def probe(fd: int, size: int, path: str, s390x_only: bool = False, base: int = 0) -> Dump:
    for name, reader in READERS:
        try:
            if name == "elf":
                _elf_precheck(fd, s390x_only, base)
            return reader(fd, size, path, base=base)
        except NotThisFormat:
            continue
        except DumpDamaged as exc:
            raise DumpIncomplete(name, str(exc), _partial(name, fd, size, base)) from None
    raise NoDumpFound(path)


def open_dump(path: str, *, select: Optional[str] = None, partition: Optional[int] = None,
              s390x_only: bool = False) -> Dump:
    """Open and recognise a dump; the returned Dump owns the fd (close it)."""
    fd, size, base = open_input(path, partition)
    try:
        dump = probe(fd, size, path, s390x_only, base)
        dump._fds.append(fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        enrich(dump, select)
    except BaseException:
        dump.close()
        raise
    return dump


__all__ = ["READERS", "NoDumpFound", "DumpIncomplete", "INCOMPLETE", "open_dump", "open_input", "probe"]
