"""What zgetdump learns from an s390x dump's memory after a reader recognised it
(formats.md §10; zgetdump dfi_init): VMCOREINFO through os_info (lowcore 0xE18) or the
older note pointer (0xE0C), utsname through SYMBOL(init_uts_ns), the LIVEDUMP magic at
address 0, and a kdump kernel's crashkernel area inside a stand-alone dump.
"""

from __future__ import annotations

import struct
from typing import Optional

from ..disk.cksm import cksm
from ..errors import ZfcpdumpError
from ..formats.s390_dump import LIVEDUMP_MAGIC
from ..model import Dump, MemChunk, _slice, vmcoreinfo_fields

LC_VMCOREINFO = 0xE0C
LC_OS_INFO = 0xE18
OS_INFO_MAGIC = 0x4F53494E464F535A
OS_INFO_SIZE = 4096
KDUMP_OLDMEM_BASE = 0x10418
KDUMP_OLDMEM_SIZE = 0x10420
UTS_LEN = 65
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
MIB = 1 << 20

SELECT_MESSAGE = (
    'The dump contains "kdump" and "production system"\n'
    '          Access "production system" with "-s prod"\n'
    '          Access "kdump" with "-s kdump"\n'
    '          Access the complete dump with "-s all"\n'
    "          Send both dumps to your service organization"
)


class SelectError(ZfcpdumpError):
    """The -s/--select option does not fit the dump."""


def mem_valid(dump: Dump, addr: int, size: int) -> bool:
    """True if [addr, addr+size) lies inside the dump's chunks (zero chunks count)."""
    pos, end = addr, addr + size
    for chunk in dump.chunks:
        if chunk.start <= pos < chunk.start + chunk.size:
            pos = chunk.start + chunk.size
            if pos >= end:
                return True
    return pos >= end


def read_valid(dump: Dump, addr: int, size: int) -> Optional[bytes]:
    if addr < 0 or not mem_valid(dump, addr, size):
        return None
    return dump.read_phys(addr, size)


def read_u64(dump: Dump, addr: int) -> Optional[int]:
    raw = read_valid(dump, addr, 8)
    return None if raw is None else struct.unpack(">Q", raw)[0]


def virt_to_phys(dump: Dump, addr: int) -> int:
    """A kernel address through the PT_LOAD p_vaddr ranges, when they differ from the
    physical ones (newer kernels); otherwise the address itself."""
    for chunk in dump.chunks:
        if chunk.virt_start is not None and chunk.virt_start != chunk.start:
            if chunk.virt_start <= addr < chunk.virt_start + chunk.size:
                return chunk.start + addr - chunk.virt_start
    for virt, phys, size in dump.virt_aliases:
        if virt <= addr < virt + size:
            return phys + addr - virt
    return addr


def os_info(dump: Dump) -> Optional[bytes]:
    addr = read_u64(dump, LC_OS_INFO)
    if addr is None or addr % 0x1000:
        return None
    page = read_valid(dump, addr, OS_INFO_SIZE)
    if page is None or struct.unpack_from(">Q", page, 0)[0] != OS_INFO_MAGIC:
        return None
    if struct.unpack_from(">I", page, 8)[0] != cksm(page[12:], 0):
        return None
    return page


def vmcoreinfo_from_memory(dump: Dump) -> Optional[bytes]:
    """os_info entry 0 first, then the ELF note at the address stored at 0xE0C."""
    info = os_info(dump)
    addr = size = 0
    if info is not None:
        addr, size = struct.unpack_from(">QQ", info, 0x20)
    if not size:
        note_addr = read_u64(dump, LC_VMCOREINFO)
        if not note_addr:
            return None
        head = read_valid(dump, note_addr, 12)
        if head is None:
            return None
        namesz, descsz, _type = struct.unpack(">III", head)
        if namesz == 0 or namesz > 128:
            return None
        name = read_valid(dump, note_addr + 12, namesz)
        if name is None or name[:11] != b"VMCOREINFO\0":
            return None
        addr, size = note_addr + 24, descsz
    if size > (1 << 20):
        return None
    text = read_valid(dump, addr, size)
    if text is None:
        return None
    return text.split(b"\0")[0]


def vmcoreinfo_value(vmcoreinfo: bytes, key: str) -> Optional[str]:
    return vmcoreinfo_fields(vmcoreinfo).get(key)


def utsname_from_memory(dump: Dump, vmcoreinfo: bytes) -> Optional[dict[str, str]]:
    sym = vmcoreinfo_value(vmcoreinfo, "SYMBOL(init_uts_ns)")
    if sym is None:
        return None
    try:
        addr = virt_to_phys(dump, int(sym, 16))
    except ValueError:
        return None
    buf = read_valid(dump, addr, 1024)
    if buf is None:
        return None
    at = buf.find(b"L", 0, 1024 - UTS_LEN * 6)
    if at < 0 or buf[at : at + 6] != b"Linux\0":
        return None
    fields = {}
    for i, name in enumerate(UTS_FIELDS):
        raw = buf[at + UTS_LEN * i : at + UTS_LEN * (i + 1)]
        fields[name] = raw.split(b"\0")[0].decode("ascii", "replace")
    return fields


def kdump_area(dump: Dump) -> Optional[tuple[int, int]]:
    base = read_u64(dump, KDUMP_OLDMEM_BASE)
    size = read_u64(dump, KDUMP_OLDMEM_SIZE)
    if not base or not size or base % MIB or size % MIB:
        return None
    if not mem_valid(dump, base, size):
        return None
    return base, size


def enrich(dump: Dump, select: Optional[str] = None) -> None:
    """Add what memory tells (s390x dumps only); apply or refuse --select."""
    if dump.arch not in ("s390x", "s390") or not dump.chunks:
        if select:
            raise SelectError('The "--select" option is not possible with this dump')
        return
    area = kdump_area(dump)
    dump.kdump_area = area
    if select and area is None:
        raise SelectError('The "--select" option is not possible with this dump')
    if area is not None and select is None:
        raise SelectError(SELECT_MESSAGE)
    if area is not None and select in ("prod", "kdump"):
        apply_select(dump, area, select)
    found = vmcoreinfo_from_memory(dump)
    if found:
        dump.vmcoreinfo = found
        dump.vmcoreinfo_in_memory = True
        uts = utsname_from_memory(dump, found)
        if uts:
            dump.attrs.utsname = uts
        crash = vmcoreinfo_value(found, "CRASHTIME")
        if crash and crash.isdigit():
            dump.attrs.crash_time = int(crash)
    magic = read_u64(dump, 0)
    dump.attrs.livedump = magic == LIVEDUMP_MAGIC


def apply_select(dump: Dump, area: tuple[int, int], select: str) -> None:
    """prod: the crashkernel area's contents move to [0, size) (what the production
    kernel had there); kdump: only [0, size) stays. CPUs of the dumping kdump kernel
    do not belong to the production system and are dropped for "prod"."""
    base, size = area
    if select == "kdump":
        dump.chunks = _window(dump.chunks, 0, size, 0)
        return
    low = _window(dump.chunks, base, size, -base)
    rest = _cut(dump.chunks, size, base) + _cut(dump.chunks, base + size, 1 << 64)
    dump.chunks = sorted(low + rest, key=lambda c: c.start)
    dump.cpus = []
    dump.cpu_content = "none"


def _window(chunks: list[MemChunk], lo: int, size: int, shift: int) -> list[MemChunk]:
    out = []
    for c in chunks:
        s, e = max(c.start, lo), min(c.start + c.size, lo + size)
        if s < e:
            piece = _slice(c, s - c.start, e - s)
            out.append(MemChunk(piece.start + shift, piece.size, piece.source, piece.virt_start))
    return out


def _cut(chunks: list[MemChunk], lo: int, hi: int) -> list[MemChunk]:
    return _window(chunks, lo, hi - lo, 0) if hi > lo else []
