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

from e2e import assets, filtered, fixtures, harness

ARCH = assets.ARCHES["x86_64"]
CRASHKERNEL = os.environ.get("ZFCPDUMP_E2E_CRASHKERNEL", "160M")
GUEST_MEM_MIB = 1024
PATTERN_FILE_BYTES, PATTERN_HEAP_BYTES = 8 << 20, 4 << 20

pytestmark = pytest.mark.slow


def _unavailable() -> str:
    if os.uname().machine != "x86_64":
        return "the x86_64 end-to-end test runs on an x86_64 host"
    if shutil.which("dpkg") is None or assets.host_deb_arch() != "amd64":
        return "needs a Debian amd64 host (apt-get download, dpkg-deb)"
    missing = harness.missing_tools(ARCH)
    if missing:
        return f"needs {', '.join(missing)} (`bash .ci/install-e2e.sh` installs them)"
    return ""


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
    reason = _unavailable()
    if reason:
        _skip_or_fail(reason)
    try:
        g = harness.prepare_guest(ARCH, workdir, log=lambda s: None)
    except assets.FetchError as exc:
        _skip_or_fail(f"cannot fetch the guest packages with apt: {exc}")
    except (FileNotFoundError, harness.WheelError) as exc:
        _skip_or_fail(f"no wheel for the guest (set ZFCPDUMP_WHEEL or install maturin): {exc}")
    s = g.summary
    report.append(f"guest: {g.kernel.name}, wheel {g.wheel.name}, dump initramfs "
                  f"{s['image_bytes'] >> 10} KiB gz / {s['files_bytes'] >> 10} KiB unpacked; "
                  f"setup: fetch {s['fetch_s']:.1f}s, wheel {s['wheel_s']:.1f}s, "
                  f"initramfs {s['initramfs_s']:.1f}s")
    return g


@pytest.mark.parametrize("engine,extra", [("rust", ""), ("python", ""), ("rust", "--no-mmap")],
                         ids=["rust", "python", "rust-read"])
def test_crashed_guest_dumps_itself(guest, workdir, report, engine, extra):
    res = harness.run(guest, workdir, engine=engine, crashkernel=CRASHKERNEL,
                      mem_mib=GUEST_MEM_MIB, extra_args=extra, timeout=420, log=lambda s: None)
    c = res.console
    where = f"(console: {res.console_log})\n{c.tail(50)}"
    try:
        assert not res.timed_out, f"QEMU did not finish in time {where}"
        # the first kernel did its part
        assert c.first(r"E2E: patterns in memory"), f"no patterns {where}"
        assert c.first(r"E2E: dump kernel loaded"), f"kexec -p failed {where}"
        assert c.first(r"Kernel panic - not syncing: sysrq triggered crash"), where
        # the dump kernel ran zfcpdump as PID 1 (dump-kernel mode) with its defaults
        assert not c.first(r"Initramfs unpacking failed"), \
            f"the dump initramfs does not fit in crashkernel={CRASHKERNEL} {where}"
        assert c.first(r"E2E: dump kernel up"), f"the dump kernel did not start {where}"
        assert not c.first(r"E2E-FAIL"), where
        for line in ("Linux System Dumper starting", "Version 3.0 (64 bit)", "Dump start at:",
                     "Dump parameters:", " vmcore...: /proc/vmcore", " partition: /dev/sda1",
                     "Writing dump:"):
            assert any(s == line for _, s in c.lines), f"no {line!r} on the console {where}"
        assert not c.all(r"^ERROR: |Traceback"), where
        reads = c.first(r"^ reads\.\.\.\.: (.*)$")
        if engine == "rust" and extra != "--no-mmap":
            # mmap is the default on x86_64: /proc/vmcore was read through mappings (how
            # the writes left them: straight or, for VM_PFNMAP memory that cannot be
            # pinned, after one copy, is the kernel's business, performance.md §2.2)
            assert reads and reads[1].strip().startswith("reads....: mmap windows"), where
            report.append(f"  {engine} {extra}: {reads[1].strip()}")
        else:
            assert reads is None or "read()" in reads[1], where
        total = round(res.vmcore_bytes / (1 << 20))
        progress = [s for _, s in c.all(r"^ +\d+ of \d+ MB ")]
        assert progress and re.match(rf"^ +0 of {total} MB +0\.0% +0 MB/s unknown ETA$",
                                     progress[0]), f"first progress line {progress[:1]} {where}"
        assert re.match(rf"^ +{total} of {total} MB 100\.0% +\d+ MB/s 0:00:00 ETA$",
                        progress[-1]), f"last progress line {progress[-1:]} {where}"
        assert res.dumped, f"no 'Dump successful' {where}"
        assert c.first(r"reboot: Power down"), f"zfcpdump did not power the guest off {where}"
        assert res.rc == 0, where

        # the host reads the dump back
        harness.analyse(res, workdir)
        want = {f"E2E-FILE-{res.nonce}\n": PATTERN_FILE_BYTES,
                f"E2E-HEAP-{res.nonce}\n": PATTERN_HEAP_BYTES}
        for token, nbytes in want.items():
            # a token split by a page boundary may not be found: allow 10 %
            assert res.patterns[token] >= 0.9 * nbytes / len(token), \
                f"{token.strip()}: {res.patterns[token]} copies in the dump"
        assert "sysrq: Trigger a crash" in res.dmesg, res.dmesg[-3000:]
        assert "Kernel panic - not syncing: sysrq triggered crash" in res.dmesg_panic
        _readback_cross_check(res)
        if not extra:
            report.extend(_filter_cross_check(res, workdir, engine))
    finally:
        report.append(res.report())
        if res.patterns:
            report.append(f"  {res.engine}: patterns found {sorted(res.patterns.values())}; "
                          f"vmcore-dmesg: {res.dmesg_panic.strip()}")
        fixtures.discard(res.dump_elf, res.disk, *workdir.glob(f"first-{engine}-*.img"))


def _readback_cross_check(res: harness.RunResult) -> None:
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


def _kdump_bitmaps(path: Path) -> tuple[bytes, bytes]:
    """(1st, 2nd) bitmap of a little-endian kdump file."""
    import struct

    with open(path, "rb") as f:
        head = f.read(4096)
        block, sub, blocks = struct.unpack_from("<III", head, 428)
        half = blocks // 2 * block
        f.seek((1 + sub) * block)
        both = f.read(2 * half)
    return both[:half], both[half:]


def _filter_cross_check(res: harness.RunResult, workdir: Path, engine: str) -> list[str]:
    """Page-class filtering on a real Linux 6.1 vmcore: `dump --compress zlib
    --dump-level N` (the vmcore the guest wrote, read on the host) and makedumpfile
    1.7.2 `-c -d N` on the same file leave out the same pages: their 2nd bitmaps agree
    on every page both call RAM (makedumpfile drops a partly covered page from its RAM,
    we keep its bytes), and makedumpfile reads the same kernel log out of ours."""
    from test_kdump_capture import capture, dump_bytes, mib_above, prepared_image

    if shutil.which("makedumpfile") is None:
        _skip_or_fail("needs makedumpfile for the page-filter cross-check")
    levels = (2, 8, 16, 31) if engine == "rust" else (31,)
    lines = []
    for level in levels:
        ref = workdir / f"md-{engine}-{level}.kdump"
        ours = workdir / f"ours-{engine}-{level}.kdump"
        disk = None
        try:
            subprocess.run(["makedumpfile", "-c", "-d", str(level), str(res.dump_elf), str(ref)],
                           check=True, capture_output=True)
            disk = prepared_image(workdir, mib_above(res.dump_elf.stat().st_size),
                                  name=f"filter-{engine}-{level}.img")
            assert capture(disk, res.dump_elf, "--compress", "zlib", "--dump-level", str(level),
                           engine=engine) == 0
            ours.write_bytes(dump_bytes(disk))
            ram_md, dump_md = _kdump_bitmaps(ref)
            _, dump_ours = _kdump_bitmaps(ours)
            assert len(dump_ours) == len(dump_md), "different max_mapnr"
            n = len(dump_md)
            differ = [i for i in range(n) if dump_ours[i] & ram_md[i] != dump_md[i]]
            assert not differ, (f"dump level {level}: 2nd bitmaps differ in bytes "
                                f"{differ[:10]} (pfns {8 * differ[0]}..)")
            dumped = sum(bin(b).count("1") for b in dump_md[:n])
            assert dumped < sum(bin(b).count("1") for b in ram_md[:n]), "nothing was excluded"
            if level == 31:
                logs = []
                for f in (ref, ours):
                    out = f.with_suffix(".dmesg")
                    subprocess.run(["makedumpfile", "--dump-dmesg", str(f), str(out)],
                                   check=True, capture_output=True)
                    logs.append(out.read_text(errors="replace"))
                    out.unlink()
                assert logs[0] == logs[1] and "sysrq triggered crash" in logs[1]
            lines.append(f"  filter {engine} -d {level}: same pages as makedumpfile -c "
                         f"({dumped} dumped); size {ours.stat().st_size} vs "
                         f"{ref.stat().st_size} bytes")
        finally:
            for f in (ref, ours, disk):
                if f is not None and f.exists():
                    f.unlink()
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
    c = res.console
    where = f"(console: {res.console_log})\n{c.tail(50)}"
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
