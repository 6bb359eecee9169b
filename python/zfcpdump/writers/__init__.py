"""Writers by name: each turns a Dump into a Layout (layout.py), which copy, mount
and the API then serve. No writer streams; none knows a reader."""

from __future__ import annotations

from typing import Callable

from ..errors import ZfcpdumpError
from ..layout import Layout
from ..model import Dump

FORMATS = ("elf", "s390")


def get_writer(name: str) -> Callable[[Dump], Layout]:
    if name == "elf":
        from .elf import elf_layout
        return elf_layout
    if name == "s390":
        from .s390 import s390_layout
        return s390_layout
    raise ZfcpdumpError(f'Invalid target format "{name}" specified')


def cpu_content(dump: Dump) -> str:
    """"all" registers, "lc" (prefixes only) or "none" (zgetdump's dfi_cpu_content)."""
    if dump.cpu_content:
        return dump.cpu_content
    return "all" if dump.cpus else "none"


__all__ = ["FORMATS", "get_writer", "cpu_content"]
