"""Benchmark inputs: a fully written, mixed-content, kernel-style s390x vmcore, fast."""

from __future__ import annotations

import os
import struct

from .common import MIB, PAGE



def _tile(pages: int, seed: int) -> tuple[bytearray, list[int]]:
    """`pages` pages (a multiple of 3) of synth.page_content, for the addresses
    [3 * PAGE * 2**20, ...) (never paddr 0), and the in-tile offsets of the non-zero pages."""
    from ..synth import page_content

    base = 3 * PAGE << 20
    buf = bytearray()
    stamped = []
    for i in range(pages):
        paddr = base + i * PAGE
        buf += page_content(paddr, seed)
        if (paddr // PAGE) % 3:
            stamped.append(i * PAGE)
    return buf, stamped


def write_fast_vmcore(path: str, size: int, *, seed: int = 1, cpus: int = 2,
                      tile_pages: int = 3 * 1024) -> int:
    """Write a fully allocated, mixed-content s390x vmcore of about `size` bytes (page
    multiple) at `path`, quickly (a 12 MiB tile of synth pages, re-stamped with each
    page's physical address). Two PT_LOADs with a 256 MiB hole between them, kernel-style
    headers and notes (synth.build_notes). Returns the file size."""
    from ..synth import SynthSpec, build_notes, _roundup

    spec = SynthSpec(cpus=cpus, seed=seed)
    notes = build_notes(spec)
    note_off = _roundup(64 + 56 * 3, PAGE)
    data_off = note_off + _roundup(len(notes), PAGE)
    mem = max(2 * PAGE, (size - data_off) // PAGE * PAGE)
    first = mem // 2 // PAGE * PAGE
    loads = [(0, first), (first + 256 * MIB, mem - first)]
    phdrs = [struct.pack(">IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 4)]
    off = data_off
    for paddr, length in loads:
        phdrs.append(struct.pack(">IIQQQQQQ", 1, 7, off, paddr, paddr, length, length, PAGE))
        off += length
    ehdr = (b"\x7fELF" + bytes([2, 2, 1, 0]) + bytes(8)
            + struct.pack(">HHIQQQIHHHHHH", 4, 22, 1, 0, 64, 0, 0, 64, 56, len(phdrs), 0, 0, 0))
    tile, stamped = _tile(tile_pages, seed)
    tview = memoryview(tile)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        head = ehdr + b"".join(phdrs)
        _write_all(fd, head + bytes(note_off - len(head)))
        _write_all(fd, notes + bytes(data_off - note_off - len(notes)))
        for paddr, length in loads:
            pos = 0
            while pos < length:
                n = min(len(tile), length - pos)
                base = paddr + pos
                for o in stamped:
                    if o >= n:
                        break
                    tile[o:o + 21] = b"PHYS=%016x" % (base + o)
                if base == 0:  # page 0 of memory is never a zero page (synth rule)
                    tile[0:21] = b"PHYS=%016x" % 0
                _write_all(fd, tview[:n])
                if base == 0:
                    tile[0:21] = bytes(21)  # tile page 0 is a zero page
                pos += n
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --------------------------------------------------------------------------- targets
