"""Checks of a raw dump a crashed x86_64 guest wrote of itself, shared by the Linux 6.1
and 6.12 end-to-end tests: the console shows the whole path, the dump reads back
(patterns, panic, our ELF copy), and page-class filtering of it on the host leaves out
the same pages as makedumpfile. The console checks of zfcpdump's own lines serve the
s390x test too."""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

from . import fixtures, harness

#: runs makedumpfile ARGS (the host's or another build) and returns the finished process
Makedumpfile = Callable[..., subprocess.CompletedProcess]


def where(res: harness.RunResult) -> str:
    """The console log and its tail, for an assertion message."""
    return f"(console: {res.console_log})\n{res.console.tail(50)}"


def assert_dumped_itself(res: harness.RunResult, crashkernel: str, mmap_reads: bool) -> str:
    """The console of a run with zfcpdump's defaults: the first kernel crashed, the dump
    kernel ran zfcpdump as PID 1, which wrote the whole vmcore and powered off.
    mmap_reads: /proc/vmcore was read through mappings (else with read()). Returns the
    reads line ('' if none)."""
    c, at = res.console, where(res)
    assert not res.timed_out, f"QEMU did not finish in time {at}"
    # the first kernel did its part
    assert c.first(r"E2E: patterns in memory"), f"no patterns {at}"
    assert c.first(r"E2E: dump kernel loaded"), f"kexec -p failed {at}"
    assert c.first(r"Kernel panic - not syncing: sysrq triggered crash"), at
    # the dump kernel ran zfcpdump as PID 1 (dump-kernel mode) with its defaults
    assert not c.first(r"Initramfs unpacking failed"), \
        f"the dump initramfs does not fit in crashkernel={crashkernel} {at}"
    assert c.first(r"E2E: dump kernel up"), f"the dump kernel did not start {at}"
    assert not c.first(r"E2E-FAIL"), at
    assert_default_parameters(res)
    assert not c.all(r"^ERROR: |Traceback"), at
    reads = c.first(r"^ reads\.\.\.\.: (.*)$")
    if mmap_reads:
        # mmap is the default on x86_64: /proc/vmcore was read through mappings (how
        # the writes left them: straight or, for VM_PFNMAP memory that cannot be
        # pinned, after one copy, is the kernel's business, performance.md §2.2)
        assert reads and reads[1].strip().startswith("reads....: mmap windows"), at
    else:
        assert reads is None or "read()" in reads[1], at
    assert_progress(res)
    assert res.dumped, f"no 'Dump successful' {at}"
    assert c.first(r"reboot: Power down"), f"zfcpdump did not power the guest off {at}"
    assert res.rc == 0, at
    return reads[1].strip() if reads else ""


def assert_default_parameters(res: harness.RunResult) -> None:
    """zfcpdump in dump-kernel mode: /proc/vmcore to the disk's first partition."""
    for line in ("Linux System Dumper starting", "Version 3.0 (64 bit)", "Dump start at:",
                 "Dump parameters:", " vmcore...: /proc/vmcore", " partition: /dev/sda1",
                 "Writing dump:"):
        assert any(s == line for _, s in res.console.lines), \
            f"no {line!r} on the console {where(res)}"


def assert_progress(res: harness.RunResult) -> None:
    """The progress lines go from 0 to all of /proc/vmcore's MB."""
    total = round(res.vmcore_bytes / (1 << 20))
    progress = [s for _, s in res.console.all(r"^ +\d+ of \d+ MB ")]
    assert progress and re.match(rf"^ +0 of {total} MB +0\.0% +0 MB/s unknown ETA$",
                                 progress[0]), f"first progress line {progress[:1]} {where(res)}"
    assert re.match(rf"^ +{total} of {total} MB 100\.0% +\d+ MB/s 0:00:00 ETA$",
                    progress[-1]), f"last progress line {progress[-1:]} {where(res)}"


def assert_reads_back(res: harness.RunResult, workdir: Path,
                      pattern_bytes: tuple[int, int]) -> None:
    """The host reads the dump back: the patterns, the panic in vmcore-dmesg, and our
    read-back copy of the partition (readback_cross_check)."""
    harness.analyse(res, workdir)
    want = zip((f"E2E-FILE-{res.nonce}\n", f"E2E-HEAP-{res.nonce}\n"), pattern_bytes)
    for token, nbytes in want:
        # a token split by a page boundary may not be found: allow 10 %
        assert res.patterns[token] >= 0.9 * nbytes / len(token), \
            f"{token.strip()}: {res.patterns[token]} copies in the dump"
    assert "sysrq: Trigger a crash" in res.dmesg, res.dmesg[-3000:]
    assert "Kernel panic - not syncing: sysrq triggered crash" in res.dmesg_panic
    readback_cross_check(res)


def readback_cross_check(res: harness.RunResult) -> None:
    """Our read-back (`zfcpdump copy DISK:1 OUT`, a zgetdump-layout ELF; `zgetdump`
    itself takes s390x dumps only, as the original) holds the same memory and CPUs as
    the raw vmcore on the partition."""
    import zfcpdump

    out = res.dump_elf.with_suffix(".copy.elf")
    p = subprocess.run([sys.executable, "-m", "zfcpdump", "copy", f"{res.disk}:1", str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.returncode == 0, f"zfcpdump copy {res.disk}:1 failed: {p.stderr}"
        with zfcpdump.open_dump(str(out)) as copied, zfcpdump.open_dump(str(res.dump_elf)) as raw:
            assert [(c.start, c.size) for c in copied.chunks] == [(c.start, c.size) for c in raw.chunks]
            assert len(copied.cpus) == len(raw.cpus)
            step = 8 << 20
            for chunk in raw.chunks:
                for addr in range(chunk.start, chunk.start + chunk.size, step):
                    n = min(step, chunk.start + chunk.size - addr)
                    assert copied.read_phys(addr, n) == raw.read_phys(addr, n), hex(addr)
    finally:
        if out.exists():
            out.unlink()


def report_run(res: harness.RunResult, report: list) -> None:
    """The run's figures to the report, its disks and dumps away (fixtures.discard)."""
    report.append(res.report())
    if res.patterns:
        report.append(f"  {res.engine}: patterns found {sorted(res.patterns.values())}; "
                      f"vmcore-dmesg: {res.dmesg_panic.strip()}")
    fixtures.discard(res.dump_elf, res.disk,
                     res.disk.with_name(res.disk.name.replace("disk-", "first-", 1)))


def kdump_bitmaps(path: Path) -> tuple[bytes, bytes]:
    """(1st, 2nd) bitmap of a little-endian kdump file."""
    with open(path, "rb") as f:
        head = f.read(4096)
        block, sub, blocks = struct.unpack_from("<III", head, 428)
        half = blocks // 2 * block
        f.seek((1 + sub) * block)
        both = f.read(2 * half)
    return both[:half], both[half:]


def popcount(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "little").bit_count()


@dataclasses.dataclass
class Filtered:
    level: int
    excluded: int  # RAM pages we left out
    line: str      # for the report


def filter_cross_check(res: harness.RunResult, workdir: Path, engine: str, levels,
                       makedumpfile: Makedumpfile) -> list[Filtered]:
    """Page-class filtering of the raw vmcore the guest wrote (read on the host):
    `dump --compress zlib --dump-level N` and `makedumpfile -c -d N` on the same file
    leave out the same pages: their 2nd bitmaps agree on every page both call RAM
    (makedumpfile drops a partly covered page from its RAM, we keep its bytes), and
    something is left out; at level 31 makedumpfile reads the same kernel log out of
    both."""
    results = []
    for level in levels:
        ref = workdir / f"md-{engine}-{level}.kdump"
        ours = workdir / f"ours-{engine}-{level}.kdump"
        disk = None
        try:
            disk = _filter_both(res.dump_elf, workdir, engine, level, makedumpfile, ref, ours)
            ram_md, dump_md = kdump_bitmaps(ref)
            ram_ours, dump_ours = kdump_bitmaps(ours)
            assert len(dump_ours) == len(dump_md), "different max_mapnr"
            differ = [i for i in range(len(dump_md)) if dump_ours[i] & ram_md[i] != dump_md[i]]
            assert not differ, (f"dump level {level}: 2nd bitmaps differ in bytes "
                                f"{differ[:10]} (pfns {8 * differ[0]}..)")
            dumped = popcount(dump_md)
            assert dumped < popcount(ram_md), f"dump level {level}: nothing was excluded"
            if level == 31:
                _assert_same_log(ref, ours, makedumpfile)
            results.append(Filtered(level, popcount(ram_ours) - popcount(dump_ours),
                                    f"  filter {engine} -d {level}: same pages as makedumpfile "
                                    f"-c ({dumped} dumped); size {ours.stat().st_size} vs "
                                    f"{ref.stat().st_size} bytes"))
        finally:
            for f in (ref, ours, disk):  # ~1 GiB each: not kept even with E2E_KEEP
                if f is not None and f.exists():
                    f.unlink()
    return results


def filter_against_sid(run: harness.RunResult, workdir: Path, report: list, levels,
                       cpus: int, dumped_itself_test: str) -> None:
    """The host-side check of a Linux 6.12 or later vmcore: filter_cross_check against
    makedumpfile from Debian sid (skipped, or failed in CI, without it), and the free
    pages against the kernel's own count; the lines go to the report."""
    from oracles import makedumpfile_sid

    version, reason = makedumpfile_sid.probe()
    if version is None:
        fixtures.skip_or_fail(reason, "makedumpfile (sid) cross-check")
    if run.dump_elf is None:
        import pytest

        pytest.fail(f"no dump to filter (see {dumped_itself_test}; console: "
                    f"{run.console_log})")
    results = filter_cross_check(run, workdir, "rust", levels, makedumpfile_sid.run_makedumpfile)
    report.extend(f.line for f in results)
    report.append(f"  makedumpfile {version} (sid)")
    report.append(assert_free_pages_counted(results, run.dump_elf, cpus))


def _filter_both(elf: Path, workdir: Path, engine: str, level: int,
                 makedumpfile: Makedumpfile, ref: Path, ours: Path) -> Path:
    """makedumpfile -c -d LEVEL ELF REF, and our `dump` at LEVEL into a prepared image
    whose kdump file goes to OURS. Returns the image."""
    from test_kdump_capture import capture, dump_bytes, mib_above, prepared_image

    p = makedumpfile("-c", "-d", str(level), elf, ref)
    assert p.returncode == 0, f"makedumpfile -c -d {level}: {p.stdout}{p.stderr}"
    disk = prepared_image(workdir, mib_above(elf.stat().st_size),
                          name=f"filter-{engine}-{level}.img")
    assert capture(disk, elf, "--compress", "zlib", "--dump-level", str(level),
                   engine=engine) == 0
    ours.write_bytes(dump_bytes(disk))
    return disk


def _assert_same_log(ref: Path, ours: Path, makedumpfile: Makedumpfile) -> None:
    logs = []
    for f in (ref, ours):
        out = f.with_suffix(".dmesg")
        p = makedumpfile("--dump-dmesg", f, out)
        assert p.returncode == 0, f"makedumpfile --dump-dmesg {f.name}: {p.stdout}{p.stderr}"
        logs.append(out.read_text(errors="replace"))
        out.unlink()
    assert logs[0] == logs[1] and "sysrq triggered crash" in logs[1]


#: x86_64 __START_KERNEL_map: the kernel image's mapping (below it, the direct map)
START_KERNEL_MAP = 0xffffffff80000000
# A zone's NR_FREE_PAGES lags the free lists by what each CPU has not folded in yet,
# at most its stat threshold (vmstat.c caps it at 125 pages) per zone.
STAT_THRESHOLD_MAX = 125


def assert_free_pages_counted(results: list[Filtered], elf: Path, cpus: int) -> str:
    """Dump level 16 leaves out free pages alone: as many as the kernel counts (an
    independent check of the free-page class). Returns a line for the report."""
    excluded = next(f.excluded for f in results if f.level == 16)
    return assert_free_count(excluded, *kernel_free_pages(elf), cpus)


def assert_free_count(excluded: int, free: int, zones: int, cpus: int) -> str:
    """The free pages dump level 16 left out against the kernel's NR_FREE_PAGES of
    `zones` zones, within the per-CPU counters' slack. Returns a line for the report."""
    slack = STAT_THRESHOLD_MAX * cpus * zones
    assert abs(excluded - free) <= slack, \
        f"-d 16 left out {excluded} pages; the kernel counts {free} free (+-{slack})"
    return (f"  -d 16: {excluded} free pages left out; the kernel's NR_FREE_PAGES in "
            f"{zones} zones: {free}")


def node_free_pages(read: Callable[[int, str], int], num: Callable[[str], int],
                    pgdat: int) -> tuple[int, int]:
    """(NR_FREE_PAGES summed over the zones of the pglist_data at `pgdat`, zones):
    `read(address, struct format)` reads the kernel's memory, `num` a VMCOREINFO number."""
    free = zones = 0
    for z in range(read(pgdat + num("OFFSET(pglist_data.nr_zones)"), "i")):
        zone = pgdat + num("OFFSET(pglist_data.node_zones)") + z * num("SIZE(zone)")
        free += read(zone + num("OFFSET(zone.vm_stat)") + 8 * num("NUMBER(NR_FREE_PAGES)"), "q")
        zones += 1
    return free, zones


def kernel_free_pages(elf: Path) -> tuple[int, int]:
    """The x86_64 kernel's own count of free pages in a raw vmcore: NR_FREE_PAGES of
    every zone of every online node, through VMCOREINFO (node_data, pglist_data.
    node_zones, zone.vm_stat). Returns (pages, zones counted)."""
    import zfcpdump

    with zfcpdump.open_dump(str(elf)) as dump:
        info = dump.vmcoreinfo_fields()
        num = lambda key: int(info[key])  # noqa: E731
        sym = lambda name: int(info[f"SYMBOL({name})"], 16)  # noqa: E731
        # direct-map PT_LOADs have p_vaddr = page_offset + p_paddr
        page_offset = min(c.virt_start - c.start for c in dump.chunks
                          if c.virt_start is not None and c.virt_start < START_KERNEL_MAP)

        def phys(vaddr: int) -> int:
            return (vaddr - START_KERNEL_MAP + num("NUMBER(phys_base)")
                    if vaddr >= START_KERNEL_MAP else vaddr - page_offset)

        def read(vaddr: int, fmt: str) -> int:
            return struct.unpack("<" + fmt, dump.read_phys(phys(vaddr), struct.calcsize(fmt)))[0]

        nodes = num("LENGTH(node_data)")
        online = int.from_bytes(dump.read_phys(phys(sym("node_online_map")), (nodes + 7) // 8),
                                "little")
        free = zones = 0
        for node in (n for n in range(nodes) if online >> n & 1):
            pgdat = read(sym("node_data") + 8 * node, "Q")
            node_free, node_zones = node_free_pages(read, num, pgdat)
            free += node_free
            zones += node_zones
    return free, zones
