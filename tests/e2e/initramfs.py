"""Build the two initramfs images of the end-to-end test, from unpacked Debian packages.

* The **dump initramfs** (what an administrator would build for a kdump kernel, see
  docs/dump-kernel-initramfs.md): busybox, Debian's python3.11 with a pruned standard
  library, pyelftools, our package from a wheel, the libraries all of that links
  against (found by reading DT_NEEDED, so it works for any architecture), the kernel
  modules that make the disk appear as /dev/sda, and `init-dump.sh` as /init.
* The **first-kernel initramfs**: busybox, kexec and its libraries, the dump kernel
  and the dump initramfs as files, a small config file, and `init-first.sh` as /init.

The images are `newc` cpio archives written here (no cpio binary, no root needed, files
owned by root), gzip-compressed.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import py_compile
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Optional

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

HERE = Path(__file__).parent
GUEST_PYTHON = (3, 11)
PYLIB = "usr/lib/python3.11"
DIST = "usr/lib/python3/dist-packages"

# Parts of the standard library a capture never imports (tests, GUIs, build tools,
# network servers...). Pruning them keeps the dump kernel's RAM free for the copy:
# everything in the initramfs stays resident in the dump kernel's memory.
PYLIB_DROP = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
    "distutils", "site-packages", "dist-packages", "unittest", "asyncio", "sqlite3",
    "curses", "dbm", "xmlrpc", "wsgiref", "venv", "turtle.py", "__phello__",
    "config-3.11-x86_64-linux-gnu", "config-3.11-s390x-linux-gnu",
}
DYNLOAD_DROP_PREFIXES = ("_test", "_xx", "xx", "_ctypes_test", "_curses", "_dbm", "_sqlite3",
                         "readline", "nis", "ossaudiodev", "audioop", "_codecs_", "_asyncio",
                         "_multiprocessing", "_posixshmem", "_decimal", "_ssl", "_hashlib",
                         "_lsprof", "_zoneinfo")


class BuildError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------
# cpio (newc)
# ---------------------------------------------------------------------------------------
class Cpio:
    """An in-memory file tree written out as a newc archive. Paths have no leading '/'."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, bytes]] = {}  # path -> (mode, data or target)

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.entries[d] = (stat.S_IFDIR | 0o755, b"")

    def dir(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = (stat.S_IFDIR | mode, b"")

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = (stat.S_IFREG | mode, data)

    def copy(self, path: str, source: Path, mode: Optional[int] = None) -> None:
        st = source.stat()
        self.file(path, source.read_bytes(), mode if mode is not None else st.st_mode & 0o777)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = (stat.S_IFLNK | 0o777, target.encode())

    def has(self, path: str) -> bool:
        return path.strip("/") in self.entries

    def size(self) -> int:
        return sum(len(d) for m, d in self.entries.values() if stat.S_ISREG(m))

    def to_bytes(self) -> bytes:
        out = io.BytesIO()

        def entry(ino: int, name: str, mode: int, data: bytes) -> None:
            nb = name.encode() + b"\0"
            hdr = "070701" + "".join(f"{v:08x}" for v in (
                ino, mode, 0, 0, 1 if not stat.S_ISDIR(mode) else 2, 0, len(data), 0, 0, 0, 0,
                len(nb), 0))
            out.write(hdr.encode() + nb)
            out.write(b"\0" * (-(110 + len(nb)) % 4))
            out.write(data)
            out.write(b"\0" * (-len(data) % 4))

        for ino, path in enumerate(sorted(self.entries), start=1):  # parents before children
            mode, data = self.entries[path]
            entry(ino, path, mode, data)
        entry(0, "TRAILER!!!", 0, b"")
        return out.getvalue()

    def write(self, target: Path, compresslevel: int = 6) -> int:
        raw = self.to_bytes()
        with open(target, "wb") as f:
            f.write(gzip.compress(raw, compresslevel=compresslevel, mtime=0))
        return target.stat().st_size


# ---------------------------------------------------------------------------------------
# ELF dependencies, resolved inside the unpacked package tree (any architecture)
# ---------------------------------------------------------------------------------------
def _elf_info(path: Path) -> tuple[Optional[str], list[str]]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        interp = None
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                interp = seg.get_interp_name()
        needed = []
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                needed += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
        return interp, needed


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _resolve_in_root(root: Path, guest_path: str) -> Optional[Path]:
    """Follow symlinks inside `root` (absolute link targets are relative to root)."""
    p = guest_path.strip("/")
    for _ in range(40):
        full = root / p
        if full.is_symlink():
            target = os.readlink(full)
            p = (target.strip("/") if target.startswith("/")
                 else os.path.normpath(os.path.join(os.path.dirname(p), target)))
            continue
        return full if full.exists() else None
    return None


def lib_dirs(root: Path) -> list[str]:
    dirs = []
    for base in ("lib", "usr/lib", "lib64", "usr/lib64"):
        for d in sorted((root / base).glob("*-linux-gnu*")) if (root / base).is_dir() else []:
            dirs.append(str(d.relative_to(root)))
        dirs.append(base)
    return dirs


def add_with_libs(cpio: Cpio, root: Path, guest_paths: Iterable[str],
                  optional: bool = False) -> list[str]:
    """Add ELF files (guest paths inside `root`) and every library they need.
    With optional=True, files whose libraries are missing are skipped (returned)."""
    dirs = lib_dirs(root)
    skipped = []

    def closure(guest_path: str, seen: dict[str, Path]) -> None:
        src = _resolve_in_root(root, guest_path)
        if src is None:
            raise BuildError(f"{guest_path} not found under {root}")
        seen[guest_path] = src
        if not _is_elf(src):
            return
        interp, needed = _elf_info(src)
        if interp and interp not in seen:
            closure(interp, seen)
        for lib in needed:
            for d in dirs:
                cand = f"{d}/{lib}"
                if _resolve_in_root(root, cand) is not None:
                    if cand not in seen:
                        closure(cand, seen)
                    break
            else:
                raise BuildError(f"{lib} (needed by {guest_path}) not in the unpacked packages")

    for gp in guest_paths:
        seen: dict[str, Path] = {}
        try:
            closure(gp, seen)
        except BuildError:
            if not optional:
                raise
            skipped.append(gp)
            continue
        for path, src in seen.items():
            if not cpio.has(path):
                cpio.copy(path, src)
    return skipped


# ---------------------------------------------------------------------------------------
# kernel modules
# ---------------------------------------------------------------------------------------
def module_bytes(ko: Path) -> bytes:
    """The ELF of a module file, decompressed: Debian 13 ships .ko.xz, and busybox's
    insmod loads the image as it is."""
    data = ko.read_bytes()
    if ko.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if ko.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if ko.name.endswith(".ko.zst"):
        if shutil.which("zstd") is None:
            raise BuildError(f"{ko.name}: zstd not found (apt-get install zstd)")
        p = subprocess.run(["zstd", "-d", "-c", "-q"], input=data, capture_output=True)
        if p.returncode:
            raise BuildError(f"zstd -d {ko}: {p.stderr.decode(errors='replace')}")
        return p.stdout
    return data


def module_guest_name(ko: Path) -> str:
    """x.ko.xz -> x.ko: modules go into the initramfs decompressed."""
    return ko.name[:ko.name.index(".ko") + 3]


def _modinfo_depends(ko: Path) -> list[str]:
    sec = ELFFile(io.BytesIO(module_bytes(ko))).get_section_by_name(".modinfo")
    data = sec.data() if sec is not None else b""
    for item in data.split(b"\0"):
        if item.startswith(b"depends="):
            return [d for d in item[8:].decode().split(",") if d]
    return []


def module_load_order(moddir: Path, wanted: Iterable[str]) -> list[Path]:
    """The .ko files for `wanted` and their dependencies (from .modinfo, as depmod
    reads them), dependencies first. Built-in modules are skipped."""
    norm = lambda n: n.replace("-", "_")  # noqa: E731
    files = {norm(p.name.split(".ko")[0]): p for p in moddir.rglob("*.ko*")}
    builtin = set()
    if (moddir / "modules.builtin").exists():
        builtin = {norm(Path(line).name.split(".ko")[0])
                   for line in (moddir / "modules.builtin").read_text().split()}
    order: list[Path] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = norm(name)
        if name in builtin or name in visiting or any(p == files.get(name) for p in order):
            return
        if name not in files:
            raise BuildError(f"kernel module {name} not found under {moddir}")
        visiting.add(name)
        for dep in _modinfo_depends(files[name]):
            visit(dep)
        order.append(files[name])

    for w in wanted:
        visit(w)
    return order


# ---------------------------------------------------------------------------------------
# Python
# ---------------------------------------------------------------------------------------
def _compile_sourceless(cpio: Cpio, guest_py: str, source: bytes) -> None:
    """Store `x.py` as a sourceless `x.pyc` (unchecked hash) when the host Python can
    write bytecode for the guest's version; otherwise store the source."""
    if sys.version_info[:2] != GUEST_PYTHON:
        cpio.file(guest_py, source)
        return
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "m.py", Path(tmp) / "m.pyc"
        src.write_bytes(source)
        try:
            py_compile.compile(str(src), cfile=str(dst), dfile="/" + guest_py, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except py_compile.PyCompileError:
            cpio.file(guest_py, source)  # e.g. lib2to3 test data; keep as is
            return
        cpio.file(guest_py + "c", dst.read_bytes())


def add_tree(cpio: Cpio, src_dir: Path, guest_dir: str, drop: set[str] = frozenset(),
             bytecode: bool = True) -> None:
    for dirpath, dirnames, filenames in os.walk(src_dir):
        rel = Path(dirpath).relative_to(src_dir)
        dirnames[:] = [d for d in dirnames if d != "__pycache__"
                       and not (rel == Path(".") and d in drop)]
        for name in filenames:
            if rel == Path(".") and name in drop:
                continue
            full = Path(dirpath) / name
            guest = f"{guest_dir}/{rel.as_posix()}/{name}".replace("/./", "/")
            if full.is_symlink():
                cpio.symlink(guest, os.readlink(full))
            elif name.endswith(".py") and bytecode:
                _compile_sourceless(cpio, guest, full.read_bytes())
            elif name.endswith((".pyc", ".pyi")) or name == "py.typed":
                continue
            else:
                cpio.copy(guest, full)


def add_wheel(cpio: Cpio, wheel: Path, guest_dir: str, bytecode: bool = True) -> list[str]:
    """Unpack a wheel into `guest_dir` (like pip would, without the metadata)."""
    shared = []
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            if info.is_dir() or ".data/" in name or name.endswith(".dist-info/RECORD"):
                continue  # keep METADATA: zfcpdump.__version__ comes from it
            data = z.read(info)
            guest = f"{guest_dir}/{name}"
            if name.endswith(".py") and bytecode:
                _compile_sourceless(cpio, guest, data)
            elif name.endswith(".so"):
                cpio.file(guest, data, 0o755)
                shared.append(guest)
            elif not name.endswith((".pyi", "py.typed")):
                cpio.file(guest, data)
    return shared


def add_pure_package(cpio: Cpio, pkg_dir: Path, guest_dir: str, version: str,
                     bytecode: bool = True) -> None:
    """Our package as pure Python (for an architecture the Rust extension is not built
    for): python/zfcpdump/ without the native module (`_core*.so`), plus a minimal
    dist-info so `zfcpdump --version` and `importlib.metadata` see the version. Without
    `_core` the product falls back to its Python engine (zfcpdump.engine.get_engine)."""
    name = pkg_dir.name
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = Path(dirpath).relative_to(pkg_dir)
        for fn in filenames:
            if not fn.endswith(".py"):
                continue  # _core.*.so, .pyi, py.typed, stray .pyc
            guest = f"{guest_dir}/{name}/{rel.as_posix()}/{fn}".replace("/./", "/")
            data = (Path(dirpath) / fn).read_bytes()
            if bytecode:
                _compile_sourceless(cpio, guest, data)
            else:
                cpio.file(guest, data)
    meta = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            "Requires-Dist: pyelftools>=0.29\n")
    cpio.file(f"{guest_dir}/{name}-{version}.dist-info/METADATA", meta.encode())


def wheel_tag_ok(wheel: Path) -> bool:
    tags = wheel.name[:-4].split("-")[-3:]
    py, abi = tags[0], tags[1]
    want = f"cp{GUEST_PYTHON[0]}{GUEST_PYTHON[1]}"
    return py in (want, "py3") or abi == "abi3"


ZFCPDUMP_SCRIPT = b"""#!/usr/bin/python3.11
import sys
from zfcpdump.cli.main import main
sys.exit(main())
"""


def build_dump_initramfs(root: Path, wheel: Optional[Path], target: Path, *,
                         moddir: Optional[Path], modules: Iterable[str], bytecode: bool = True,
                         pure_package: Optional[tuple[Path, str]] = None) -> dict:
    """Returns a summary: sizes, modules, skipped extension modules. Our package comes
    from `wheel`, or with pure_package=(python/zfcpdump, version) as .py files only."""
    if pure_package is None and (wheel is None or not wheel_tag_ok(wheel)):
        raise BuildError(f"{wheel.name if wheel else 'no wheel'}: not for CPython {GUEST_PYTHON[0]}.{GUEST_PYTHON[1]} "
                         "(the dump kernel runs Debian's python3.11)")
    c = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "run", "mnt", "bin", "sbin", "usr/bin", "usr/sbin",
              "e2e"):
        c.dir(d)
    c.copy("bin/busybox", root / "bin/busybox", 0o755)
    c.symlink("bin/sh", "busybox")
    c.copy("init", HERE / "init-dump.sh", 0o755)
    add_with_libs(c, root, ["usr/bin/python3.11"])
    c.symlink("usr/bin/python3", "python3.11")
    add_tree(c, root / PYLIB, PYLIB, drop=PYLIB_DROP | {"lib-dynload"}, bytecode=bytecode)
    # extension modules: keep those whose libraries we have, minus the unneeded ones
    dynload = sorted(p for p in (root / PYLIB / "lib-dynload").glob("*.so")
                     if not p.name.startswith(DYNLOAD_DROP_PREFIXES))
    skipped = add_with_libs(c, root, [f"{PYLIB}/lib-dynload/{p.name}" for p in dynload],
                            optional=True)
    add_tree(c, root / DIST / "elftools", f"{DIST}/elftools", bytecode=bytecode)
    if pure_package is not None:
        add_pure_package(c, pure_package[0], DIST, pure_package[1], bytecode=bytecode)
        shared = []
    else:
        shared = add_wheel(c, wheel, DIST, bytecode=bytecode)
    for so in shared:  # the Rust extension's libraries (libgcc_s, libc)
        _add_libs_of_file(c, root, so)
    c.file("usr/bin/zfcpdump", ZFCPDUMP_SCRIPT, 0o755)
    loaded = []
    if moddir is not None:
        version = moddir.name
        for ko in module_load_order(moddir, modules):
            rel = ko.relative_to(moddir).with_name(module_guest_name(ko))
            guest = f"lib/modules/{version}/{rel.as_posix()}"
            if rel.name == ko.name:
                c.copy(guest, ko)
            else:
                c.file(guest, module_bytes(ko))
            loaded.append("/" + guest)
    c.file("e2e/modules", ("\n".join(loaded) + "\n").encode() if loaded else b"")
    raw = c.size()
    packed = c.write(target)
    return {"files_bytes": raw, "image_bytes": packed, "modules": loaded,
            "skipped_dynload": skipped}


def _add_libs_of_file(cpio: Cpio, root: Path, guest_path: str) -> None:
    """Libraries needed by a file that is already in the archive (not in `root`)."""
    mode, data = cpio.entries[guest_path]
    with tempfile.NamedTemporaryFile(suffix=".so") as tmp:
        tmp.write(data)
        tmp.flush()
        interp, needed = _elf_info(Path(tmp.name))
    dirs = lib_dirs(root)
    for lib in needed:
        for d in dirs:
            if _resolve_in_root(root, f"{d}/{lib}") is not None:
                add_with_libs(cpio, root, [f"{d}/{lib}"])
                break
        else:
            raise BuildError(f"{lib} (needed by {guest_path}) not in the unpacked packages")


def build_first_initramfs(root: Path, target: Path, *, kernel: Path, dump_initramfs: Path,
                          config: dict[str, str]) -> dict:
    c = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "bin", "sbin", "usr/bin", "usr/sbin", "boot", "e2e"):
        c.dir(d)
    c.copy("bin/busybox", root / "bin/busybox", 0o755)
    c.symlink("bin/sh", "busybox")
    c.copy("init", HERE / "init-first.sh", 0o755)
    kexec = "sbin/kexec" if (root / "sbin/kexec").exists() else "usr/sbin/kexec"
    add_with_libs(c, root, [kexec])
    if kexec != "sbin/kexec":
        c.symlink("sbin/kexec", "/" + kexec)
    c.copy("boot/vmlinuz", kernel)
    c.copy("boot/kdump.img", dump_initramfs)
    text = "".join(f"{k}='{v}'\n" for k, v in config.items())
    c.file("e2e/config", text.encode())
    packed = c.write(target, compresslevel=1)  # mostly already-compressed payload
    return {"files_bytes": c.size(), "image_bytes": packed}
