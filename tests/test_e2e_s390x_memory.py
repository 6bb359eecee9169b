"""Page-class filtering on s390x Linux 6.12 and 7.2 (guest_memory.LINES), where the
kernel image and the direct map no longer sit at their physical addresses (from 6.10:
VMCOREINFO's KERNELOFFSET and KERNELOFFPHYS say where the image is; the page walk
starts at swapper_pg_dir's physical address).

The input is the memory of Debian 13's s390x 6.12 kernel, or Debian 14's (forky) 7.2,
running under qemu-system-s390x (TCG, 512 MiB, 2 CPUs; page cache, shmem and a
process's memory made by its /init), written by QEMU's dump-guest-memory
(e2e/guest_memory.py: no such s390x kernel here can kdump). `zfcpdump copy` turns it
into an ELF core with the VMCOREINFO note it finds in memory, as the 6.1 sample is
handled; then:

* `dump --compress zlib --dump-level N` (N = 2, 8, 16, 31) writes the file the s390x
  makedumpfile 1.7.8 (Debian sid, qemu-user) writes with `-c -d N`, byte for byte after
  the header's utsname and timestamp, and leaves out pages of the class asked for;
* at level 16 the free pages left out are those the kernel counts itself
  (NR_FREE_PAGES of its zones, read here with KERNELOFFPHYS arithmetic of its own);
* the Python engine writes the same file as the Rust one at level 31.

Needs qemu-system-s390x and the guest's kernel (`bash .ci/install-e2e.sh`: `python3
tests/e2e/guest_memory.py --fetch`), the sid s390x makedumpfile (`bash
.ci/install-oracles.sh`). Skipped with the reason when something is missing, except in CI (CI=1 or ZFCPDUMP_E2E_REQUIRED=1), where it fails.
Knobs: ZFCPDUMP_E2E_CACHE, ZFCPDUMP_E2E_KEEP=DIR (kept in DIR/e2e-s390x-LINE).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from e2e import assets, checks, fixtures, guest_memory
from oracles.makedumpfile_s390x import probe_sid, run_makedumpfile_sid
from test_kdump_capture import capture, dump_bytes, mib_above, prepared_image

import zfcpdump
from zfcpdump.cli.main import main

pytestmark = pytest.mark.slow

LEVELS = (2, 8, 16, 31)
CLASS_OF_LEVEL = {2: "cache", 8: "user", 16: "free"}

#: the header bytes makedumpfile leaves empty here (utsname, timestamp): 12..424
HEADER_FILLED = slice(12, 424)


@pytest.fixture(scope="module", params=list(guest_memory.LINES))
def line(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, line) -> Path:
    return fixtures.make_workdir(tmp_path_factory, f"e2e-s390x-{line}")


@pytest.fixture(scope="module")
def report(request, line):
    yield from fixtures.report_lines(request, f"e2e-s390x-{line}")


@pytest.fixture(scope="module")
def core(line, workdir, report) -> Path:
    """The guest's memory as an ELF core with its VMCOREINFO note."""
    raw, out = workdir / "guest-memory.elf", workdir / f"guest-{line}.elf"
    try:
        figures = guest_memory.build(raw, workdir, line)
    except guest_memory.LineGone as exc:  # the mirror moved on: not ours to fail on
        pytest.skip(str(exc))
    except (guest_memory.GuestMemoryError, assets.FetchError) as exc:
        fixtures.skip_or_fail(str(exc), f"s390x {line} guest memory image")
    report.append(f"guest: {figures['kernel']}, ready in {figures['boot_s']:.1f} s (TCG), "
                  f"memory written in {figures['dump_s']:.1f} s; "
                  + ", ".join(" ".join(m.split()) for m in figures["meminfo"])
                  + (f"; booted twice, the first: {figures['retried']}" if figures["retried"]
                     else ""))
    try:
        assert main(["copy", str(raw), str(out)]) == 0
    finally:
        raw.unlink()
    yield out
    fixtures.discard(out)


def _need_oracle() -> str:
    version, reason = probe_sid()
    if version is None:
        fixtures.skip_or_fail(reason, "s390x makedumpfile (sid)")
    return version


def _ours(core: Path, workdir: Path, level: int, capsys, engine: str = "rust"):
    """(kdump file bytes, pages left out by class) of our filtered capture."""
    disk = prepared_image(workdir, mib_above(core.stat().st_size), name=f"d{level}.img")
    try:
        capsys.readouterr()
        assert capture(disk, core, "--compress", "zlib", "--dump-level", str(level),
                       engine=engine) == 0
        console = capsys.readouterr().out
        return dump_bytes(disk), {cls: int(n) for n, cls in re.findall(
            r"(\d+) (free|cache private|cache|user)(?:,| pages)", console)}
    finally:
        disk.unlink()


def test_s390x_release_and_relocated_image(line, core):
    with zfcpdump.open_dump(str(core)) as dump:
        fields = dump.vmcoreinfo_fields()
    assert fields["OSRELEASE"].startswith(f"{line}.")
    # what makes this kernel different: the image is not at its physical address
    assert int(fields["KERNELOFFSET"], 16) != int(fields["KERNELOFFPHYS"], 16)


@pytest.mark.parametrize("level", LEVELS)
def test_s390x_filter_same_dump_as_makedumpfile(core, workdir, report, capsys, level):
    version = _need_oracle()
    ref = workdir / f"md-{level}.kdump"
    p = run_makedumpfile_sid("-c", "-d", str(level), core, ref)
    assert p.returncode == 0, p.stdout + p.stderr
    try:
        theirs = ref.read_bytes()
    finally:
        ref.unlink()
    ours, excluded = _ours(core, workdir, level, capsys)
    assert len(ours) == len(theirs)
    assert ours[:HEADER_FILLED.start] == theirs[:HEADER_FILLED.start]
    assert ours[HEADER_FILLED.stop:] == theirs[HEADER_FILLED.stop:]
    for lvl, cls in CLASS_OF_LEVEL.items():
        if level & lvl:
            assert excluded.get(cls, 0) > 0, f"-d {level}: no {cls} pages left out ({excluded})"
    report.append(f"  -d {level}: same {len(ours)}-byte file as makedumpfile {version} (sid, "
                  f"s390x) -c; left out {excluded}")
    if level == 16:
        report.append(checks.assert_free_count(excluded["free"], *kernel_free_pages(core),
                                               guest_memory.CPUS))


def test_s390x_python_engine_writes_the_same_file(core, workdir, capsys):
    rust, _ = _ours(core, workdir, 31, capsys)
    python, _ = _ours(core, workdir, 31, capsys, engine="python")
    assert python[:HEADER_FILLED.start] == rust[:HEADER_FILLED.start]
    assert python[HEADER_FILLED.stop:] == rust[HEADER_FILLED.stop:]


def kernel_free_pages(elf: Path) -> tuple[int, int]:
    """NR_FREE_PAGES of every zone of the s390x kernel's one node (contig_page_data, in
    the kernel image: its physical address is the symbol less KERNELOFFSET plus
    KERNELOFFPHYS). Returns (pages, zones counted)."""
    with zfcpdump.open_dump(str(elf)) as dump:
        info = dump.vmcoreinfo_fields()
        num = lambda key: int(info[key])  # noqa: E731
        image = int(info["KERNELOFFPHYS"], 16) - int(info["KERNELOFFSET"], 16)
        pgdat = int(info["SYMBOL(contig_page_data)"], 16) + image

        def read(addr: int, fmt: str) -> int:
            return struct.unpack(">" + fmt, dump.read_phys(addr, struct.calcsize(fmt)))[0]

        return checks.node_free_pages(read, num, pgdat)
