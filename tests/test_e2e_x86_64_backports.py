"""End to end on Linux 6.16, 6.17, 6.18 and 7.3 (assets.BACKPORTS_LINES): the newest
kernel of each line in Debian 13's backports as first and dump kernel, with Debian 12's
userland, under qemu-system-x86_64 (1 GiB, crashkernel=), as test_e2e_x86_64_612.py does with 6.12.

* One crash per kernel, the Rust engine with zfcpdump's defaults in the dump kernel:
  the console shows the whole path, and the raw dump reads back (patterns, the panic in
  vmcore-dmesg, our ELF copy); e2e/checks.py.
* Page-class filtering of that vmcore on the host at dump levels 2, 8, 16, 31: the
  same pages left out as makedumpfile 1.7.8 (Debian sid; it warns that these kernels
  are newer than it knows, so it is not the only judge), and at level 16 the free
  pages the kernel counts itself (NR_FREE_PAGES of every zone), an independent check.

Needs what test_e2e_x86_64.py needs, the guests (`bash .ci/install-e2e.sh` fetches them:
`python3 tests/e2e/assets.py fetch x86_64-7.3`) and the sid makedumpfile (`bash
.ci/install-oracles.sh`). Skipped with the reason when something is missing, except in
CI (CI=1 or ZFCPDUMP_E2E_REQUIRED=1), where it fails.

Knobs: ZFCPDUMP_WHEEL, ZFCPDUMP_E2E_BPO_CRASHKERNEL (default 192M), ZFCPDUMP_E2E_ACCEL,
ZFCPDUMP_E2E_CACHE, ZFCPDUMP_E2E_KEEP=DIR (kept in DIR/e2e-x86_64-A.B).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e import assets, checks, fixtures, harness

KERNELS = tuple(f"x86_64-{a}.{b}" for a, b in assets.BACKPORTS_LINES)
CRASHKERNEL = os.environ.get("ZFCPDUMP_E2E_BPO_CRASHKERNEL", "192M")
GUEST_MEM_MIB = 1024
PATTERN_BYTES = (8 << 20, 4 << 20)  # the first kernel's file and heap patterns
LEVELS = (2, 8, 16, 31)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=KERNELS)
def arch(request) -> assets.Arch:
    return assets.ARCHES[request.param]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, arch) -> Path:
    return fixtures.make_workdir(tmp_path_factory, f"e2e-{arch.key}")


@pytest.fixture(scope="module")
def report(request, arch):
    yield from fixtures.report_lines(request, f"e2e-{arch.key}")


@pytest.fixture(scope="module")
def run(arch, workdir, report):
    guest = fixtures.x86_64_guest(arch, workdir, report)
    res = harness.run(guest, workdir, engine="rust", crashkernel=CRASHKERNEL,
                      mem_mib=GUEST_MEM_MIB, timeout=420, log=lambda s: None)
    yield res
    checks.report_run(res, report)


def test_backports_guest_dumps_itself(run, workdir, report):
    reads = checks.assert_dumped_itself(run, CRASHKERNEL, mmap_reads=True)
    report.append(f"  rust: {reads}")
    checks.assert_reads_back(run, workdir, PATTERN_BYTES)


def test_backports_page_filter_matches_makedumpfile_and_the_kernels_free_count(
        arch, run, workdir, report):
    checks.filter_against_sid(run, workdir, report, LEVELS, arch.smp,
                              "test_backports_guest_dumps_itself")
