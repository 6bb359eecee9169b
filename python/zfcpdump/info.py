"""zgetdump's `-i` dump info (behaviour.md §6.3) as text and as a JSON-ready dict,
and `-d` device info (§6.4) from the zipl structures on a SCSI dump disk."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional

from .disk import device
from .disk.cksm import cksm
from .disk.partitions import detect_image_block_size, read_partitions
from .disk.zipl import (BP_TYPE_DUMP, CSUM_SEED, DEV_TYPE_SCSI, SUPERBLOCK_MAGIC, ZIPL_MAGIC,
                        ScsiMbr, Superblock, find_dump_script)
from .errors import DiskRefused, ZfcpdumpError
from .formats.s390_dump import tod_to_unix_us
from .model import Dump, MemChunk
from .progress import mib
from .readers import INCOMPLETE
from .writers import cpu_content

TIME_FMT = "%a, %d %b %Y %H:%M:%S %z"
ARCH_STR = {"s390x": "s390x (64 bit)", "s390": "s390 (32 bit)"}


def tod_text(tod: int) -> str:
    return time.strftime(TIME_FMT, time.localtime(tod_to_unix_us(tod) // 1_000_000))


def _tod_shown(tod: Optional[int]) -> bool:
    """zgetdump drops times whose tv_sec is 0."""
    return bool(tod) and tod_to_unix_us(tod or 0) // 1_000_000 != 0


def uts_known(dump: Dump) -> bool:
    return any(k in dump.attrs.utsname for k in ("sysname", "nodename", "version"))


def mem_range(dump: Dump) -> int:
    return dump.mem_end - dump.mem_start + 1 if dump.chunks else 0


def memory_map(chunks: list[MemChunk], verbose: int) -> list[str]:
    """Normal form: adjacent chunks merged. -V: one line per chunk, ` zeroes` marked."""
    rows: list[tuple[int, int, bool]] = []
    for c in chunks:
        if not verbose and rows and rows[-1][1] + 1 == c.start:
            rows[-1] = (rows[-1][0], c.end, False)
        else:
            rows.append((c.start, c.end, c.is_zero))
    return [f"  {s:016x} - {e:016x} ({mib(e - s + 1)} MB)" + (" zeroes" if verbose and z else "")
            for s, e, z in rows]


def info_lines(dump: Dump, verbose: int = 0) -> list[str]:
    a = dump.attrs
    out = ["General dump info:", f"  Dump format........: {dump.format}"]
    if dump.version:
        out.append(f"  Version............: {dump.version}")
    if _tod_shown(a.time_created):
        out.append(f"  Dump created.......: {tod_text(a.time_created or 0)}")
    if _tod_shown(a.time_ended):
        out.append(f"  Dump ended.........: {tod_text(a.time_ended or 0)}")
    if a.livedump:
        out.append("  Dump method........: live")
    if a.cpu_id:
        out.append(f"  Dump CPU ID........: {a.cpu_id:x}")
    if uts_known(dump):
        out.append(f"  UTS node name......: {a.utsname.get('nodename', '')}")
        out.append(f"  UTS kernel release.: {a.utsname.get('release', '')}")
        out.append(f"  UTS kernel version.: {a.utsname.get('version', '')}")
    if a.volume is not None:
        out.append(f"  Volume number......: {a.volume}")
    if a.build_arch:
        out.append(f"  Build arch.........: {a.build_arch}")
    out.append(f"  System arch........: {ARCH_STR.get(dump.arch, dump.arch)}")
    if dump.cpus:
        out.append(f"  CPU count (online).: {len(dump.cpus)}")
    if a.real_cpu_count:
        out.append(f"  CPU count (real)...: {a.real_cpu_count}")
    if mem_range(dump):
        out.append(f"  Dump memory range..: {mib(mem_range(dump))} MB")
    if a.mem_size_real:
        out.append(f"  Real memory range..: {mib(a.mem_size_real)} MB")
    if a.dump_level is not None:
        out.append(f"  Dump level.........: {a.dump_level}")
    if a.excluded_pages:
        out.append(f"  Excluded pages.....: {a.excluded_pages} ({mib(a.excluded_pages * dump.page_size)}"
                   " MB, filtered at capture; they read as zeroes)")
    if a.file_size and dump.format == "s390_ext":
        out.append(f"  Dump file size.....: {mib(a.file_size)} MB")
    if mem_range(dump):
        out += ["", "Memory map:"] + memory_map(dump.chunks, verbose)
    return out


def incomplete_lines(partial: Optional[Dump], verbose: int = 0) -> list[str]:
    """The partial block, a blank line, and upstream's verdict (behaviour.md §6.2)."""
    head = info_lines(partial, verbose) if partial is not None else []
    return head + ["", INCOMPLETE]


def info_dict(dump: Dump) -> dict[str, Any]:
    a = dump.attrs

    def when(tod: Optional[int]) -> Optional[dict[str, Any]]:
        if not _tod_shown(tod):
            return None
        us = tod_to_unix_us(tod or 0)
        return {"tod": tod, "unix": us / 1e6, "text": tod_text(tod or 0)}

    cpus = []
    for i, cpu in enumerate(dump.cpus):
        entry: dict[str, Any] = {"index": i, "prefix": cpu.prefix}
        r = cpu.s390
        if r is not None and cpu_content(dump) == "all":
            entry.update(psw=[r.psw_mask, r.psw_addr], gprs=list(r.gprs), acrs=list(r.acrs),
                         fpc=r.fpc, fprs=list(r.fprs), ctrs=list(r.ctrs), timer=r.timer,
                         todcmp=r.todcmp, todpreg=r.todpreg,
                         vector=r.vxrs_low is not None)
        cpus.append(entry)
    return {
        "format": dump.format,
        "version": dump.version or None,
        "arch": dump.arch,
        "byteorder": dump.byteorder,
        "page_size": dump.page_size,
        "created": when(a.time_created),
        "ended": when(a.time_ended),
        "dump_method": "live" if a.livedump else None,
        "cpu_id": a.cpu_id,
        "utsname": dict(a.utsname),
        "build_arch": a.build_arch,
        "cpu_count": len(dump.cpus),
        "cpu_count_real": a.real_cpu_count,
        "cpu_content": cpu_content(dump),
        "cpus": cpus,
        "memory_range_bytes": mem_range(dump),
        "memory_size_real": a.mem_size_real,
        "memory": [{"start": c.start, "end": c.end, "size": c.size, "zero": c.is_zero}
                   for c in dump.chunks],
        "vmcoreinfo": (dump.vmcoreinfo or b"").decode("ascii", "replace") or None,
        "crash_time": a.crash_time,
    }


# ---- -d: the dump tool on a SCSI disk ----------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    superblock: Superblock
    partition: Optional[int]

    def lines(self) -> list[str]:
        part = str(self.partition) if self.partition is not None else "unknown"
        return [
            "Dump device info:",
            "  Dump tool.........: Single-volume SCSI dump tool",
            f"  Version...........: {self.superblock.version}",
            "  Architecture......: s390x (64 bit)",
            "",
            "Partition info:",
            f"  Partition number..: {part}",
            f"  Maximum dump size.: {mib(self.superblock.dump_size)} MB",
        ]


BLOCK_DEVICE_REQUIRED = ("Please specify DASD, SCSI or NVMe device node"
                         "(e.g. /dev/dasdd, /dev/sda or /dev/nvme0n1 )")


def device_info(path: str, allow_image: bool = False) -> DeviceInfo:
    """zgetdump -d: a whole disk with zipl's SCSI dump tool, checked in zgetdump's order."""
    block = device.is_block_device(path)
    if not block and not (allow_image and os.path.isfile(path)):
        raise ZfcpdumpError(BLOCK_DEVICE_REQUIRED)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ZfcpdumpError(f'Open of "{path}" failed ({exc.strerror})') from None
    try:
        bs = device.logical_block_size(fd) if block else (detect_image_block_size(fd) or 512)
        sb = _find_tool(fd, bs)
        if sb is None:
            raise ZfcpdumpError(f'No dump tool found on "{path}"')
        return DeviceInfo(sb, _partition_number(path, fd, bs, sb, block))
    finally:
        os.close(fd)


def _find_tool(fd: int, bs: int) -> Optional[Superblock]:
    mbr_raw = os.pread(fd, bs, 0)
    try:
        mbr = ScsiMbr.from_bytes(mbr_raw)
    except DiskRefused:
        return None
    if mbr.magic != ZIPL_MAGIC:
        return None
    table = os.pread(fd, bs, mbr.program_table.blockno * bs)
    if not find_dump_script(table, lambda n: os.pread(fd, bs, n * bs)):
        return None
    if mbr.boot_magic != ZIPL_MAGIC or mbr.dev_type != DEV_TYPE_SCSI or mbr.bp_type != BP_TYPE_DUMP:
        return None
    try:
        sb = Superblock.from_bytes(os.pread(fd, 72, mbr.superblock_offset))
    except DiskRefused:
        return None
    if sb.magic != SUPERBLOCK_MAGIC:
        return None
    area = os.pread(fd, sb.csum_size, sb.part_start + sb.csum_offset)
    if len(area) != sb.csum_size or cksm(area, CSUM_SEED) != sb.csum:
        return None
    return sb


def _partition_number(path: str, fd: int, bs: int, sb: Superblock, block: bool) -> Optional[int]:
    try:
        if block:
            parts = [(p.number, p.start, p.size) for p in device.disk_partitions(path)]
        else:
            parts = [(p.number, p.start, p.size)
                     for p in read_partitions(fd, bs, device.size_of(fd))]
    except (OSError, DiskRefused):
        return None
    for number, start, size in parts:
        if start == sb.part_start and size == sb.part_size:
            return number
    return None


def dump_info_text(dump: Dump, verbose: int = 0) -> str:
    """The `-i` block as one string (used by `zfcpdump demo`)."""
    return "\n".join(info_lines(dump, verbose)) + "\n"
