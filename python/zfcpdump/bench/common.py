"""Units, sizes, root and page-cache helpers shared by the benchmark modules."""

from __future__ import annotations

import os
import subprocess
from typing import Callable


MIB = 1 << 20
GIB = 1 << 30
PAGE = 4096

Log = Callable[[str], None]


# --------------------------------------------------------------------------- helpers

def parse_size(text: str) -> int:
    """'512M', '4G', '65536', '1.5G' -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= div:
            return f"{n / div:.4g} {unit}"
    return f"{n} B"


def is_root() -> bool:
    return os.geteuid() == 0


def drop_caches() -> bool:
    """`sync; echo 3 > /proc/sys/vm/drop_caches` (root only). True when done."""
    os.sync()
    if not is_root():
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- input


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def _fs_type(path: str) -> str:
    try:
        out = subprocess.run(["stat", "-f", "-c", "%T", os.path.dirname(os.path.abspath(path))],
                             capture_output=True, text=True)
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def _roundup(n: int, to: int) -> int:
    return (n + to - 1) // to * to


# --------------------------------------------------------------------------- running one
