"""Against s390-tools 2.16 zgetdump (qemu-user): byte comparisons of our ELF and s390
output, `-i` golden lines, and each side reading what the other wrote.

Known, deliberate differences of our `-f s390` output from 2.16's (formats.md §11.2,
§11.5), checked exactly below:
* header `mem_end` (0x28..0x2F): current upstream writes the last address, 2.16 mem_size;
* each CPU's lowcore + 0x1324 (4 bytes, TOD programmable register): 2.16 does not
  overlay it, we do (so the register survives ELF -> s390 -> ELF). Where memory already
  holds the register, as in a real store-status lowcore, the bytes are equal.
The TOD fields (0x38 header, end marker) are 0 for ELF input in both.
"""

from __future__ import annotations

import os
import struct

import pytest

from oracles.sample import fixed_sample_elf_path, needs_sample
from oracles.zgetdump import needs_zgetdump, run_zgetdump
from test_readback_support import diff_offsets, make_vmcore, reg_tuple, sha_phys
from zfcpdump import api
from zfcpdump.info import info_lines
from zfcpdump.readers import open_dump

pytestmark = [needs_zgetdump, pytest.mark.zgetdump]


def _zg_convert(src: str, dst: str, fmt: str) -> None:
    with open(dst, "wb") as out:
        p = run_zgetdump("-f", fmt, src, stdout=out)
    assert p.returncode == 0, p.stderr


def _ours(src: str, dst: str, fmt: str) -> None:
    with open_dump(src) as dump:
        api.write_dump(dump, dst, fmt)


def _allowed_s390_diffs(path: str) -> set[int]:
    allowed = set(range(0x28, 0x30))
    with open_dump(path) as d:
        for cpu in d.cpus:
            allowed |= set(range(0x1000 + cpu.prefix + 0x1324, 0x1000 + cpu.prefix + 0x1328))
    return allowed


CASES = {
    "plain": dict(cpus=2, ranges=[(0, 8 << 20), (16 << 20, 4 << 20)]),
    "os_info": dict(cpus=2, ranges=[(0, 8 << 20)], os_info=True),
    "vx_live": dict(cpus=3, ranges=[(0, 8 << 20)], os_info=True, vx=True, livedump=True),
    "one_cpu": dict(cpus=1, ranges=[(0, 4 << 20)]),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def synth(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    return make_vmcore(str(d / "vmcore"), **CASES[request.param])


def test_elf_output_byte_identical(synth, tmp_path):
    ours, theirs = str(tmp_path / "ours.elf"), str(tmp_path / "zg.elf")
    _ours(synth, ours, "elf")
    _zg_convert(synth, theirs, "elf")
    assert diff_offsets(ours, theirs) == []


def test_s390_output_identical_but_listed_fields(synth, tmp_path):
    ours, theirs = str(tmp_path / "ours.s390"), str(tmp_path / "zg.s390")
    _ours(synth, ours, "s390")
    _zg_convert(synth, theirs, "s390")
    diffs = diff_offsets(ours, theirs)
    assert diffs is not None, "sizes differ"
    assert set(diffs) <= _allowed_s390_diffs(synth)
    with open(ours, "rb") as f:
        assert struct.unpack_from(">Q", f.read(0x30), 0x28)[0] == os.path.getsize(ours) - 0x1000 - 16 - 1


def test_info_golden(synth, tmp_path):
    for path in (synth, _s390_of(synth, tmp_path)):
        p = run_zgetdump("-i", path)
        assert p.returncode == 0, p.stderr
        with open_dump(path) as d:
            ours = info_lines(d)
        theirs = p.stderr.splitlines()
        common = [line for line in theirs if line in ours]
        # every line 2.16 prints, we print identically (2.16-only: none for these inputs)
        assert common == theirs
        assert [line for line in ours if line in theirs] == ours or path.endswith(".s390")


def _s390_of(src: str, tmp_path) -> str:
    out = str(tmp_path / "for-info.s390")
    if not os.path.exists(out):
        _ours(src, out, "s390")
    return out


def test_zgetdump_accepts_ours_and_we_accept_theirs(synth, tmp_path):
    for fmt in ("elf", "s390"):
        ours, theirs = str(tmp_path / f"o.{fmt}"), str(tmp_path / f"z.{fmt}")
        _ours(synth, ours, fmt)
        p = run_zgetdump("-i", ours)
        assert p.returncode == 0, p.stderr
        assert f"  Dump format........: {fmt}\n" in p.stderr
        if fmt == "s390":
            assert "  Version............: 5\n" in p.stderr
        _zg_convert(synth, theirs, fmt)
        with open_dump(synth) as a, open_dump(theirs) as b, open_dump(ours) as c:
            assert b.format == fmt
            end = a.mem_end + 1
            if fmt == "elf":
                assert sha_phys(b, 0, end) == sha_phys(c, 0, end)
            else:
                mb, mc = bytearray(b.read_phys(0, end)), bytearray(c.read_phys(0, end))
                for cpu in a.cpus:  # the todpreg field, see the module docstring
                    mb[cpu.prefix + 0x1324 : cpu.prefix + 0x1328] = bytes(4)
                    mc[cpu.prefix + 0x1324 : cpu.prefix + 0x1328] = bytes(4)
                assert mb == mc
            assert len(b.cpus) == len(a.cpus)
            for x, y in zip(a.cpus, b.cpus):
                # 2.16 does not overlay todpreg and drops VX without a save area
                assert reg_tuple(x.s390, False)[:8] == reg_tuple(y.s390, False)[:8]


def test_livedump_and_uts_lines(tmp_path):
    path = make_vmcore(str(tmp_path / "v"), cpus=1, ranges=[(0, 4 << 20)], os_info=True,
                       livedump=True)
    p = run_zgetdump("-i", path)
    assert "  Dump method........: live\n" in p.stderr
    assert "  UTS node name......: synthnode\n" in p.stderr
    with open_dump(path) as d:
        ours = info_lines(d)
    assert p.stderr.splitlines() == ours


@needs_sample
@pytest.mark.slow
def test_real_sample(tmp_path):
    sample = str(fixed_sample_elf_path())
    for fmt in ("elf", "s390"):
        ours, theirs = str(tmp_path / f"o.{fmt}"), str(tmp_path / f"z.{fmt}")
        _ours(sample, ours, fmt)
        _zg_convert(sample, theirs, fmt)
        diffs = diff_offsets(ours, theirs)
        assert diffs is not None
        if fmt == "elf":
            assert diffs == []
        else:
            assert set(diffs) <= _allowed_s390_diffs(sample)
        os.unlink(theirs)
    p = run_zgetdump("-i", sample)
    with open_dump(sample) as d:
        assert p.stderr.splitlines() == info_lines(d)
        assert d.attrs.utsname.get("release")
