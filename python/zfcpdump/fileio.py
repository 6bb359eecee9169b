"""Small I/O helpers shared by prepare, capture and read-back."""

from __future__ import annotations

import errno
import os
import stat


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


def open_for_reading(path: str) -> int:
    """`os.open(path, O_RDONLY)`, but a directory is refused here (IsADirectoryError,
    EISDIR) as a later read would refuse it, so that every caller words it with the path
    in its own "cannot open" message."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if is_dir:
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    return fd
