"""prepare: what zipl -d writes, zipl's dump_size, and every refusal leaves the disk as
it was."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import MIB, needs_root, needs_sfdisk, sha256_file

from zfcpdump.cli.main import main
from zfcpdump.disk.image import create_mbr_image
from zfcpdump.disk.zipl import BlockPtr, ScsiMbr, Superblock
from zfcpdump.prepare import compute_dump_size


def read_at(path, offset, size):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


@pytest.mark.parametrize("block_size", [512, 4096])
def test_prepare_image_layout(tmp_path, block_size):
    disk = tmp_path / "d.img"
    create_mbr_image(str(disk), 40 * MIB, [(MIB, 32 * MIB)], block_size=block_size)
    with open(disk, "r+b") as f:  # stale bytes where the dump goes
        f.seek(MIB)
        f.write(b"\xaa" * 128 * 1024)
    table_before = read_at(disk, 0x1BE, 66)
    args = ["prepare", str(disk), "-p", "1", "--metadata-only", "--block-size", str(block_size)]
    assert main(args) == 0
    block0 = read_at(disk, 0, 512)
    assert block0[0x1BE:0x200] == table_before  # partition table and 55AA kept
    mbr = ScsiMbr.from_bytes(block0)
    assert block0[:4] == b"zIPL" and block0[0x70:0x74] == b"zIPL"
    assert (mbr.boot_version, mbr.bp_type, mbr.dev_type, mbr.flags) == (1, 1, 2, 1)
    dump_size = (32 * MIB // block_size - 8) * block_size
    assert mbr.superblock_offset == MIB + dump_size + 2 * block_size
    sb = Superblock.from_bytes(read_at(disk, mbr.superblock_offset, 72))
    assert (sb.part_start, sb.part_size, sb.dump_size) == (MIB, 32 * MIB, dump_size)
    assert (sb.dump_offset, sb.csum_offset, sb.csum_size, sb.csum, sb.version) == (0, 0, 4096, 0x12345678, 1)
    assert read_at(disk, MIB, 64 * 1024) == bytes(64 * 1024)
    assert read_at(disk, MIB + 64 * 1024, 16) == b"\xaa" * 16  # only 64 KiB zeroed
    header = read_at(disk, MIB + dump_size, 48)
    assert header.startswith(b"zSeries bootmap file\ncreated by zIPL\n")
    table = read_at(disk, mbr.program_table.blockno * block_size, block_size)
    assert table[:4] == b"zIPL" and mbr.program_table.size == block_size
    script = read_at(disk, BlockPtr.from_bytes(table[16:32]).blockno * block_size, 32)
    assert script[:5] == b"zIPL\x01"


def test_dump_size_uses_zipls_formula():
    # 512-byte blocks: stage 3 alone reserves 0x10000 blocks = 32 MiB.
    kernel, initrd = 5 * MIB + 123, 2 * MIB
    part = 1024 * MIB
    reserved = 0x10000 + (initrd // 512 + 1) + -(-(kernel - 0x10000) // 512) + 2 + 8
    assert compute_dump_size(part, 512, kernel, initrd) == part - reserved * 512
    reserved4k = 0x10000 + -(-(kernel - 0x10000) // 4096) + 1 + 8
    assert compute_dump_size(part, 4096, kernel, None) == part - reserved4k * 4096


def test_prepare_with_kernel_image(tmp_path, capsys):
    disk = tmp_path / "d.img"
    create_mbr_image(str(disk), 100 * MIB, [(MIB, 96 * MIB)])
    image = tmp_path / "zfcpdump-image"
    image.write_bytes(os.urandom(3 * MIB))
    assert main(["prepare", str(disk), "-p", "1", "--image", str(image)]) == 0
    expected = compute_dump_size(96 * MIB, 512, 3 * MIB, None)
    assert f"Maximum dump size: {expected} bytes" in capsys.readouterr().out


def _unchanged(path, argv):
    before = sha256_file(path)
    code = main(argv)
    assert sha256_file(path) == before
    return code


def test_refusals_leave_the_image_untouched(tmp_path, capsys):
    disk = tmp_path / "d.img"
    create_mbr_image(str(disk), 8 * MIB, [(MIB, 6 * MIB)])
    cases = [
        (["prepare", str(disk), "--metadata-only"], "is not a partition"),
        (["prepare", str(disk), "-p", "3", "--metadata-only"], "No partition 3"),
        (["prepare", str(disk), "-p", "1", "--image", str(tmp_path / "nope")],
         f"Need external file '{tmp_path / 'nope'}' for partition dump"),
    ]
    tiny = tmp_path / "tiny.img"
    create_mbr_image(str(tiny), 2 * MIB, [(MIB, 4096)])
    cases.append((["prepare", str(tiny), "-p", "1", "--metadata-only"], "Partition too small for dump tool"))
    bare = tmp_path / "bare.img"
    bare.write_bytes(bytes(4 * MIB))
    cases.append((["prepare", str(bare), "-p", "1", "--metadata-only"], "Could not read partition table"))
    sun = tmp_path / "sun.img"
    sun.write_bytes(bytes(508) + b"\xda\xbe" + bytes(4 * MIB - 510))
    cases.append((["prepare", str(sun), "-p", "1", "--metadata-only"], "Unsupported SCSI disk layout"))
    # a partition starting at LBA 0: zeroing its first 64 KiB wiped the partition table
    at_zero = tmp_path / "at0.img"
    create_mbr_image(str(at_zero), 8 * MIB, [(0, 6 * MIB)])
    cases.append((["prepare", str(at_zero), "-p", "1", "--metadata-only"],
                  "starts in block 0 of"))
    for argv, message in cases:
        capsys.readouterr()
        path = argv[1]
        assert _unchanged(path, argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert len(err.splitlines()) == 1


def test_existing_dump_needs_force(tmp_path, make_vmcore, capsys):
    vmcore, size = make_vmcore(ranges=[(0, MIB)])
    disk = tmp_path / "d.img"
    create_mbr_image(str(disk), 8 * MIB, [(MIB, 6 * MIB)])
    assert main(["prepare", str(disk), "-p", "1", "--metadata-only"]) == 0
    assert main(["dump", "-i", str(vmcore), str(disk)]) == 0
    capsys.readouterr()
    assert _unchanged(disk, ["prepare", str(disk), "-p", "1", "--metadata-only"]) == 1
    assert "holds a dump; use --force" in capsys.readouterr().err
    assert main(["prepare", str(disk), "-p", "1", "--metadata-only", "--force"]) == 0
    assert read_at(disk, MIB, 4) == bytes(4)


@needs_root
@needs_sfdisk
def test_prepare_refuses_whole_disk_and_mounted_partition(loop_disk, tmp_path, capsys):
    disk = loop_disk(64 * MIB, [(MIB, 40 * MIB)])
    assert _unchanged(disk.dev, ["prepare", disk.dev, "--metadata-only"]) == 1
    assert f"Dump device {disk.dev} is not a partition" in capsys.readouterr().err
    subprocess.run(["mkfs.ext2", "-q", disk.part(1)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", disk.part(1), str(mnt)], check=True)
    # The mounted file system writes its own superblock; prepare's areas are block 0
    # and the end of the partition, which must stay as they were.
    areas = [(0, 4096), (MIB + 40 * MIB - 64 * 1024, 64 * 1024)]
    try:
        before = [sha256_file(disk.image, o, n) for o, n in areas]
        assert main(["prepare", disk.part(1), "--metadata-only"]) == 1
        assert "is mounted on" in capsys.readouterr().err
        assert [sha256_file(disk.image, o, n) for o, n in areas] == before
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@needs_root
@needs_sfdisk
def test_prepare_refuses_partition_held_open_exclusively(loop_disk, capsys):
    disk = loop_disk(64 * MIB, [(MIB, 40 * MIB)])
    holder = os.open(disk.part(1), os.O_RDONLY | os.O_EXCL)
    try:
        before = sha256_file(disk.image)
        assert main(["prepare", disk.part(1), "--metadata-only"]) == 1
        assert "in use by another program" in capsys.readouterr().err
        assert sha256_file(disk.image) == before
    finally:
        os.close(holder)
