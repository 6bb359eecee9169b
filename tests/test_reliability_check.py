"""The wrong disk, concurrent captures, `check` and --meta, and regressions found by
fuzzing (issue #5)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MIB, needs_root, needs_sfdisk, sha256_file, sparse_vmcore
from faults.fuzz_targets import run_one

from zfcpdump.cli.main import main
from zfcpdump.disk.image import create_mbr_image

CORPUS = Path(__file__).parent / "corpus"


def prepared(tmp_path, part_size, name="d.img"):
    disk = tmp_path / name
    create_mbr_image(str(disk), part_size + 2 * MIB, [(MIB, part_size)])
    assert main(["prepare", str(disk), "-p", "1", "--metadata-only"]) == 0
    return disk


# -- regressions found by the fuzzers (files we do not own) ----------------------------

def test_gpt_entry_size_is_bounded():
    """Regression (atheris): entry_size from the GPT header once drove a terabyte read."""
    run_one("partitions", (CORPUS / "regressions" / "partitions-gpt-entry-size-memoryerror").read_bytes())


def test_truncated_gpt_header_is_refused():
    """Regression (atheris, CI): a GPT header cut off by the end of the disk."""
    run_one("partitions", (CORPUS / "regressions" / "partitions-gpt-header-truncated").read_bytes())


def test_kdump_offsets_beyond_the_file_are_damage():
    """Regression (atheris): a kdump header whose VMCOREINFO offset overflows pread."""
    run_one("open_dump", (CORPUS / "regressions" / "open_dump-kdump-offset-overflow").read_bytes())


def test_prepare_small_partition_is_usable_or_refused(tmp_path):
    """Regression: zeroing 64 KiB once wiped the superblock of a tiny partition."""
    img = tmp_path / "small.img"
    create_mbr_image(str(img), 128 << 10, [(32 << 10, 64 << 10)])
    if main(["prepare", str(img), "-p", "1", "--metadata-only"]) != 0:
        return  # refused: fine
    core = tmp_path / "tiny.elf"
    sparse_vmcore(core, 4096)
    assert main(["dump", "-i", str(core), str(img)]) == 0


# -- check and --meta --------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["rust", "python"])
def test_check_and_meta_after_a_smaller_dump_over_a_larger_one(tmp_path, make_vmcore, engine, capsys):
    disk = prepared(tmp_path, 24 * MIB)
    big, _ = make_vmcore("big.elf", ranges=[(0, 16 * MIB)], cpus=2)
    small, ssize = make_vmcore("small.elf", ranges=[(0, 4 * MIB)], cpus=1)
    meta = tmp_path / "ngdump.meta"
    assert main(["dump", "-i", str(big), "--engine", engine, str(disk)]) == 0
    # the stale tail of the larger dump must not confuse --verify or check
    assert main(["dump", "-i", str(small), "--engine", engine, "--verify", "--meta", str(meta),
                 str(disk)]) == 0
    text = meta.read_text()
    assert text.startswith("version=1\n") and f"sha256sum={sha256_file(small)}" in text
    capsys.readouterr()
    assert main(["check", str(disk), "--meta", str(meta)]) == 0
    out = capsys.readouterr().out
    assert "matches the meta file" in out and out.splitlines()[-1] == "Dump valid"
    # a single flipped byte anywhere in the dump: check --meta fails
    for off in (4096 + 17, ssize // 2, ssize - 1):
        with open(disk, "r+b") as f:
            f.seek(MIB + off)
            b = f.read(1)
            f.seek(MIB + off)
            f.write(bytes([b[0] ^ 0x01]))
        assert main(["check", str(disk), "--meta", str(meta)]) == 1
        assert "Content check failed" in capsys.readouterr().err
        with open(disk, "r+b") as f:
            f.seek(MIB + off)
            f.write(b)
    assert main(["check", str(disk), "--meta", str(meta)]) == 0


def test_check_refuses_busy_fresh_and_bad_headers(tmp_path, make_vmcore, capsys):
    disk = prepared(tmp_path, 8 * MIB)
    assert main(["check", str(disk)]) == 1
    assert "freshly prepared" in capsys.readouterr().err
    core, _ = make_vmcore(ranges=[(0, 2 * MIB)])
    assert main(["dump", "-i", str(core), str(disk)]) == 0
    assert main(["check", str(disk)]) == 0
    # a PT_LOAD beyond dump_size (headers rewritten, checksum fixed so only check sees it)
    import struct

    from zfcpdump.disk.cksm import cksm
    from zfcpdump.disk.zipl import ScsiMbr, Superblock
    with open(disk, "r+b") as f:
        page = bytearray(f.read(MIB + 4096)[MIB:])
        phoff = struct.unpack_from(">Q", page, 0x20)[0]
        phnum = struct.unpack_from(">H", page, 0x38)[0]
        for i in range(phnum):
            if struct.unpack_from(">I", page, phoff + 56 * i)[0] == 1:
                struct.pack_into(">Q", page, phoff + 56 * i + 8, 64 * MIB)
                break
        f.seek(MIB)
        f.write(page)
        f.seek(0)
        mbr = ScsiMbr.from_bytes(f.read(152))
        f.seek(mbr.superblock_offset)
        sb = Superblock.from_bytes(f.read(72))
        f.seek(mbr.superblock_offset)
        f.write(sb.with_csum(cksm(bytes(page))).to_bytes())
    capsys.readouterr()
    assert main(["check", str(disk)]) == 1
    assert "beyond the end" in capsys.readouterr().err
    bad = tmp_path / "bad.meta"
    bad.write_text("version=2\n")
    assert main(["check", str(disk), "--meta", str(bad)]) == 1


# -- the wrong disk ------------------------------------------------------------------------

def test_dump_has_no_force_and_prepare_force_keeps_the_size_check(tmp_path, capsys):
    disk = tmp_path / "d.img"
    create_mbr_image(str(disk), 2 * MIB, [(MIB, 4096)])
    before = sha256_file(disk)
    assert main(["dump", "--force", str(disk)]) == 2
    assert main(["prepare", str(disk), "-p", "1", "--metadata-only", "--force"]) == 1
    assert "too small" in capsys.readouterr().err.lower()
    assert sha256_file(disk) == before


def _dump_proc(core, disk, *extra):
    return subprocess.Popen([sys.executable, "-m", "zfcpdump", "dump", "-i", str(core), *extra,
                             str(disk)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_busy(path, offset, proc):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        with open(path, "rb") as f:
            f.seek(offset)
            if f.read(13) == b"zfcpdump busy":
                return True
        time.sleep(0.01)
    return False


def test_two_captures_on_one_image_second_refuses(tmp_path):
    core = tmp_path / "big.elf"
    size = sparse_vmcore(core, 1536 * MIB)
    disk = tmp_path / "d.img"
    create_mbr_image(str(disk), size + 4 * MIB, [(MIB, size + 2 * MIB)])
    assert main(["prepare", str(disk), "-p", "1", "--metadata-only"]) == 0
    first = _dump_proc(core, disk, "--buffer-size", "64k", "--engine", "python")
    if not _wait_busy(disk, MIB, first):
        first.kill()
        pytest.skip("first capture finished before the second could start")
    second = subprocess.run([sys.executable, "-m", "zfcpdump", "dump", "-i", str(core), str(disk)],
                            capture_output=True, text=True, timeout=60)
    running = first.poll() is None
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    if running:
        assert second.returncode == 1
        assert "in use by another program" in second.stderr
    assert main(["check", str(disk)]) == 0


@needs_root
@needs_sfdisk
def test_wrong_disk_on_block_devices(loop_disk, tmp_path, make_vmcore, capsys):
    core, _ = make_vmcore(ranges=[(0, 2 * MIB)])
    disk = loop_disk(40 * MIB, [(MIB, 8 * MIB), (10 * MIB, 28 * MIB)])
    assert main(["prepare", disk.part(2), "--metadata-only"]) == 0
    # what a refused capture must not touch: block 0 and the dump partition (mounting
    # partition 1 writes to partition 1 itself)
    whole = lambda: (sha256_file(disk.dev, 0, MIB), sha256_file(disk.part(2)))  # noqa: E731
    before = whole()
    capsys.readouterr()
    # a partition given where the whole disk is expected
    assert main(["dump", "-i", str(core), disk.part(2)]) == 1
    assert "is a partition: give the whole disk" in capsys.readouterr().err
    # the dump partition held open exclusively by another program
    holder = os.open(disk.part(2), os.O_RDONLY | os.O_EXCL)
    try:
        assert main(["dump", "-i", str(core), disk.dev]) == 1
        assert "in use by another program" in capsys.readouterr().err
    finally:
        os.close(holder)
    # another partition of the disk mounted
    subprocess.run(["mkfs.ext2", "-q", "-F", disk.part(1)], check=True, capture_output=True)
    before = whole()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", disk.part(1), str(mnt)], check=True)
    try:
        assert main(["dump", "-i", str(core), disk.dev]) == 1
        assert "is mounted on" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert whole() == before
    # and with everything released the same capture goes through
    assert main(["dump", "-i", str(core), "--verify", disk.dev]) == 0


@needs_root
@needs_sfdisk
def test_two_captures_on_one_block_device(loop_disk, tmp_path):
    core = tmp_path / "big.elf"
    size = sparse_vmcore(core, 768 * MIB)
    disk = loop_disk(size + 8 * MIB, [(MIB, size + 4 * MIB)])
    assert main(["prepare", disk.part(1), "--metadata-only"]) == 0
    first = _dump_proc(core, disk.dev, "--buffer-size", "64k", "--engine", "python")
    if not _wait_busy(disk.part(1), 0, first):
        first.kill()
        pytest.skip("first capture finished before the second could start")
    second = subprocess.run([sys.executable, "-m", "zfcpdump", "dump", "-i", str(core), disk.dev],
                            capture_output=True, text=True, timeout=60)
    running = first.poll() is None
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    if running:
        assert second.returncode == 1 and "in use by another program" in second.stderr
    assert main(["check", disk.dev]) == 0
