"""Copy a Layout to a file or to stdout, with zgetdump's stderr lines (behaviour.md §6.5).

On a regular file: buffers are written with pwrite, pieces that lie verbatim in an input
file go through the bulk-copy engine (`engine.copy_ranges`, Rust by default), zero pieces
and gaps stay sparse holes, and a final ftruncate fixes the size. The pure-Python twin
(`engine="python"`) does the same with an os.pread/os.pwrite loop and must give
identical bytes. On a pipe or terminal everything is written in order, zeroes included.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Callable, Optional, TextIO

from .errors import ZfcpdumpError
from .fileio import pwrite_all
from .layout import BufferPiece, ChunkPiece, Layout, ZeroPiece
from .progress import Progress

BLOCK = 1 << 20
ENGINES = ("rust", "python")


class WriteFailed(ZfcpdumpError):
    def __init__(self, detail: str = ""):
        super().__init__("Error: Write failed")
        self.detail = detail


def _bulk_copier(engine: str) -> Optional[Callable]:
    if engine != "rust":
        return None
    try:
        from . import engine as eng
        return eng.get_engine("rust", fallback=False).copy_ranges
    except Exception:  # engine not built: the Python loop does the work
        return None


def _py_copy_ranges(src_fd: int, dst_fd: int, ranges, progress=None) -> int:
    done = 0
    for src, dst, length in ranges:
        pos = 0
        while pos < length:
            n = min(BLOCK, length - pos)
            data = os.pread(src_fd, n, src + pos)
            if len(data) != n:
                raise ZfcpdumpError(f"Short read at input offset 0x{src + pos:x}")
            pwrite_all(dst_fd, data, dst + pos)
            pos += n
            done += n
            if progress:
                progress(done)
    return done


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def copy_to_fd(layout: Layout, fd: int, *, engine: str = "rust",
               progress: Optional[Callable[[int], None]] = None) -> int:
    """Write the whole layout to `fd` (positioned at 0 for files); returns its size."""
    if engine not in ENGINES:
        raise ZfcpdumpError(f"Unknown engine {engine!r}; choose rust or python")
    total = layout.size()
    try:
        if is_regular(fd):
            _copy_sparse(layout, fd, engine, progress)
            os.ftruncate(fd, total)
        else:
            _copy_stream(layout, fd, progress)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise WriteFailed(str(exc)) from None
    if progress:
        progress(total)
    return total


def _copy_sparse(layout: Layout, fd: int, engine: str,
                 progress: Optional[Callable[[int], None]]) -> None:
    bulk = _bulk_copier(engine)
    done = 0
    for piece in layout.pieces():
        c = piece.content
        if isinstance(c, ZeroPiece):
            done += piece.size
            continue
        span = c.file_span if isinstance(c, ChunkPiece) else None
        if span is not None:
            base = done
            cb = (lambda n, base=base: progress(base + n)) if progress else None
            ranges = [(span.file_offset, piece.offset, piece.size)]
            if bulk is not None:
                bulk(span.fd, fd, ranges, sync=False, progress=cb)
            else:
                _py_copy_ranges(span.fd, fd, ranges, cb)
        elif isinstance(c, BufferPiece):
            pwrite_all(fd, c.data[: piece.size], piece.offset)
        else:
            pos = 0
            while pos < piece.size:
                n = min(BLOCK, piece.size - pos)
                pwrite_all(fd, c.read(pos, n), piece.offset + pos)
                pos += n
                if progress:
                    progress(done + pos)
        done += piece.size
        if progress:
            progress(done)


def _copy_stream(layout: Layout, fd: int, progress: Optional[Callable[[int], None]]) -> None:
    total = layout.size()
    pos = 0
    while pos < total:
        n = min(BLOCK, total - pos)
        _write_all(fd, layout.read(pos, n))
        pos += n
        if progress:
            progress(pos)


def copy_with_messages(layout: Layout, fd: int, source_fmt: str, target_fmt: str, *,
                       engine: str = "rust", err: Optional[TextIO] = None,
                       interval_s: float = 10.0) -> None:
    """The zgetdump transcript around the copy: Format Info, progress, Success."""
    stream = err or sys.stderr

    def emit(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    emit("Format Info:")
    emit(f"  Source: {source_fmt}")
    emit(f"  Target: {target_fmt}")
    emit("")
    emit("Copying dump:")
    prog = Progress(layout.size(), emit, style="zgetdump", interval_s=interval_s)
    prog.update(0)
    copy_to_fd(layout, fd, engine=engine, progress=prog.update)
    prog.done = layout.size()
    prog.finish()
    emit("")
    emit("Success: Dump has been copied")


def open_output(path: str) -> int:
    """zgetdump's output file: O_CREAT|O_EXCL, mode 0600."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise ZfcpdumpError(f"Could not open '{path}' exclusively (File exists)") from None
    except OSError as exc:
        raise ZfcpdumpError(f"Could not open '{path}' ({exc.strerror})") from None
