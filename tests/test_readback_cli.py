"""`zfcpdump info/copy/device` subcommands and the public API."""

from __future__ import annotations

import json

from test_readback_support import file_sha, make_vmcore
from zfcpdump import api
from zfcpdump.cli.main import main as zfcpdump


def test_info_json_and_text(tmp_path, capsys):
    src = make_vmcore(str(tmp_path / "v"), cpus=2, ranges=[(0, 4 << 20)], os_info=True)
    assert zfcpdump(["info", "--json", src]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "elf" and out["cpu_count"] == 2
    assert out["utsname"]["nodename"] == "synthnode"
    assert out["memory"] == [{"start": 0, "end": (4 << 20) - 1, "size": 4 << 20, "zero": False}]
    assert zfcpdump(["info", "-V", src]) == 0
    err = capsys.readouterr().err
    assert "  UTS kernel release.: 6.1.0-synthetic\n" in err


def test_copy_subcommand_and_api(tmp_path, capsys):
    src = make_vmcore(str(tmp_path / "v"), cpus=1, ranges=[(0, 4 << 20)])
    out = str(tmp_path / "out.s390")
    assert zfcpdump(["copy", "--fmt", "s390", "--engine", "python", src, out]) == 0
    err = capsys.readouterr().err
    assert err.startswith("Format Info:\n  Source: elf\n  Target: s390\n\nCopying dump:\n")
    assert err.endswith("\nSuccess: Dump has been copied\n")
    with api.open_dump(src) as d:
        api.write_dump(d, str(tmp_path / "api.s390"), "s390")
        assert api.info(d)["cpu_count"] == 1
        assert api.info_text(d).startswith("General dump info:\n")
    assert file_sha(out) == file_sha(str(tmp_path / "api.s390"))
    assert zfcpdump(["copy", src, out]) == 1
    assert "exclusively (File exists)" in capsys.readouterr().err


def test_a_directory_or_missing_input_is_one_line_not_a_traceback(tmp_path, capsys):
    # `info DIR` used to end in an IsADirectoryError traceback
    for command in (["info", str(tmp_path)], ["copy", str(tmp_path), str(tmp_path / "o.elf")],
                    ["info", str(tmp_path / "missing")]):
        assert zfcpdump(command) == 1
        err = capsys.readouterr().err
        assert err.startswith('zfcpdump: Open of dump "') and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert not (tmp_path / "o.elf").exists()
