"""Shared fixtures' helpers for the read-back tests (no tests here).

Synthetic s390x vmcores from zfcpdump.synth, optionally with a VMCOREINFO reachable
through os_info (lowcore 0xE18), an init_uts_ns, and a vector save area pointer in each
CPU's lowcore, so that what zgetdump finds in memory is exercised too."""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Optional

from zfcpdump.disk.cksm import cksm
from zfcpdump.readers.elf import parse_elf_core
from zfcpdump.synth import SynthSpec, cpu_regs, write_vmcore

OS_INFO_ADDR = 0x5000
VMCI_ADDR = 0x6000
UTS_ADDR = 0x7100
VX_SA_BASE = 0x9000  # CPU i's vector save area at VX_SA_BASE + 0x400 * i


def poke(path: str, paddr: int, data: bytes) -> None:
    """Write `data` into the memory of an ELF core at physical `paddr`."""
    fd = os.open(path, os.O_RDWR)
    try:
        core = parse_elf_core(fd, os.fstat(fd).st_size)
        for ph in core.loads:
            if ph.paddr <= paddr and paddr + len(data) <= ph.paddr + ph.filesz:
                os.pwrite(fd, data, ph.offset + paddr - ph.paddr)
                return
        raise ValueError(f"0x{paddr:x} not in a PT_LOAD")
    finally:
        os.close(fd)


def uts_block() -> bytes:
    fields = [b"Linux", b"synthnode", b"6.1.0-synthetic", b"#1 SMP Debian 6.1.0", b"s390x", b"(none)"]
    return b"".join(f + bytes(65 - len(f)) for f in fields)


def add_os_info(path: str, livedump: bool = False) -> bytes:
    """Put VMCOREINFO (with SYMBOL(init_uts_ns)) and os_info into memory; returns the text."""
    text = (f"OSRELEASE=6.1.0-synthetic\nPAGESIZE=4096\nSYMBOL(init_uts_ns)={UTS_ADDR - 4:x}\n"
            "CRASHTIME=1735689600\n").encode()
    poke(path, VMCI_ADDR, text)
    poke(path, UTS_ADDR - 4, b"\0\0\0\1" + uts_block())
    page = bytearray(4096)
    struct.pack_into(">Q", page, 0, 0x4F53494E464F535A)
    struct.pack_into(">HH", page, 0x0C, 1, 1)
    struct.pack_into(">QQI", page, 0x20, VMCI_ADDR, len(text), cksm(text, 0))
    struct.pack_into(">I", page, 8, cksm(bytes(page[12:]), 0))
    poke(path, OS_INFO_ADDR, bytes(page))
    poke(path, 0xE18, struct.pack(">Q", OS_INFO_ADDR))
    poke(path, 0xE0C, struct.pack(">Q", 0))
    if livedump:
        poke(path, 0, b"LIVEDUMP")
    return text


def add_vx_pointers(path: str, cpus: int) -> None:
    for i in range(cpus):
        prefix = cpu_regs(i).prefix
        poke(path, prefix + 0x11B0, struct.pack(">Q", VX_SA_BASE + 0x400 * i))


def make_vmcore(path: str, *, cpus: int = 2, ranges=None, vmcoreinfo_note: bool = False,
                os_info: bool = False, vx: bool = False, livedump: bool = False) -> str:
    spec = SynthSpec(ranges=ranges or [(0, 8 << 20)], cpus=cpus, vmcoreinfo=vmcoreinfo_note)
    write_vmcore(path, spec)
    if os_info:
        add_os_info(path, livedump)
    if vx:
        add_vx_pointers(path, cpus)
    return path


def sha_phys(dump, start: int, size: int, block: int = 4 << 20) -> str:
    h = hashlib.sha256()
    pos = start
    while pos < start + size:
        n = min(block, start + size - pos)
        h.update(dump.read_phys(pos, n))
        pos += n
    return h.hexdigest()


def reg_tuple(regs, with_vx: bool = True, with_orig: bool = False):
    t = (regs.psw_mask, regs.psw_addr, regs.gprs, regs.acrs, regs.fpc, regs.fprs,
         regs.timer, regs.todcmp, regs.todpreg, regs.ctrs, regs.prefix)
    if with_vx:
        t += (regs.vxrs_low, regs.vxrs_high)
    if with_orig:
        t += (regs.orig_gpr2,)
    return t


def file_sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def diff_offsets(a: str, b: str, limit: int = 1000) -> Optional[list[int]]:
    """Offsets where two files differ (None if sizes differ)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return None
    out: list[int] = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        base = 0
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if not x:
                return out
            if x != y:
                out += [base + i for i in range(len(x)) if x[i] != y[i]][: limit - len(out)]
            base += len(x)
