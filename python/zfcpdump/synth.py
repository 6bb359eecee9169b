"""Synthesise kernel-style s390x vmcores (formats.md §9.1-§9.4).

The demo and the tests need /proc/vmcore-like input without a crashed mainframe:
page-aligned layout, PRPSINFO, per-CPU notes in the kernel's order, VMCOREINFO, one
PT_LOAD per memory range, and optionally a kernel-image PT_LOAD that repeats part of
the identity map. Memory content is deterministic: every non-zero page starts with its
physical address (`PHYS=` + 16 hex digits) so read-back checks can find any page.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Optional

from .formats import elf_notes as N
from .model import Note, S390Regs

PAGE = 4096
EM_S390 = 22


@dataclass
class SynthSpec:
    ranges: list[tuple[int, int]] = field(default_factory=lambda: [(0, 16 << 20)])  # (paddr, size)
    cpus: int = 2
    kernel_image: Optional[tuple[int, int]] = None  # (paddr, size) repeated as its own LOAD
    identity_base: int = 0  # p_vaddr = identity_base + p_paddr
    vmcoreinfo: bool = True
    seed: int = 1
    release: str = "6.1.0-synthetic"
    extra_note_bytes: int = 0  # pad the note segment (device-dump notes shift every LOAD)


def cpu_regs(i: int) -> S390Regs:
    """Recognisable registers for CPU `i`: prefixes distinct, PSW in kernel space."""
    return S390Regs(
        psw_mask=0x0704C00180000000,
        psw_addr=0x100000 + 0x100 * i,
        gprs=tuple(0x1000 * i + r for r in range(16)),
        acrs=tuple(0x10 * i + r for r in range(16)),
        orig_gpr2=i,
        fpc=0x100 + i,
        fprs=tuple(0x3FF0000000000000 + r for r in range(16)),
        timer=0x7FFFFFFF00000000 - i,
        todcmp=0xD000000000000000 + i,
        todpreg=i,
        ctrs=tuple(0x14000000 + r for r in range(16)),
        prefix=0x20000 * (i + 1) if i else 0x10000,
        vxrs_low=bytes([i] * 128),
        vxrs_high=bytes([0x80 | i] * 256),
    )


def _kernel_cpu_notes(regs: S390Regs, pid: int) -> list[Note]:
    """The kernel's order (§9.4): ..., PREFIX, VXRS_HIGH before VXRS_LOW; no GS_CB."""
    notes = [n for n in N.s390_cpu_notes(regs, pid) if n.type not in (N.NT_S390_VXRS_LOW, N.NT_S390_VXRS_HIGH)]
    notes.append(Note(b"LINUX", N.NT_S390_VXRS_HIGH, regs.vxrs_high or bytes(256)))
    notes.append(Note(b"LINUX", N.NT_S390_VXRS_LOW, regs.vxrs_low or bytes(128)))
    return notes


def vmcoreinfo_text(spec: SynthSpec) -> bytes:
    return (
        f"OSRELEASE={spec.release}\nPAGESIZE=4096\nCRASHTIME=1735689600\n"
        f"NUMBER(phys_ram_base)=0\n"
    ).encode()


def build_notes(spec: SynthSpec) -> bytes:
    notes = [Note(b"CORE", N.NT_PRPSINFO, N.prpsinfo())]
    for i in range(spec.cpus):
        notes.extend(_kernel_cpu_notes(cpu_regs(i), i + 1))
    if spec.vmcoreinfo:
        notes.append(Note(N.VMCOREINFO_NAME, N.NT_VMCOREINFO, vmcoreinfo_text(spec)))
    data = b"".join(N.encode_note(n) for n in notes)
    if spec.extra_note_bytes:
        pad = Note(b"VMCOREDD", 0x700, bytes(spec.extra_note_bytes))
        data += N.encode_note(pad)
    return data


def page_content(paddr: int, seed: int) -> bytes:
    """Mixed content: a third zero pages, a third text, a third random. A pure function
    of the address, so a kernel-image LOAD repeats the identity map's bytes exactly."""
    kind = (paddr // PAGE) % 3
    if kind == 0 and paddr != 0:
        return bytes(PAGE)
    head = b"PHYS=%016x" % paddr
    if kind == 1:
        text = (b"Linux memory page %016x; the quick brown fox jumps over the lazy dog.\n" % paddr)
        body = (text * (PAGE // len(text) + 1))[: PAGE - len(head)]
    else:
        body = random.Random(seed * 0x9E3779B97F4A7C15 + paddr).randbytes(PAGE - len(head))
    return head + body


def write_memory(out: BinaryIO, paddr: int, size: int, seed: int) -> None:
    """Write memory [paddr, paddr+size) in 1 MiB pieces."""
    pos = paddr
    end = paddr + size
    while pos < end:
        piece = bytearray()
        stop = min(end, (pos // (1 << 20) + 1) << 20)
        while pos < stop:
            page_base = pos - pos % PAGE
            content = page_content(page_base, seed)
            take = min(stop, page_base + PAGE) - pos
            piece += content[pos - page_base : pos - page_base + take]
            pos += take
        out.write(piece)


def write_vmcore(path: str, spec: SynthSpec) -> int:
    """Write a kernel-style vmcore to `path`; returns its size in bytes."""
    loads: list[tuple[int, int, int]] = []  # (paddr, size, vaddr)
    if spec.kernel_image:
        kp, ks = spec.kernel_image
        loads.append((kp, ks, 0x3FFE0000000 + kp))
    for paddr, size in spec.ranges:
        loads.append((paddr, size, spec.identity_base + paddr))
    phnum = 1 + len(loads)
    notes = build_notes(spec)
    note_off = _roundup(64 + 56 * phnum, PAGE)
    data_off = note_off + _roundup(len(notes), PAGE)
    phdrs = [struct.pack(">IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 4)]
    layout = []
    for paddr, size, vaddr in loads:
        region_start = paddr - paddr % PAGE
        region_end = _roundup(paddr + size, PAGE)
        p_offset = data_off + (paddr - region_start)
        phdrs.append(struct.pack(">IIQQQQQQ", 1, 7, p_offset, vaddr, paddr, size, size, PAGE))
        layout.append((data_off, region_start, region_end))
        data_off += region_end - region_start
    ehdr = (
        b"\x7fELF" + bytes([2, 2, 1, 0]) + bytes(8)
        + struct.pack(">HHIQQQIHHHHHH", 4, EM_S390, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    )
    with open(path, "wb") as out:
        header = ehdr + b"".join(phdrs)
        out.write(header + bytes(note_off - len(header)))
        out.write(notes + bytes(_roundup(len(notes), PAGE) - len(notes)))
        for file_off, region_start, region_end in layout:
            assert out.tell() == file_off
            write_memory(out, region_start, region_end - region_start, spec.seed)
        return out.tell()


def _roundup(n: int, to: int) -> int:
    return (n + to - 1) // to * to
