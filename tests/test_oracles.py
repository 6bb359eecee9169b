"""Tests of the oracle harness itself (tests/oracles, .ci/install-oracles.sh).

They prove that the independent readers are installed, run, and give the answers
shared/spec/interop.md reports for the real QEMU s390x sample, so that a failing
interoperability test later points at the project and not at the harness.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:  # for --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from oracles.kdumpfile import needs_libkdumpfile, probe  # noqa: E402
from oracles.sample import (  # noqa: E402
    expected_sample_digest,
    fixed_sample_elf_path,
    needs_sample,
    sample_elf_path,
)
from oracles.zgetdump import needs_zgetdump, run_zgetdump  # noqa: E402

def _phdrs(path: Path):
    """Program headers of a big-endian ELF64 file, read straight from e_phoff."""
    with open(path, "rb") as f:
        eh = f.read(64)
        phoff, = struct.unpack_from(">Q", eh, 0x20)
        phentsize, phnum = struct.unpack_from(">HH", eh, 0x36)
        out = []
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            out.append(struct.unpack(">IIQQQQQQ", f.read(56)))
        return eh, out


def _phys_to_offset(path: Path, addr: int) -> int:
    for p_type, _fl, off, _va, pa, filesz, _ms, _al in _phdrs(path)[1]:
        if p_type == 1 and pa <= addr < pa + filesz:
            return off + addr - pa
    raise AssertionError(f"0x{addr:x} not in any PT_LOAD of {path}")


def _file_sha256(path: Path, off: int, size: int) -> str:
    with open(path, "rb") as f:
        f.seek(off)
        data = f.read(size)
    assert len(data) == size
    return hashlib.sha256(data).hexdigest()


def _notes(path: Path):
    """(name, type, desc) of every note in the PT_NOTE segments."""
    out = []
    with open(path, "rb") as f:
        for p_type, _fl, off, _va, _pa, filesz, _ms, _al in _phdrs(path)[1]:
            if p_type != 4:
                continue
            f.seek(off)
            buf = f.read(filesz)
            pos = 0
            while pos + 12 <= len(buf):
                namesz, descsz, ntype = struct.unpack_from(">III", buf, pos)
                pos += 12
                name = buf[pos:pos + namesz].rstrip(b"\0")
                pos += (namesz + 3) & ~3
                out.append((name, ntype, buf[pos:pos + descsz]))
                pos += (descsz + 3) & ~3
    return out


# --------------------------------------------------------------------------- zgetdump

@pytest.mark.zgetdump
@needs_zgetdump
def test_zgetdump_version():
    r = run_zgetdump("-v", timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "Tool for copying and converting dumps version 2.16" in out, out


@pytest.mark.zgetdump
@needs_zgetdump
@needs_sample
def test_zgetdump_info_fixed_sample():
    r = run_zgetdump("-i", fixed_sample_elf_path(), timeout=120)
    text = r.stdout.decode() + r.stderr  # 2.16 prints the info block on stderr
    assert r.returncode == 0, text
    assert "Dump format........: elf" in text, text
    assert "CPU count (online).: 2" in text, text
    assert "Dump memory range..: 512 MB" in text, text
    assert "UTS kernel release.: 6.1.0-" in text, text  # found via os_info at 0xE18
    assert "0000000000000000 - 000000001fffffff (512 MB)" in text, text


@pytest.mark.zgetdump
@needs_zgetdump
@needs_sample
def test_zgetdump_info_raw_qemu_sample_fails():
    # e_phoff = 192: zgetdump 2.16 reads the program headers at 64 and crashes
    # (interop.md §2.3). If this ever passes, the oracle is not the 2.16 we expect.
    r = run_zgetdump("-i", sample_elf_path(), timeout=120)
    assert r.returncode != 0, r.stderr
    assert "Dump format........: elf" not in r.stderr


@pytest.mark.zgetdump
@needs_zgetdump
def test_zgetdump_d_on_plain_file(tmp_path):
    f = tmp_path / "plain.img"
    f.write_bytes(b"\0" * 65536)
    r = run_zgetdump("-d", f, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "Please specify DASD or SCSI device node" in r.stderr, r.stderr


@pytest.mark.zgetdump
@needs_zgetdump
@needs_sample
def test_run_zgetdump_stdout_to_file(tmp_path):
    """stdout= a file object: zgetdump -f s390 writes the dump there, -i reads it back."""
    out = tmp_path / "sample.s390"
    with open(out, "wb") as f:
        r = run_zgetdump("-f", "s390", fixed_sample_elf_path(), stdout=f, timeout=600)
    assert r.stdout is None
    assert r.returncode == 0, r.stderr
    assert "Success: Dump has been copied" in r.stderr, r.stderr
    # 4 KiB header + 512 MiB memory + 16-byte end marker (interop.md §2.2)
    assert out.stat().st_size == 0x1000 + (512 << 20) + 16
    r = run_zgetdump("-i", out, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Dump format........: s390" in r.stderr, r.stderr
    assert "Version............: 5" in r.stderr, r.stderr


# --------------------------------------------------------------------------- libkdumpfile

@pytest.mark.libkdumpfile
@needs_libkdumpfile
@needs_sample
def test_libkdumpfile_fixed_sample():
    path = fixed_sample_elf_path()
    reads = [(0x10000, 4096), (0, 4096), ((512 << 20) - 4096, 4096)]
    info = probe(path, reads)
    assert "error" not in info, info
    assert info["format"] == "elf"
    assert info["arch"] == "s390x"
    assert info["byte_order"] == 0  # big endian
    assert info["page_size"] == 4096
    assert info["cpu_count"] == 2
    for (addr, size), got in zip(reads, info["reads"]):
        assert "error" not in got, got
        want = _file_sha256(path, _phys_to_offset(path, addr), size)
        assert got["sha256"] == want, f"physical 0x{addr:x}+{size}"
    # The same bytes as the raw QEMU file (memory at its unaligned offset).
    raw = sample_elf_path()
    assert info["reads"][0]["sha256"] == _file_sha256(raw, _phys_to_offset(raw, 0x10000), 4096)


@pytest.mark.libkdumpfile
@needs_libkdumpfile
@needs_sample
def test_libkdumpfile_registers_match_raw_prstatus():
    """cpu.<n>.reg.* come from the PRSTATUS notes (pr_reg at 0x70, formats.md §9.5)."""
    info = probe(fixed_sample_elf_path())
    prstatus = [d for _n, t, d in _notes(sample_elf_path()) if t == 1]
    assert len(prstatus) == len(info["cpus"]) == 2
    for n, (desc, cpu) in enumerate(zip(prstatus, info["cpus"])):
        pswm, pswa, *gprs = struct.unpack_from(">18Q", desc, 0x70)
        assert cpu["pid"] == n + 1  # pr_pid fixed to big endian
        assert cpu["reg"]["pswm"] == pswm
        assert cpu["reg"]["pswa"] == pswa
        assert [cpu["reg"][f"r{i}"] for i in range(16)] == gprs


@pytest.mark.libkdumpfile
@needs_libkdumpfile
@needs_sample
def test_libkdumpfile_refuses_raw_qemu_sample():
    # interop.md §3.2: the malformed QEMU section table -> "Cannot allocate ELF string
    # table". Proves the probe reports open failures as JSON instead of crashing.
    info = probe(sample_elf_path())
    assert info.get("error_class") == "OSErrorException", info
    assert "string table" in info["error"], info


@pytest.mark.libkdumpfile
@needs_libkdumpfile
def test_libkdumpfile_probe_open_error(tmp_path):
    info = probe(tmp_path / "does-not-exist")
    assert info["error_class"] and info["error"], info


# --------------------------------------------------------------------------- sample fix-up

@needs_sample
def test_sample_checksum_from_readme():
    sha, size = expected_sample_digest()
    assert len(sha) == 64 and size > 512 << 20
    assert sample_elf_path().stat().st_size == size


@needs_sample
def test_fixed_sample_layout():
    path = fixed_sample_elf_path()
    eh, phdrs = _phdrs(path)
    e_phoff, e_shoff = struct.unpack_from(">QQ", eh, 0x20)
    e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = \
        struct.unpack_from(">6H", eh, 0x34)
    assert (e_phoff, e_shoff, e_ehsize, e_phentsize) == (64, 0, 64, 56)
    assert (e_shentsize, e_shnum, e_shstrndx) == (0, 0, 0)
    assert [p[0] for p in phdrs] == [4, 1]
    note, load = phdrs
    assert note[2] == 0x1000
    assert load[2] % 4096 == 0 and load[7] == 4096
    assert load[3] == load[4] == 0 and load[5] == load[6] == 512 << 20
    notes = _notes(path)
    assert notes[0][:2] == (b"CORE", 3)
    assert notes[0][2][0x28:0x30] == b"vmlinux\0"
    pids = [struct.unpack_from(">I", d, 0x20)[0] for _n, t, d in notes if t == 1]
    assert pids == [1, 2]
