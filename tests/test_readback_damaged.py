"""Damaged and foreign inputs: one stderr line (or the partial -i block), exit 1,
never a traceback (behaviour.md §6.2)."""

from __future__ import annotations

import os
import struct

import pytest

from test_readback_support import make_vmcore
from zfcpdump.cli.zgetdump import main as zgetdump
from zfcpdump.readers import open_dump

INCOMPLETE = "Dump cannot be processed (is not complete)"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("dmg")
    elf = make_vmcore(str(d / "good.elf"), cpus=1, ranges=[(0, 4 << 20)])
    s390 = str(d / "good.s390")
    with open_dump(elf) as dump:
        from zfcpdump import api
        api.write_dump(dump, s390, "s390")
    return elf, s390


def _variant(tmp_path, src: str, name: str, edit) -> str:
    data = bytearray(open(src, "rb").read())
    data = edit(data) or data
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _run(capsys, *args):
    rc = zgetdump(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _copy_msg(capsys, tmp_path, path):
    rc, err = _run(capsys, path, str(tmp_path / "out"))
    return rc, err


def test_truncated_s390(good, tmp_path, capsys):
    path = _variant(tmp_path, good[1], "trunc.s390", lambda d: d[:-100])
    rc, err = _run(capsys, "-i", path)
    assert rc == 1 and err.endswith("\n" + INCOMPLETE + "\n")
    assert "  Dump format........: s390\n" in err
    rc, err = _copy_msg(capsys, tmp_path, path)
    assert (rc, err) == (1, f"zgetdump: {INCOMPLETE}\n")


def test_wrong_end_marker(good, tmp_path, capsys):
    def edit(d):
        d[-16:-8] = b"XXXX_END"
    path = _variant(tmp_path, good[1], "badem.s390", edit)
    rc, err = _run(capsys, "-i", path)
    assert rc == 1
    assert err == ("General dump info:\n  Dump format........: s390\n"
                   "  Version............: 5\n  System arch........: s390x (64 bit)\n"
                   "  Dump memory range..: 4 MB\n\nMemory map:\n"
                   "  0000000000000000 - 00000000003fffff (4 MB)\n\n" + INCOMPLETE + "\n")


def test_missing_end_marker(good, tmp_path, capsys):
    def edit(d):
        struct.pack_into(">Q", d, 0x18, (4 << 20) - 4096)  # the marker is not where expected
    path = _variant(tmp_path, good[1], "noem.s390", edit)
    assert _copy_msg(capsys, tmp_path, path) == (1, f"zgetdump: {INCOMPLETE}\n")


def test_stale_tod(good, tmp_path, capsys):
    def edit(d):
        struct.pack_into(">Q", d, 0x38, 0xE03AA02C90000000)  # header newer than the marker
    path = _variant(tmp_path, good[1], "stale.s390", edit)
    rc, err = _run(capsys, "-i", path)
    assert rc == 1 and "  Dump created.......: " in err and err.endswith(INCOMPLETE + "\n")


def test_busy_marker_and_zero_file(tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.write_bytes(b"zfcpdump busy\0" + bytes(1 << 20))
    zero = tmp_path / "zero"
    zero.write_bytes(bytes(1 << 20))
    for p in (busy, zero):
        rc, err = _run(capsys, "-i", str(p))
        assert (rc, err) == (1, f'zgetdump: No valid dump found on "{p}"\n')


def test_pt_load_past_the_end(good, tmp_path, capsys):
    path = _variant(tmp_path, good[0], "trunc.elf", lambda d: d[: len(d) - (1 << 20)])
    rc, err = _run(capsys, "-i", path)
    assert rc == 1
    assert err == ("General dump info:\n  Dump format........: elf\n"
                   "  System arch........: s390x (64 bit)\n  CPU count (online).: 1\n\n"
                   + INCOMPLETE + "\n")
    assert _copy_msg(capsys, tmp_path, path) == (1, f"zgetdump: {INCOMPLETE}\n")


def test_note_before_prstatus(good, tmp_path, capsys):
    def edit(d):
        # turn the first PRSTATUS (after PRPSINFO) into an unknown note type
        off = d.find(b"CORE\0\0\0\0", 0x1000 + 12 + 8) - 12 + 8
        assert struct.unpack_from(">I", d, off)[0] == 1
        struct.pack_into(">I", d, off, 0x7777)
    path = _variant(tmp_path, good[0], "noprs.elf", edit)
    rc, err = _copy_msg(capsys, tmp_path, path)
    assert (rc, err) == (1, f"zgetdump: {INCOMPLETE}\n")


def test_non_s390x_elf(tmp_path, capsys):
    path = tmp_path / "x86.elf"
    head = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, 0, 0, 0, 0)
    path.write_bytes(head + bytes(4096))
    rc, err = _run(capsys, "-i", str(path))
    assert (rc, err) == (1, "zgetdump: Only s390x (64 bit) core dump files are supported\n")


def test_output_exists_and_options(good, tmp_path, capsys):
    out = tmp_path / "exists"
    out.write_bytes(b"x")
    assert _run(capsys, good[0], str(out)) == (
        1, f"zgetdump: Could not open '{out}' exclusively (File exists)\n")
    assert _run(capsys, "-i", "-d", good[0]) == (
        1, 'zgetdump: Please specify only one of the "-i", "-d", "-m" or "-u" option\n')
    assert _run(capsys, "-i", "-f", "s390", good[0]) == (
        1, 'zgetdump: The "--fmt" option cannot be specified together with "--info"\n')
    assert _run(capsys, "-f", "lkcd", good[0])[1] == 'zgetdump: Invalid target format "lkcd" specified\n'
    assert _run(capsys, "-i", "-s", "prod", good[0]) == (
        1, 'zgetdump: The "--select" option is not possible with this dump\n')
    assert _run(capsys, "-d", good[0])[1].startswith("zgetdump: Please specify DASD, SCSI or NVMe")
    assert _run(capsys, "-i")[1] == "zgetdump: No device or dump specified\n"
    assert _run(capsys, "-i", str(tmp_path / "nope"))[0] == 1


def test_new_output_file_mode(good, tmp_path, capsys):
    out = tmp_path / "new.elf"
    rc, err = _run(capsys, good[0], str(out))
    assert rc == 0 and err.endswith("Success: Dump has been copied\n")
    assert os.stat(out).st_mode & 0o777 == 0o600
