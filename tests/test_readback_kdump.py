"""kdump-compressed and flattened input: real files from makedumpfile 1.7.2 (x86_64
only) made from a synthetic x86_64 ELF core; memory must equal the source and what
libkdumpfile reads; copy to ELF works."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from oracles.kdumpfile import needs_libkdumpfile, probe
from test_readback_support import sha_phys
from zfcpdump import api
from zfcpdump.readers import open_dump
from zfcpdump.synth import page_content

pytestmark = pytest.mark.skipif(shutil.which("makedumpfile") is None,
                                reason="needs makedumpfile (apt-get install makedumpfile)")
PAGE = 4096
RANGES = [(0, 4 << 20), (8 << 20, 2 << 20)]


def x86_core(path: str) -> None:
    """A minimal little-endian x86_64 ELF core: one PRSTATUS note, PT_LOADs with the
    synth page pattern (a third of the pages zero)."""
    prstatus = bytearray(336)
    struct.pack_into("<I", prstatus, 0x20, 1)
    name = b"CORE\0\0\0\0"
    note = struct.pack("<III", 5, len(prstatus), 1) + name + bytes(prstatus)
    phnum = 1 + len(RANGES)
    off = 0x1000
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, len(note), len(note), 4)]
    data_off = 0x2000
    for paddr, size in RANGES:
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 7, data_off, 0xFFFF888000000000 + paddr, paddr,
                                 size, size, PAGE))
        data_off += size
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    with open(path, "wb") as f:
        head = ehdr + b"".join(phdrs)
        f.write(head + bytes(off - len(head)) + note + bytes(0x1000 - len(note)))
        for paddr, size in RANGES:
            for a in range(paddr, paddr + size, PAGE):
                f.write(page_content(a, 7))


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("x86") / "core.elf")
    x86_core(path)
    return path


def _make(core: str, out: str, *opts: str) -> None:
    p = subprocess.run(["makedumpfile", *opts, core, out], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


VARIANTS = {"d0-zlib": ("-c", "-d", "0"), "d1-zlib": ("-c", "-d", "1"),
            "d0-lzo": ("-l", "-d", "0"), "d1-raw": ("-d", "1"),
            "flat-zlib": ("-F", "-c", "-d", "1")}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_makedumpfile_outputs(core, tmp_path, name):
    opts = VARIANTS[name]
    if "-l" in opts:
        pytest.importorskip("lzo", reason="python-lzo not installed")
    out = str(tmp_path / name)
    if "-F" in opts:
        with open(out, "wb") as f:
            p = subprocess.run(["makedumpfile", *opts, core], stdout=f, stderr=subprocess.PIPE)
        assert p.returncode == 0, p.stderr
    else:
        _make(core, out, *opts)
    with open_dump(out) as k, open_dump(core) as src:
        assert k.format == ("kdump_flat" if "-F" in opts else "kdump")
        assert k.arch == "x86_64" and k.byteorder == "little"
        assert len(k.cpus) == 1
        for paddr, size in RANGES:
            assert sha_phys(k, paddr, size) == sha_phys(src, paddr, size)
        elf = str(tmp_path / (name + ".elf"))
        api.write_dump(k, elf, "elf")
    with open_dump(elf) as back, open_dump(core) as src:
        assert back.arch == "x86_64"
        for paddr, size in RANGES:
            assert sha_phys(back, paddr, size) == sha_phys(src, paddr, size)


@needs_libkdumpfile
@pytest.mark.libkdumpfile
@pytest.mark.parametrize("opts", [("-c", "-d", "0"), ("-d", "0")])
def test_memory_matches_libkdumpfile(core, tmp_path, opts):
    out = str(tmp_path / "k")
    _make(core, out, *opts)
    res = probe(out, RANGES)
    assert "error" not in res, res
    with open_dump(out) as k:
        for r, (paddr, size) in zip(res["reads"], RANGES):
            assert r.get("sha256") == sha_phys(k, paddr, size), r


def test_kdump_info_text(core, tmp_path, capsys):
    out = str(tmp_path / "k")
    _make(core, out, "-c", "-d", "1")
    from zfcpdump.cli.zgetdump import do_info
    assert do_info(out, s390x_only=False) == 0
    err = capsys.readouterr().err
    assert "  Dump format........: kdump\n" in err
    assert "  Version............: 6\n" in err
