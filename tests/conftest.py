"""Shared fixtures: synthetic vmcores, disk images, loop devices (root only)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from oracles... import ...`

from zfcpdump.synth import SynthSpec, write_vmcore  # noqa: E402

MIB = 1 << 20
IS_ROOT = os.geteuid() == 0
HAVE_LOSETUP = shutil.which("losetup") is not None and os.path.exists("/dev/loop-control")
needs_root = pytest.mark.skipif(not (IS_ROOT and HAVE_LOSETUP),
                                reason="needs root and loop devices (losetup, /dev/loop-control)")
needs_sfdisk = pytest.mark.skipif(shutil.which("sfdisk") is None or shutil.which("sgdisk") is None,
                                  reason="needs sfdisk and sgdisk (Debian fdisk, gdisk)")


def sha256_file(path, offset=0, size=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = size
        while left is None or left > 0:
            chunk = f.read(4 * MIB if left is None else min(4 * MIB, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


@pytest.fixture
def make_vmcore(tmp_path):
    def make(name="vmcore.elf", **kw) -> tuple[Path, int]:
        path = tmp_path / name
        size = write_vmcore(str(path), SynthSpec(**kw))
        return path, size

    return make


def write_partition_table(target, parts: list[tuple[int, int]], *, table="dos",
                          block_size=512) -> None:
    """A real partition table written by sfdisk (dos or gpt) on an image file (512-byte
    sectors) or a block device (its own logical block size)."""
    lines = [f"label: {table}"]
    for start, length in parts:
        lines.append(f"start={start // block_size}, size={length // block_size}, type="
                     + ("0FC63DAF-8483-4772-8E79-3D69D8477DE4" if table == "gpt" else "83"))
    subprocess.run(["sfdisk", "-q", str(target)], input="\n".join(lines) + "\n", text=True,
                   check=True, capture_output=True)


class LoopDisk:
    def __init__(self, image: Path, block_size: int):
        self.image = image
        self.block_size = block_size
        out = subprocess.run(["losetup", "-f", "--show", "-P", "-b", str(block_size), str(image)],
                             check=True, capture_output=True, text=True)
        self.dev = out.stdout.strip()

    def wait_for_partitions(self) -> None:
        subprocess.run(["partx", "-u", self.dev], capture_output=True)
        for _ in range(50):
            if os.path.exists(self.part(1)):
                break
            time.sleep(0.1)
            subprocess.run(["partx", "-a", self.dev], capture_output=True)

    def part(self, n: int) -> str:
        return f"{self.dev}p{n}"

    def detach(self) -> None:
        subprocess.run(["losetup", "-d", self.dev], capture_output=True)


@pytest.fixture
def loop_disk(tmp_path):
    """make(size, parts, table='dos'|'gpt', block_size=512|4096) -> LoopDisk."""
    disks: list[LoopDisk] = []

    def make(size, parts, table="dos", block_size=512, name="disk.img") -> LoopDisk:
        image = tmp_path / name
        with open(image, "wb") as f:
            f.truncate(size)
        disk = LoopDisk(image, block_size)
        disks.append(disk)
        write_partition_table(disk.dev, parts, table=table, block_size=block_size)
        disk.wait_for_partitions()
        return disk

    yield make
    for d in disks:
        d.detach()


def sparse_vmcore(path, mem_size: int) -> int:
    """A valid s390x core with one PT_LOAD of `mem_size` zero bytes, as a sparse file
    (cheap to make at any size; for interruption and speed tests)."""
    import struct

    note_off, data_off = 4096, 8192
    ehdr = (b"\x7fELF" + bytes([2, 2, 1, 0]) + bytes(8)
            + struct.pack(">HHIQQQIHHHHHH", 4, 22, 1, 0, 64, 0, 0, 64, 56, 2, 0, 0, 0))
    phdrs = (struct.pack(">IIQQQQQQ", 4, 0, note_off, 0, 0, 0, 0, 4)
             + struct.pack(">IIQQQQQQ", 1, 7, data_off, 0, 0, mem_size, mem_size, 4096))
    with open(path, "wb") as f:
        f.write(ehdr + phdrs)
        f.truncate(data_off + mem_size)
    return data_off + mem_size


def superblock_of(disk):
    """The dump superblock that block 0 of `disk` (image or device) points to."""
    from zfcpdump.disk.zipl import ScsiMbr, Superblock

    with open(disk, "rb") as f:
        mbr = ScsiMbr.from_bytes(f.read(152))
        f.seek(mbr.superblock_offset)
        return Superblock.from_bytes(f.read(72))


def dump_state(disk):
    """(first 4 KiB of the dump area, superblock): what decides whether a dump looks valid."""
    sb = superblock_of(disk)
    with open(disk, "rb") as f:
        f.seek(sb.part_start)
        return f.read(4096), sb
