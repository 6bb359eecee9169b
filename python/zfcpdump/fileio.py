"""Small I/O helpers shared by prepare, capture and read-back."""

from __future__ import annotations

import errno
import os


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of `data` at `offset`: a short write continues, a write of 0 bytes is
    an error (EIO), never an endless loop or a silent loss (behaviour.md §3.2)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]
        offset += n
