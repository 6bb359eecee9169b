"""Public Python API for reading dumps back (the lead re-exports it from the package).

    with zfcpdump.api.open_dump("dump.elf") as dump:
        print(dump.format, dump.attrs.utsname, len(dump.cpus))
        page = dump.read_phys(0x10000, 4096)
        zfcpdump.api.write_dump(dump, "dump.s390", fmt="s390")
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from .info import info_dict, info_lines
from .layout import Layout
from .model import Cpu, Dump, DumpAttrs, MemChunk, S390Regs
from .readback import copy_to_fd, open_output
from .readers import DumpIncomplete, NoDumpFound
from .readers import open_dump as _open_dump
from .writers import FORMATS, get_writer


def open_dump(path: str, *, select: Optional[str] = None,
              partition: Optional[int] = None) -> Dump:
    """Recognise and open a dump (file, block device, or IMAGE:N partition)."""
    return _open_dump(path, select=select, partition=partition)


def layout(dump: Dump, fmt: str = "elf") -> Layout:
    """The dump rendered in `fmt` ("elf" or "s390") as a virtual file."""
    return get_writer(fmt)(dump)


def write_dump(dump: Dump, path: str, fmt: str = "elf", *, engine: str = "rust",
               progress: Optional[Callable[[int], None]] = None, exclusive: bool = True) -> int:
    """Write `dump` in `fmt` to a new file; returns the size written."""
    fd = open_output(path) if exclusive else os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        return copy_to_fd(layout(dump, fmt), fd, engine=engine, progress=progress)
    finally:
        os.close(fd)


def info(dump: Dump) -> dict[str, Any]:
    """What `zgetdump -i` shows, as a dict."""
    return info_dict(dump)


def info_text(dump: Dump, verbose: int = 0) -> str:
    return "\n".join(info_lines(dump, verbose)) + "\n"


def cpus(dump: Dump) -> list[Cpu]:
    return list(dump.cpus)


__all__ = ["open_dump", "layout", "write_dump", "info", "info_text", "cpus", "FORMATS",
           "Dump", "DumpAttrs", "MemChunk", "Cpu", "S390Regs", "NoDumpFound", "DumpIncomplete"]
