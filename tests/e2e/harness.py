"""End-to-end: a crashed Linux guest dumps itself through our zfcpdump onto an
emulated SCSI disk, and the host reads the dump back.

    disk image (MBR, one partition) --zfcpdump prepare --metadata-only-->
    QEMU: first kernel (crashkernel=) -> patterns in memory -> kexec -p -> sysrq-c
          dump kernel -> /init -> exec zfcpdump (PID 1: /proc/vmcore -> /dev/sda) -> off
    host: ELF out of the partition -> patterns, vmcore-dmesg, console lines

Use from pytest (tests/test_e2e_x86_64.py, tests/test_e2e_x86_64_612.py,
tests/test_e2e_s390x.py) or by hand:

    python tests/e2e/harness.py --engine rust --crashkernel 192M --mem 1024
    python tests/e2e/harness.py --arch s390x --engine default --crashkernel 256M
    python tests/e2e/harness.py --arch x86_64-6.12 --engine rust --crashkernel 160M

On s390x the guest gets our package as pure Python unless `--rust` (the extension
cross-built for s390x: Debian's gcc-s390x-linux-gnu, rustup's s390x-unknown-linux-gnu):
`--engine default` runs zfcpdump with no arguments, which falls back to the Python
engine with one WARNING line.

Environment: ZFCPDUMP_WHEEL (a built wheel; otherwise `maturin build --release` here;
ZFCPDUMP_WHEEL_S390X the same for the s390x one),
ZFCPDUMP_E2E_CACHE (guest packages, default /var/cache/zfcpdump-e2e),
ZFCPDUMP_E2E_ACCEL (kvm or tcg; default kvm when /dev/kvm works),
ZFCPDUMP_E2E_KEEP (a directory: keep disk, dump and console there).
"""

from __future__ import annotations

import dataclasses
import fcntl
import mmap
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "e2e"  # noqa: A001

from . import assets, initramfs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


# ---------------------------------------------------------------------------------------
# host capabilities
# ---------------------------------------------------------------------------------------
def kvm_usable() -> bool:
    """/dev/kvm opens and creates a VM (it can exist without working, e.g. nested)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, 0xAE00) != 12:  # KVM_GET_API_VERSION
            return False
        vm = fcntl.ioctl(fd, 0xAE01, 0)    # KVM_CREATE_VM
        os.close(vm)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


_ACCEL: dict[str, str] = {}


def kvm_boots(arch: assets.Arch, kernel: Path, timeout: float = 15.0) -> bool:
    """Some hosts (nested virtualisation) have a /dev/kvm that runs trivial code but
    hangs in a Linux boot. Boot the kernel without a root fs under KVM: a working KVM
    reaches the "VFS: Unable to mount root" panic in a second or two."""
    cmd = [arch.qemu, *arch.machine, "-accel", "kvm", "-m", "256", "-nodefaults", "-display",
           "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
           "-append", f"console={arch.console} panic=-1 loglevel=4"]
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return b"Kernel panic" in p.stdout


def accelerator(arch: assets.Arch, kernel: Path) -> str:
    """ZFCPDUMP_E2E_ACCEL=kvm|tcg, else kvm when /dev/kvm works and boots Linux."""
    forced = os.environ.get("ZFCPDUMP_E2E_ACCEL")
    if forced:
        return forced
    if arch.name not in _ACCEL:
        native = os.uname().machine == arch.name and arch.kvm_possible
        _ACCEL[arch.name] = "kvm" if native and kvm_usable() and kvm_boots(arch, kernel) else "tcg"
    return _ACCEL[arch.name]


def missing_tools(arch: assets.Arch) -> list[str]:
    need = [arch.qemu, "apt-get", "dpkg-deb", "vmcore-dmesg"]
    if (arch.kernel_image or "").endswith(".zst"):
        need.append("zstd")
    return [t for t in need if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]


# ---------------------------------------------------------------------------------------
# the wheel
# ---------------------------------------------------------------------------------------
class WheelError(RuntimeError):
    pass


# cross-building the extension: the C parts (zlib, zstd) and the link need the target's gcc
CROSS_GCC = {"s390x-unknown-linux-gnu": "s390x-linux-gnu-gcc"}


def find_or_build_wheel(workdir: Path, target: Optional[str] = None) -> Path:
    """The wheel for the host, or cross-built for the Rust `target` triple."""
    arch = target.split("-")[0] if target else None
    given = os.environ.get(f"ZFCPDUMP_WHEEL_{arch.upper()}" if arch else "ZFCPDUMP_WHEEL")
    if given:
        import glob

        # a path or a glob (dist/zfcpdump-*.whl), relative to the cwd or to the repository
        paths = [Path(p) for p in sorted(glob.glob(given) or glob.glob(str(REPO / given)))]
        if not paths or not paths[-1].is_file():
            raise FileNotFoundError(f"ZFCPDUMP_WHEEL={given}: no such wheel")
        return paths[-1].resolve()
    out = workdir / (f"wheel-{arch}" if arch else "wheel")
    out.mkdir(parents=True, exist_ok=True)
    interp = sys.executable if sys.version_info[:2] == initramfs.GUEST_PYTHON else "python3.11"
    maturin = shutil.which("maturin") or str(Path(sys.executable).parent / "maturin")
    if not os.path.exists(maturin):
        raise WheelError("maturin not found")
    cmd = [maturin, "build", "--release", "--locked", "-q", "-o", str(out), "-i", interp]
    env = dict(os.environ)
    if target:
        gcc = CROSS_GCC[target]
        if shutil.which(gcc) is None:
            raise WheelError(f"needs {gcc} to cross-build for {target} "
                             "(`bash .ci/test-rust-s390x.sh` installs it)")
        triple = target.upper().replace("-", "_")
        env.update({f"CARGO_TARGET_{triple}_LINKER": gcc, f"CC_{target.replace('-', '_')}": gcc,
                    "PYO3_CROSS_PYTHON_VERSION": ".".join(map(str, initramfs.GUEST_PYTHON)),
                    "CARGO_TARGET_DIR": str(REPO / "target" / "cross")})
        # (cross: maturin takes the version from the name, not from an interpreter)
        cmd[cmd.index(interp)] = "python%d.%d" % initramfs.GUEST_PYTHON
        cmd += ["--target", target]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if p.returncode:
        raise WheelError(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
    wheels = sorted(out.glob("zfcpdump-*.whl"))
    if not wheels:
        raise WheelError(f"maturin built no wheel in {out}")
    return wheels[-1]


# ---------------------------------------------------------------------------------------
# the disk
# ---------------------------------------------------------------------------------------
def make_disk(path: Path, size: int) -> str:
    """An MBR disk image with one partition from 1 MiB to the end, prepared by our
    `zfcpdump prepare --metadata-only`. Returns prepare's output."""
    from zfcpdump.disk.image import create_mbr_image

    if path.exists():
        path.unlink()
    create_mbr_image(str(path), size, [(MIB, size - MIB)])
    p = subprocess.run([sys.executable, "-m", "zfcpdump", "prepare", str(path), "--partition", "1",
                        "--metadata-only"], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"zfcpdump prepare failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p.stdout.strip()


def extract_dump(disk: Path, out: Path) -> int:
    """The ELF dump out of the partition: the partition holds /proc/vmcore byte for byte
    at part_start + dump_offset. Its size comes from the ELF program headers."""
    import struct

    from zfcpdump.disk.zipl import SUPERBLOCK_SIZE, ScsiMbr, Superblock

    with open(disk, "rb") as f:
        mbr = ScsiMbr.from_bytes(f.read(152))
        f.seek(mbr.superblock_offset)
        sb = Superblock.from_bytes(f.read(SUPERBLOCK_SIZE))
        base = sb.part_start + sb.dump_offset
        f.seek(base)
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            raise AssertionError(f"no ELF header at the start of the dump (got {head[:16]!r})")
        e = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack_from(e + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(e + "HH", head, 0x36)
        f.seek(base + phoff)
        ph = f.read(phentsize * phnum)
        end = phoff + phentsize * phnum
        for i in range(phnum):
            _, _, p_offset, _, _, p_filesz, _, _ = struct.unpack_from(e + "IIQQQQQQ", ph, i * phentsize)
            end = max(end, p_offset + p_filesz)
    if end > sb.dump_size:
        raise AssertionError(f"ELF end {end} beyond the dump size {sb.dump_size}")
    with open(disk, "rb") as src, open(out, "wb") as dst:
        left, off = end, base
        while left:
            n = os.copy_file_range(src.fileno(), dst.fileno(), min(left, 64 * MIB), off)
            if n <= 0:
                raise AssertionError("short dump")
            off += n
            left -= n
    return end


def same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MIB), fb.read(16 * MIB)
            if x != y:
                return False
            if not x:
                return True


def count_patterns(path: Path, tokens: list[bytes]) -> dict[bytes, int]:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        out = {}
        for t in tokens:
            n, pos = 0, m.find(t)
            while pos >= 0:
                n += 1
                pos = m.find(t, pos + len(t))
            out[t] = n
        return out


class LoopDevice:
    """`losetup -f --show -P -r IMAGE` (root), with the partition nodes waited for
    (`partx -u` when they do not appear by themselves); detached on exit."""

    def __init__(self, image: Path, read_only: bool = True):
        self.image, self.read_only, self.dev = image, read_only, ""

    def part(self, n: int) -> str:
        return f"{self.dev}p{n}"

    def __enter__(self) -> "LoopDevice":
        cmd = ["losetup", "-f", "--show", "-P", *(["-r"] if self.read_only else []),
               str(self.image)]
        self.dev = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
        for i in range(50):
            if os.path.exists(self.part(1)):
                break
            subprocess.run(["partx", "-u" if i == 0 else "-a", self.dev], capture_output=True)
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["losetup", "-d", self.dev], capture_output=True)


# ---------------------------------------------------------------------------------------
# QEMU
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Console:
    lines: list[tuple[float, str]]  # (seconds since QEMU start, text)

    def first(self, pattern: str) -> Optional[tuple[float, str]]:
        rx = re.compile(pattern)
        return next(((t, s) for t, s in self.lines if rx.search(s)), None)

    def all(self, pattern: str) -> list[tuple[float, str]]:
        rx = re.compile(pattern)
        return [(t, s) for t, s in self.lines if rx.search(s)]

    def text(self) -> str:
        return "\n".join(s for _, s in self.lines)

    def tail(self, n: int = 60) -> str:
        return "\n".join(f"[{t:7.2f}] {s}" for t, s in self.lines[-n:])


def run_qemu(cmd: list[str], console_log: Path, timeout: float) -> tuple[int, Console, bool]:
    """Run QEMU with the serial console on stdout; timestamp every line as it arrives.
    Returns (exit status, console, timed out)."""
    t0 = time.monotonic()
    lines: list[tuple[float, str]] = []
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)

    def reader() -> None:
        with open(console_log, "w", errors="replace") as log:
            for raw in proc.stdout:  # type: ignore[union-attr]
                t = time.monotonic() - t0
                full = raw.decode("utf-8", "replace").rstrip("\r\n")
                # what a terminal shows: the text after the last carriage return
                s = full.rsplit("\r", 1)[-1]
                lines.append((t, s))
                log.write(f"[{t:8.3f}] {full}\n")
                log.flush()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    th.join(10)
    return proc.returncode, Console(lines), timed_out


# ---------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Guest:
    """What is built once and shared by the runs: kernel, modules, dump initramfs."""
    arch: assets.Arch
    root: Path
    kernel: Path
    dump_initramfs: Path
    summary: dict
    wheel: Optional[Path]  # None: the package went in as pure Python (arch.pure_python)
    prepare_s: float

    @property
    def package(self) -> str:
        return self.wheel.name if self.wheel else f"pure Python {self.summary.get('version')}"


def package_version() -> str:
    """The version for the pure-Python install's METADATA: the installed zfcpdump's,
    else Cargo.toml's."""
    try:
        from importlib.metadata import version

        return version("zfcpdump")
    except Exception:
        m = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)
        return m.group(1) if m else "0.0.0"


def prepare_guest(arch: assets.Arch, workdir: Path, log=print,
                  rust: Optional[bool] = None) -> Guest:
    """rust: with the Rust extension (default: unless arch.pure_python)."""
    t0 = time.monotonic()
    base = assets.fetch(arch, log=log)
    t_fetch = time.monotonic()
    rust = not arch.pure_python if rust is None else rust
    if not rust:
        wheel, pure = None, (REPO / "python" / "zfcpdump", package_version())
    else:
        wheel, pure = find_or_build_wheel(workdir, arch.rust_target), None
    t_wheel = time.monotonic()
    if arch.kernel_package:
        kernel, moddir, _ = assets.kernel_paths(base)
    else:
        kernel, moddir = assets.given_kernel(arch, base), None
    dump_img = workdir / f"kdump-{arch.key}{'-rust' if rust and arch.pure_python else ''}.img"
    summary = initramfs.build_dump_initramfs(base / "root", wheel, dump_img, moddir=moddir,
                                             modules=arch.modules, pure_package=pure)
    t_img = time.monotonic()
    summary.update(fetch_s=t_fetch - t0, wheel_s=t_wheel - t_fetch, initramfs_s=t_img - t_wheel,
                   version=pure[1] if pure else None)
    log(f"e2e: guest ready: {wheel.name if wheel else 'pure-Python package'}; dump initramfs {summary['image_bytes'] >> 10} KiB "
        f"({summary['files_bytes'] >> 10} KiB unpacked); modules "
        f"{' '.join(Path(m).stem for m in summary['modules'])}; fetch {summary['fetch_s']:.1f}s, "
        f"wheel {summary['wheel_s']:.1f}s, initramfs {summary['initramfs_s']:.1f}s")
    return Guest(arch, base / "root", kernel, dump_img, summary, wheel, time.monotonic() - t0)


@dataclasses.dataclass
class RunResult:
    engine: str
    crashkernel: str
    mem_mib: int
    accel: str
    rc: int
    timed_out: bool
    console: Console
    console_log: Path
    disk: Path
    nonce: str
    wall_s: float
    times: dict
    vmcore_bytes: int = 0
    dump_elf: Optional[Path] = None
    hwm_kib: int = 0
    min_memavail_kib: int = 0
    memtotal_kib: int = 0
    final_progress: str = ""
    patterns: dict = dataclasses.field(default_factory=dict)
    dmesg_panic: str = ""
    dmesg: str = ""

    @property
    def dumped(self) -> bool:
        return self.console.first(r"^Dump successful") is not None

    @property
    def powered_off(self) -> bool:
        """The guest powered itself off. Its "reboot: Power down" line does not always
        reach the console (s390x: the SCLP console is not drained before power-off), so
        QEMU's own trace of the request counts too: reason 6 is SHUTDOWN_CAUSE_GUEST_SHUTDOWN
        (a reset under -no-reboot and a panic give other reasons, 7 and 8)."""
        return (self.console.first(r"reboot: Power down") is not None
                or self.console.first(r"qemu_system_shutdown_request reason=6\b") is not None)

    def capture_s(self) -> Optional[float]:
        a, b = self.console.first(r"^Writing dump:"), self.console.first(r"^Dump successful")
        return b[0] - a[0] if a and b else None

    def throughput_mib_s(self) -> Optional[float]:
        s = self.capture_s()
        return self.vmcore_bytes / MIB / s if s and self.vmcore_bytes else None

    def report(self) -> str:
        thr = self.throughput_mib_s()
        t = self.times
        return (f"engine={self.engine} crashkernel={self.crashkernel} mem={self.mem_mib}M "
                f"accel={self.accel} ok={self.dumped} vmcore={self.vmcore_bytes / MIB:.0f}MiB "
                f"first-kernel-to-crash={t.get('crash', 0):.1f}s "
                f"dump-kernel-boot={t.get('dump_boot', 0):.1f}s "
                f"capture={self.capture_s() or 0:.1f}s ({thr or 0:.1f} MiB/s host-timed; "
                f"zfcpdump: '{self.final_progress.strip()}') "
                f"qemu-total={self.wall_s:.1f}s peak-VmHWM={self.hwm_kib / 1024:.1f}MiB "
                f"dump-kernel-MemTotal={self.memtotal_kib / 1024:.0f}MiB "
                f"min-MemAvailable={self.min_memavail_kib / 1024:.0f}MiB")


def run(guest: Guest, workdir: Path, *, engine: str = "rust", crashkernel: str = "256M",
        mem_mib: int = 1024, extra_args: str = "", timeout: float = 600.0,
        disk_size: Optional[int] = None, log=print) -> RunResult:
    arch = guest.arch
    workdir.mkdir(parents=True, exist_ok=True)
    label = f"{engine} {extra_args}".strip()  # e.g. "rust --mmap"
    tag = re.sub(r"[^A-Za-z0-9]+", "-", label) + f"-{crashkernel}"
    disk = workdir / f"disk-{tag}.img"
    make_disk(disk, disk_size or (mem_mib + 64) * MIB)
    nonce = secrets.token_hex(8)
    kdump_append = " ".join(filter(None, [
        f"console={arch.console}", arch.kdump_append, "panic=1", "e2e_mem=1",
        f"e2e_engine={engine}" if engine not in ("rust", "default") else "",
        f"e2e_args={extra_args.replace(' ', ',')}" if extra_args else ""]))
    first = workdir / f"first-{tag}.img"
    initramfs.build_first_initramfs(guest.root, first, kernel=guest.kernel,
                                    dump_initramfs=guest.dump_initramfs, config={
                                        "NONCE": nonce, "KDUMP_APPEND": kdump_append,
                                        "FILE_BYTES": str(8 * MIB), "HEAP_BYTES": str(4 * MIB)})
    accel = accelerator(arch, guest.kernel)
    cmd = [arch.qemu, *arch.machine, "-accel", accel, "-m", str(mem_mib), "-smp", str(arch.smp),
           "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
           "-trace", "qemu_system_shutdown_request",  # see RunResult.powered_off
           "-kernel", str(guest.kernel), "-initrd", str(first),
           "-append", " ".join(filter(None, [f"console={arch.console}", f"crashkernel={crashkernel}",
                                             "panic=1", arch.first_append])),
           "-device", f"{arch.scsi_controller},id=scsi0",
           "-drive", f"file={disk},format=raw,if=none,id=d0,cache=writeback",
           "-device", "scsi-hd,drive=d0,bus=scsi0.0"]
    console_log = workdir / f"console-{tag}.log"
    log(f"e2e: {' '.join(cmd)}")
    t0 = time.monotonic()
    rc, console, timed_out = run_qemu(cmd, console_log, timeout)
    wall = time.monotonic() - t0
    times = {}
    for key, rx in (("crash", r"E2E: crashing"), ("dump_up", r"E2E: dump kernel up"),
                    ("exec", r"E2E: exec zfcpdump"), ("writing", r"^Writing dump:"),
                    ("done", r"^Dump (successful|failed)")):
        hit = console.first(rx)
        if hit:
            times[key] = hit[0]
    # On s390x the panic line does not reach the SCLP console before kexec (it is in the
    # dump's dmesg): time the dump kernel's boot from the crash request then.
    panic = (console.first(r"Kernel panic - not syncing: sysrq triggered crash")
             or console.first(r"E2E: crashing"))
    if panic and "dump_up" in times:
        times["dump_boot"] = times["dump_up"] - panic[0]
    if "exec" in times and "writing" in times:
        times["python_start"] = times["writing"] - times["exec"]
    res = RunResult(label, crashkernel, mem_mib, accel, rc, timed_out, console, console_log, disk,
                    nonce, wall, times)
    m = console.first(r"E2E: vmcore: (\d+) bytes")
    res.vmcore_bytes = int(m[1].split()[2]) if m else 0
    m = console.first(r"E2E: dump kernel up: MemTotal: (\d+)")
    res.memtotal_kib = int(re.search(r"MemTotal: (\d+)", m[1]).group(1)) if m else 0
    for _, line in console.all(r"E2E-MEM "):
        kv = dict(re.findall(r"(\w+)=(\d+)", line))
        res.hwm_kib = max(res.hwm_kib, int(kv.get("VmHWM", 0)))
        if "MemAvailable" in kv:
            ma = int(kv["MemAvailable"])
            res.min_memavail_kib = ma if not res.min_memavail_kib else min(res.min_memavail_kib, ma)
    prog = console.all(r"^ +\d+ of \d+ MB ")
    res.final_progress = prog[-1][1] if prog else ""
    return res


def analyse(res: RunResult, workdir: Path) -> None:
    """Host side: extract the ELF, count the patterns, run vmcore-dmesg."""
    elf = workdir / f"dump-{res.engine}-{res.crashkernel}.elf"
    size = extract_dump(res.disk, elf)
    res.dump_elf = elf
    if res.vmcore_bytes and size != res.vmcore_bytes:
        raise AssertionError(f"ELF in the partition is {size} bytes, /proc/vmcore was "
                             f"{res.vmcore_bytes}")
    res.patterns = {k.decode(): v for k, v in count_patterns(
        elf, [f"E2E-FILE-{res.nonce}\n".encode(), f"E2E-HEAP-{res.nonce}\n".encode()]).items()}
    p = subprocess.run([shutil.which("vmcore-dmesg") or "/usr/sbin/vmcore-dmesg", str(elf)],
                       capture_output=True, text=True, errors="replace")
    res.dmesg = p.stdout if p.returncode == 0 else f"vmcore-dmesg failed: {p.stderr}"
    res.dmesg_panic = next((line for line in p.stdout.splitlines()
                            if "Kernel panic - not syncing" in line), "")
    (workdir / f"vmcore-dmesg-{res.engine}-{res.crashkernel}.txt").write_text(p.stdout)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="x86_64", choices=list(assets.ARCHES))
    ap.add_argument("--engine", action="append", choices=["rust", "python", "default"],
                    help="default: zfcpdump without --engine (rust, or python where the "
                         "extension is missing)")
    ap.add_argument("--crashkernel", action="append", help="e.g. 256M (repeatable)")
    ap.add_argument("--mem", type=int, default=1024, help="guest RAM in MiB")
    ap.add_argument("--args", default="", help="more zfcpdump arguments in the dump kernel")
    ap.add_argument("--workdir", default="/tmp/zfcpdump-e2e")
    ap.add_argument("--no-analyse", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the disk images and dumps")
    ap.add_argument("--rust", action="store_true",
                    help="s390x: the Rust extension, cross-built, instead of pure Python")
    a = ap.parse_args(argv)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    guest = prepare_guest(assets.ARCHES[a.arch], work, rust=True if a.rust else None)
    status = 0
    for ck in a.crashkernel or ["256M"]:
        for eng in a.engine or ["rust"]:
            res = run(guest, work, engine=eng, crashkernel=ck, mem_mib=a.mem, extra_args=a.args)
            if res.dumped and not a.no_analyse:
                analyse(res, work)
            print(res.report())
            if res.dumped and not a.no_analyse:
                print(f"  patterns {res.patterns}; vmcore-dmesg: {res.dmesg_panic.strip()}")
            if not res.dumped:
                status = 1
                print(res.console.tail(40))
            if not a.keep:  # large
                for f in (res.dump_elf, res.disk):
                    if f is not None and f.exists():
                        f.unlink()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
