"""The classic s390 stand-alone dump format: header, end marker, lowcore save areas,
and s390_ext segment headers (formats.md §11, §12). Shared by readers/s390*.py and
writers/s390.py, as s390-tools' df_s390.h serves both directions. All big-endian."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional

from ..model import S390Regs

MAGIC = 0xA8190173618F23FD
MAGIC_EXT = 0xA8190173618F23FE
HDR_SIZE = 0x1000
PAGE_SIZE = 4096
CPU_MAX = 512
ARCH_S390 = 1
ARCH_S390X = 2
END_MARKER_STR = b"DUMP_END"
END_MARKER_SIZE = 16
LC_VEC_OFFSET = 0x800
LOWCORE_SIZE = 0x2000  # 64-bit lowcore (two pages)
VX_SA_SIZE = 512
LIVEDUMP_MAGIC = 0x4C49564544554D50
ARCH_NAMES = {ARCH_S390: "s390 (32 bit)", ARCH_S390X: "s390x (64 bit)"}

# TOD <-> Unix (formats.md §11.4): 4096 TOD units per microsecond, epoch 1900.
TOD_UNIX_EPOCH = 0x7D91048BCA000000


def tod_to_unix_us(tod: int) -> int:
    """Wraps like zgetdump's u64 arithmetic for TODs before 1970."""
    return ((tod - TOD_UNIX_EPOCH) & 0xFFFFFFFFFFFFFFFF) >> 12


def unix_us_to_tod(us: int) -> int:
    return ((us << 12) + TOD_UNIX_EPOCH) & 0xFFFFFFFFFFFFFFFF


# struct df_s390_hdr up to zlib_entry_size (formats.md §11.2), packed.
_HDR = struct.Struct(">QIIIIQQQIIQQIIIQBHHBI")


@dataclass
class S390Header:
    magic: int = MAGIC
    version: int = 5
    hdr_size: int = HDR_SIZE
    dump_level: int = 4
    page_size: int = PAGE_SIZE
    mem_size: int = 0  # 0x18
    mem_start: int = 0  # 0x20
    mem_end: int = 0  # 0x28
    num_pages: int = 0  # 0x30
    tod: int = 0  # 0x38
    cpu_id: int = 0  # 0x40
    arch: int = ARCH_S390X  # 0x48
    volnr: int = 0  # 0x4C
    build_arch: int = 0  # 0x50
    mem_size_real: int = 0  # 0x54
    mvdump: int = 0  # 0x5C
    cpu_cnt: int = 0  # 0x5D
    real_cpu_cnt: int = 0  # 0x5F
    zlib_version: int = 0  # 0x61
    zlib_entry_size: int = 0  # 0x62
    mvdump_sign: int = 0  # 0x200
    mvdump_zipl_time: int = 0  # 0x208
    lc_vec: list[int] = field(default_factory=list)  # 0x800, cpu_cnt entries used

    def to_bytes(self) -> bytes:
        out = bytearray(HDR_SIZE)
        _HDR.pack_into(
            out, 0, self.magic, self.version, self.hdr_size, self.dump_level, self.page_size,
            self.mem_size, self.mem_start, self.mem_end, self.num_pages, 0, self.tod,
            self.cpu_id, self.arch, self.volnr, self.build_arch, self.mem_size_real,
            self.mvdump, self.cpu_cnt, self.real_cpu_cnt, self.zlib_version,
            self.zlib_entry_size,
        )
        struct.pack_into(">QQ", out, 0x200, self.mvdump_sign, self.mvdump_zipl_time)
        if len(self.lc_vec) > CPU_MAX:
            raise ValueError(f"Too many CPUs in source dump ({len(self.lc_vec)})")
        struct.pack_into(f">{len(self.lc_vec)}I", out, LC_VEC_OFFSET, *self.lc_vec)
        return bytes(out)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "S390Header":
        if len(raw) < HDR_SIZE:
            raise ValueError("s390 dump header truncated")
        v = _HDR.unpack_from(raw, 0)
        hdr = cls(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[10], v[11], v[12],
                  v[13], v[14], v[15], v[16], v[17], v[18], v[19], v[20])
        hdr.mvdump_sign, hdr.mvdump_zipl_time = struct.unpack_from(">QQ", raw, 0x200)
        count = min(hdr.cpu_cnt, CPU_MAX)
        hdr.lc_vec = list(struct.unpack_from(f">{count}I", raw, LC_VEC_OFFSET))
        return hdr


def end_marker(tod: int) -> bytes:
    return END_MARKER_STR + struct.pack(">Q", tod)


def end_marker_valid(raw: bytes, hdr_tod: int) -> bool:
    """zgetdump df_s390_em_verify and libkdumpfile: string matches and em.tod >= hdr.tod."""
    if len(raw) < END_MARKER_SIZE or raw[:8] != END_MARKER_STR:
        return False
    return struct.unpack_from(">Q", raw, 8)[0] >= hdr_tod


def end_marker_tod(raw: bytes) -> int:
    return struct.unpack_from(">Q", raw, 8)[0]


# ---- lowcore save area (formats.md §11.5) -----------------------------------------
LC_CPU_ADDRESS = 0x84
LC_VX_SA_ADDR = 0x11B0
LC_FPRS = 0x1200
LC_GPRS = 0x1280
LC_PSW = 0x1300
LC_PREFIX = 0x1318
LC_FPC = 0x131C
LC_TODPREG = 0x1324
LC_TIMER = 0x1328
LC_TODCMP = 0x1330
LC_ACRS = 0x1340
LC_CTRS = 0x1380


def vx_sa_addr(lowcore: bytes) -> Optional[int]:
    """The vector save area address if valid: non-zero and 1024-aligned."""
    (addr,) = struct.unpack_from(">Q", lowcore, LC_VX_SA_ADDR)
    return addr if addr and addr % 1024 == 0 else None


def regs_from_lowcore(lowcore: bytes, vx_sa: Optional[bytes] = None) -> S390Regs:
    regs = S390Regs()
    regs.fprs = struct.unpack_from(">16Q", lowcore, LC_FPRS)
    regs.gprs = struct.unpack_from(">16Q", lowcore, LC_GPRS)
    regs.psw_mask, regs.psw_addr = struct.unpack_from(">QQ", lowcore, LC_PSW)
    (regs.prefix, regs.fpc) = struct.unpack_from(">II", lowcore, LC_PREFIX)
    (regs.todpreg,) = struct.unpack_from(">I", lowcore, LC_TODPREG)
    regs.timer, regs.todcmp = struct.unpack_from(">QQ", lowcore, LC_TIMER)
    regs.acrs = struct.unpack_from(">16I", lowcore, LC_ACRS)
    regs.ctrs = struct.unpack_from(">16Q", lowcore, LC_CTRS)
    if vx_sa is not None and len(vx_sa) >= VX_SA_SIZE:
        regs.vxrs_low = b"".join(vx_sa[16 * i + 8 : 16 * i + 16] for i in range(16))
        regs.vxrs_high = bytes(vx_sa[256:512])
    return regs


def regs_into_lowcore(lowcore: bytearray, regs: S390Regs) -> None:
    """Overlay a CPU's registers on its 8 KiB lowcore (what store status saves)."""
    struct.pack_into(">16Q", lowcore, LC_FPRS, *regs.fprs)
    struct.pack_into(">16Q", lowcore, LC_GPRS, *regs.gprs)
    struct.pack_into(">QQ", lowcore, LC_PSW, regs.psw_mask, regs.psw_addr)
    struct.pack_into(">II", lowcore, LC_PREFIX, regs.prefix, regs.fpc)
    struct.pack_into(">I", lowcore, LC_TODPREG, regs.todpreg)
    struct.pack_into(">QQ", lowcore, LC_TIMER, regs.timer, regs.todcmp)
    struct.pack_into(">16I", lowcore, LC_ACRS, *regs.acrs)
    struct.pack_into(">16Q", lowcore, LC_CTRS, *regs.ctrs)


def vx_save_area(regs: S390Regs) -> bytes:
    """V0-V15 (FPR as the high half, VXRS_LOW as the low half), then V16-V31."""
    low = regs.vxrs_low or bytes(128)
    out = bytearray()
    for i in range(16):
        out += struct.pack(">Q", regs.fprs[i]) + low[8 * i : 8 * i + 8]
    out += (regs.vxrs_high or bytes(256))[:256]
    return bytes(out)


# ---- s390_ext dump segments (formats.md §12) --------------------------------------
SEGMENT_HDR_SIZE = 4096


@dataclass(frozen=True)
class SegmentHeader:
    start: int
    length: int
    stop_marker: int
    size_on_disk: int
    entry_offsets: tuple[int, ...]

    @classmethod
    def from_bytes(cls, raw: bytes) -> "SegmentHeader":
        start, length, stop, size_on_disk = struct.unpack_from(">QQQI", raw, 0)
        (count,) = struct.unpack_from(">I", raw, 0x30)
        count = min(count, (len(raw) - 0x34) // 4)
        entries = struct.unpack_from(f">{count}I", raw, 0x34)
        return cls(start, length, stop, size_on_disk, entries)
