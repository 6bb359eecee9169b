"""A virtual output file built from pieces, as zgetdump's dfo_chunk list.

A writer does not stream: it lays the output out as pieces (a bytes buffer, zeroes, or
a range of a memory chunk) at fixed offsets, and `size()`/`read(offset, n)` serve any
range. The same Layout feeds the copy loop (readback.py) and the FUSE file (fuse.py).
Pieces added later win where they overlap earlier ones (the s390 writer overlays the
lowcores on the memory image this way); gaps read as zeroes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from typing import Iterator, Optional, Union

from .model import FileSpan, MemChunk


@dataclass(frozen=True)
class BufferPiece:
    data: bytes

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


@dataclass(frozen=True)
class ZeroPiece:
    def read(self, offset: int, size: int) -> bytes:
        return bytes(size)


@dataclass(frozen=True)
class ChunkPiece:
    """Bytes of `chunk` starting `chunk_offset` bytes into it."""

    chunk: MemChunk
    chunk_offset: int = 0

    def read(self, offset: int, size: int) -> bytes:
        return self.chunk.read(self.chunk_offset + offset, size)

    @property
    def file_span(self) -> Optional[FileSpan]:
        """Where the bytes lie verbatim in an input file, if they do."""
        src = self.chunk.source
        if isinstance(src, FileSpan):
            return FileSpan(src.fd, src.file_offset + self.chunk_offset)
        return None


Content = Union[BufferPiece, ZeroPiece, ChunkPiece]


@dataclass(frozen=True)
class Piece:
    offset: int
    size: int
    content: Content

    @property
    def end(self) -> int:
        return self.offset + self.size

    def tail(self, skip: int) -> "Piece":
        """The piece without its first `skip` bytes."""
        c = self.content
        if isinstance(c, BufferPiece):
            c = BufferPiece(c.data[skip:])
        elif isinstance(c, ChunkPiece):
            c = replace(c, chunk_offset=c.chunk_offset + skip)
        return Piece(self.offset + skip, self.size - skip, c)

    def head(self, keep: int) -> "Piece":
        c = self.content
        if isinstance(c, BufferPiece):
            c = BufferPiece(c.data[:keep])
        return Piece(self.offset, keep, c)


class Layout:
    """Sorted, non-overlapping pieces; the file size is fixed by `set_size` or by the
    last piece's end."""

    def __init__(self) -> None:
        self._pieces: list[Piece] = []
        self._starts: list[int] = []
        self._size: Optional[int] = None

    # ---- building --------------------------------------------------------------
    def add_buffer(self, offset: int, data: bytes) -> None:
        self._insert(Piece(offset, len(data), BufferPiece(bytes(data))))

    def add_zero(self, offset: int, size: int) -> None:
        self._insert(Piece(offset, size, ZeroPiece()))

    def add_chunk(self, offset: int, chunk: MemChunk, chunk_offset: int = 0,
                  size: Optional[int] = None) -> None:
        size = chunk.size - chunk_offset if size is None else size
        content: Content = ZeroPiece() if chunk.is_zero else ChunkPiece(chunk, chunk_offset)
        self._insert(Piece(offset, size, content))

    def set_size(self, size: int) -> None:
        self._size = size

    def _insert(self, new: Piece) -> None:
        if new.size <= 0:
            return
        lo = bisect.bisect_right(self._starts, new.offset) - 1
        lo = max(lo, 0)
        kept_before: list[Piece] = []
        kept_after: list[Piece] = []
        hi = lo
        while hi < len(self._pieces) and self._pieces[hi].offset < new.end:
            old = self._pieces[hi]
            if old.end <= new.offset:
                kept_before.append(old)
            else:
                if old.offset < new.offset:
                    kept_before.append(old.head(new.offset - old.offset))
                if old.end > new.end:
                    kept_after.append(old.tail(new.end - old.offset))
            hi += 1
        replacement = kept_before + [new] + kept_after
        self._pieces[lo:hi] = replacement
        self._starts[lo:hi] = [p.offset for p in replacement]

    # ---- serving ---------------------------------------------------------------
    def size(self) -> int:
        if self._size is not None:
            return self._size
        return self._pieces[-1].end if self._pieces else 0

    def pieces(self) -> list[Piece]:
        return list(self._pieces)

    def iter_range(self, offset: int, n: int) -> Iterator[tuple[int, int, Optional[Content]]]:
        """(offset, size, content or None for a gap) covering [offset, offset+n)."""
        end = min(offset + n, self.size())
        pos = offset
        i = max(bisect.bisect_right(self._starts, pos) - 1, 0)
        while pos < end:
            piece = self._pieces[i] if i < len(self._pieces) else None
            if piece is None or piece.offset >= end:
                yield pos, end - pos, None
                return
            if piece.end <= pos:
                i += 1
                continue
            if piece.offset > pos:
                yield pos, piece.offset - pos, None
                pos = piece.offset
            take = min(piece.end, end) - pos
            yield pos, take, _sub(piece, pos - piece.offset)
            pos += take
            i += 1

    def read(self, offset: int, n: int) -> bytes:
        out = bytearray()
        for pos, size, content in self.iter_range(offset, n):
            if content is None:
                out += bytes(size)
            else:
                out += content.read(0, size)
        return bytes(out)


def _sub(piece: Piece, skip: int) -> Content:
    return piece.tail(skip).content if skip else piece.content
