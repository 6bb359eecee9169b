"""End to end on Linux 6.12: Debian 13's x86_64 kernel (6.12, merged /usr, .ko.xz
modules) as first and dump kernel, with Debian 12's userland, under
qemu-system-x86_64 (1 GiB, crashkernel=), as test_e2e_x86_64.py does with 6.1.

* One crash, the Rust engine with zfcpdump's defaults in the dump kernel: the console
  shows the whole path, and the raw dump reads back (patterns, the panic in
  vmcore-dmesg, our ELF copy); e2e/checks.py.
* Page-class filtering of that vmcore on the host against makedumpfile from Debian
  sid (1.7.8; Debian 12's 1.7.2 predates 6.12's struct page) at dump levels 2, 8, 16,
  31: the same pages left out, the same kernel log (e2e/checks.py:
  filter_cross_check); and the free pages left out at level 16 against the kernel's
  own count, NR_FREE_PAGES of every zone.
* A second crash, `zfcpdump --compress zlib --dump-level 31` in the 6.12 dump kernel
  itself (e2e/filtered.py): the page walk runs there, makedumpfile (sid) reads the
  panic out of the dump, the user heap and page-cache patterns are gone.

Needs what test_e2e_x86_64.py needs, the 6.12 guest (`bash .ci/install-e2e.sh` fetches
it: `python3 tests/e2e/assets.py fetch x86_64-6.12`) and the sid makedumpfile (`bash
.ci/install-oracles.sh`). Skipped with the reason when something is missing, except in
CI (CI=1 or ZFCPDUMP_E2E_REQUIRED=1), where it fails.

Knobs: ZFCPDUMP_WHEEL, ZFCPDUMP_E2E_612_CRASHKERNEL (default 160M), ZFCPDUMP_E2E_ACCEL,
ZFCPDUMP_E2E_CACHE, ZFCPDUMP_E2E_KEEP=DIR (kept in DIR/e2e-6.12).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from e2e import assets, checks, filtered, fixtures, harness
from oracles import makedumpfile_sid

ARCH = assets.ARCHES["x86_64-6.12"]
CRASHKERNEL = os.environ.get("ZFCPDUMP_E2E_612_CRASHKERNEL", "160M")
GUEST_MEM_MIB = 1024
PATTERN_BYTES = (8 << 20, 4 << 20)  # the first kernel's file and heap patterns
LEVELS = (2, 8, 16, 31)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return fixtures.make_workdir(tmp_path_factory, "e2e-6.12")


@pytest.fixture(scope="module")
def report(request):
    yield from fixtures.report_lines(request, "e2e-6.12")


@pytest.fixture(scope="module")
def guest(workdir, report) -> harness.Guest:
    return fixtures.x86_64_guest(ARCH, workdir, report)


@pytest.fixture(scope="module")
def run(guest, workdir, report):
    """One crash and raw capture; the first two tests share it."""
    res = harness.run(guest, workdir, engine="rust", crashkernel=CRASHKERNEL,
                      mem_mib=GUEST_MEM_MIB, timeout=420, log=lambda s: None)
    yield res
    checks.report_run(res, report)


def test_612_guest_dumps_itself(run, workdir, report):
    reads = checks.assert_dumped_itself(run, CRASHKERNEL, mmap_reads=True)
    report.append(f"  rust: {reads}")
    checks.assert_reads_back(run, workdir, PATTERN_BYTES)


def test_612_page_filter_matches_makedumpfile_sid(run, workdir, report):
    checks.filter_against_sid(run, workdir, report, LEVELS, ARCH.smp,
                              "test_612_guest_dumps_itself")


def test_612_dump_kernel_writes_a_filtered_compressed_dump(guest, workdir, report):
    version, reason = makedumpfile_sid.probe()
    if version is None:
        fixtures.skip_or_fail(reason, "makedumpfile (sid) --dump-dmesg")

    def dump_dmesg(kdump: Path, out: Path) -> subprocess.CompletedProcess:
        return makedumpfile_sid.run_makedumpfile("--dump-dmesg", kdump, out)

    filtered.run(guest, workdir, report, engine="rust", crashkernel=CRASHKERNEL,
                 mem_mib=GUEST_MEM_MIB, timeout=420, dump_dmesg=dump_dmesg,
                 pattern_bytes=PATTERN_BYTES)
