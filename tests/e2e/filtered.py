"""Checks of a filtered compressed dump written in a dump kernel (`zfcpdump --compress
zlib --dump-level 31` from /proc/vmcore), shared by the x86_64 and s390x end-to-end
tests: the page walk ran there, the partition holds a valid kdump file a fraction of
the memory's size, makedumpfile reads the panic out of it, and the guest's user heap
and page-cache file patterns are not in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from . import fixtures, harness

#: makedumpfile --dump-dmesg KDUMP OUT, the host's or the s390x one under qemu-user
DumpDmesg = Callable[[Path, Path], subprocess.CompletedProcess]
ARGS = "--compress zlib --dump-level 31"


def run(guest: harness.Guest, workdir: Path, report: list, *, engine: str, crashkernel: str,
        mem_mib: int, timeout: float, dump_dmesg: DumpDmesg,
        pattern_bytes: tuple[int, int]) -> None:
    """Crash the guest, let its dump kernel run `zfcpdump ARGS`, check the dump; the
    run's figures go to the report, its disks away (fixtures.discard)."""
    res = harness.run(guest, workdir, engine=engine, crashkernel=crashkernel,
                      mem_mib=mem_mib, extra_args=ARGS, timeout=timeout, log=lambda s: None)
    try:
        report.append(check(res, workdir, dump_dmesg, pattern_bytes))
        assert res.rc == 0
    finally:
        report.append(res.report())
        fixtures.discard(res.disk, res.disk.with_name(res.disk.name.replace("disk-", "first-", 1)))


def check(res: harness.RunResult, workdir: Path, dump_dmesg: DumpDmesg,
          pattern_bytes: tuple[int, int]) -> str:
    """Assert the above; return a line for the report."""
    from test_kdump_capture import dump_bytes

    c = res.console
    where = f"(console: {res.console_log})\n{c.tail(50)}"
    assert not res.timed_out, f"QEMU did not finish in time {where}"
    assert c.first(r"E2E: dump kernel up"), f"the dump kernel did not start {where}"
    assert not c.all(r"^ERROR: |Traceback"), where
    assert not c.all(r"^WARNING: --dump-level"), where
    walk = c.first(r"^ filter\.\.\.: .*free.* pages excluded")
    assert walk, f"no page walk in the dump kernel {where}"
    assert c.first(r"^ format\.\.\.: kdump-compressed, zlib, dump level 31$"), where
    written = c.first(r"^ written\.\.: (\d+) MB of (\d+) MB memory")
    assert written, where
    assert res.dumped, where

    kdump = workdir / f"filtered-{res.engine}.kdump"
    dmesg = kdump.with_suffix(".dmesg")
    out = kdump.with_suffix(".elf")
    try:
        kdump.write_bytes(dump_bytes(res.disk))
        assert kdump.read_bytes()[:8] == b"KDUMP   "
        assert kdump.stat().st_size < res.vmcore_bytes / 4, kdump.stat().st_size
        p = dump_dmesg(kdump, dmesg)
        assert p.returncode == 0, f"makedumpfile --dump-dmesg: {p.stdout}{p.stderr}"
        log = dmesg.read_text(errors="replace")
        assert "Kernel panic - not syncing: sysrq triggered crash" in log, log[-2000:]
        # our read-back: excluded pages read as zeroes, so the patterns are gone
        p = subprocess.run([sys.executable, "-m", "zfcpdump", "copy", f"{res.disk}:1", str(out)],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        # ... and the ELF copy still reads as a kernel dump: vmcore-dmesg finds the log
        # through the PT_LOADs' virtual addresses
        vd = shutil.which("vmcore-dmesg") or "/usr/sbin/vmcore-dmesg"
        p = subprocess.run([vd, str(out)], capture_output=True, text=True, errors="replace")
        assert "Kernel panic - not syncing: sysrq triggered crash" in p.stdout, \
            f"vmcore-dmesg on the ELF copy: {p.stderr[-500:]}"
        tokens = [f"E2E-FILE-{res.nonce}\n".encode(), f"E2E-HEAP-{res.nonce}\n".encode()]
        found = list(harness.count_patterns(out, tokens).values())
        for n, nbytes, token in zip(found, pattern_bytes, tokens):
            # the raw dump holds >= 90 % of the copies (the raw tests check that); a few
            # stay in kernel memory the patterns passed through (pipe buffers, pages
            # freed to the per-CPU lists), which a filtered dump keeps, as makedumpfile's
            assert n < 0.1 * nbytes / len(token), f"{token!r}: {n} copies left"
    finally:
        for f in (kdump, dmesg, out):
            if f.exists():
                f.unlink()
    reads = c.first(r"^ reads\.\.\.\.: ")  # pages from mappings (mmap on), if any
    return (f"  filtered in the dump kernel: {walk[1].strip()}; {written[1].strip()}; "
            f"{reads[1].strip() + '; ' if reads else ''}"
            f"patterns left: file {found[0]}, heap {found[1]}")
