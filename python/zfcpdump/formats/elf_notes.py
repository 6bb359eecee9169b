"""ELF note layouts for s390x dumps (formats.md §9.4-§9.6)."""

from __future__ import annotations

import struct
from typing import Iterator

from ..errors import DumpDamaged
from ..model import Note, S390Regs

NT_PRSTATUS = 1
NT_FPREGSET = 2
NT_PRPSINFO = 3
NT_VMCOREINFO = 0
NT_S390_TIMER = 0x301
NT_S390_TODCMP = 0x302
NT_S390_TODPREG = 0x303
NT_S390_CTRS = 0x304
NT_S390_PREFIX = 0x305
NT_S390_VXRS_LOW = 0x309
NT_S390_VXRS_HIGH = 0x30A
NT_S390_GS_CB = 0x30B

NOTE_NAMES = {
    NT_PRSTATUS: "PRSTATUS",
    NT_FPREGSET: "FPREGSET",
    NT_PRPSINFO: "PRPSINFO",
    NT_S390_TIMER: "S390_TIMER",
    NT_S390_TODCMP: "S390_TODCMP",
    NT_S390_TODPREG: "S390_TODPREG",
    NT_S390_CTRS: "S390_CTRS",
    NT_S390_PREFIX: "S390_PREFIX",
    NT_S390_VXRS_LOW: "S390_VXRS_LOW",
    NT_S390_VXRS_HIGH: "S390_VXRS_HIGH",
    NT_S390_GS_CB: "S390_GS_CB",
}

# Minimum descriptor sizes of the s390x per-CPU notes; a shorter one is damage.
S390_CPU_NOTE_SIZES = {
    NT_PRSTATUS: 336,
    NT_FPREGSET: 136,
    NT_S390_TIMER: 8,
    NT_S390_TODCMP: 8,
    NT_S390_TODPREG: 4,  # 8 on some older kernels: the first 4 bytes count (§9.7)
    NT_S390_CTRS: 128,
    NT_S390_PREFIX: 4,
    NT_S390_VXRS_LOW: 128,
    NT_S390_VXRS_HIGH: 256,
    NT_S390_GS_CB: 32,
}
PRSTATUS_SIZE = 336
PRPSINFO_SIZE = 136
PR_REG_OFFSET = 0x70
VMCOREINFO_NAME = b"VMCOREINFO"


def _align4(n: int) -> int:
    return (n + 3) & ~3


def iter_notes(data: bytes, byteorder: str) -> Iterator[Note]:
    """Notes of a PT_NOTE segment; stops at an all-zero terminator. Bounds-checked."""
    for _, note in iter_notes_at(data, byteorder):
        yield note


def iter_notes_at(data: bytes, byteorder: str) -> Iterator[tuple[int, Note]]:
    """As iter_notes, with the offset of each note's descriptor inside `data`."""
    fmt = ">III" if byteorder == "big" else "<III"
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(fmt, data, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            return
        name_off = pos + 12
        desc_off = name_off + _align4(namesz)
        end = desc_off + _align4(descsz)
        if desc_off + descsz > len(data) or namesz > len(data):
            raise DumpDamaged(f"Invalid ELF dump (note at offset 0x{pos:x} is truncated)")
        name = bytes(data[name_off : name_off + namesz]).rstrip(b"\0")
        yield desc_off, Note(name, ntype, bytes(data[desc_off : desc_off + descsz]))
        pos = end


def encode_note(note: Note, byteorder: str = "big") -> bytes:
    name = note.name + b"\0"
    fmt = ">III" if byteorder == "big" else "<III"
    out = struct.pack(fmt, len(name), len(note.desc), note.type)
    out += name + bytes(_align4(len(name)) - len(name))
    out += note.desc + bytes(_align4(len(note.desc)) - len(note.desc))
    return out


def apply_s390_note(regs: S390Regs, note: Note) -> None:
    """Decode one s390x per-CPU note into `regs` (big-endian, formats.md §9.4/§9.5)."""
    d = note.desc
    t = note.type
    need = S390_CPU_NOTE_SIZES.get(t)
    if need is not None and len(d) < need:
        raise DumpDamaged(
            f"Invalid ELF dump ({NOTE_NAMES.get(t, hex(t))} note has {len(d)} bytes, "
            f"expected {need})"
        )
    if t == NT_PRSTATUS:
        regs.psw_mask, regs.psw_addr = struct.unpack_from(">QQ", d, PR_REG_OFFSET)
        regs.gprs = struct.unpack_from(">16Q", d, PR_REG_OFFSET + 16)
        regs.acrs = struct.unpack_from(">16I", d, PR_REG_OFFSET + 144)
        (regs.orig_gpr2,) = struct.unpack_from(">Q", d, PR_REG_OFFSET + 208)
    elif t == NT_FPREGSET:
        (regs.fpc,) = struct.unpack_from(">I", d, 0)
        regs.fprs = struct.unpack_from(">16Q", d, 8)
    elif t == NT_S390_TIMER:
        (regs.timer,) = struct.unpack_from(">Q", d, 0)
    elif t == NT_S390_TODCMP:
        (regs.todcmp,) = struct.unpack_from(">Q", d, 0)
    elif t == NT_S390_TODPREG:
        (regs.todpreg,) = struct.unpack_from(">I", d, 0)
    elif t == NT_S390_CTRS:
        regs.ctrs = struct.unpack_from(">16Q", d, 0)
    elif t == NT_S390_PREFIX:
        (regs.prefix,) = struct.unpack_from(">I", d, 0)
    elif t == NT_S390_VXRS_LOW:
        regs.vxrs_low = d[:128]
    elif t == NT_S390_VXRS_HIGH:
        regs.vxrs_high = d[:256]
    elif t == NT_S390_GS_CB:
        regs.gs_cb = d[:32]


def prstatus_s390(regs: S390Regs, pid: int) -> bytes:
    """An s390x elf_prstatus (336 bytes) with `pid` and the registers (§9.5)."""
    out = bytearray(PRSTATUS_SIZE)
    struct.pack_into(">I", out, 0x20, pid)
    struct.pack_into(">QQ", out, PR_REG_OFFSET, regs.psw_mask, regs.psw_addr)
    struct.pack_into(">16Q", out, PR_REG_OFFSET + 16, *regs.gprs)
    struct.pack_into(">16I", out, PR_REG_OFFSET + 144, *regs.acrs)
    struct.pack_into(">Q", out, PR_REG_OFFSET + 208, regs.orig_gpr2)
    return bytes(out)


def fpregset_s390(regs: S390Regs) -> bytes:
    return struct.pack(">II16Q", regs.fpc, 0, *regs.fprs)


def prpsinfo(fname: bytes = b"vmlinux") -> bytes:
    """The kernel's elf_prpsinfo (§9.6): state 0, sname 'R', fname 'vmlinux'."""
    out = bytearray(PRPSINFO_SIZE)
    out[1] = ord("R")
    out[0x28 : 0x28 + len(fname)] = fname
    return bytes(out)


def s390_cpu_notes(regs: S390Regs, pid: int) -> list[Note]:
    """Per-CPU notes in zgetdump's ELF output order (formats.md §9.8)."""
    notes = [
        Note(b"CORE", NT_PRSTATUS, prstatus_s390(regs, pid)),
        Note(b"CORE", NT_FPREGSET, fpregset_s390(regs)),
        Note(b"LINUX", NT_S390_TIMER, struct.pack(">Q", regs.timer)),
        Note(b"LINUX", NT_S390_TODCMP, struct.pack(">Q", regs.todcmp)),
        Note(b"LINUX", NT_S390_TODPREG, struct.pack(">I", regs.todpreg)),
        Note(b"LINUX", NT_S390_CTRS, struct.pack(">16Q", *regs.ctrs)),
        Note(b"LINUX", NT_S390_PREFIX, struct.pack(">I", regs.prefix)),
    ]
    if regs.vxrs_low is not None and regs.vxrs_high is not None:
        notes.append(Note(b"LINUX", NT_S390_VXRS_LOW, regs.vxrs_low))
        notes.append(Note(b"LINUX", NT_S390_VXRS_HIGH, regs.vxrs_high))
    if regs.gs_cb is not None:
        notes.append(Note(b"LINUX", NT_S390_GS_CB, regs.gs_cb))
    return notes
