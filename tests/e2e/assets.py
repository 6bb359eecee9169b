"""Guest software for the end-to-end dump-kernel tests, fetched from Debian with apt.

Everything the guest runs comes from Debian 12 packages, downloaded with
`apt-get download` and unpacked with `dpkg-deb -x` (never installed) into a cache:

    $ZFCPDUMP_E2E_CACHE (default /var/cache/zfcpdump-e2e)/<arch>/
        debs/           the .deb files
        root/           all of them unpacked on top of each other
        kernel/         vmlinuz + modules tree (when the arch uses a Debian kernel)
        apt/            private apt state for another suite (only while fetching)
        STAMP           the package list the cache was built from

The architecture-specific parts are one `Arch` record each. `x86_64` boots Debian's
kernel; `s390x` boots the kernel of /work/shared/samples/s390x-dump-kernel (Debian's
s390x kernel has no CRASH_DUMP), decompressed into `kernel/bzImage` of the cache
(`$ZFCPDUMP_E2E_S390X_KERNEL` points elsewhere: a bzImage or a bzImage.zst), and
its packages come through a separate lists directory (`lists/`, `aptcache/`).
`x86_64-6.12` is x86_64 with the kernel of Debian 13 (trixie): `kernel_suite` takes
the kernel package from that suite (a private sources list, `suite_apt()`), the
userland from the host's Debian 12 lists as for the others. `x86_64-6.16`,
`x86_64-6.17`, `x86_64-6.18` and `x86_64-7.3` take the newest kernel of that line in
trixie-backports that downloads (`kernel_match`); from 6.19 on Debian splits a kernel
into linux-binary-* (the image) and linux-modules-* (`_kernel_split_parts`).

Stdlib only: `.ci/install-e2e.sh` runs it with the system python3
(`python3 tests/e2e/assets.py fetch x86_64`) before any venv exists, and
`.ci/install-oracles.sh` unpacks sid's makedumpfile with it
(`python3 tests/e2e/assets.py unpack [--arch DEBARCH] DEST SUITE[,SUITE]
PACKAGE[/SUITE]...`; a package the mirror lists but does not hold is tried from the
later suites).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

DEFAULT_CACHE = "/var/cache/zfcpdump-e2e"

# Python in the dump kernel: Debian's interpreter, its standard library, and the
# libraries those need (dependencies of python3.11-minimal, libpython3.11-minimal,
# libpython3.11-stdlib that the extension modules we keep link against; no OpenSSL:
# hashlib has built-in SHA-256), pyelftools
# (our one runtime dependency), busybox for the init scripts, and kexec for the first
# kernel. libgcc-s1 is for the Rust extension (unwinding).
COMMON_PACKAGES = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libc6", "zlib1g", "libexpat1", "libffi8", "libbz2-1.0", "liblzma5",
    "libcrypt1", "libuuid1", "libgcc-s1", "python3-pyelftools", "busybox-static",
    "kexec-tools",
]


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str                      # uname -m (QEMU's architecture)
    deb_arch: str                  # Debian architecture
    qemu: str                      # QEMU system emulator binary
    qemu_package: str              # Debian package that has it
    machine: tuple[str, ...]       # -M/-cpu arguments (accelerator added separately)
    console: str                   # kernel console device
    scsi_controller: str           # QEMU device for the SCSI HBA
    kernel_package: Optional[str]  # Debian kernel metapackage (None: kernel given)
    modules: tuple[str, ...]       # modules the dump kernel must load for /dev/sda
    extra_packages: tuple[str, ...] = ()
    kdump_append: str = ""         # extra dump-kernel parameters
    first_append: str = ""         # extra first-kernel parameters
    kvm_possible: bool = False     # host arch == guest arch
    smp: int = 1                   # CPUs of the first kernel
    kernel_image: Optional[str] = None  # a given kernel (bzImage[.zst]), no Debian kernel
    pure_python: bool = False      # by default zfcpdump goes in as .py files (no Rust)
    rust_target: Optional[str] = None  # cross-build the Rust extension for it (None: host)
    kernel_suite: Optional[str] = None  # Debian suite of the kernel (None: the host's)
    # the newest kernel image package of that suite whose name matches (group 1: its
    # version) and that downloads, instead of kernel_package's dependency
    kernel_match: Optional[str] = None
    cache_key: Optional[str] = None  # ARCHES key and cache directory (None: name)

    @property
    def key(self) -> str:
        return self.cache_key or self.name

    @property
    def packages(self) -> list[str]:
        return COMMON_PACKAGES + list(self.extra_packages)


# The sample kernel is s390 defconfig with modules off, so test code that defconfig builds
# as modules is built in and runs at every boot: rcutorture and refscale (they keep
# running in the background and slowed the first kernel's user space about 3x under
# TCG), tcrypt, the crypto manager's extra self-tests, KUnit. Switched off here; nothing
# on the dump path depends on them. And scsi_mod.scan=async, which is what Debian's own
# kernels do (CONFIG_SCSI_SCAN_ASYNC=y; s390 defconfig has it off): a synchronous scan
# of virtio-scsi's 256 targets holds up /init by 11-20 s under TCG; /dev/sda (target 0)
# appears in well under a second either way, and init-dump.sh waits for it.
_S390X_NO_SELFTESTS = ("initcall_blacklist=rcu_torture_init,ref_scale_init,tcrypt_mod_init "
                       "kunit.enable=0 cryptomgr.notests=1 scsi_mod.scan=async")

_X86_64 = Arch(
    name="x86_64", deb_arch="amd64", qemu="qemu-system-x86_64",
    qemu_package="qemu-system-x86", machine=("-M", "pc"), console="ttyS0",
    scsi_controller="virtio-scsi-pci", kernel_package="linux-image-amd64",
    modules=("virtio_pci", "virtio_scsi", "sd_mod"),
    # Debian's kexec links libxenctrl (libxenmisc4.17) and that the Xen tool libraries
    extra_packages=("libxenmisc4.17", "libxencall1", "libxendevicemodel1", "libxenevtchn1",
                    "libxenforeignmemory1", "libxengnttab1", "libxentoolcore1",
                    "libxentoollog1"),
    kdump_append="irqpoll nr_cpus=1 reset_devices",
    kvm_possible=True,
)

#: the kernel lines of Debian 13's backports the end-to-end tests dump (6.19 is left
#: out: the mirror holds its linux-binary package but not its linux-modules one)
BACKPORTS_LINES = ((6, 16), (6, 17), (6, 18), (7, 3))

ARCHES = {
    "x86_64": _X86_64,
    # Debian 13's 6.12 kernel (first and dump kernel) with Debian 12's userland
    "x86_64-6.12": dataclasses.replace(_X86_64, kernel_suite="trixie", cache_key="x86_64-6.12"),
    # Debian 13's backports kernels (the newest of each line that downloads)
    **{f"x86_64-{a}.{b}": dataclasses.replace(
        _X86_64, kernel_suite="trixie-backports", cache_key=f"x86_64-{a}.{b}",
        kernel_match=rf"^linux-image-({a}\.{b}\.\d+)\+deb13-amd64$")
       for a, b in BACKPORTS_LINES},
    # The kernel comes from the shared sample (CRASH_DUMP, everything built in, so no
    # modules). By default the guest gets the package as pure Python and zfcpdump falls
    # back to its Python engine; a second guest gets the Rust extension cross-built for
    # s390x (`rust_target`, Debian's s390x cross gcc).
    # Two CPUs, so the dump has two PRSTATUS notes with distinct prefixes.
    "s390x": Arch(
        name="s390x", deb_arch="s390x", qemu="qemu-system-s390x",
        qemu_package="qemu-system-misc", machine=("-M", "s390-ccw-virtio", "-cpu", "max"),
        console="ttysclp0", scsi_controller="virtio-scsi-ccw", kernel_package=None,
        modules=(), kdump_append=f"nr_cpus=1 scsi_debug.add_host=0 {_S390X_NO_SELFTESTS}",
        first_append=f"scsi_debug.add_host=0 {_S390X_NO_SELFTESTS}",
        extra_packages=(), smp=2,
        kernel_image="/work/shared/samples/s390x-dump-kernel/bzImage.zst",
        pure_python=True, rust_target="s390x-unknown-linux-gnu",
    ),
}


def host_deb_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def cache_dir(arch: Arch) -> Path:
    """$ZFCPDUMP_E2E_CACHE, else /var/cache/zfcpdump-e2e, else (not writable, e.g. not
    root) ~/.cache/zfcpdump-e2e."""
    given = os.environ.get("ZFCPDUMP_E2E_CACHE")
    if given:
        return Path(given) / arch.key
    default = Path(DEFAULT_CACHE)
    probe = default if default.exists() else default.parent
    if os.access(probe, os.W_OK):
        return default / arch.key
    return Path.home() / ".cache" / "zfcpdump-e2e" / arch.key


class FetchError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: Optional[Path] = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode:
        raise FetchError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()[-2000:]}")
    return p.stdout


def _apt_options(arch: Arch, work: Path) -> list[str]:
    opts = []
    if os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]
    if arch.deb_arch != host_deb_arch():
        # Foreign architecture: separate lists and caches, the host's apt state untouched.
        lists = work / "lists"
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        (work / "aptcache").mkdir(exist_ok=True)
        opts += ["-o", f"APT::Architecture={arch.deb_arch}",
                 "-o", f"APT::Architectures={arch.deb_arch}",
                 "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={work / 'aptcache'}",
                 "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]
    return opts


def host_mirror() -> str:
    """The Debian archive the host's apt uses for its own release (its main component):
    other suites come from the same place."""
    codename = platform.freedesktop_os_release().get("VERSION_CODENAME", "")
    out = _run(["apt-get", "indextargets", "--format",
                "$(REPO_URI) $(RELEASE) $(COMPONENT) $(IDENTIFIER)"])
    for line in out.splitlines():
        uri, release, component, ident = line.split()
        if (release, component, ident) == (codename, "main", "Packages"):
            return uri
    raise FetchError(f"no Debian {codename} main in the host's apt lists (apt-get update)")


def suite_apt(work: Path, suites: list[str], log=lambda s: None,
              deb_arch: Optional[str] = None) -> list[str]:
    """apt options for packages of other Debian suites (the host's architecture, or
    `deb_arch`): a private sources list naming only them on the host's mirror, private
    lists and caches in `work`, updated here. The host's apt state stays untouched."""
    (work / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (work / "cache").mkdir(exist_ok=True)
    (work / "sources.list.d").mkdir(exist_ok=True)
    mirror = host_mirror()
    (work / "sources.list").write_text("".join(f"deb {mirror} {s} main\n" for s in suites))
    opts = ["-o", f"Dir::Etc::SourceList={work / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={work / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            # the package indexes alone (no translations, no AppStream metadata)
            "-o", "Acquire::Languages=none",
            "-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"]
    if os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]
    if deb_arch:
        opts += ["-o", f"APT::Architecture={deb_arch}", "-o", f"APT::Architectures={deb_arch}"]
    log(f"apt-get update ({', '.join(suites)} lists{' for ' + deb_arch if deb_arch else ''})")
    _run(["apt-get", *opts, "-qq", "update"])
    return opts


def _download(packages: list[str], opts: list[str], debs: Path, log) -> None:
    log(f"apt-get download {' '.join(packages)}")
    _run(["apt-get", *opts, "-qq", "download", *packages], cwd=debs)


def _unpack(debs: Path, dest: Path) -> list[str]:
    """dpkg-deb -x every .deb of `debs` into a fresh `dest` (replaced whole, so an
    interrupted run leaves the old one); returns the .deb names."""
    new = dest.with_name(dest.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    names = sorted(d.name for d in debs.glob("*.deb"))
    for name in names:
        _run(["dpkg-deb", "-x", str(debs / name), str(new)])
    shutil.rmtree(dest, ignore_errors=True)
    new.rename(dest)
    return names


def _download_each(packages: list[str], suites: list[str], opts: list[str], debs: Path,
                   log) -> None:
    """Each of `packages` (NAME or NAME/SUITE) on its own; a version the mirror lists but
    does not hold (404) is tried from the suites after its own in `suites` (listed
    oldest first: a newer library serves, an older program may not)."""
    for spec in packages:
        name, _, suite = spec.partition("/")
        later = suites[suites.index(suite) + 1:] if suite in suites else []
        tries = [spec] + [f"{name}/{s}" for s in later]
        for i, attempt in enumerate(tries):
            try:
                _download([attempt], opts, debs, log)
                break
            except FetchError:
                if i == len(tries) - 1:
                    raise


def unpack_from_suites(dest: Path, suites: list[str], packages: list[str],
                       log=lambda s: None, deb_arch: Optional[str] = None,
                       newest: Optional[str] = None) -> list[str]:
    """Download `packages` (NAME or NAME/SUITE) of other Debian suites (for `deb_arch`,
    default the host's), and the newest kernel image package matching `newest`
    (download_newest_kernel), and unpack them into `dest`; apt's state lives beside it
    (dest/../apt) and goes afterwards."""
    work = dest.parent
    opts = suite_apt(work / "apt", suites, log, deb_arch)
    debs = work / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    if newest:
        download_newest_kernel(newest, opts, debs, log)
    _download_each(packages, suites, opts, debs, log)
    names = _unpack(debs, dest)
    shutil.rmtree(debs)
    shutil.rmtree(work / "apt")
    return names


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def download_newest(pattern: str, opts: list[str], debs: Path, log) -> str:
    """Download the newest package whose name matches `pattern` (group 1: its version)
    that the mirror holds: its lists may name a version whose file is gone or not there
    yet (404). Returns the name."""
    rx = re.compile(pattern)
    out = _run(["apt-cache", *opts, "pkgnames"])
    names = {m.group(0): m.group(1) for line in out.splitlines() if (m := rx.match(line))}
    errors = []
    for name in sorted(names, key=lambda n: _version_key(names[n]), reverse=True):
        try:
            _download([name], opts, debs, log)
            return name
        except FetchError as exc:
            errors.append(str(exc).strip().splitlines()[-1])
    raise FetchError(f"no package matching {pattern} downloads: "
                     + ("; ".join(errors) or "none listed"))


def _kernel_image_package(arch: Arch, opts: list[str]) -> str:
    """linux-image-amd64 is a metapackage: the image is its one linux-image-* dependency."""
    out = _run(["apt-cache", *opts, "depends", arch.kernel_package])
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1)
    raise FetchError(f"no linux-image-* dependency in `apt-cache depends {arch.kernel_package}`")


def download_newest_kernel(pattern: str, opts: list[str], debs: Path, log) -> None:
    """download_newest of the kernel image packages matching `pattern`, and the
    packages it is split into, if it is (_kernel_split_parts)."""
    image = download_newest(pattern, opts, debs, log)
    parts = _kernel_split_parts(image, opts)
    if parts:
        _download(parts, opts, debs, log)


def _kernel_split_parts(image: str, opts: list[str]) -> list[str]:
    """The packages that hold the kernel and its modules where `image` is only their
    metapackage (Debian's kernels from 6.19 on: linux-binary-* has the vmlinuz,
    linux-modules-* the modules, linux-base-* modules.builtin, which says what needs no
    module); [] where the image package holds them itself."""
    out = _run(["apt-cache", *opts, "depends", image])
    return [m.group(1) for line in out.splitlines()
            if (m := re.match(r"\s*Depends:\s*(linux-(?:binary|modules|base)-\S+)", line))]


def fetch(arch: Arch, log=lambda s: None) -> Path:
    """Download and unpack the guest packages (once; later calls reuse the cache).
    Returns the cache directory. Raises FetchError with apt's message on failure."""
    base = cache_dir(arch)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs share the cache
        stamp = base / "STAMP"
        wanted = "packages: " + " ".join(sorted(arch.packages))
        if arch.kernel_suite:
            wanted += f"; kernel from {arch.kernel_suite}"
        if arch.kernel_match:
            # (a cache from before the split packages were fetched lacks them)
            wanted += f" matching {arch.kernel_match} with its split parts"
        if (stamp.exists() and (base / "root").is_dir()
                and stamp.read_text().splitlines()[:1] == [wanted]):
            return base
        opts = _apt_options(arch, base)
        if arch.deb_arch != host_deb_arch():
            log(f"apt-get update ({arch.deb_arch} lists)")
            _run(["apt-get", *opts, "-qq", "update"])
        packages = list(arch.packages)
        if arch.kernel_package and not arch.kernel_suite:
            packages.append(_kernel_image_package(arch, opts))
        debs = base / "debs"
        shutil.rmtree(debs, ignore_errors=True)
        debs.mkdir()
        try:
            _download(packages, opts, debs, log)
        except FetchError:
            if arch.deb_arch != host_deb_arch() or os.geteuid() != 0:
                raise
            _run(["apt-get", "-qq", "update"])  # stale host lists on a fresh machine
            _download(packages, opts, debs, log)
        if arch.kernel_suite:
            kopts = suite_apt(base / "apt", [arch.kernel_suite], log)
            if arch.kernel_match:
                download_newest_kernel(arch.kernel_match, kopts, debs, log)
            else:
                _download([_kernel_image_package(arch, kopts)], kopts, debs, log)
            shutil.rmtree(base / "apt")  # the suite's lists: tens of MB
        names = _unpack(debs, base / "root")
        # The .debs are not needed any more (the kernel one alone is ~70 MB).
        shutil.rmtree(debs)
        stamp.write_text("\n".join([wanted, *names]) + "\n")
        return base


def given_kernel_source(arch: Arch) -> Path:
    """The kernel image an arch without a Debian kernel boots: $ZFCPDUMP_E2E_<ARCH>_KERNEL
    or the record's default."""
    return Path(os.environ.get(f"ZFCPDUMP_E2E_{arch.name.upper()}_KERNEL")
                or arch.kernel_image or "")


def given_kernel(arch: Arch, base: Path) -> Path:
    """The given kernel image, decompressed (`zstd -d` for .zst) into base/kernel/bzImage
    once; redone when the source changes (path, size, mtime in kernel/SOURCE)."""
    src = given_kernel_source(arch)
    if not src.is_file():
        raise FetchError(f"no {arch.name} kernel image at {src} "
                         f"(set ZFCPDUMP_E2E_{arch.name.upper()}_KERNEL)")
    st = src.stat()
    key = f"{src.resolve()} {st.st_size} {st.st_mtime_ns}\n"
    kdir = base / "kernel"
    out, stamp = kdir / "bzImage", kdir / "SOURCE"
    kdir.mkdir(parents=True, exist_ok=True)
    with open(kdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file() and stamp.is_file() and stamp.read_text() == key:
            return out
        tmp = kdir / "bzImage.new"
        if src.name.endswith(".zst"):
            if shutil.which("zstd") is None:
                raise FetchError("zstd not found (apt-get install zstd)")
            _run(["zstd", "-d", "-q", "-f", "-o", str(tmp), str(src)])
        else:
            shutil.copyfile(src, tmp)
        tmp.rename(out)
        stamp.write_text(key)
    return out


def find_kernel_image(root: Path) -> Optional[tuple[Path, str]]:
    """(image, version) of the newest kernel unpacked under `root`: boot/vmlinuz-VERSION
    or, from Debian's 7.x packages on, usr/lib/modules/VERSION/vmlinuz; None if none."""
    images = [(p, p.name[len("vmlinuz-"):]) for p in root.glob("boot/vmlinuz-*")]
    images += [(p, p.parent.name) for p in root.glob("usr/lib/modules/*/vmlinuz")]
    return max(images, key=lambda iv: _version_key(iv[1])) if images else None


def kernel_paths(base: Path) -> tuple[Path, Path, str]:
    """(vmlinuz, modules dir, version) inside an unpacked Debian kernel package; the
    modules are in lib/modules (Debian 12) or usr/lib/modules (merged /usr, Debian 13),
    the image in boot/vmlinuz-VERSION or, from Debian's 7.x packages on,
    usr/lib/modules/VERSION/vmlinuz."""
    root = base / "root"
    found = find_kernel_image(root)
    if found is None:
        raise FetchError(f"no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz under {root}")
    vmlinuz, version = found
    for lib in ("lib", "usr/lib"):
        moddir = root / lib / "modules" / version
        if (moddir / "kernel").is_dir():
            return vmlinuz, moddir, version
    raise FetchError(f"no lib/modules/{version}/kernel or usr/lib/modules/{version}/kernel "
                     f"under {root}")


def unpack_main(dest: str, suites: str, packages: list[str],
                deb_arch: Optional[str] = None) -> int:
    try:
        names = unpack_from_suites(Path(dest), suites.split(","), packages,
                                   log=lambda s: print(f"e2e assets: {s}", file=sys.stderr),
                                   deb_arch=deb_arch)
    except FetchError as exc:
        print(f"e2e assets: {exc}", file=sys.stderr)
        return 1
    print(f"e2e assets: {' '.join(names)} in {dest}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 6 and argv[:2] == ["unpack", "--arch"]:
        return unpack_main(argv[3], argv[4], argv[5:], deb_arch=argv[2])
    if len(argv) >= 4 and argv[0] == "unpack" and argv[1] != "--arch":
        return unpack_main(argv[1], argv[2], argv[3:])
    if len(argv) != 2 or argv[0] != "fetch" or argv[1] not in ARCHES:
        print(f"usage: assets.py fetch {{{','.join(ARCHES)}}}\n"
              "       assets.py unpack [--arch DEBARCH] DEST SUITE[,SUITE] PACKAGE[/SUITE]...",
              file=sys.stderr)
        return 2
    arch = ARCHES[argv[1]]
    try:
        base = fetch(arch, log=lambda s: print(f"e2e assets: {s}", file=sys.stderr))
    except FetchError as exc:
        print(f"e2e assets: {exc}", file=sys.stderr)
        return 1
    extra = ""
    try:
        if arch.kernel_package:
            _, _, version = kernel_paths(base)
            extra = f", kernel {version}"
        else:
            extra = f", kernel {given_kernel(arch, base)}"
    except FetchError as exc:
        print(f"e2e assets: {exc}", file=sys.stderr)
        return 1
    print(f"e2e assets: {arch.key} guest packages in {base}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
