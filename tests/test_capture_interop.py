"""Independent readers accept what prepare and dump write: s390-tools zgetdump 2.16
(under qemu-user) and libkdumpfile; and the real s390x guest dump survives a capture."""

from __future__ import annotations

import hashlib
import os

import pytest
from conftest import MIB, needs_root, needs_sfdisk, sha256_file
from oracles.kdumpfile import needs_libkdumpfile, probe
from oracles.sample import fixed_sample_elf_path, needs_sample, sample_elf_path
from oracles.zgetdump import needs_zgetdump, run_zgetdump

from zfcpdump.cli.main import main
from zfcpdump.disk.image import create_mbr_image


@needs_root
@needs_sfdisk
@needs_zgetdump
@pytest.mark.parametrize("block_size", [512, 4096])
@pytest.mark.parametrize("table", ["dos", "gpt"])
def test_zgetdump_recognises_prepared_disk_and_captured_dump(loop_disk, make_vmcore, table, block_size):
    disk = loop_disk(80 * MIB, [(MIB, 8 * MIB), (10 * MIB, 64 * MIB)], table=table,
                     block_size=block_size)
    assert main(["prepare", disk.part(2), "--metadata-only"]) == 0
    res = run_zgetdump("-d", disk.dev)
    assert res.returncode == 0, res.stderr
    dump_size = 64 * MIB - 8 * block_size
    assert "Dump tool.........: Single-volume SCSI dump tool" in res.stderr
    assert "Partition number..: 2" in res.stderr
    assert f"Maximum dump size.: {(dump_size + MIB // 2) // MIB} MB" in res.stderr
    # Fresh partition: no dump yet.
    res = run_zgetdump("-i", disk.part(2))
    assert res.returncode == 1 and f'No valid dump found on "{disk.part(2)}"' in res.stderr
    vmcore, size = make_vmcore(ranges=[(0, 16 * MIB), (24 * MIB, 8 * MIB)], cpus=2)
    assert main(["dump", "-i", str(vmcore), disk.dev]) == 0
    res = run_zgetdump("-i", disk.part(2))
    assert res.returncode == 0, res.stderr
    assert "Dump format........: elf" in res.stderr
    assert "CPU count (online).: 2" in res.stderr
    assert "0000000000000000 - 0000000000ffffff (16 MB)" in res.stderr
    assert "0000000001800000 - 0000000001ffffff (8 MB)" in res.stderr
    # The disk is still a valid dump tool after the capture (checksum updated).
    assert run_zgetdump("-d", disk.dev).returncode == 0
    # A stale checksum (first page changed behind our back) is "No dump tool found".
    with open(disk.part(2), "r+b") as f:
        f.seek(100)
        f.write(b"\x01")
    res = run_zgetdump("-d", disk.dev)
    assert res.returncode == 1 and "No dump tool found" in res.stderr


@needs_root
@needs_sfdisk
@needs_zgetdump
def test_busy_partition_is_no_valid_dump(loop_disk, make_vmcore, tmp_path):
    disk = loop_disk(40 * MIB, [(MIB, 32 * MIB)])
    assert main(["prepare", disk.part(1), "--metadata-only"]) == 0
    vmcore, size = make_vmcore(ranges=[(0, 8 * MIB)])
    # The state a capture leaves while it runs or after it failed: the busy marker.
    assert main(["dump", "-i", str(vmcore), disk.dev]) == 0
    with open(disk.part(1), "r+b") as f:
        f.write(b"zfcpdump busy\0")
    res = run_zgetdump("-i", disk.part(1))
    assert res.returncode == 1 and "No valid dump found" in res.stderr


@needs_root
@needs_sfdisk
@needs_libkdumpfile
def test_libkdumpfile_reads_the_captured_partition(loop_disk, make_vmcore):
    disk = loop_disk(48 * MIB, [(MIB, 40 * MIB)], block_size=4096)
    assert main(["prepare", disk.part(1), "--metadata-only"]) == 0
    vmcore, size = make_vmcore(ranges=[(0, 8 * MIB), (12 * MIB, 4 * MIB)], cpus=3,
                               kernel_image=(MIB, MIB))
    assert main(["dump", "-i", str(vmcore), disk.dev]) == 0
    from zfcpdump.synth import page_content

    reads = [[0x5000, 4096], [0x101000, 4096], [0xC01000, 4096], [0xFFF000, 4096]]
    info = probe(disk.part(1), reads)
    assert info.get("format") == "elf", info
    assert info["arch"] == "s390x" and info["cpu_count"] == 3
    for (addr, n), got in zip(reads, info["reads"]):
        assert got["sha256"] == hashlib.sha256(page_content(addr, 1)).hexdigest(), got


@needs_sample
@pytest.mark.parametrize("which", ["qemu", "fixed"])
def test_real_guest_dump_captured_byte_for_byte(tmp_path, which):
    """The QEMU dump (e_phoff 192, PT_LOAD at 0xae0 inside page 0) and its
    /proc/vmcore-like fix-up both land on the partition unchanged."""
    vmcore = sample_elf_path() if which == "qemu" else fixed_sample_elf_path()
    size = os.path.getsize(vmcore)
    disk = tmp_path / "d.img"
    part = (size // MIB + 2) * MIB
    create_mbr_image(str(disk), part + 2 * MIB, [(MIB, part)])
    assert main(["prepare", str(disk), "-p", "1", "--metadata-only"]) == 0
    assert main(["dump", "-i", str(vmcore), "--verify", str(disk)]) == 0
    assert sha256_file(disk, MIB, size) == sha256_file(vmcore)
