"""Capture end to end on disk images and (as root) loop devices: the partition holds the
vmcore byte for byte, the superblock checksum is right, refusals write nothing."""

from __future__ import annotations


import os

import pytest
from conftest import MIB, needs_root, needs_sfdisk, sha256_file, superblock_of

from zfcpdump.cli.main import main
from zfcpdump.disk.cksm import cksm
from zfcpdump.disk.image import create_mbr_image

ENGINES = ["rust", "python"]


def prepared_image(tmp_path, part_size, *, block_size=512, name="disk.img"):
    disk = tmp_path / name
    create_mbr_image(str(disk), part_size + 2 * MIB, [(MIB, part_size)], block_size=block_size)
    args = ["prepare", str(disk), "--partition", "1", "--metadata-only"]
    if block_size != 512:
        args += ["--block-size", str(block_size)]
    assert main(args) == 0
    return disk


def assert_dump_equals(disk, vmcore, size):
    sb = superblock_of(disk)
    assert sha256_file(disk, sb.part_start, size) == sha256_file(vmcore)
    with open(disk, "rb") as f:
        f.seek(sb.part_start)
        first = f.read(4096)
    assert sb.csum == cksm(first)
    assert first.startswith(b"\x7fELF")


@pytest.mark.parametrize("engine", ENGINES)
def test_capture_to_image_matches_vmcore(tmp_path, make_vmcore, capsys, engine):
    vmcore, size = make_vmcore(ranges=[(0, 8 * MIB), (12 * MIB, 4 * MIB + 100)], cpus=2,
                               kernel_image=(MIB, 2 * MIB))
    disk = prepared_image(tmp_path, size + MIB)
    capsys.readouterr()
    assert main(["dump", "-i", str(vmcore), "--engine", engine, str(disk)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "Dump successful"
    assert " partition: " in out and "Writing dump:" in out
    assert_dump_equals(disk, vmcore, size)


def test_engines_write_identical_partitions(tmp_path, make_vmcore):
    vmcore, size = make_vmcore(ranges=[(0, 6 * MIB + 512), (8 * MIB, 3 * MIB)], cpus=64)
    images = []
    # the rust engine's two ways of keeping writes in flight, its two readers (read(),
    # the default for files, and mmap windows), and the Python twin
    for engine, extra in [("rust", []), ("rust", ["--io-engine", "aio", "--buffer-size", "65536"]),
                          ("rust", ["--mmap", "--buffer-size", "65536"]),
                          ("rust", ["--no-mmap"]), ("python", [])]:
        disk = prepared_image(tmp_path, size + 3 * MIB, name=f"{engine}{len(images)}.img")
        assert main(["dump", "-i", str(vmcore), "--engine", engine, *extra, str(disk)]) == 0
        images.append(sha256_file(disk))
    assert len(set(images)) == 1, images


@pytest.mark.parametrize("engine", ENGINES)
def test_hsa_ranges_first_and_released(tmp_path, make_vmcore, capsys, engine):
    vmcore, size = make_vmcore(ranges=[(0, 8 * MIB), (16 * MIB, 4 * MIB)])
    disk = prepared_image(tmp_path, size + MIB)
    zcore = tmp_path / "zcore"
    zcore.mkdir()
    (zcore / "hsa").write_text("2ffff0\n")
    assert main(["dump", "-i", str(vmcore), "--engine", engine, "--zcore-dir", str(zcore),
                 str(disk)]) == 0
    assert (zcore / "hsa").read_text() == "0"
    assert_dump_equals(disk, vmcore, size)


def test_busy_marker_checksum_matches_spec_example():
    busy = b"zfcpdump busy\0" + bytes(4082)
    assert cksm(busy) == 0x8A729CCC


def _disk_unchanged(disk, fn):
    before = sha256_file(disk)
    code = fn()
    assert sha256_file(disk) == before
    return code


def test_refuses_too_small_without_writing(tmp_path, make_vmcore, capsys):
    vmcore, size = make_vmcore(ranges=[(0, 8 * MIB)])
    disk = prepared_image(tmp_path, 4 * MIB)
    capsys.readouterr()
    code = _disk_unchanged(disk, lambda: main(["dump", "-i", str(vmcore), str(disk)]))
    captured = capsys.readouterr()
    assert code == 1
    assert "ERROR: Disk too small: dump=8MB (diskspace=4MB)" in captured.err
    assert captured.out.splitlines()[-1] == "Dump failed"


def test_refuses_changed_filesystem(tmp_path, make_vmcore, capsys):
    vmcore, size = make_vmcore(ranges=[(0, 2 * MIB)])
    disk = prepared_image(tmp_path, 4 * MIB)
    with open(disk, "r+b") as f:  # someone made a file system there since
        f.seek(MIB + 1024)
        f.write(b"\x53\xef" * 8)
    code = _disk_unchanged(disk, lambda: main(["dump", "-i", str(vmcore), str(disk)]))
    assert code == 1
    assert "ERROR: Checksum wrong, filesystem changed" in capsys.readouterr().err


def test_refuses_unprepared_disk(tmp_path, make_vmcore, capsys):
    vmcore, _ = make_vmcore(ranges=[(0, MIB)])
    disk = tmp_path / "plain.img"
    create_mbr_image(str(disk), 8 * MIB, [(MIB, 6 * MIB)])
    code = _disk_unchanged(disk, lambda: main(["dump", "-i", str(vmcore), str(disk)]))
    assert code == 1
    assert "ERROR: Boot_Info wrong magic" in capsys.readouterr().err


BAD_ELVES = {
    "not ELF": (lambda b: b"NOPE" + b[4:], "not an ELF file"),
    "32-bit": (lambda b: b[:4] + b"\x01" + b[5:], "Only 64 bit core dump files are supported"),
    "not a core": (lambda b: b[:0x10] + b"\x00\x02" + b[0x12:], "Not an ELF core dump"),
    "truncated": (lambda b: b[:40], "ELF header truncated"),
    "absurd phnum": (lambda b: b[:0x38] + b"\x7f\xff" + b[0x3A:], "beyond the end of the file"),
    "load past end": (None, "extends beyond the end of the file"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ELVES))
def test_bad_elf_refused_before_writing(tmp_path, make_vmcore, capsys, kind):
    vmcore, size = make_vmcore(ranges=[(0, 2 * MIB)])
    disk = prepared_image(tmp_path, 4 * MIB)
    data = vmcore.read_bytes()
    mutate, message = BAD_ELVES[kind]
    if mutate is None:
        data = data[: size - 4096]  # last PT_LOAD now ends past the end of the file
    else:
        data = mutate(data)
    vmcore.write_bytes(data)
    capsys.readouterr()
    code = _disk_unchanged(disk, lambda: main(["dump", "-i", str(vmcore), str(disk)]))
    err = capsys.readouterr().err
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("ERROR:")]) == 1


@needs_root
@needs_sfdisk
@pytest.mark.parametrize("table", ["dos", "gpt"])
@pytest.mark.parametrize("block_size", [512, 4096])
@pytest.mark.parametrize("engine", ENGINES)
def test_capture_on_loop_device(loop_disk, make_vmcore, capsys, table, block_size, engine):
    vmcore, size = make_vmcore(ranges=[(0, 6 * MIB), (8 * MIB, 2 * MIB + 4096)], cpus=3)
    disk = loop_disk(48 * MIB, [(MIB, 10 * MIB), (12 * MIB, 32 * MIB)], table=table,
                     block_size=block_size)
    assert main(["prepare", disk.part(2), "--metadata-only"]) == 0
    capsys.readouterr()
    assert main(["dump", "-i", str(vmcore), "--engine", engine, disk.dev]) == 0
    out = capsys.readouterr().out
    assert f" partition: {disk.part(2)}" in out
    sb = superblock_of(disk.dev)
    assert sb.part_start == 12 * MIB and sb.part_size == 32 * MIB
    assert sha256_file(disk.part(2), 0, size) == sha256_file(vmcore)
    with open(disk.part(2), "rb") as f:
        assert sb.csum == cksm(f.read(4096))
    # partition 1 untouched by prepare/dump: still all zero
    assert sha256_file(disk.part(1)) == sha256_file("/dev/zero", 0, 10 * MIB)


def _core(loads):
    from zfcpdump.readers.elf import ElfCore, ProgramHeader

    phdrs = [ProgramHeader(i, 1, 7, off, paddr, paddr, size, size, 4096)
             for i, (off, paddr, size) in enumerate(loads)]
    return ElfCore("big", 22, 1, 64, phdrs, 0)


def test_copy_table_hsa_first_page0_last():
    from zfcpdump.capture import copy_table

    # Kernel-image LOAD (file 0x2000, paddr 0x100000) repeats part of the identity map;
    # memory LOADs at file 0x102000 (paddr 0) and 0x4102000 (paddr 0x8000000).
    core = _core([(0x2000, 0x100000, 0x100000), (0x102000, 0, 0x4000000),
                  (0x4102000, 0x8000000, 0x1000000)])
    size = 0x5102000
    table = copy_table(core, size, hsa_size=0x2000000)
    hsa = [(e.offset, e.size) for e in table if e.hsa]
    assert hsa == [(0x2000, 0x100000 + 0x2000000)]  # adjacent HSA ranges merged
    assert [(e.offset, e.size, e.hsa) for e in table] == [
        (0x2000, 0x2100000, True), (0x1000, 0x1000, False),
        (0x2102000, size - 0x2102000, False), (0, 4096, False)]
    assert (table[-1].offset, table[-1].size) == (0, 4096)
    covered = sorted((e.offset, e.offset + e.size) for e in table)
    assert covered[0][0] == 0 and covered[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))  # exact, disjoint
    # No HSA: file order, page 0 last.
    plain = copy_table(core, size, hsa_size=0)
    assert [(e.offset, e.size) for e in plain] == [(4096, size - 4096), (0, 4096)]


def test_copy_table_keeps_page0_last_when_a_load_starts_inside_it():
    from zfcpdump.capture import copy_table

    core = _core([(0xAE0, 0, 0x100000)])  # QEMU: PT_LOAD at a non-page-aligned offset
    table = copy_table(core, 0xAE0 + 0x100000, hsa_size=0x80000)
    assert (table[-1].offset, table[-1].size) == (0, 4096)
    assert table[0].hsa and table[0].offset == 4096
    assert all(e.offset >= 4096 for e in table[:-1])


def test_mmap_is_the_default_for_procfs_only(tmp_path):
    """/proc/vmcore (any file on procfs) is read through mmap windows unless told, as
    makedumpfile does (not on s390x); a vmcore file is read with read()."""
    from zfcpdump.engine import default_mmap

    f = tmp_path / "vmcore"
    f.write_bytes(b"x")
    assert default_mmap(str(f)) is False
    assert default_mmap("/proc/self/status") is (os.uname().machine != "s390x")
    assert default_mmap(str(tmp_path / "missing")) is False
