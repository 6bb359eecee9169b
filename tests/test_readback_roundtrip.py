"""ELF -> s390 -> ELF keeps memory and registers; both copy engines and stdout agree."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from test_readback_support import file_sha, make_vmcore, reg_tuple, sha_phys
from zfcpdump import api
from zfcpdump.readers import open_dump


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    return make_vmcore(str(d / "vmcore"), cpus=3, ranges=[(0, 8 << 20), (12 << 20, 4 << 20)],
                       os_info=True, vx=True)


def _convert(src: str, dst: str, fmt: str, engine: str = "rust") -> None:
    with open_dump(src) as dump:
        api.write_dump(dump, dst, fmt, engine=engine)


def test_elf_s390_elf_keeps_memory_and_registers(vmcore, tmp_path):
    s390 = str(tmp_path / "d.s390")
    elf = str(tmp_path / "d.elf")
    _convert(vmcore, s390, "s390")
    assert os.path.getsize(s390) == 0x1000 + (16 << 20) + 16
    _convert(s390, elf, "elf")
    with open_dump(vmcore) as a, open_dump(s390) as b, open_dump(elf) as c:
        assert b.format == "s390" and b.version == 5 and c.format == "elf"
        for lo, size in ((0, 8 << 20), (12 << 20, 4 << 20)):
            # the lowcores hold the registers in every format, so compare them as memory
            # only in the s390/ELF pair; elsewhere compare whole ranges.
            assert sha_phys(b, lo, size) == sha_phys(c, lo, size)
        assert sha_phys(a, 12 << 20, 4 << 20) == sha_phys(c, 12 << 20, 4 << 20)
        assert b.read_phys(8 << 20, 4 << 20) == bytes(4 << 20)  # the hole reads as zeroes
        assert len(a.cpus) == len(b.cpus) == len(c.cpus) == 3
        for x, y, z in zip(a.cpus, b.cpus, c.cpus):
            assert reg_tuple(x.s390) == reg_tuple(y.s390) == reg_tuple(z.s390)
        assert a.vmcoreinfo == b.vmcoreinfo == c.vmcoreinfo
        assert b.attrs.utsname["nodename"] == "synthnode"


def test_memory_outside_lowcores_unchanged(vmcore, tmp_path):
    s390 = str(tmp_path / "d.s390")
    _convert(vmcore, s390, "s390")
    with open_dump(vmcore) as a, open_dump(s390) as b:
        prefixes = sorted(cpu.prefix for cpu in a.cpus)
        pos = 0
        for p in prefixes + [8 << 20]:
            if p > pos:
                # skip the vector save areas, which the s390 writer fills in
                lo = max(pos, 0xA000) if pos < 0xA000 else pos
                if p > lo:
                    assert a.read_phys(lo, p - lo) == b.read_phys(lo, p - lo)
            pos = p + 0x2000


@pytest.mark.parametrize("fmt", ["elf", "s390"])
def test_engines_and_stdout_agree(vmcore, tmp_path, fmt):
    outs = []
    for engine in ("rust", "python"):
        out = str(tmp_path / f"{engine}.{fmt}")
        _convert(vmcore, out, fmt, engine)
        outs.append(out)
    piped = tmp_path / f"pipe.{fmt}"
    with open(piped, "wb") as f:
        p = subprocess.run([sys.executable, "-m", "zfcpdump.cli.zgetdump", "-f", fmt, vmcore],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        f.write(p.stdout)
    assert p.returncode == 0, p.stderr
    assert file_sha(outs[0]) == file_sha(outs[1]) == file_sha(str(piped))


def test_s390_output_is_sparse(vmcore, tmp_path):
    out = str(tmp_path / "sparse.s390")
    _convert(vmcore, out, "s390")
    st = os.stat(out)
    assert st.st_blocks * 512 < st.st_size - (3 << 20)  # the 4 MiB hole is not allocated
