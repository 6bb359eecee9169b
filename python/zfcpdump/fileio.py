"""Small I/O helpers shared by prepare, capture and read-back."""

from __future__ import annotations

import errno
import os
import stat
import struct
from typing import Sequence


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


class TogetherWriteError(OSError):
    """A write of pwrite_together failed: `index` says which one."""

    def __init__(self, index: int, err: int):
        super().__init__(err, os.strerror(err))
        self.index = index


def pwrite_together(fd: int, writes: Sequence[tuple[bytes, int]]) -> None:
    """pwrite_all each `(data, offset)` in order, in a child process, so that killing
    this process, with SIGKILL too, cannot leave the first written and the others not:
    the child goes on to the end (a dump whose page 0 is out without its checksum would
    be refused by the next capture). The child leaves the process group at once, so a
    signal to the group (Ctrl-C, Ctrl-\\, kill -PGID) misses it; only a kill of the
    whole cgroup (systemd stopping the unit) still takes both. It inherits the signal
    mask: run this with the terminating signals blocked. Where fork fails, the writes
    are made here.
    Raises TogetherWriteError (which write, its errno); nothing after a failed write
    is written."""
    try:
        r, w = os.pipe()
    except OSError:
        r = w = -1
    pid = -1
    if r >= 0:
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
    if pid < 0:  # no child: the same writes, here
        for i, (data, offset) in enumerate(writes):
            try:
                pwrite_all(fd, data, offset)
            except OSError as exc:
                raise TogetherWriteError(i, exc.errno or errno.EIO) from None
        return
    if pid == 0:  # the child: the writes, its report (-1: all written), and out
        report = struct.pack("<ii", 0, errno.EIO)
        try:
            try:
                os.setpgid(0, 0)
            except OSError:  # staying in the group is no reason not to write
                pass
            os.close(r)
            report = struct.pack("<ii", -1, 0)
            for i, (data, offset) in enumerate(writes):
                try:
                    pwrite_all(fd, data, offset)
                except OSError as exc:
                    report = struct.pack("<ii", i, exc.errno or errno.EIO)
                    break
        finally:
            try:
                os.write(w, report)
            finally:
                os._exit(0)  # no Python clean-up in a forked child
    os.close(w)
    try:
        report = os.read(r, 8)  # at the child's end (its pipe end closes)
    finally:
        os.close(r)
        try:
            os.waitpid(pid, 0)  # reaped even if the read failed: no write left behind
        except ChildProcessError:  # reaped already (SIGCHLD ignored)
            pass
    index, err = struct.unpack("<ii", report) if len(report) == 8 else (0, errno.EIO)
    if index >= 0:
        raise TogetherWriteError(index, err)


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
