"""Issue #8: end to end on the real architecture.

An s390x Linux guest (the 6.1 kernel of /work/shared/samples/s390x-dump-kernel under
qemu-system-s390x, TCG, 1 GiB, 2 CPUs, crashkernel=) leaves known patterns in memory,
loads the same kernel as its kdump kernel with Debian's s390x `kexec -p` and crashes
(sysrq-c). The dump kernel builds /proc/vmcore with the s390 kernel's own code, and its
initramfs (Debian's s390x python3.11, pyelftools, our package as pure Python) runs
`zfcpdump` as PID 1 with no arguments, i.e. /proc/vmcore -> /dev/sda through
virtio-scsi-ccw and the Linux SCSI stack; without `zfcpdump._core` it uses the Python
engine. Then it powers off, and the host reads the disk back:

* `zfcpdump info DISK:1`, `zfcpdump copy DISK:1 OUT.elf`, `zfcpdump device /dev/loopN`;
* the patterns are in the dump; the CPU notes are those of a real s390x crash (two
  CPUs, kernel-mode PSWs inside the kernel image, distinct prefix pages);
* `vmcore-dmesg OUT.elf` shows the sysrq panic;
* s390-tools 2.16 `zgetdump -d /dev/loopN` and `zgetdump -i /dev/loopNp1` (qemu-user)
  accept the disk and the dump.

A second guest gets the Rust extension, cross-built for s390x (big-endian; Debian's
gcc-s390x-linux-gnu and rustup's target, `bash .ci/test-rust-s390x.sh` installs both):
the Rust engine captures with read() and with --mmap, and writes a filtered compressed
dump, in the s390x dump kernel.

Needs qemu-system-s390x (Debian `qemu-system-misc`), zstd, apt-get/dpkg-deb, vmcore-dmesg
(`bash .ci/install-e2e.sh`), the sample kernel ($ZFCPDUMP_E2E_S390X_KERNEL overrides),
and for the loop-device part root and the zgetdump oracle (`bash .ci/install-oracles.sh`).
Skipped with the reason when something is missing, except in CI (CI=1 or
ZFCPDUMP_E2E_REQUIRED=1), where it fails.

Knobs: ZFCPDUMP_E2E_S390X_CRASHKERNEL (default 256M), ZFCPDUMP_E2E_CACHE,
ZFCPDUMP_E2E_KEEP=DIR (keep console log, disk and dumps in DIR/s390x).
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

ARCH = assets.ARCHES["s390x"]
CRASHKERNEL = os.environ.get("ZFCPDUMP_E2E_S390X_CRASHKERNEL", "256M")
GUEST_MEM_MIB = 1024
PATTERN_FILE_BYTES, PATTERN_HEAP_BYTES = 8 << 20, 4 << 20
# z/Architecture PSW mask bits (bit 0 = most significant)
PSW_DAT, PSW_WAIT, PSW_PROBLEM = 1 << 58, 1 << 49, 1 << 48
PSW_EA, PSW_BA = 1 << 32, 1 << 31

pytestmark = pytest.mark.slow


def _unavailable() -> str:
    if shutil.which("dpkg") is None:
        return "needs a Debian host (apt-get download, dpkg-deb)"
    missing = harness.missing_tools(ARCH)
    if missing:
        return f"needs {', '.join(missing)} (`bash .ci/install-e2e.sh` installs them)"
    src = assets.given_kernel_source(ARCH)
    if not src.is_file():
        return (f"needs the s390x dump kernel sample at {src} "
                "(set ZFCPDUMP_E2E_S390X_KERNEL to a bzImage or bzImage.zst)")
    return ""


def _skip_or_fail(reason: str) -> None:
    fixtures.skip_or_fail(reason, "s390x end-to-end test")


def _zfcpdump(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zfcpdump", *args], capture_output=True,
                          text=True, errors="replace", stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return fixtures.make_workdir(tmp_path_factory, "e2e-s390x")


@pytest.fixture(scope="module")
def report(request):
    yield from fixtures.report_lines(request, "e2e-s390x")


def _prepare(workdir: Path, rust: bool) -> harness.Guest:
    reason = _unavailable()
    if reason:
        _skip_or_fail(reason)
    try:
        return harness.prepare_guest(ARCH, workdir, log=lambda s: None, rust=rust)
    except assets.FetchError as exc:
        _skip_or_fail(f"cannot fetch the s390x guest packages or kernel: {exc}")
    except (FileNotFoundError, harness.WheelError) as exc:
        _skip_or_fail(f"cannot prepare the {'Rust' if rust else 'pure-Python'} guest: {exc}")


@pytest.fixture(scope="module")
def guest(workdir, report) -> harness.Guest:
    g = _prepare(workdir, rust=False)
    s = g.summary
    report.append(f"guest: {g.kernel} ({g.kernel.stat().st_size} bytes), {g.package}, dump "
                  f"initramfs {s['image_bytes'] >> 10} KiB gz / {s['files_bytes'] >> 10} KiB "
                  f"unpacked; setup: fetch {s['fetch_s']:.1f}s, initramfs {s['initramfs_s']:.1f}s")
    return g


@pytest.fixture(scope="module")
def run(guest, workdir, report):
    """One crash and capture; the read-back tests share it."""
    res = harness.run(guest, workdir, engine="default", crashkernel=CRASHKERNEL,
                      mem_mib=GUEST_MEM_MIB, timeout=480, log=lambda s: None)
    report.append(res.report())
    yield res
    fixtures.discard(res.dump_elf, res.disk, *workdir.glob("first-*.img"),
                     *workdir.glob("*.elf"))


def _need_dump(res: harness.RunResult) -> None:
    if not res.dumped:
        pytest.fail(f"no dump to read back (see test_s390x_guest_dumps_itself; console: "
                    f"{res.console_log})")


def test_s390x_guest_dumps_itself(run):
    res = run
    c = res.console
    where = f"(console: {res.console_log})\n{c.tail(50)}"
    assert not res.timed_out, f"QEMU did not finish in time {where}"
    assert c.first(r"E2E: first kernel up: Linux version"), where
    assert c.first(r"E2E: patterns in memory"), f"no patterns {where}"
    assert c.first(r"E2E: dump kernel loaded"), f"kexec -p failed {where}"
    assert not c.first(r"Initramfs unpacking failed"), \
        f"the dump initramfs does not fit in crashkernel={CRASHKERNEL} {where}"
    assert c.first(r"E2E: dump kernel up"), f"the dump kernel did not start {where}"
    assert not c.first(r"E2E-FAIL"), where
    # zfcpdump as PID 1, no arguments: dump-kernel mode with its defaults
    assert c.first(r"^E2E: exec zfcpdump$"), f"zfcpdump was given arguments {where}"
    checks.assert_default_parameters(res)
    # no _core in the guest: the default engine is the Python one, and the parameters say so
    assert not c.all(r"^WARNING: "), where
    assert any(s == " engine...: python" for _, s in c.lines), f"engine line missing {where}"
    assert not c.all(r"^ERROR: |Traceback"), where
    checks.assert_progress(res)
    assert res.dumped, f"no 'Dump successful' {where}"
    # (the SCLP console loses "reboot: Power down": QEMU's shutdown trace shows it)
    assert res.powered_off, f"zfcpdump did not power the guest off {where}"
    assert res.rc == 0, where


def test_s390x_readback_info_copy_patterns_registers_dmesg(run, workdir, report):
    res = run
    _need_dump(res)
    harness.analyse(res, workdir)  # the raw ELF out of the partition, patterns, vmcore-dmesg
    disk = f"{res.disk}:1"

    p = _zfcpdump("info", disk)
    info = p.stdout + p.stderr
    assert p.returncode == 0, info
    for line in ("Dump format........: elf", "System arch........: s390x (64 bit)",
                 "CPU count (online).: 2", "UTS kernel release.: 6.1."):
        assert line in info, info

    out = workdir / "copy.elf"
    p = _zfcpdump("copy", disk, str(out))
    assert p.returncode == 0, p.stdout + p.stderr

    # the patterns, in the raw partition contents and in our copy
    tokens = {f"E2E-FILE-{res.nonce}\n": PATTERN_FILE_BYTES,
              f"E2E-HEAP-{res.nonce}\n": PATTERN_HEAP_BYTES}
    copied = {k.decode(): v for k, v in harness.count_patterns(
        out, [t.encode() for t in tokens]).items()}
    for token, nbytes in tokens.items():
        # a token split by a page boundary may not be found: allow 10 %
        for where, counts in (("partition", res.patterns), ("copy", copied)):
            assert counts[token] >= 0.9 * nbytes / len(token), \
                f"{token.strip()}: {counts[token]} copies in the {where}"

    # vmcore-dmesg on the copy: the sysrq panic
    vd = shutil.which("vmcore-dmesg") or "/usr/sbin/vmcore-dmesg"
    p = subprocess.run([vd, str(out)], capture_output=True, text=True, errors="replace")
    assert p.returncode == 0, p.stderr
    dmesg = p.stdout
    panic = next((s for s in dmesg.splitlines() if "Kernel panic - not syncing" in s), "")
    assert "sysrq: Trigger a crash" in dmesg, dmesg[-3000:]
    assert "Kernel panic - not syncing: sysrq triggered crash" in panic, dmesg[-3000:]

    # the CPU notes: a real s390x crash of a 2-CPU kernel
    import zfcpdump

    with zfcpdump.open_dump(str(out)) as d:
        assert d.arch.startswith("s390x"), d.arch
        cpus = [c.s390 for c in d.cpus]
    image_end = _kernel_image_end(out, dmesg)
    regs = [f"psw={r.psw_mask:016x}:{r.psw_addr:016x} prefix={r.prefix:#x}" for r in cpus]
    assert len(cpus) == 2 and all(r is not None for r in cpus), regs
    for r in cpus:
        assert r.psw_mask & PSW_DAT, f"DAT off: {regs}"
        assert not r.psw_mask & (PSW_PROBLEM | PSW_WAIT), f"not a running kernel: {regs}"
        assert r.psw_mask & PSW_EA and r.psw_mask & PSW_BA, f"not 64-bit: {regs}"
        assert 0 < r.psw_addr < image_end, f"PSW outside the kernel image (< {image_end:#x}): {regs}"
        assert r.prefix and r.prefix % 0x2000 == 0, regs
    assert len({r.prefix for r in cpus}) == 2, f"prefixes not distinct: {regs}"
    report.append(f"  registers: {'; '.join(regs)} (kernel image ends below {image_end:#x})")
    report.append(f"  patterns: partition {sorted(res.patterns.values())}, copy "
                  f"{sorted(copied.values())}; vmcore-dmesg: {panic.strip()}")


def _kernel_image_end(elf: Path, dmesg: str) -> int:
    """_stext from the dump's VMCOREINFO + the kernel's own size line from its dmesg
    ("Memory: ... (25188K kernel code, 3632K rwdata, 6692K rodata, 7692K init, 1420K bss"),
    plus 1 MiB of slack."""
    with open(elf, "rb") as f:
        head = f.read(1 << 20)  # the notes come first
    m = re.search(rb"SYMBOL\(_stext\)=([0-9a-f]+)", head)
    stext = int(m.group(1), 16) if m else 0x100000
    m = re.search(r"Memory: .*\((\d+)K kernel code, (\d+)K rwdata, (\d+)K rodata, (\d+)K init, "
                  r"(\d+)K bss", dmesg)
    assert m, "no 'Memory:' line in the dump's dmesg"
    return stext + sum(int(x) for x in m.groups()) * 1024 + (1 << 20)


def test_s390x_readback_device_and_zgetdump(run, report):
    res = run
    _need_dump(res)
    reason = ""
    if os.geteuid() != 0:
        reason = "loop devices need root"
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from oracles.zgetdump import run_zgetdump, unavailable_reason, zgetdump_available

        if not zgetdump_available():
            reason = unavailable_reason()
    if reason:
        _skip_or_fail(reason)
    with harness.LoopDevice(res.disk) as loop:
        assert os.path.exists(loop.part(1)), f"no {loop.part(1)}"
        p = _zfcpdump("device", loop.dev)
        dev = p.stdout + p.stderr
        assert p.returncode == 0, dev
        assert "Single-volume SCSI dump tool" in dev and "Partition number..: 1" in dev, dev
        zd = run_zgetdump("-d", loop.dev)
        zi = run_zgetdump("-i", loop.part(1))
    d_out = zd.stdout.decode(errors="replace") + zd.stderr
    i_out = zi.stdout.decode(errors="replace") + zi.stderr
    assert zd.returncode == 0, d_out
    assert "Single-volume SCSI dump tool" in d_out and "Partition number..: 1" in d_out, d_out
    assert re.search(r"Maximum dump size\.: \d+ MB", d_out), d_out
    assert zi.returncode == 0, i_out
    for line in ("Dump format........: elf", "System arch........: s390x (64 bit)",
                 "CPU count (online).: 2"):
        assert line in i_out, i_out
    total = round(res.vmcore_bytes / (1 << 20))
    report.append("  zgetdump -d: " + " | ".join(s.strip() for s in d_out.splitlines() if ":" in s))
    report.append("  zgetdump -i: " + " | ".join(s.strip() for s in i_out.splitlines() if ":" in s)
                  + f" (vmcore {total} MB)")


def test_s390x_page_filter_matches_makedumpfile(run, workdir, report):
    """Page-class filtering on the real s390x /proc/vmcore: `dump --compress zlib
    --dump-level 31` of it (read on the host, as ELF) writes the file the s390x
    makedumpfile 1.7.2 (qemu-user) writes with `-c -d 31`, byte for byte after the
    utsname and timestamp."""
    from oracles.makedumpfile_s390x import _probe, run_makedumpfile
    from test_kdump_capture import capture, dump_bytes, mib_above, prepared_image

    res = run
    _need_dump(res)
    if _probe()[0] is None:
        _skip_or_fail(f"needs the s390x makedumpfile under qemu-user: {_probe()[1]}")
    elf = workdir / "filter-src.elf"
    p = _zfcpdump("copy", f"{res.disk}:1", str(elf))
    assert p.returncode == 0, p.stdout + p.stderr
    ref, disk = workdir / "md31.kdump", None
    try:
        p = run_makedumpfile("-c", "-d", "31", elf, ref)
        assert p.returncode == 0, p.stdout + p.stderr
        disk = prepared_image(workdir, mib_above(elf.stat().st_size), name="filter31.img")
        assert capture(disk, elf, "--compress", "zlib", "--dump-level", "31") == 0
        ours, theirs = dump_bytes(disk), ref.read_bytes()
        assert len(ours) == len(theirs)
        assert ours[:12] == theirs[:12] and ours[424:] == theirs[424:]
        report.append(f"  filter -d 31: same {len(ours)}-byte file as the s390x makedumpfile "
                      f"-c -d 31 (of {elf.stat().st_size >> 20} MiB)")
    finally:
        for f in (elf, ref, disk):
            if f is not None and f.exists():
                f.unlink()


def _filtered_run(guest: harness.Guest, workdir: Path, report: list, engine: str) -> None:
    from oracles.makedumpfile_s390x import _probe, run_makedumpfile

    if _probe()[0] is None:
        _skip_or_fail(f"needs the s390x makedumpfile under qemu-user: {_probe()[1]}")
    filtered.run(guest, workdir, report, engine=engine, crashkernel=CRASHKERNEL,
                 mem_mib=GUEST_MEM_MIB, timeout=600,
                 dump_dmesg=lambda kdump, out: run_makedumpfile("--dump-dmesg", kdump, out),
                 pattern_bytes=(PATTERN_FILE_BYTES, PATTERN_HEAP_BYTES))


def test_s390x_guest_writes_a_filtered_compressed_dump(guest, workdir, report):
    """In the s390x dump kernel (the Python engine: no Rust extension there), straight
    from /proc/vmcore: `zfcpdump --compress zlib --dump-level 31`, its DAT walk and
    struct page classes in pure Python (e2e/filtered.py says what is checked)."""
    _filtered_run(guest, workdir, report, "default")


# ---- the Rust extension on s390x --------------------------------------------------------
@pytest.fixture(scope="module")
def guest_rust(workdir, report) -> harness.Guest:
    g = _prepare(workdir, rust=True)
    report.append(f"guest (Rust): {g.package} (cross-built in {g.summary['wheel_s']:.0f} s), "
                  f"dump initramfs {g.summary['image_bytes'] >> 10} KiB gz")
    return g


@pytest.mark.parametrize("extra", ["", "--mmap"], ids=["read", "mmap"])
def test_s390x_rust_engine_dumps_itself(guest_rust, workdir, report, extra):
    """The Rust engine, built for s390x (big-endian), in the s390x dump kernel: a dump
    the host reads back, with the patterns, both CPUs and the panic in it. With --mmap
    it reads /proc/vmcore through mmap windows (not the default on s390x: upstream
    zfcpdump gave mmap up there in 2024; here it is shown to work under QEMU)."""
    res = harness.run(guest_rust, workdir, engine="rust", crashkernel=CRASHKERNEL,
                      mem_mib=GUEST_MEM_MIB, extra_args=extra, timeout=480, log=lambda s: None)
    c = res.console
    where = f"(console: {res.console_log})\n{c.tail(50)}"
    try:
        assert not res.timed_out, f"QEMU did not finish in time {where}"
        assert c.first(r"E2E: dump kernel up"), f"the dump kernel did not start {where}"
        assert any(s == " engine...: rust" for _, s in c.lines), f"not the Rust engine {where}"
        assert not c.all(r"^ERROR: |^WARNING: |Traceback"), where
        reads = c.first(r"^ reads\.\.\.\.: (.*)$")
        if extra:
            assert reads and reads[1].strip().startswith("reads....: mmap windows"), where
        else:
            assert reads is None, f"read() is the default on s390x {where}"
        assert res.dumped and res.rc == 0, f"no 'Dump successful' {where}"
        harness.analyse(res, workdir)
        for token, nbytes in {f"E2E-FILE-{res.nonce}\n": PATTERN_FILE_BYTES,
                              f"E2E-HEAP-{res.nonce}\n": PATTERN_HEAP_BYTES}.items():
            assert res.patterns[token] >= 0.9 * nbytes / len(token), \
                f"{token.strip()}: {res.patterns[token]} copies in the dump"
        assert "Kernel panic - not syncing: sysrq triggered crash" in res.dmesg_panic
        p = _zfcpdump("info", f"{res.disk}:1")
        info = p.stdout + p.stderr
        assert p.returncode == 0 and "CPU count (online).: 2" in info, info
    finally:
        report.append(res.report())
        fixtures.discard(res.dump_elf, res.disk,
                         res.disk.with_name(res.disk.name.replace("disk-", "first-", 1)))


def test_s390x_rust_engine_writes_a_filtered_compressed_dump(guest_rust, workdir, report):
    """The Rust classifier and kdump writer on a big-endian machine: `--compress zlib
    --dump-level 31` in the s390x dump kernel (e2e/filtered.py says what is checked)."""
    _filtered_run(guest_rust, workdir, report, "rust")
