"""libkdumpfile 0.5.1 reads our s390 and ELF output: same memory, and for ELF the same
CPU registers (it takes none from s390 lowcores, interop.md §3.2)."""

from __future__ import annotations

import pytest

from oracles.kdumpfile import needs_libkdumpfile, probe
from test_readback_support import make_vmcore, sha_phys
from zfcpdump import api
from zfcpdump.readers import open_dump

pytestmark = [needs_libkdumpfile, pytest.mark.libkdumpfile]
RANGES = [(0, 8 << 20), (12 << 20, 4 << 20)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("kdf")
    src = make_vmcore(str(d / "vmcore"), cpus=2, ranges=RANGES, os_info=True, vx=True)
    outs = {}
    with open_dump(src) as dump:
        for fmt in ("elf", "s390"):
            outs[fmt] = str(d / f"out.{fmt}")
            api.write_dump(dump, outs[fmt], fmt)
    return src, outs


@pytest.mark.parametrize("fmt", ["elf", "s390"])
def test_memory_matches(converted, fmt):
    src, outs = converted
    reads = RANGES + [(8 << 20, 4 << 20)] if fmt == "s390" else RANGES
    res = probe(outs[fmt], reads)
    assert "error" not in res, res
    assert res["format"] == ("elf" if fmt == "elf" else "s390dump")
    assert res["arch"] == "s390x"
    with open_dump(outs[fmt]) as ours:
        for r, (addr, size) in zip(res["reads"], reads):
            assert r.get("sha256") == sha_phys(ours, addr, size), r
    with open_dump(src) as a:
        # outside the lowcores the memory is the source's
        assert res["reads"][1]["sha256"] == sha_phys(a, *RANGES[1])


def test_elf_registers(converted):
    src, outs = converted
    res = probe(outs["elf"])
    with open_dump(src) as a:
        assert res["cpu_count"] == len(a.cpus)
        for cpu, got in zip(a.cpus, res["cpus"]):
            r = cpu.s390
            assert got["reg"]["pswm"] == r.psw_mask and got["reg"]["pswa"] == r.psw_addr
            for i in range(16):
                assert got["reg"][f"r{i}"] == r.gprs[i]
                assert got["reg"][f"a{i}"] == r.acrs[i]
