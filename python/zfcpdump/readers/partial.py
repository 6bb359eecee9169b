"""What `-i` still shows of a recognised but damaged dump, as zgetdump prints its
partial info block before "Dump cannot be processed (is not complete)": the header
facts, and for ELF the CPU count, never memory that cannot be read."""

from __future__ import annotations

import os
import struct

from ..formats import elf_notes as N
from ..formats import s390_dump as S
from ..model import Cpu, Dump, MemChunk


def partial_elf(fd: int, size: int, machines: dict[int, str], base: int = 0) -> Dump:
    head = os.pread(fd, 64, base)
    bo = "little" if head[5] == 1 else "big"
    e = "<" if bo == "little" else ">"
    (machine,) = struct.unpack_from(e + "H", head, 0x12)
    (phoff,) = struct.unpack_from(e + "Q", head, 0x20)
    (phnum,) = struct.unpack_from(e + "H", head, 0x38)
    dump = Dump(format="elf", version=0, arch=machines.get(machine, "unknown"),
                byteorder=bo, page_size=4096, chunks=[])
    for i in range(min(phnum, 4096)):
        ph = os.pread(fd, 56, base + phoff + 56 * i)
        if len(ph) < 56:
            break
        p_type, _f, off, _v, _p, filesz = struct.unpack_from(e + "IIQQQQ", ph, 0)
        if p_type != 4 or off + filesz > size or filesz > (64 << 20):
            continue
        try:
            for note in N.iter_notes(os.pread(fd, filesz, base + off), bo):
                if note.type == N.NT_PRSTATUS:
                    dump.cpus.append(Cpu(notes=[note]))
        except Exception:
            break
    return dump


def partial_s390(fd: int, fmt: str, base: int = 0) -> Dump:
    hdr = S.S390Header.from_bytes(os.pread(fd, S.HDR_SIZE, base))
    dump = Dump(format=fmt, version=hdr.version,
                arch="s390x" if hdr.arch == S.ARCH_S390X else "s390",
                byteorder="big", page_size=4096,
                chunks=[MemChunk(0, hdr.mem_size, None)] if hdr.mem_size else [])
    dump.attrs.time_created = hdr.tod or None
    dump.attrs.cpu_id = hdr.cpu_id or None
    return dump
