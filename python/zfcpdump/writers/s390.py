"""s390 stand-alone dump output as zgetdump writes it (formats.md §11, dfo_s390.c).

A 4 KiB header (version 5, or 4 without CPU information), the memory image from
address 0 to the highest address with holes as zeroes, each CPU's lowcore overlaid
with its registers (and its vector save area filled, if the lowcore points to one),
then the 16-byte end marker. Header fields follow current upstream (formats.md §11.2):
mem_size = last address + 1, mem_end = last address.
"""

from __future__ import annotations

import logging

from ..formats import s390_dump as S
from ..layout import Layout
from ..model import Dump
from ..readers.enrich import mem_valid
from . import cpu_content

log = logging.getLogger(__name__)
BUILD_ARCH = {"s390x (64 bit)": S.ARCH_S390X, "s390 (32 bit)": S.ARCH_S390}


def _tod(value: int | None) -> int:
    """zgetdump keeps times as timevals: a TOD loses its sub-microsecond bits."""
    if not value:
        return 0
    us = S.tod_to_unix_us(value)
    return S.unix_us_to_tod(us) if us // 1_000_000 else 0


def s390_header(dump: Dump, mem_size: int) -> S.S390Header:
    a = dump.attrs
    content = cpu_content(dump)
    cpus = dump.cpus if content != "none" else []
    return S.S390Header(
        version=4 if content == "none" else 5,
        mem_size=mem_size,
        mem_end=max(mem_size - 1, 0),
        num_pages=mem_size // S.PAGE_SIZE,
        tod=_tod(a.time_created),
        cpu_id=a.cpu_id or 0,
        arch=S.ARCH_S390 if dump.arch == "s390" else S.ARCH_S390X,
        build_arch=BUILD_ARCH.get(a.build_arch or "", 0),
        mem_size_real=a.mem_size_real or 0,
        cpu_cnt=len(cpus),
        real_cpu_cnt=a.real_cpu_count or 0,
        lc_vec=[(c.prefix or 0) for c in cpus],
    )


def end_marker_tod(dump: Dump) -> int:
    return _tod(dump.attrs.time_ended) or _tod(dump.attrs.time_created)


def add_cpus(layout: Layout, dump: Dump) -> None:
    has_vx = any(c.s390 is not None and c.s390.vxrs_low is not None for c in dump.cpus)
    for cpu in dump.cpus:
        regs = cpu.s390
        if regs is None:
            continue
        if not mem_valid(dump, regs.prefix, S.LOWCORE_SIZE):
            log.warning("Could not read CPU prefix page: %x", regs.prefix)
            continue
        lowcore = bytearray(dump.read_phys(regs.prefix, S.LOWCORE_SIZE))
        vx_addr = S.vx_sa_addr(lowcore)
        S.regs_into_lowcore(lowcore, regs)
        layout.add_buffer(S.HDR_SIZE + regs.prefix, bytes(lowcore))
        if has_vx and vx_addr is not None and vx_addr + S.VX_SA_SIZE <= dump.mem_end + 1:
            layout.add_buffer(S.HDR_SIZE + vx_addr, S.vx_save_area(regs))


def s390_layout(dump: Dump) -> Layout:
    mem_size = dump.mem_end + 1 if dump.chunks else 0
    layout = Layout()
    layout.add_buffer(0, s390_header(dump, mem_size).to_bytes())
    for chunk in dump.chunks:
        layout.add_chunk(S.HDR_SIZE + chunk.start, chunk)
    if cpu_content(dump) == "all":
        add_cpus(layout, dump)
    layout.add_buffer(S.HDR_SIZE + mem_size, S.end_marker(end_marker_tod(dump)))
    layout.set_size(S.HDR_SIZE + mem_size + S.END_MARKER_SIZE)
    return layout
