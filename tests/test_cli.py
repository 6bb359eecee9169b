"""The command line: help that teaches, documented exit codes, one-line errors, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import MIB, dump_state, sparse_vmcore

from zfcpdump.cli.main import main
from zfcpdump.disk.cksm import cksm
from zfcpdump.disk.image import create_mbr_image


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "zfcpdump", *args], capture_output=True,
                          text=True, **kw)


def test_help_lists_commands_and_exit_codes():
    res = run_cli("--help")
    assert res.returncode == 0
    for word in ("dump", "prepare", "demo", "exit status", "128+N"):
        assert word in res.stdout
    res = run_cli("dump", "--help")
    assert "busy marker" in res.stdout and "--verify" in res.stdout


def test_version_is_the_installed_one_and_read_only_when_asked():
    """In a dump kernel every second of start-up is downtime: the CLI builds its parser
    without importlib.metadata (a third of its import time), and `--version` still
    prints the installed package's version."""
    from importlib.metadata import version

    res = run_cli("--version")
    assert (res.returncode, res.stdout) == (0, f"zfcpdump {version('zfcpdump')}\n")
    probe = ("import sys; from zfcpdump.cli.main import build_parser; build_parser(); "
             "print('importlib.metadata' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert res.stdout == "False\n", res.stderr


@pytest.mark.parametrize("args, message", [
    (["prepare"], "zfcpdump prepare: error: the following arguments are required: PARTITION"),
    (["dump", "--engine", "fortran"], "zfcpdump dump: error: argument --engine: invalid choice"),
    (["dump", "--queue-depth", "x"], "zfcpdump dump: error: argument --queue-depth: 'x' is not "
     "a number"),
    (["dump", "--buffer-size", "3q"], "zfcpdump dump: error: argument --buffer-size: '3q' is "
     "not a size"),
    (["info", "a", "b"], "zfcpdump info: error: unrecognized arguments: b"),
    (["frobnicate"], "zfcpdump: error: argument COMMAND: invalid choice: 'frobnicate'"),
    # an unknown option before the command was dropped when the rest was parsed again
    (["--debug", "--no-such-option", "info", "x"], "zfcpdump dump: error: unrecognized "
     "arguments: --no-such-option"),
])
def test_usage_error_is_one_line_exit_2(args, message):
    # argparse printed its usage block above the error (10 lines for dump) and named a
    # type function ("invalid _depth value")
    res = run_cli(*args)
    assert res.returncode == 2
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith(message) and "--help)" in res.stderr, res.stderr


def test_a_signal_before_the_capture_begins_still_ends_in_dump_failed(prepared, monkeypatch,
                                                                     capsys):
    # a SIGTERM between the parameters and the capture ended in "stopped by signal 15"
    # alone (a CI run of the random-interruption test hit that window)
    from zfcpdump.cli import cmd_dump
    from zfcpdump.cli.main import SignalExit

    def interrupted(vmcore):
        raise SignalExit(signal.SIGTERM)

    monkeypatch.setattr(cmd_dump, "default_mmap", interrupted)
    vmcore, disk = prepared
    before = disk.read_bytes()
    assert main(["dump", "-i", str(vmcore), str(disk)]) == 128 + signal.SIGTERM
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "Dump failed"
    assert f"ERROR: Got signal: {signal.SIGTERM}" in err
    assert disk.read_bytes() == before


def test_global_flags_keep_dump_the_default_command(tmp_path):
    # `zfcpdump --debug --dump-level 31` was "invalid choice: '31'" (dump not implied)
    res = run_cli("--debug", "-i", str(tmp_path / "nope"), str(tmp_path / "disk"))
    assert res.returncode == 1
    assert f"ERROR: Cannot open {tmp_path / 'nope'}" in res.stderr


def test_reparsed_arguments_keep_global_options_and_count_once():
    from zfcpdump.cli.main import _parse, build_parser

    parser, _ = build_parser()
    args = _parse(parser, ["--debug", "copy", "a", "--fmt", "s390", "b"])
    assert (args.debug, args.command, args.dump, args.output, args.fmt) == (
        True, "copy", "a", "b", "s390")
    assert _parse(parser, ["info", "x", "-V", "-V"]).verbose == 2


def test_options_may_come_between_positionals(tmp_path, capsys):
    # `copy DUMP --fmt s390 OUT` took OUT for an unrecognized argument
    src = tmp_path / "v.elf"
    sparse_vmcore(src, 4 * MIB)
    for i, args in enumerate((["--fmt", "s390", "SRC", "OUT"], ["SRC", "--fmt", "s390", "OUT"],
                              ["SRC", "OUT", "--fmt", "s390"])):
        out = tmp_path / f"out{i}.s390"
        names = {"SRC": str(src), "OUT": str(out)}
        assert main(["copy", *(names.get(a, a) for a in args)]) == 0
        assert out.read_bytes() == (tmp_path / "out0.s390").read_bytes()
    assert (tmp_path / "out0.s390").read_bytes()[:8] == bytes.fromhex("a8190173618f23fd")


def test_missing_vmcore_is_one_line_no_traceback(tmp_path):
    res = run_cli("dump", "-i", str(tmp_path / "nope"), str(tmp_path / "disk"))
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: Cannot open {tmp_path / 'nope'}: No such file or directory"]
    assert "Traceback" not in res.stderr
    assert res.stdout.splitlines()[-1] == "Dump failed"


def test_no_arguments_means_dump_with_defaults():
    # /proc/vmcore does not exist outside a dump kernel: a clean refusal, nothing written.
    if os.path.exists("/proc/vmcore"):
        pytest.skip("running in a dump kernel")
    res = run_cli()
    assert res.returncode == 1
    assert "ERROR: Cannot open /proc/vmcore" in res.stderr


@pytest.mark.parametrize("engine", ["rust", "python"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_capture_and_leaves_busy_marker(tmp_path, engine, signum):
    vmcore = tmp_path / "big.elf"
    size = sparse_vmcore(vmcore, 3 << 30)
    disk = tmp_path / "d.img"
    create_mbr_image(str(disk), size + 4 * MIB, [(MIB, size + 2 * MIB)])
    assert main(["prepare", str(disk), "-p", "1", "--metadata-only"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "zfcpdump", "dump", "-i", str(vmcore),
                             "--engine", engine, "--buffer-size", "64k", str(disk)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until the copy is under way (the busy marker is on disk).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not dump_state(disk)[0].startswith(b"zfcpdump busy"):
        time.sleep(0.05)
    time.sleep(0.2)
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 2.0, "did not stop within a second or so"
    assert proc.returncode == 128 + signum, (out, err)
    assert f"ERROR: Got signal: {signum}" in err
    assert out.splitlines()[-1] == "Dump failed"
    first, sb = dump_state(disk)
    assert first.startswith(b"zfcpdump busy\0")
    assert sb.csum == cksm(first)  # consistent, so the next capture is allowed
    small = tmp_path / "small.elf"
    sparse_vmcore(small, 8 * MIB)
    assert main(["dump", "-i", str(small), "--verify", str(disk)]) == 0


def test_dump_debug_parameter_warnings():
    from zfcpdump.capture import Console
    from zfcpdump.cli.dumpkernel import parse_cmdline

    lines = []
    console = Console(lines.append, lines.append)
    assert parse_cmdline(console, "root=/dev/ram0 dump_debug=4") == 4 and lines == []
    assert parse_cmdline(console, "dump_debug=9") == 2
    assert lines == ["WARNING: Invalid value (9) for dump_debug parameter specified "
                     "(allowed range is 1 - 6)", "WARNING: Using default: 2"]
    lines.clear()
    assert parse_cmdline(console, "dump_debug= x") == 2
    assert lines == ["WARNING: No value for 'dump_debug' parameter specified",
                     "WARNING: Using default: 2"]
    lines.clear()
    parse_cmdline(console, " ".join(["a"] * 101))
    assert lines == ["WARNING: More than 100 kernel parmameters specified"]


def test_dump_request_shape_defaults_and_the_small_dump_kernel(monkeypatch):
    """2 MiB x 8 by default; in a dump kernel under 256 MiB, 1 MiB x 4 (the 6 MiB of
    buffers docs/dump-kernel-initramfs.md measured); explicit values always win."""
    from zfcpdump.capture import DEFAULT_BUFFER_SIZE, DEFAULT_QUEUE_DEPTH
    from zfcpdump.cli import cmd_dump, dumpkernel

    monkeypatch.setattr(dumpkernel, "mem_total_bytes", lambda: 200 << 20)
    assert (cmd_dump._buffer_size(None, True), cmd_dump._queue_depth(None, True)) == (1 << 20, 4)
    assert (cmd_dump._buffer_size(None, False), cmd_dump._queue_depth(None, False)) == (
        DEFAULT_BUFFER_SIZE, DEFAULT_QUEUE_DEPTH) == (2 << 20, 8)
    assert (cmd_dump._buffer_size(4 << 20, True), cmd_dump._queue_depth(16, True)) == (4 << 20, 16)
    monkeypatch.setattr(dumpkernel, "mem_total_bytes", lambda: 1 << 30)
    assert (cmd_dump._buffer_size(None, True), cmd_dump._queue_depth(None, True)) == (2 << 20, 8)


@pytest.fixture
def prepared(tmp_path):
    """(vmcore, disk): an 8 MiB sparse vmcore and a disk image whose partition 1 is
    prepared for it, in tmp_path."""
    vmcore = tmp_path / "v.elf"
    size = sparse_vmcore(vmcore, 8 * MIB)
    disk = tmp_path / "d.img"
    create_mbr_image(str(disk), size + 4 * MIB, [(MIB, size + 2 * MIB)])
    assert main(["prepare", str(disk), "-p", "1", "--metadata-only"]) == 0
    return vmcore, disk


@pytest.mark.parametrize("option", [["--queue-depth", "0"], ["--queue-depth", "-3"],
                                    ["--queue-depth", "65"], ["--buffer-size", "512M"],
                                    ["--buffer-size", "6148914691236515840"]])
def test_request_shape_out_of_bounds_is_refused_before_the_disk_is_touched(prepared, option, capsys):
    # --queue-depth -3 used to reach the engine after the busy marker was written (an
    # OverflowError traceback); an absurd buffer size, an allocation that cannot be made
    vmcore, disk = prepared
    before = disk.read_bytes()
    assert main(["dump", "-i", str(vmcore), *option, str(disk)]) == 2
    err = capsys.readouterr().err
    assert f"argument {option[0]}:" in err and "Traceback" not in err
    assert disk.read_bytes() == before


@pytest.mark.parametrize("option, message", [
    (["--compress", "zstd", "--level", "99"], "--level for zstd must be 1-19"),
    (["--compress", "zlib", "--level", "12"], "--level for zlib must be 0-9"),
    (["--compress", "snappy", "--level", "3"], "--level applies to zlib and zstd only"),
    (["--level", "5"], "--level needs --compress"),
])
def test_compression_level_out_of_range_is_refused_before_the_disk_is_touched(
        prepared, option, message, capsys):
    # the libraries clamp such levels silently, and the console reported the level asked
    vmcore, disk = prepared
    before = disk.read_bytes()
    assert main(["dump", "-i", str(vmcore), *option, str(disk)]) == 2
    assert f"ERROR: {message}" in capsys.readouterr().err
    assert disk.read_bytes() == before


@pytest.mark.parametrize("option, message", [
    (["--verify", "--meta", "DISK"], "is the dump disk"),
    (["--verify", "--meta", "VMCORE"], "is the vmcore"),
    (["--verify", "--meta", "/dev/null"], "exists and is not a regular file"),
    (["--verify", "--meta", "TMP"], "exists and is not a regular file"),
    (["--verify", "--meta", "/nonexistent/m.meta"], "its directory does not exist"),
    (["--compress", "zstd", "--threads", "99999999999999999999"], "--threads must be 0"),
])
def test_meta_path_and_threads_are_checked_before_the_disk_is_touched(tmp_path, prepared, option,
                                                                       message, capsys):
    # --meta DISK used to replace the dump disk (or the vmcore, or a device node) with a
    # 96-byte text file after a successful dump; a huge --threads failed with an
    # OverflowError traceback after the busy marker was written
    vmcore, disk = prepared
    before, source = disk.read_bytes(), vmcore.read_bytes()
    names = {"DISK": str(disk), "VMCORE": str(vmcore), "TMP": str(tmp_path)}
    option = [names.get(o, o) for o in option]
    assert main(["dump", "-i", str(vmcore), *option, str(disk)]) == 2
    err = capsys.readouterr().err
    assert "ERROR: " in err and message in err, err
    assert disk.read_bytes() == before and vmcore.read_bytes() == source


@pytest.mark.parametrize("mib", ["-1", "0", "8", "99999999999999999999"])
def test_demo_memory_size_out_of_range_is_a_usage_error(tmp_path, mib, capsys):
    # these ended in struct.error tracebacks, 8 in "Dump cannot be processed"
    assert main(["demo", "--memory-mib", mib, "--workdir", str(tmp_path / "w")]) == 2
    assert "--memory-mib: must be 16 to 65536" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_demo_smallest_sample_runs(tmp_path, capsys):
    assert main(["demo", "--memory-mib", "16", "--workdir", str(tmp_path)]) == 0
    assert "Dump successful" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [[], ["--compress", "zstd"]])
def test_a_directory_as_vmcore_is_named_in_the_error(tmp_path, prepared, extra, capsys):
    # it was "zfcpdump: Is a directory", with no path and no "Dump failed"
    _, disk = prepared
    before = disk.read_bytes()
    assert main(["dump", "-i", str(tmp_path), *extra, str(disk)]) == 1
    out = capsys.readouterr()
    assert f"ERROR: Cannot open {tmp_path}: Is a directory" in out.err
    assert out.out.splitlines()[-1] == "Dump failed"
    assert disk.read_bytes() == before
