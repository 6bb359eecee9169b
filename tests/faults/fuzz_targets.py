"""Fuzz targets shared by the hypothesis tests (tests/test_fuzz_readers.py) and the
coverage-guided atheris run (tests/faults/fuzz_atheris.py). Each target takes bytes and
may raise only zfcpdump's own errors (ZfcpdumpError subclasses); anything else — an
uncaught exception, a hang, an allocation far beyond the input — is a bug."""

from __future__ import annotations

import contextlib
import os
import struct

from zfcpdump.errors import ZfcpdumpError

MIB = 1 << 20


@contextlib.contextmanager
def memfile(data: bytes):
    fd = os.memfd_create("zfcpdump-fuzz", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield fd
    finally:
        os.close(fd)


def t_elf(data: bytes) -> None:
    from zfcpdump.readers.elf import parse_elf_core, read_elf

    with memfile(data) as fd:
        try:
            parse_elf_core(fd, len(data))
        except ZfcpdumpError:
            pass
        dump = read_elf(fd, len(data))
        for cpu in dump.cpus:
            _ = cpu.notes


def t_notes(data: bytes) -> None:
    from zfcpdump.formats.elf_notes import iter_notes
    from zfcpdump.readers.elf import split_cpus

    order = "big" if (data[:1] or b"\0")[0] & 1 else "little"
    notes = list(iter_notes(data[1:], order))
    split_cpus(notes, "s390x" if order == "big" else "x86_64")


def t_partitions(data: bytes) -> None:
    from zfcpdump.disk.partitions import detect_image_block_size, read_partitions

    with memfile(data) as fd:
        bs = detect_image_block_size(fd) or 512
        for p in read_partitions(fd, bs, len(data)):
            assert p.start >= 0 and p.size >= 0


def t_zipl(data: bytes) -> None:
    from zfcpdump.disk.zipl import ScsiMbr, Superblock

    data = data.ljust(152, b"\0")
    mbr = ScsiMbr.from_bytes(data[:152])
    mbr.check_dump_boot_info()
    sb = Superblock.from_bytes(data[-72:].ljust(72, b"\0"))
    assert Superblock.from_bytes(sb.to_bytes()) == sb


def t_locate(data: bytes) -> None:
    """capture.locate on a disk image built from the input (block 0 and whatever
    follows): refuses with DiskRefused or finds a partition inside the image."""
    from zfcpdump.capture import locate

    with memfile(data) as fd:
        path = f"/proc/self/fd/{fd}"
        part, sb = locate(path, fd, None)
        assert 0 <= part.start and part.start + part.size <= len(data)


def t_open_dump(data: bytes) -> None:
    """Every reader in zgetdump's probing order (s390_ext, s390, elf, kdump, flat)."""
    from zfcpdump.readers import probe

    with memfile(data) as fd:
        dump = probe(fd, len(data), "fuzz")
        # touch what a reader promises: chunks and their bounds
        for chunk in dump.chunks[:64]:
            assert chunk.size >= 0


TARGETS = {
    "elf": t_elf,
    "notes": t_notes,
    "partitions": t_partitions,
    "zipl": t_zipl,
    "locate": t_locate,
    "open_dump": t_open_dump,
}


def run_one(name: str, data: bytes) -> None:
    try:
        TARGETS[name](data)
    except ZfcpdumpError:
        pass


def u32be(v: int) -> bytes:
    return struct.pack(">I", v)
