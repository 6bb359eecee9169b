"""-d on a prepared SCSI dump disk (ours and zgetdump 2.16 agree), and reading a dump
inside a partition: as IMAGE:N and through a loop device's partition node (root)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from oracles.zgetdump import needs_zgetdump, run_zgetdump
from test_readback_support import file_sha, make_vmcore
from zfcpdump.disk.cksm import cksm
from zfcpdump.disk.image import create_mbr_image
from zfcpdump.disk.zipl import CSUM_SEED, ScsiMbr, Superblock
from zfcpdump.disk.target import partition_for_prepare
from zfcpdump.info import device_info
from zfcpdump.prepare import prepare
from zfcpdump.readers import open_dump

MIB = 1 << 20
needs_root_loop = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("losetup") is None, reason="needs root and losetup")


@pytest.fixture()
def disk(tmp_path):
    img = str(tmp_path / "disk.img")
    create_mbr_image(img, 64 * MIB, [(1 * MIB, 60 * MIB)])
    prepare(partition_for_prepare(img, 1, None), None, None, log=lambda s: None)
    vmcore = make_vmcore(str(tmp_path / "vmcore"), cpus=2, ranges=[(0, 8 << 20)])
    with open(vmcore, "rb") as src, open(img, "r+b") as dst:
        dst.seek(1 * MIB)
        dst.write(src.read())
    _update_checksum(img)  # as the capture does at its end
    return img, vmcore


def _update_checksum(img: str) -> None:
    fd = os.open(img, os.O_RDWR)
    try:
        mbr = ScsiMbr.from_bytes(os.pread(fd, 512, 0))
        sb = Superblock.from_bytes(os.pread(fd, 72, mbr.superblock_offset))
        area = os.pread(fd, sb.csum_size, sb.part_start + sb.csum_offset)
        os.pwrite(fd, sb.with_csum(cksm(area, CSUM_SEED)).to_bytes(), mbr.superblock_offset)
    finally:
        os.close(fd)


def test_device_info_on_image(disk):
    info = device_info(disk[0], allow_image=True)
    assert info.partition == 1
    assert info.lines()[1] == "  Dump tool.........: Single-volume SCSI dump tool"


def test_image_partition_syntax(disk):
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("reading inside an image uses a loop device: needs root and losetup")
    img, vmcore = disk
    with open_dump(f"{img}:1") as a, open_dump(vmcore) as b:
        assert a.format == "elf" and len(a.cpus) == 2
        assert a.read_phys(0, 8 << 20) == b.read_phys(0, 8 << 20)


@needs_root_loop
@needs_zgetdump
@pytest.mark.root
@pytest.mark.zgetdump
def test_device_info_matches_zgetdump(disk, tmp_path):
    img, vmcore = disk
    loop = subprocess.run(["losetup", "-f", "--show", "-P", img], capture_output=True,
                          text=True, check=True).stdout.strip()
    try:
        subprocess.run(["partx", "-u", loop], capture_output=True)
        theirs = run_zgetdump("-d", loop)
        assert theirs.returncode == 0, theirs.stderr
        assert theirs.stderr.splitlines() == device_info(loop).lines()
        part = loop + "p1"
        ours = str(tmp_path / "from-part.elf")
        with open_dump(part) as d:
            from zfcpdump import api
            api.write_dump(d, ours, "elf")
        z = str(tmp_path / "zg.elf")
        with open(z, "wb") as f:
            assert run_zgetdump(part, stdout=f).returncode == 0
        assert file_sha(ours) == file_sha(z)
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True)
