"""The dump model from ELF cores: kernel-style, QEMU's quirks, overlaps, and damage."""

from __future__ import annotations

import os
import struct

import pytest
from conftest import MIB
from oracles.sample import needs_sample, sample_elf_path

from zfcpdump.errors import DumpDamaged, InvalidCore, NotThisFormat
from zfcpdump.readers.elf import parse_elf_core, read_elf
from zfcpdump.synth import cpu_regs, page_content


def open_elf(path):
    fd = os.open(path, os.O_RDONLY)
    dump = read_elf(fd, os.path.getsize(path), str(path))
    dump._fds.append(fd)
    return dump


def test_kernel_style_vmcore_model(make_vmcore):
    path, size = make_vmcore(ranges=[(0, 8 * MIB), (16 * MIB, 3 * MIB + 512)], cpus=64,
                             kernel_image=(MIB, 2 * MIB), identity_base=0x4000000000)
    with open_elf(path) as dump:
        assert (dump.format, dump.arch, dump.byteorder, dump.version) == ("elf", "s390x", "big", 1)
        assert len(dump.cpus) == 64
        for i in (0, 17, 63):
            want = cpu_regs(i)
            got = dump.cpus[i].s390
            assert (got.prefix, got.psw_addr, got.gprs, got.acrs, got.fprs, got.ctrs, got.todpreg,
                    got.vxrs_low, got.vxrs_high) == (
                    want.prefix, want.psw_addr, want.gprs, want.acrs, want.fprs, want.ctrs,
                    want.todpreg, want.vxrs_low, want.vxrs_high)
        # Physical memory: the overlapping kernel-image LOAD changes nothing.
        covered = [(c.start, c.start + c.size) for c in dump.chunks]
        assert covered[0][0] == 0 and covered[-1][1] == 19 * MIB + 512
        assert all(a[1] <= b[0] for a, b in zip(covered, covered[1:]))
        assert sum(e - s for s, e in covered) == 11 * MIB + 512
        for addr in (0x2000, MIB + 0x3000, 17 * MIB):
            assert dump.read_phys(addr, 4096) == page_content(addr, 1)
        assert dump.read_phys(9 * MIB, 16) == bytes(16)  # hole
        assert dump.attrs.utsname["release"] == "6.1.0-synthetic"
        assert dump.vmcoreinfo.startswith(b"OSRELEASE=")


@needs_sample
def test_qemu_guest_dump_quirks():
    """e_phoff 192, e_ehsize 8, bogus section table, PT_LOAD at 0xae0, no PRPSINFO."""
    with open_elf(sample_elf_path()) as dump:
        assert dump.arch == "s390x" and len(dump.cpus) == 2
        assert [(c.start, c.size) for c in dump.chunks] == [(0, 512 * MIB)]
        prefixes = {cpu.s390.prefix for cpu in dump.cpus}
        assert len(prefixes) == 2 and 0 not in prefixes
        assert all(cpu.s390.vxrs_low and cpu.s390.gs_cb for cpu in dump.cpus)
        with open(sample_elf_path(), "rb") as f:
            f.seek(0xAE0 + 0x10000)
            assert dump.read_phys(0x10000, 4096) == f.read(4096)


def _elf_with(path, mutate):
    data = bytearray(path.read_bytes())
    mutate(data)
    path.write_bytes(bytes(data))
    fd = os.open(path, os.O_RDONLY)
    try:
        return parse_elf_core(fd, len(data))
    finally:
        os.close(fd)


def test_phdrs_read_from_e_phoff(make_vmcore, tmp_path):
    path, size = make_vmcore(ranges=[(0, MIB)])

    def move_phdrs(d):  # copy the table into the (zero) tail of the header page
        phnum = struct.unpack_from(">H", d, 0x38)[0]
        d[0x800 : 0x800 + 56 * phnum] = d[64 : 64 + 56 * phnum]
        d[64 : 64 + 56 * phnum] = bytes(56 * phnum)
        struct.pack_into(">Q", d, 0x20, 0x800)

    core = _elf_with(path, move_phdrs)
    assert core.phoff == 0x800 and len(core.loads) == 1 and core.loads[0].filesz == MIB


@pytest.mark.parametrize("mutate,error,text", [
    (lambda d: d.__setitem__(slice(0, 4), b"\0ELF"), NotThisFormat, "not an ELF file"),
    (lambda d: d.__setitem__(4, 1), InvalidCore, "Only 64 bit"),
    (lambda d: struct.pack_into(">H", d, 0x10, 2), InvalidCore, "Not an ELF core dump"),
    (lambda d: struct.pack_into(">H", d, 0x36, 32), InvalidCore, "program header size"),
    (lambda d: struct.pack_into(">H", d, 0x38, 0), InvalidCore, "no program headers"),
    (lambda d: struct.pack_into(">Q", d, 0x20, 1 << 62), InvalidCore, "beyond the end"),
    (lambda d: struct.pack_into(">Q", d, 64 + 56 + 0x20, 1 << 40), InvalidCore, "PT_LOAD segment 1"),
])
def test_bad_headers(make_vmcore, mutate, error, text):
    path, _ = make_vmcore(ranges=[(0, MIB)])
    with pytest.raises(error, match=text):
        _elf_with(path, mutate)


def test_cpu_note_before_prstatus_is_damage(make_vmcore, tmp_path):
    from zfcpdump.formats import elf_notes as N
    from zfcpdump.readers.elf import split_cpus
    from zfcpdump.model import Note

    with pytest.raises(DumpDamaged, match=r"Invalid ELF dump \(S390_PREFIX before prstatus found\)"):
        split_cpus([Note(b"LINUX", N.NT_S390_PREFIX, bytes(4))], "s390x")
    with pytest.raises(DumpDamaged, match="PRSTATUS note has 100 bytes"):
        split_cpus([Note(b"CORE", N.NT_PRSTATUS, bytes(100))], "s390x")
    # Old kernels: every note named CORE; 8-byte TODPREG uses the first 4 bytes.
    cpus, _, _ = split_cpus([Note(b"CORE", N.NT_PRSTATUS, bytes(336)),
                             Note(b"CORE", N.NT_S390_TODPREG, b"\x00\x00\x12\x34\xff\xff\xff\xff")],
                            "s390x")
    assert cpus[0].s390.todpreg == 0x1234


def test_memsz_beyond_filesz_reads_zero(make_vmcore):
    path, size = make_vmcore(ranges=[(0, MIB)])
    data = bytearray(path.read_bytes())
    struct.pack_into(">Q", data, 64 + 56 + 0x28, 2 * MIB)  # p_memsz of the LOAD
    path.write_bytes(bytes(data))
    with open_elf(path) as dump:
        assert [(c.start, c.size, c.is_zero) for c in dump.chunks] == [(0, MIB, False), (MIB, MIB, True)]
        assert dump.read_phys(MIB, 8) == bytes(8)


def test_a_damaged_load_is_reported_even_where_it_would_alias(make_vmcore, tmp_path):
    """A PT_LOAD with p_memsz 0 inside another is damage, not an alias to skip."""
    path, _ = make_vmcore(ranges=[(0, MIB), (2 * MIB, MIB)])

    def empty_inside_the_first(d):
        first, second = 64 + 56, 64 + 112  # the PT_NOTE is header 0
        offset = struct.unpack_from(">Q", d, first + 8)[0]
        struct.pack_into(">QQQQQ", d, second + 8, offset + 0x1000, 0x1000, 0x1000, 0, 0)

    _elf_with(path, empty_inside_the_first)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(DumpDamaged, match="p_memsz is 0"):
            read_elf(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
