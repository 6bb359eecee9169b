"""ELF core output as zgetdump writes it (formats.md §9.8, dfo_elf.c).

e_phoff 64; PT_NOTE first with only p_offset and p_filesz set, right after the
program headers; one PT_LOAD per chunk in ascending order, p_filesz 0 for zero chunks;
the data of non-zero chunks follows the notes contiguously, not page aligned.
Notes: PRPSINFO; per CPU the zgetdump set (orig_gpr2 and pr_fpvalid zero, as zgetdump
and the kernel write them; GS_CB only if some CPU's block is non-zero); VMCOREINFO if
known (found in memory, else the input's note). Dumps of other architectures (kdump
input) keep their own notes verbatim, in their own byte order.
"""

from __future__ import annotations

import dataclasses
import struct

from ..formats import elf_notes as N
from ..layout import Layout
from ..model import Dump, Note, S390Regs
from . import cpu_content, x86_vaddr

EHDR_SIZE = 64
PHDR_SIZE = 56
PT_LOAD = 1
PT_NOTE = 4
PF_RWX = 7
PAGE = 4096
MASK64 = (1 << 64) - 1
E_MACHINE = {"s390x": 22, "x86_64": 62, "aarch64": 183, "ppc64": 21, "riscv64": 243}


def s390_notes(dump: Dump) -> list[Note]:
    notes = [Note(b"CORE", N.NT_PRPSINFO, N.prpsinfo())]
    if cpu_content(dump) == "all":
        regs = [c.s390 or S390Regs() for c in dump.cpus]
        has_vx = any(r.vxrs_low is not None and r.vxrs_high is not None for r in regs)
        # GS_CB only when some CPU has a non-zero block: zgetdump 2.16 writes none, and
        # QEMU's all-zero blocks carry no information (formats.md §9.4: [I]).
        has_gs = any(r.gs_cb is not None and any(r.gs_cb) for r in regs)
        for pid, r in enumerate(regs, 1):
            r = dataclasses.replace(
                r, orig_gpr2=0,
                vxrs_low=(r.vxrs_low or bytes(128)) if has_vx else None,
                vxrs_high=(r.vxrs_high or bytes(256)) if has_vx else None,
                gs_cb=(r.gs_cb or bytes(32)) if has_gs else None)
            notes.extend(N.s390_cpu_notes(r, pid))
    if dump.vmcoreinfo:
        notes.append(Note(N.VMCOREINFO_NAME, N.NT_VMCOREINFO, dump.vmcoreinfo.split(b"\0")[0]))
    return notes


def foreign_notes(dump: Dump) -> list[Note]:
    """Non-s390x dumps: the input's notes, global ones first, VMCOREINFO last."""
    other = [n for n in dump.other_notes if n.type != N.NT_VMCOREINFO or n.name != N.VMCOREINFO_NAME]
    notes = other + [n for cpu in dump.cpus for n in cpu.notes]
    if dump.vmcoreinfo:
        notes.append(Note(N.VMCOREINFO_NAME, N.NT_VMCOREINFO, dump.vmcoreinfo))
    return notes


def elf_header(phnum: int, machine: int, byteorder: str) -> bytes:
    e = ">" if byteorder == "big" else "<"
    ident = b"\x7fELF" + bytes([2, 2 if byteorder == "big" else 1, 1, 0]) + bytes(8)
    return ident + struct.pack(e + "HHIQQQIHHHHHH", 4, machine, 1, 0, EHDR_SIZE, 0, 0,
                               EHDR_SIZE, PHDR_SIZE, phnum, 0, 0, 0)


def elf_layout(dump: Dump) -> Layout:
    byteorder = dump.byteorder if dump.arch != "s390x" else "big"
    e = ">" if byteorder == "big" else "<"
    notes = s390_notes(dump) if dump.arch == "s390x" else foreign_notes(dump)
    note_bytes = b"".join(N.encode_note(n, byteorder) for n in notes)
    # x86_64 from a dump without virtual addresses: give the PT_LOADs /proc/vmcore's
    # (direct map, and the kernel image aliasing the same bytes), else vaddr = paddr
    maps = x86_vaddr.kernel_mappings(dump)
    text = [] if maps is None else [(c, lo, hi) for c in dump.chunks
                                    for lo, hi in [maps.image_overlap(c.start, c.size)] if lo < hi]
    phnum = 1 + len(dump.chunks) + len(text)
    note_off = EHDR_SIZE + PHDR_SIZE * phnum
    phdrs = [struct.pack(e + "IIQQQQQQ", PT_NOTE, 0, note_off, 0, 0, len(note_bytes), 0, 0)]
    data_off = note_off + len(note_bytes)
    placed, offsets = [], {}
    for chunk in dump.chunks:
        filesz = 0 if chunk.is_zero else chunk.size
        vaddr = chunk.start if maps is None else (maps.direct_map + chunk.start) & MASK64
        phdrs.append(struct.pack(e + "IIQQQQQQ", PT_LOAD, PF_RWX, data_off, vaddr,
                                 chunk.start, filesz, chunk.size, PAGE))
        if filesz:
            placed.append((data_off, chunk))
        offsets[id(chunk)] = data_off
        data_off += filesz
    for chunk, lo, hi in text:  # after the RAM, pointing into its bytes
        filesz = 0 if chunk.is_zero else hi - lo
        phdrs.append(struct.pack(e + "IIQQQQQQ", PT_LOAD, PF_RWX,
                                 offsets[id(chunk)] + lo - chunk.start,
                                 maps.text_vaddr + lo - maps.text_paddr, lo, filesz, hi - lo,
                                 PAGE))
    layout = Layout()
    machine = E_MACHINE.get(dump.arch, 0)
    layout.add_buffer(0, elf_header(phnum, machine, byteorder) + b"".join(phdrs) + note_bytes)
    for offset, chunk in placed:
        layout.add_chunk(offset, chunk)
    layout.set_size(data_off)
    return layout
