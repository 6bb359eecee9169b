"""Smoke run of the benchmark harness (issue #4): tiny sizes, one run, a file target
(and a loop device as root). Checks that every row is there and every number is
positive; no timing assertions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HAVE_LOSETUP, IS_ROOT, MIB

from zfcpdump import bench as B
from zfcpdump.bench import measure
from zfcpdump.capture import DEFAULT_BUFFER_SIZE, DEFAULT_QUEUE_DEPTH
from zfcpdump.cli.main import main

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "benches" / "run_bench.py"

CAPTURE_ROWS = {"capture-rust", "capture-rust-aio", "capture-rust-mmap", "capture-python",
                "ref-dd-64k", "limit-dd-4m"}
FIO_ROWS = {"ref-fio-64k", "limit-fio"}
COPY_ROWS = {"copy-rust", "copy-python", "copy-dd-4m"}

needs_tools = pytest.mark.skipif(shutil.which("dd") is None, reason="needs dd")


def _huge_pages_reservable() -> bool:
    """What the bench decides before it adds limit-fio-huge (root, hugetlbfs, memory),
    tried here the same way and given back at once."""
    release = measure.reserve_huge_pages(DEFAULT_BUFFER_SIZE * DEFAULT_QUEUE_DEPTH)
    if release is None:
        return False
    release()
    return True


def _check_section(sec: dict) -> None:
    names = {r["name"] for r in sec["rows"]}
    want = (CAPTURE_ROWS | (FIO_ROWS if shutil.which("fio") else set())
            if sec["title"] == "capture" else COPY_ROWS)
    if sec["title"] == "capture" and shutil.which("fio") and _huge_pages_reservable():
        want.add("limit-fio-huge")  # huge pages reserved for fio, given back (see below)
    assert want <= names, (sec["title"], names)
    for row in sec["rows"]:
        assert row["bytes"] > 0
        assert len(row["samples"]) == sec["runs"] >= 1
        for key in ("mib_s", "seconds"):
            assert row[key]["median"] > 0 and row[key]["min"] > 0 and row[key]["max"] > 0
        for s in row["samples"]:
            assert s["seconds"] > 0 and s["wall"] > 0 and s["user"] + s["sys"] >= 0
        if row["name"].startswith(("capture-", "copy-rust", "copy-python")):
            assert row["maxrss_kib"] > 0
    assert sec["ratios"], sec["title"]
    for r in sec["ratios"]:
        assert r["median"] > 0 and r["min"] > 0 and r["max"] > 0


def _run_harness(tmp_path: Path, targets: str) -> dict:
    out = tmp_path / "out"
    env = dict(os.environ)  # the installed package, not the source tree (it has no _core)
    r = subprocess.run([sys.executable, str(HARNESS), "--quick", "--targets", targets,
                        "--workdir", str(tmp_path), "--diskdir", str(tmp_path / "disk"),
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    reports = list(out.glob("bench-*.json"))
    assert len(reports) == 1
    text = r.stdout
    assert "== capture" in text and "== copy" in text and "linearity" in text
    return json.loads(reports[0].read_text())


@needs_tools
def test_harness_file_target(tmp_path):
    report = _run_harness(tmp_path, "file")
    titles = [s["title"] for s in report["sections"]]
    assert titles == ["capture", "copy (dump area -> ELF file)"]
    for sec in report["sections"]:
        assert sec["target_kind"] == "file"
        _check_section(sec)
    rss = report["rss"]
    assert len(rss["sizes"]) == 2
    for s in rss["sizes"]:
        assert s["hwm_mib"]["median"] > 0 and s["seconds"]["median"] > 0
        assert s["cpu_s_per_gib"]["median"] > 0
    assert rss["linearity"]["median"] > 0
    # nothing left behind
    assert not list((tmp_path / "disk").glob("*.img"))
    assert not list(tmp_path.glob("zfcpdump-bench-*.elf"))


@needs_tools
@pytest.mark.skipif(not (IS_ROOT and HAVE_LOSETUP), reason="needs root and loop devices")
def test_harness_loop_target(tmp_path):
    before = Path("/proc/sys/vm/nr_hugepages").read_text()
    report = _run_harness(tmp_path, "loop")
    assert Path("/proc/sys/vm/nr_hugepages").read_text() == before, "huge pages given back"
    assert {s["target_kind"] for s in report["sections"]} == {"loop"}
    for sec in report["sections"]:
        _check_section(sec)
    assert "loop device" in report["rss"]["target"]


@needs_tools
def test_bench_subcommand_file_target(tmp_path, capsys):
    js = tmp_path / "report.json"
    rc = main(["bench", "--target", str(tmp_path), "--size", "8M", "--runs", "1",
               "--workdir", str(tmp_path), "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    for name in sorted(CAPTURE_ROWS | COPY_ROWS):
        assert name in out
    report = json.loads(js.read_text())
    for sec in report["sections"]:
        _check_section(sec)
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # cleaned up


def test_bench_subcommand_refuses_block_device_without_yes(tmp_path, capsys):
    if not os.path.exists("/dev/loop-control") or not IS_ROOT or not HAVE_LOSETUP:
        pytest.skip("needs root and loop devices")
    img = tmp_path / "d.img"
    with open(img, "wb") as f:
        f.truncate(16 * MIB)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        rc = main(["bench", "--target", dev, "--size", "1M", "--runs", "1",
                   "--workdir", str(tmp_path)])
        assert rc != 0
        assert "--yes-destroy" in capsys.readouterr().err
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


@pytest.mark.parametrize("yes", [[], ["--yes-destroy"]])
def test_bench_subcommand_refuses_existing_file(tmp_path, capsys, yes):
    # with --yes-destroy it used to write over the file and delete it afterwards
    victim = tmp_path / "precious"
    victim.write_bytes(b"x" * 4096)
    rc = main(["bench", "--target", str(victim), "--size", "8M", "--runs", "1",
               "--workdir", str(tmp_path), *yes])
    assert rc == 2
    assert "not a directory or a block device" in capsys.readouterr().err
    assert victim.read_bytes() == b"x" * 4096


@pytest.mark.parametrize("args, message", [
    (["--size", "abc"], "--size and --buffer-size take a byte count"),
    (["--size", "99999999999999999999"], "--size must be at least 64K"),
    (["--size", "1M"], "and one buffer (2 MiB)"),
    (["--engines", "bogus"], "--engines is a comma-separated list"),
    (["--queue-depth", "0"], "--queue-depth must be 1 to 64"),
    (["--vmcore", "TRUNCATED"], "not an ELF core"),
    (["--vmcore", "/dev/null"], "not a regular file"),
    (["--json", "/nonexistent/r.json"], "its directory does not exist"),
])
def test_bench_bad_arguments_are_one_line_before_anything_is_made(tmp_path, capsys, args, message):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "trunc.elf").write_bytes(b"\x7fELF\x02\x02\x01" + bytes(93))
    args = [str(tmp_path / "trunc.elf") if a == "TRUNCATED" else a for a in args]
    rc = main(["bench", "--target", str(work), "--runs", "1", "--workdir", str(work), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert list(work.iterdir()) == []  # no vmcore generated, no image made


def test_fast_vmcore_is_mixed_and_valid(tmp_path):
    from zfcpdump.readers.elf import parse_elf_core

    path = tmp_path / "v.elf"
    size = B.write_fast_vmcore(str(path), 24 * MIB)
    assert size == path.stat().st_size and size % 4096 == 0
    assert os.stat(path).st_blocks * 512 >= size  # fully allocated, not sparse
    fd = os.open(path, os.O_RDONLY)
    try:
        core = parse_elf_core(fd, size)
    finally:
        os.close(fd)
    assert len(core.loads) == 2
    data = path.read_bytes()
    pages = [data[i:i + 4096] for i in range(core.loads[0].offset, size, 4096)]
    zero = sum(p == bytes(4096) for p in pages)
    assert 0.25 < zero / len(pages) < 0.40
    first = core.loads[1]
    head = data[first.offset + 4096:first.offset + 4096 + 21]
    if head != bytes(21):
        assert head == b"PHYS=%016x" % (first.paddr + 4096)
    assert data[core.loads[0].offset:core.loads[0].offset + 21] == b"PHYS=%016x" % 0


def test_parse_size():
    assert B.parse_size("4G") == 4 << 30
    assert B.parse_size("512M") == 512 << 20
    assert B.parse_size("64k") == 65536
    assert B.parse_size("1.5G") == 3 << 29
    assert B.parse_size("4096") == 4096


COMPRESS_BENCH = REPO / "benches" / "bench_compress.py"


def _run_compress_bench(tmp_path: Path, *extra: str) -> str:
    r = subprocess.run([sys.executable, str(COMPRESS_BENCH), "--size-mib", "8", "--runs", "2",
                        "--workdir", str(tmp_path), *extra],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_compress_bench_smoke_file(tmp_path):
    out = _run_compress_bench(tmp_path)
    rows = {line[:40].strip(): line.split() for line in out.splitlines()
            if line.startswith(("raw capture", "ours ", "makedumpfile "))}
    for algo in ("none", "zlib", "zstd", "snappy"):
        name = f"ours --compress {algo} -d1"
        assert name in rows, out
        # output size: compressed < raw; zero-page elision alone already shrinks it
        assert float(rows[name][-2]) < float(rows["raw capture (ELF copy)"][-2]), out
    assert "vs raw capture (ELF copy): speed x" in out
    # the whole CLI process writes the same dump as the in-process run
    assert rows["ours --compress snappy -d1, CLI process"][-2:] == rows["ours --compress snappy -d1"][-2:]
    if shutil.which("makedumpfile"):
        assert "fastest compressed: ours 'ours --compress snappy -d1, CLI process'" in out


def test_compress_bench_smoke_sid_makedumpfile(tmp_path):
    """--makedumpfile sid: makedumpfile 1.7.8 with zstd (-z), paired with ours at the
    same codec; -z really compresses, and -p (snappy, not in that build: it would write
    the pages raw) is left out."""
    sys.path.insert(0, str(REPO / "tests"))
    from oracles import makedumpfile_sid

    version, reason = makedumpfile_sid.probe()
    if version is None:
        pytest.skip(reason)
    out = _run_compress_bench(tmp_path, "--makedumpfile", "sid", "--algos", "zstd,snappy")
    rows = {line[:40].strip(): line.split() for line in out.splitlines()
            if line.startswith(("raw capture", "ours ", "makedumpfile "))}
    assert float(rows["makedumpfile -z -d 1"][-1]) < 0.7, out  # size / memory
    assert "makedumpfile -p -d 1" not in rows, out
    assert "ours --compress zstd -d1 vs makedumpfile -z -d 1: speed x" in out
    assert "fastest compressed: ours" in out


def test_compress_bench_smoke_filtered_real_layout(tmp_path):
    """--vmcore with a synthetic x86_64 kernel (real page tables and struct pages; too
    little VMCOREINFO for makedumpfile, which the e2e test compares with) and
    --dump-level 31: the filtered captures, the walk with both classifiers, and their
    ratio are reported; the filtered dump is far smaller than the memory."""
    from kernelmem import KernelCore

    vmcore = tmp_path / "kernel.elf"
    KernelCore.build().write(vmcore)
    out = _run_compress_bench(tmp_path, "--vmcore", str(vmcore), "--dump-level", "31",
                              "--algos", "zstd", "--no-makedumpfile")
    rows = {line[:40].strip(): line.split() for line in out.splitlines()
            if line.startswith(("ours ", "page walk "))}
    assert "dump level 31" in out.splitlines()[0], out
    assert float(rows["ours --compress zstd -d31"][-1]) < 0.5, out  # size / memory
    assert {"page walk -d31, rust", "page walk -d31, python"} <= rows.keys(), out
    assert "page walk -d31, rust vs page walk -d31, python: speed x" in out


@pytest.mark.root
@pytest.mark.skipif(not (IS_ROOT and HAVE_LOSETUP), reason="needs root and losetup for a loop device")
def test_compress_bench_smoke_loop(tmp_path):
    out = _run_compress_bench(tmp_path, "--target", "loop", "--algos", "zstd")
    assert "target: loop device" in out, out
    assert "ours --compress zstd -d1 vs raw capture (ELF copy): speed x" in out
