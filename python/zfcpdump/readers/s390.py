"""s390 stand-alone dump reader (formats.md §11; zgetdump dfi_s390).

Probe: magic, then `cpu_cnt` <= 512 (else "not mine"). Recognised but damaged: the end
marker at 0x1000 + mem_size is missing, wrong, or older than the header TOD.
Registers come from the lowcores only if every lowcore lies inside the memory;
otherwise only the prefixes are known; a version < 5 header has no CPU list at all.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from ..errors import DumpDamaged, NotThisFormat
from ..formats import s390_dump as S
from ..model import Cpu, Dump, FileSpan, MemChunk, S390Regs


def read_header(fd: int, size: int, magic: int, base: int = 0) -> S.S390Header:
    raw = os.pread(fd, S.HDR_SIZE, base)
    if len(raw) < S.HDR_SIZE or int.from_bytes(raw[:8], "big") != magic:
        raise NotThisFormat("not an s390 dump")
    hdr = S.S390Header.from_bytes(raw)
    if hdr.cpu_cnt > S.CPU_MAX:
        raise NotThisFormat("s390 dump header with too many CPUs")
    return hdr


def check_end_marker(fd: int, offset: int, size: int, hdr: S.S390Header, base: int = 0) -> int:
    """Returns the end-marker TOD; raises DumpDamaged if it is missing or invalid."""
    if offset + S.END_MARKER_SIZE > size:
        raise DumpDamaged("Dump end marker not found (dump is truncated)")
    raw = os.pread(fd, S.END_MARKER_SIZE, base + offset)
    if raw[:8] != S.END_MARKER_STR:
        raise DumpDamaged("Dump end marker not found")
    if not S.end_marker_valid(raw, hdr.tod):
        raise DumpDamaged("Dump end marker is older than the dump header (stale TOD)")
    return S.end_marker_tod(raw)


def apply_header(dump: Dump, hdr: S.S390Header, em_tod: int) -> None:
    """Header facts -> attributes, with zgetdump's version gates (df_s390_hdr_add)."""
    a = dump.attrs
    ext = hdr.magic == S.MAGIC_EXT
    a.time_created = hdr.tod or None
    a.time_ended = em_tod or None
    a.cpu_id = hdr.cpu_id or None
    if (hdr.version >= 2 or ext) and hdr.build_arch:
        a.build_arch = S.ARCH_NAMES.get(hdr.build_arch, "unknown")
    if (hdr.version >= 3 or ext) and hdr.mem_size_real:
        a.mem_size_real = hdr.mem_size_real
    if (hdr.version >= 5 or ext) and hdr.real_cpu_cnt:
        a.real_cpu_count = hdr.real_cpu_cnt


def cpus_from_lowcores(hdr: S.S390Header, mem_size: int,
                       read_phys: Callable[[int, int], bytes]) -> list[Cpu]:
    """df_s390_cpu_info_add: no CPUs for an old plain header; prefixes only when a
    lowcore lies outside memory; else the full register set from each lowcore."""
    if hdr.version < 5 and hdr.magic == S.MAGIC:
        return []
    full = all(p + S.LOWCORE_SIZE <= mem_size for p in hdr.lc_vec)
    cpus = []
    for prefix in hdr.lc_vec:
        if not full:
            cpus.append(Cpu(s390=S390Regs(prefix=prefix)))
            continue
        lowcore = read_phys(prefix, S.LOWCORE_SIZE)
        vx = None
        vx_addr = S.vx_sa_addr(lowcore)
        if vx_addr is not None and vx_addr + S.VX_SA_SIZE <= mem_size:
            vx = read_phys(vx_addr, S.VX_SA_SIZE)
        regs = S.regs_from_lowcore(lowcore, vx)
        regs.prefix = prefix
        cpus.append(Cpu(s390=regs))
    return cpus


def arch_name(hdr: S.S390Header) -> str:
    if hdr.arch == S.ARCH_S390X:
        return "s390x"
    if hdr.arch == S.ARCH_S390:
        return "s390"
    return "unknown"


def read_s390(fd: int, size: int, path: Optional[str] = None, *, base: int = 0) -> Dump:
    hdr = read_header(fd, size, S.MAGIC, base)
    em_tod = check_end_marker(fd, S.HDR_SIZE + hdr.mem_size, size, hdr, base)
    chunks = [MemChunk(0, hdr.mem_size, FileSpan(fd, base + S.HDR_SIZE))] if hdr.mem_size else []
    dump = Dump(format="s390", version=hdr.version, arch=arch_name(hdr), byteorder="big",
                page_size=hdr.page_size or S.PAGE_SIZE, chunks=chunks, path=path)
    apply_header(dump, hdr, em_tod)
    dump.cpus = cpus_from_lowcores(hdr, hdr.mem_size, dump.read_phys)
    set_cpu_content(dump, hdr, hdr.mem_size)
    return dump


def set_cpu_content(dump: Dump, hdr: S.S390Header, mem_size: int) -> None:
    """What the CPU list holds: "all" registers, only "lc" prefixes, or "none"."""
    if not dump.cpus:
        content = "none"
    elif all(p + S.LOWCORE_SIZE <= mem_size for p in hdr.lc_vec):
        content = "all"
    else:
        content = "lc"
    dump.cpu_content = content
