"""Issue #7: end to end in a real dump kernel.

A Linux guest (Debian 12's x86_64 kernel under qemu-system-x86_64, 1 GiB, crashkernel=)
leaves known patterns in memory, loads a kdump kernel with `kexec -p` and crashes
(sysrq-c). The dump kernel's initramfs runs our `zfcpdump` as PID 1 with its defaults
(/proc/vmcore -> /dev/sda, a virtio-scsi disk prepared by `zfcpdump prepare
--metadata-only`) and powers off. The host then reads the dump back out of the disk
image and checks: the patterns are there, `vmcore-dmesg` shows the panic, and the
capture's messages reached the guest console. Once per engine (rust, python).

Needs qemu-system-x86_64, apt-get/dpkg-deb (Debian) and vmcore-dmesg: `bash
.ci/install-e2e.sh` installs them and caches the guest packages. Skipped with the reason
when they are missing, except in CI (CI=1 or ZFCPDUMP_E2E_REQUIRED=1), where it fails.

Knobs: ZFCPDUMP_WHEEL (the wheel to put in the guest; default: maturin builds one),
ZFCPDUMP_E2E_CRASHKERNEL (default 160M), ZFCPDUMP_E2E_ACCEL (kvm|tcg),
ZFCPDUMP_E2E_CACHE, ZFCPDUMP_E2E_KEEP=DIR (keep console logs, disks and dumps there).
Measurements (phase times, throughput, peak memory) are printed at the end of the run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e2e import assets, checks, filtered, fixtures, harness

ARCH = assets.ARCHES["x86_64"]
CRASHKERNEL = os.environ.get("ZFCPDUMP_E2E_CRASHKERNEL", "160M")
GUEST_MEM_MIB = 1024
PATTERN_FILE_BYTES, PATTERN_HEAP_BYTES = 8 << 20, 4 << 20

pytestmark = pytest.mark.slow


def _skip_or_fail(reason: str) -> None:
    fixtures.skip_or_fail(reason, "end-to-end test")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return fixtures.make_workdir(tmp_path_factory, "e2e")


@pytest.fixture(scope="module")
def report(request):
    yield from fixtures.report_lines(request, "e2e")


@pytest.fixture(scope="module")
def guest(workdir, report) -> harness.Guest:
    return fixtures.x86_64_guest(ARCH, workdir, report)


@pytest.mark.parametrize("engine,extra", [("rust", ""), ("python", ""), ("rust", "--no-mmap")],
                         ids=["rust", "python", "rust-read"])
def test_crashed_guest_dumps_itself(guest, workdir, report, engine, extra):
    res = harness.run(guest, workdir, engine=engine, crashkernel=CRASHKERNEL,
                      mem_mib=GUEST_MEM_MIB, extra_args=extra, timeout=420, log=lambda s: None)
    mmap_reads = engine == "rust" and not extra
    try:
        reads = checks.assert_dumped_itself(res, CRASHKERNEL, mmap_reads)
        if mmap_reads:
            report.append(f"  {engine} {extra}: {reads}")
        checks.assert_reads_back(res, workdir, (PATTERN_FILE_BYTES, PATTERN_HEAP_BYTES))
        if not extra:
            report.extend(_filter_cross_check(res, workdir, engine))
    finally:
        checks.report_run(res, report)


def _makedumpfile(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["makedumpfile", *map(str, args)], capture_output=True, text=True,
                          errors="replace")


def _filter_cross_check(res: harness.RunResult, workdir: Path, engine: str) -> list[str]:
    """Page-class filtering on a real Linux 6.1 vmcore against makedumpfile 1.7.2 (the
    host's), and the free pages left out against the kernel's count (e2e/checks.py)."""
    if shutil.which("makedumpfile") is None:
        _skip_or_fail("needs makedumpfile for the page-filter cross-check")
    levels = (2, 8, 16, 31) if engine == "rust" else (31,)
    results = checks.filter_cross_check(res, workdir, engine, levels, _makedumpfile)
    lines = [f.line for f in results]
    if 16 in levels:
        lines.append(checks.assert_free_pages_counted(results, res.dump_elf, ARCH.smp))
    return lines


def test_crashed_guest_writes_a_filtered_compressed_dump(guest, workdir, report):
    """In the dump kernel, straight from /proc/vmcore: `zfcpdump --compress zlib
    --dump-level 31` (e2e/filtered.py says what is checked)."""
    def dump_dmesg(kdump: Path, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["makedumpfile", "--dump-dmesg", str(kdump), str(out)],
                              capture_output=True, text=True)

    filtered.run(guest, workdir, report, engine="rust", crashkernel=CRASHKERNEL,
                 mem_mib=GUEST_MEM_MIB, timeout=420, dump_dmesg=dump_dmesg,
                 pattern_bytes=(PATTERN_FILE_BYTES, PATTERN_HEAP_BYTES))


def test_crashed_guest_writes_a_compressed_dump_from_mappings(guest, workdir, report):
    """`zfcpdump --compress snappy` in the dump kernel: the compressors read
    /proc/vmcore's pages straight from its mmap windows (no copy), and every byte
    arrives: the patterns and the panic read back out of our ELF copy of the dump."""
    res = harness.run(guest, workdir, engine="rust", crashkernel=CRASHKERNEL,
                      mem_mib=GUEST_MEM_MIB, extra_args="--compress snappy", timeout=420,
                      log=lambda s: None)
    c, where = res.console, checks.where(res)
    out = workdir / "snappy-copy.elf"
    try:
        assert not res.timed_out, f"QEMU did not finish in time {where}"
        assert not c.all(r"^ERROR: |^WARNING: |Traceback"), where
        assert res.dumped and res.rc == 0, f"no 'Dump successful' {where}"
        mapped = c.first(r"^ reads\.\.\.\.: mmap windows, no copy: (\d+) of (\d+) pages$")
        assert mapped, f"not read from mappings {where}"
        n, total = (int(x) for x in re.match(r".*: (\d+) of (\d+)", mapped[1]).groups())
        assert n >= 0.99 * total, mapped[1]  # all but partly covered pages
        p = subprocess.run([sys.executable, "-m", "zfcpdump", "copy", f"{res.disk}:1", str(out)],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        counts = harness.count_patterns(out, [f"E2E-FILE-{res.nonce}\n".encode(),
                                              f"E2E-HEAP-{res.nonce}\n".encode()])
        for (token, found), nbytes in zip(counts.items(), (PATTERN_FILE_BYTES, PATTERN_HEAP_BYTES)):
            assert found >= 0.9 * nbytes / len(token), f"{token!r}: {found} copies"
        vd = shutil.which("vmcore-dmesg") or "/usr/sbin/vmcore-dmesg"
        p = subprocess.run([vd, str(out)], capture_output=True, text=True, errors="replace")
        assert "Kernel panic - not syncing: sysrq triggered crash" in p.stdout, p.stderr[-500:]
        report.append(f"  snappy from mappings: {mapped[1].strip()}; patterns "
                      f"{sorted(counts.values())}")
    finally:
        report.append(res.report())
        fixtures.discard(res.disk, out,
                         res.disk.with_name(res.disk.name.replace("disk-", "first-", 1)))
