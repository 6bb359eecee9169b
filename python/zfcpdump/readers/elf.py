"""ELF64 core reader: /proc/vmcore, zfcpdump partitions, zgetdump and QEMU output.

pyelftools decodes the header and program headers; the checks around it are ours,
because real cores break the rules pyelftools' ELFFile relies on (QEMU writes a bogus
section table and e_ehsize 8, formats.md §9.7). Program headers are read at e_phoff,
never assumed at 64, and every offset is bounded by the real size of the input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from elftools.common.exceptions import ELFError
from elftools.elf.structs import ELFStructs

from ..errors import DumpDamaged, InvalidCore, NotThisFormat
from ..formats import elf_notes as N
from ..model import Cpu, Dump, FileSpan, MemChunk, Note, S390Regs, merge_chunks

ELF_MAGIC = b"\x7fELF"
EHDR_SIZE = 64
PHDR_SIZE = 56
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
MAX_NOTE_BYTES = 64 << 20  # far above any real kernel's notes; bounds what we read
MACHINES = {22: "s390x", 62: "x86_64", 183: "aarch64", 21: "ppc64", 243: "riscv64"}


@dataclass(frozen=True)
class ProgramHeader:
    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


@dataclass
class ElfCore:
    """The parsed skeleton of an ELF64 core."""

    byteorder: str
    machine: int
    version: int  # e_ident[EI_VERSION]
    phoff: int
    phdrs: list[ProgramHeader]
    file_size: int
    base: int = 0  # where the core starts in the file (a partition inside an image)

    @property
    def arch(self) -> str:
        return MACHINES.get(self.machine, f"machine-{self.machine}")

    @property
    def loads(self) -> list[ProgramHeader]:
        return [p for p in self.phdrs if p.type == PT_LOAD]

    @property
    def note_headers(self) -> list[ProgramHeader]:
        return [p for p in self.phdrs if p.type == PT_NOTE]


def _structs(byteorder: str) -> ELFStructs:
    s = ELFStructs(little_endian=(byteorder == "little"), elfclass=64)
    s.create_basic_structs()
    s.create_advanced_structs(e_type="ET_CORE", e_machine="EM_NONE", e_ident_osabi="ELFOSABI_SYSV")
    return s


def parse_elf_core(fd: int, file_size: int, *, base: int = 0) -> ElfCore:
    """Validate and parse the ELF header and program headers of a 64-bit core.

    Raises NotThisFormat when the input is not ELF at all, InvalidCore when it is ELF
    but not something we can dump or read (32-bit, not a core, headers out of bounds).
    """
    head = os.pread(fd, EHDR_SIZE, base)
    if len(head) < 4 or head[:4] != ELF_MAGIC:
        raise NotThisFormat("not an ELF file")
    if len(head) < EHDR_SIZE:
        raise InvalidCore("ELF header truncated")
    if head[4] != 2:
        raise InvalidCore("Only 64 bit core dump files are supported (ELF class is not ELFCLASS64)")
    if head[5] not in (1, 2):
        raise InvalidCore(f"Invalid ELF data encoding {head[5]}")
    byteorder = "little" if head[5] == 1 else "big"
    structs = _structs(byteorder)
    try:
        ehdr = structs.Elf_Ehdr.parse(head)
    except (ELFError, Exception) as exc:  # construct raises its own types
        raise InvalidCore(f"ELF header cannot be parsed: {exc}") from None
    raw_type = int.from_bytes(head[0x10:0x12], byteorder)
    if raw_type != ET_CORE:
        raise InvalidCore(f"Not an ELF core dump (e_type is {raw_type}, expected 4 ET_CORE)")
    machine = int.from_bytes(head[0x12:0x14], byteorder)
    phoff, phnum, phentsize = ehdr["e_phoff"], ehdr["e_phnum"], ehdr["e_phentsize"]
    if phnum == 0:
        raise InvalidCore("ELF core has no program headers")
    if phentsize != PHDR_SIZE:
        raise InvalidCore(f"Invalid ELF program header size {phentsize} (expected 56)")
    if phnum == 0xFFFF:
        raise InvalidCore("Extended program header numbering (PN_XNUM) is not supported")
    if phoff < EHDR_SIZE or phoff + phnum * PHDR_SIZE > file_size:
        raise InvalidCore(
            f"ELF program headers (offset 0x{phoff:x}, {phnum} entries) lie beyond the end "
            f"of the file (size 0x{file_size:x})"
        )
    table = os.pread(fd, phnum * PHDR_SIZE, base + phoff)
    if len(table) != phnum * PHDR_SIZE:
        raise InvalidCore("ELF program headers truncated")
    phdrs = []
    for i in range(phnum):
        raw = table[i * PHDR_SIZE : (i + 1) * PHDR_SIZE]
        p = structs.Elf_Phdr.parse(raw)
        ptype = int.from_bytes(raw[0:4], byteorder)
        ph = ProgramHeader(
            i, ptype, p["p_flags"], p["p_offset"], p["p_vaddr"], p["p_paddr"],
            p["p_filesz"], p["p_memsz"], p["p_align"],
        )
        if ph.type in (PT_LOAD, PT_NOTE) and ph.offset + ph.filesz > file_size:
            kind = "LOAD" if ph.type == PT_LOAD else "NOTE"
            raise InvalidCore(
                f"ELF PT_{kind} segment {i} (offset 0x{ph.offset:x}, size 0x{ph.filesz:x}) "
                f"extends beyond the end of the file (size 0x{file_size:x})"
            )
        phdrs.append(ph)
    if not any(p.type == PT_LOAD for p in phdrs):
        raise InvalidCore("ELF core has no PT_LOAD segments")
    return ElfCore(byteorder, machine, head[6], phoff, phdrs, file_size, base)


def read_notes(fd: int, core: ElfCore) -> list[Note]:
    notes: list[Note] = []
    for ph in core.note_headers:
        if ph.filesz > MAX_NOTE_BYTES:
            raise DumpDamaged(f"Invalid ELF dump (PT_NOTE of {ph.filesz} bytes)")
        data = os.pread(fd, ph.filesz, core.base + ph.offset)
        notes.extend(N.iter_notes(data, core.byteorder))
    return notes


def split_cpus(notes: list[Note], arch: str) -> tuple[list[Cpu], list[Note], Optional[bytes]]:
    """Group notes: each PRSTATUS starts a CPU; PRPSINFO, VMCOREINFO and unknown
    non-CPU notes stay global. A CPU note before the first PRSTATUS is damage."""
    cpus: list[Cpu] = []
    other: list[Note] = []
    vmcoreinfo: Optional[bytes] = None
    cpu_types = set(N.S390_CPU_NOTE_SIZES) if arch == "s390x" else {N.NT_FPREGSET}
    for note in notes:
        if note.type == N.NT_VMCOREINFO and note.name == N.VMCOREINFO_NAME:
            vmcoreinfo = note.desc.rstrip(b"\0")
            other.append(note)
        elif note.type == N.NT_PRSTATUS and note.name in (b"CORE", b"LINUX"):
            cpus.append(Cpu(notes=[note], s390=S390Regs() if arch == "s390x" else None))
        elif note.type == N.NT_PRPSINFO and note.name == b"CORE":
            other.append(note)
        elif note.type in cpu_types or (0x200 <= note.type < 0x500):
            if not cpus:
                name = N.NOTE_NAMES.get(note.type, f"0x{note.type:x}")
                raise DumpDamaged(f"Invalid ELF dump ({name} before prstatus found)")
            cpus[-1].notes.append(note)
        else:
            other.append(note)
    for cpu in cpus:
        if cpu.s390 is not None:
            for note in cpu.notes:
                N.apply_s390_note(cpu.s390, note)
    return cpus, other, vmcoreinfo


def memory_chunks(fd: int, core: ElfCore, aliases: Optional[set[int]] = None) -> list[MemChunk]:
    """Memory keyed on p_paddr; p_memsz beyond p_filesz reads as zeroes; overlaps
    (the kernel-image LOAD repeating part of the identity map) resolved by merge_chunks,
    except aliases, which repeat other LOADs' very bytes (`alias_loads`)."""
    for ph in core.loads:
        if ph.filesz > ph.memsz:
            raise DumpDamaged(f"Invalid ELF dump (PT_LOAD {ph.index}: p_filesz > p_memsz)")
        if ph.memsz == 0:
            raise DumpDamaged(f"Invalid ELF dump (PT_LOAD {ph.index}: p_memsz is 0)")
        if ph.paddr + ph.memsz > 1 << 64:
            raise DumpDamaged(f"Invalid ELF dump (PT_LOAD {ph.index}: address wraps around)")
    if aliases is None:
        aliases = alias_loads(core.loads)
    chunks: list[MemChunk] = []
    for ph in core.loads:
        if ph.index in aliases:
            continue
        if ph.filesz:
            chunks.append(MemChunk(ph.paddr, ph.filesz, FileSpan(fd, core.base + ph.offset), ph.vaddr))
        if ph.memsz > ph.filesz:
            chunks.append(MemChunk(ph.paddr + ph.filesz, ph.memsz - ph.filesz, None,
                                   ph.vaddr + ph.filesz))
    return merge_chunks(chunks)


def alias_loads(loads: list[ProgramHeader]) -> set[int]:
    """Indexes of the PT_LOADs that add a virtual address, not memory: another PT_LOAD
    maps their whole physical range to the same file bytes (or to zeroes, both), and no
    PT_LOAD they overlap has other bytes there. Our x86_64 ELF copies give the kernel
    image such a second mapping (`Dump.virt_aliases` keeps it); the chunks stay as the
    RAM gives them. /proc/vmcore's own kernel-image LOAD has bytes of its own: it is no
    alias, and merge_chunks decides."""
    ordered = sorted(loads, key=lambda ph: (ph.paddr, -ph.memsz, ph.index))
    reach: list[int] = []  # reach[i]: the furthest end among ordered[:i + 1]
    for ph in ordered:
        end = ph.paddr + ph.memsz
        reach.append(max(end, reach[-1]) if reach else end)
    aliases: set[int] = set()
    for i, ph in enumerate(ordered):
        # the loads that overlap ph: before it (while they reach it) and after it
        j, overlapping = i - 1, []
        while j >= 0 and reach[j] > ph.paddr:
            if ordered[j].paddr + ordered[j].memsz > ph.paddr:
                overlapping.append(ordered[j])
            j -= 1
        k = i + 1
        while k < len(ordered) and ordered[k].paddr < ph.paddr + ph.memsz:
            overlapping.append(ordered[k])
            k += 1
        if (all(_same_bytes_where_both_map(ph, other) for other in overlapping)
                and any(_covers(other, ph) for other in overlapping
                        if other.index not in aliases and not _twin_after(other, ph))):
            aliases.add(ph.index)
    return aliases


def _twin_after(other: ProgramHeader, ph: ProgramHeader) -> bool:
    """Of two loads over the same range, the later one is the alias."""
    return (other.paddr, other.memsz) == (ph.paddr, ph.memsz) and other.index > ph.index


def _covers(outer: ProgramHeader, inner: ProgramHeader) -> bool:
    return outer.paddr <= inner.paddr and inner.paddr + inner.memsz <= outer.paddr + outer.memsz


def _same_bytes_where_both_map(a: ProgramHeader, b: ProgramHeader) -> bool:
    """Where a and b overlap, file bytes meet the same file bytes, zeroes zeroes."""
    lo, hi = max(a.paddr, b.paddr), min(a.paddr + a.memsz, b.paddr + b.memsz)
    a_file_end, b_file_end = a.paddr + a.filesz, b.paddr + b.filesz
    if min(hi, a_file_end) > lo or min(hi, b_file_end) > lo:  # bytes on either side
        return (a.offset - a.paddr == b.offset - b.paddr  # the same file bytes ...
                and min(hi, a_file_end) == min(hi, b_file_end))  # ... and zeroes as far
    return True  # zeroes on both sides


def read_elf(fd: int, file_size: int, path: Optional[str] = None, *, base: int = 0) -> Dump:
    """Build the dump model of an ELF core open on `fd` (caller keeps the fd)."""
    try:
        core = parse_elf_core(fd, file_size, base=base)
    except InvalidCore as exc:
        raise DumpDamaged(str(exc)) from None
    notes = read_notes(fd, core)
    cpus, other, vmcoreinfo = split_cpus(notes, core.arch)
    aliases = alias_loads(core.loads)
    dump = Dump(
        format="elf",
        version=core.version,
        arch=core.arch,
        byteorder=core.byteorder,
        page_size=4096,
        chunks=memory_chunks(fd, core, aliases),
        virt_aliases=[(ph.vaddr, ph.paddr, ph.memsz) for ph in core.loads if ph.index in aliases],
        cpus=cpus,
        other_notes=other,
        vmcoreinfo=vmcoreinfo,
        path=path,
    )
    dump.attrs.file_size = file_size
    fields = dump.vmcoreinfo_fields()
    if fields.get("PAGESIZE", "").isdigit():
        dump.page_size = int(fields["PAGESIZE"])
    if fields.get("OSRELEASE"):
        dump.attrs.utsname.setdefault("release", fields["OSRELEASE"])
    if fields.get("CRASHTIME", "").isdigit():
        dump.attrs.crash_time = int(fields["CRASHTIME"])
    return dump
