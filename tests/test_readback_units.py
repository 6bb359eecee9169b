"""Units of the read-back path: Layout, s390 header, TOD, ELF writer example, bitmaps."""

from __future__ import annotations

import struct

from zfcpdump.formats import s390_dump as S
from zfcpdump.layout import Layout
from zfcpdump.model import Cpu, Dump, MemChunk
from zfcpdump.readers.kdump import bit_runs
from zfcpdump.synth import cpu_regs
from zfcpdump.writers.elf import elf_layout


class _Bytes:
    def __init__(self, data: bytes):
        self.data = data

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


def test_layout_overlay_and_gaps():
    lay = Layout()
    lay.add_chunk(10, MemChunk(0, 20, _Bytes(bytes(range(20)))))
    lay.add_buffer(15, b"XYZ")
    lay.add_zero(28, 4)
    lay.set_size(40)
    expect = bytearray(40)
    expect[10:30] = bytes(range(20))
    expect[15:18] = b"XYZ"
    expect[28:32] = bytes(4)
    assert lay.read(0, 40) == bytes(expect)
    for off in range(0, 40, 3):
        assert lay.read(off, 7) == bytes(expect[off : off + 7])
    assert lay.read(35, 100) == bytes(5)


def test_s390_header_roundtrip():
    hdr = S.S390Header(mem_size=1 << 22, mem_end=(1 << 22) - 1, num_pages=1024, tod=123,
                       cpu_id=0xFF00, cpu_cnt=2, real_cpu_cnt=4, lc_vec=[0x10000, 0x40000])
    raw = hdr.to_bytes()
    assert len(raw) == 4096
    assert raw[:8] == bytes.fromhex("a8190173618f23fd")
    assert struct.unpack_from(">H", raw, 0x5D)[0] == 2
    assert struct.unpack_from(">2I", raw, 0x800) == (0x10000, 0x40000)
    assert S.S390Header.from_bytes(raw) == hdr


def test_tod_example():
    # formats.md §11.4: 2025-01-01 00:00:00 UTC <-> 0xE03AA02C90000000
    assert S.unix_us_to_tod(1735689600 * 10**6) == 0xE03AA02C90000000
    assert S.tod_to_unix_us(0xE03AA02C90000000) == 1735689600 * 10**6


def test_end_marker_rules():
    assert S.end_marker_valid(S.end_marker(5), 5)
    assert not S.end_marker_valid(S.end_marker(4), 5)
    assert not S.end_marker_valid(b"DUMP_EN!" + bytes(8), 0)


def test_lowcore_roundtrip():
    regs = cpu_regs(1)
    lc = bytearray(S.LOWCORE_SIZE)
    S.regs_into_lowcore(lc, regs)
    back = S.regs_from_lowcore(bytes(lc), S.vx_save_area(regs))
    for name in ("psw_mask", "psw_addr", "gprs", "acrs", "fpc", "fprs", "timer", "todcmp",
                 "todpreg", "ctrs", "prefix", "vxrs_low", "vxrs_high"):
        assert getattr(back, name) == getattr(regs, name), name


def test_elf_writer_example_of_the_spec():
    # formats.md §9.8: one CPU (no vector registers), one 4 MiB chunk, no VMCOREINFO:
    # notes at 0xB0, 0x398 bytes; PT_LOAD p_offset 0x448; size 0x448 + 4 MiB.
    regs = cpu_regs(0)
    regs.vxrs_low = regs.vxrs_high = None
    dump = Dump(format="elf", version=1, arch="s390x", byteorder="big", page_size=4096,
                chunks=[MemChunk(0, 4 << 20, _Bytes(bytes(4 << 20)))], cpus=[Cpu(s390=regs)])
    lay = elf_layout(dump)
    head = lay.read(0, 0xB0)
    assert struct.unpack_from(">Q", head, 0x20)[0] == 64
    note = struct.unpack_from(">IIQQQQQQ", head, 64)
    assert note == (4, 0, 0xB0, 0, 0, 0x398, 0, 0)
    load = struct.unpack_from(">IIQQQQQQ", head, 64 + 56)
    assert load == (1, 7, 0x448, 0, 0, 4 << 20, 4 << 20, 4096)
    assert lay.size() == 0x448 + (4 << 20)


def test_zero_chunk_costs_no_bytes():
    dump = Dump(format="elf", version=1, arch="s390x", byteorder="big", page_size=4096,
                chunks=[MemChunk(0, 4096, _Bytes(b"a" * 4096)), MemChunk(4096, 1 << 30, None)])
    lay = elf_layout(dump)
    second = struct.unpack_from(">IIQQQQQQ", lay.read(64 + 112, 56))
    assert second[5] == 0 and second[6] == 1 << 30
    assert lay.size() == second[2]


def test_bit_runs():
    assert bit_runs(bytes([0b11110000, 0xFF, 0x01, 0, 0, 0b10000001]), 1000) == [
        (4, 13), (40, 1), (47, 1)]
    assert bit_runs(bytes([0xFF] * 4), 20) == [(0, 20)]
