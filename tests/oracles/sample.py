"""The shared real s390x sample dump, decompressed (and fixed up) once into a cache.

* ``sample_elf_path()``: the QEMU 7.2 ``dump-guest-memory`` ELF from
  ``shared/samples/s390x-guest-qemu.elf.zst``, SHA-256 checked against the samples README.
* ``fixed_sample_elf_path()``: the same dump rewritten as a ``/proc/vmcore``-like ELF
  (interop.md §8) so that zgetdump 2.16 and libkdumpfile 0.5.1 accept it.

Locations: the shared directory is ``$ZFCPDUMP_SHARED`` or ``<repo>/../shared``; the cache
is ``$ZFCPDUMP_CACHE`` or ``~/.cache/zfcpdump``. Files appear atomically (temp name +
rename, under a lock), so parallel test processes are safe.

The fix-up uses plain ``struct`` on purpose: it must not depend on the project's own ELF
code, which these oracles are meant to check.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

SAMPLE_ZST_NAME = "s390x-guest-qemu.elf.zst"
SAMPLE_ELF_NAME = "s390x-guest-qemu.elf"
# Bump when the fix-up changes: the version is part of the cached file name.
FIXUP_VERSION = 1
FIXED_ELF_NAME = f"s390x-guest-qemu.fixed-v{FIXUP_VERSION}.elf"

# Fallbacks if the samples README cannot be parsed; the README wins.
_DEFAULT_SHA256 = "12afe6ce7b0f0a54e24cf3db5ec3f59bfb336eda5989961be686a2e731972739"
_DEFAULT_SIZE = 536_873_707

REPO = Path(__file__).resolve().parents[2]

PAGE = 4096
PT_LOAD, PT_NOTE = 1, 4
NT_PRSTATUS, NT_PRPSINFO = 1, 3

_EHDR = struct.Struct(">16sHHIQQQIHHHHHH")  # 64 bytes
_PHDR = struct.Struct(">IIQQQQQQ")  # 56 bytes
_NHDR = struct.Struct(">III")  # 12 bytes


# --------------------------------------------------------------------------- locations

def shared_dir() -> Path:
    env = os.environ.get("ZFCPDUMP_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def samples_dir() -> Path:
    return shared_dir() / "samples"


def sample_zst_path() -> Path:
    return samples_dir() / SAMPLE_ZST_NAME


def cache_dir() -> Path:
    env = os.environ.get("ZFCPDUMP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "zfcpdump"


def sample_available() -> bool:
    return sample_zst_path().is_file()


def _can_decompress() -> bool:
    if shutil.which("zstd"):
        return True
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _skip_reason() -> str:
    if not sample_available():
        return (f"sample dump {sample_zst_path()} not found "
                "(set ZFCPDUMP_SHARED to the shared/ directory)")
    return "cannot decompress the sample: neither the zstd tool nor the zstandard module"


needs_sample = pytest.mark.skipif(
    not (sample_available() and _can_decompress()), reason=_skip_reason())


# --------------------------------------------------------------------------- checksums

def expected_sample_digest() -> tuple[str, int]:
    """(sha256 hex, size) of the decompressed sample, as given in samples/README.md."""
    sha, size = _DEFAULT_SHA256, _DEFAULT_SIZE
    readme = samples_dir() / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return sha, size
    # Only look at the section about this sample.
    m = re.search(r"^##\s*" + re.escape(SAMPLE_ZST_NAME) + r"\s*$(.*?)(?=^##\s|\Z)",
                  text, re.M | re.S)
    section = m.group(1) if m else text
    m = re.search(r"SHA-?256[:\s]*([0-9a-fA-F]{64})", section)
    if m:
        sha = m.group(1).lower()
    m = re.search(r"([0-9][0-9,]*)\s*bytes", section)
    if m:
        size = int(m.group(1).replace(",", ""))
    return sha, size


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- caching

@contextlib.contextmanager
def _locked(name: str):
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f".{name}.lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            yield d
        finally:
            fcntl.flock(lk, fcntl.LOCK_UN)


def _atomic_create(final: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path to final; remove tmp on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _decompress(src: Path, dst: Path) -> None:
    zstd = shutil.which("zstd")
    if zstd:
        with open(dst, "wb") as out:
            r = subprocess.run([zstd, "-d", "-q", "-c", str(src)], stdout=out,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"zstd -d {src} failed: {r.stderr.decode(errors='replace')}")
        return
    import zstandard  # type: ignore[import-not-found]

    with open(src, "rb") as fin, open(dst, "wb") as fout:
        zstandard.ZstdDecompressor().copy_stream(fin, fout, write_size=1 << 22)


@functools.lru_cache(maxsize=None)
def sample_elf_path() -> Path:
    """The decompressed, checksum-verified QEMU sample ELF (cached)."""
    src = sample_zst_path()
    if not src.is_file():
        raise FileNotFoundError(_skip_reason())
    sha, size = expected_sample_digest()
    with _locked(SAMPLE_ELF_NAME) as d:
        final = d / SAMPLE_ELF_NAME
        # Only verified files are ever renamed into place; the size check catches
        # truncation by someone else.
        if final.is_file() and final.stat().st_size == size:
            return final

        def write(tmp: Path) -> None:
            _decompress(src, tmp)
            got = _sha256_file(tmp)
            if got != sha:
                raise RuntimeError(f"{src}: decompressed SHA-256 {got}, expected {sha}")

        _atomic_create(final, write)
        return final


@functools.lru_cache(maxsize=None)
def fixed_sample_elf_path() -> Path:
    """The sample rewritten as a /proc/vmcore-like ELF (interop.md §8), cached."""
    raw = sample_elf_path()
    with _locked(FIXED_ELF_NAME) as d:
        final = d / FIXED_ELF_NAME
        if final.is_file() and final.stat().st_size > PAGE:
            return final
        _atomic_create(final, lambda tmp: fix_qemu_elf(raw, tmp))
        return final


# --------------------------------------------------------------------------- fix-up

def _roundup(x: int, a: int = PAGE) -> int:
    return (x + a - 1) // a * a


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name_z = name + b"\0"
    return _NHDR.pack(len(name_z), len(desc), ntype) + _pad4(name_z) + _pad4(desc)


def _parse_notes(buf: bytes):
    """Yield (name_without_nul, type, desc) for the notes in buf (big endian)."""
    off = 0
    while off + _NHDR.size <= len(buf):
        namesz, descsz, ntype = _NHDR.unpack_from(buf, off)
        off += _NHDR.size
        name = buf[off:off + namesz]
        off += _roundup(namesz, 4)
        desc = buf[off:off + descsz]
        off += _roundup(descsz, 4)
        if len(name) != namesz or len(desc) != descsz:
            raise ValueError("truncated note")
        if namesz == 0 and descsz == 0 and ntype == 0:
            break  # terminator
        yield name.rstrip(b"\0"), ntype, desc


def prpsinfo_desc(fname: bytes = b"vmlinux") -> bytes:
    """elf_prpsinfo (136 bytes) as the s390 kernel writes it (formats.md §9.6)."""
    d = bytearray(136)
    d[1] = ord("R")
    d[0x28:0x28 + len(fname)] = fname
    return bytes(d)


def _fix_prstatus(desc: bytes) -> bytes:
    """Swap pr_pid (offset 0x20) to big endian if QEMU wrote it in host (LE) order."""
    d = bytearray(desc)
    if len(d) >= 0x24:
        be = struct.unpack_from(">I", d, 0x20)[0]
        le = struct.unpack_from("<I", d, 0x20)[0]
        if le < be:  # e.g. 01 00 00 00: host order from an x86 host
            struct.pack_into(">I", d, 0x20, le)
    return bytes(d)


def fix_qemu_elf(src: Path, dst: Path) -> None:
    """Rewrite a QEMU s390x dump-guest-memory ELF as a /proc/vmcore-like ELF.

    e_phoff 64, e_ehsize 64, no section headers; a PRPSINFO note ("vmlinux") first, then
    the original notes with pr_pid in big endian; notes at 0x1000; each PT_LOAD's data
    page aligned after them, p_align 4096.
    """
    with open(src, "rb") as f:
        eh = _EHDR.unpack(f.read(_EHDR.size))
        (ident, e_type, e_machine, e_version, e_entry, e_phoff, _shoff, e_flags,
         _ehsize, e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = eh
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 2:
            raise ValueError(f"{src}: not a big-endian ELF64 file")
        phdrs = []
        for i in range(e_phnum):
            f.seek(e_phoff + i * e_phentsize)
            phdrs.append(_PHDR.unpack(f.read(_PHDR.size)))
        notes = []
        for p in phdrs:
            if p[0] == PT_NOTE:
                f.seek(p[2])
                notes.extend(_parse_notes(f.read(p[5])))
    loads = [p for p in phdrs if p[0] == PT_LOAD]

    note_bytes = bytearray(_note(b"CORE", NT_PRPSINFO, prpsinfo_desc()))
    for name, ntype, desc in notes:
        if ntype == NT_PRPSINFO:
            continue  # replaced by ours
        if ntype == NT_PRSTATUS:
            desc = _fix_prstatus(desc)
        note_bytes += _note(name, ntype, desc)

    phnum = 1 + len(loads)
    note_off = _roundup(_EHDR.size + phnum * _PHDR.size)
    out_ph = [(PT_NOTE, 0, note_off, 0, 0, len(note_bytes), len(note_bytes), 4)]
    # (src_off, dst_off, size) copies
    copies = []
    pos = _roundup(note_off + len(note_bytes))
    for (_t, flags, off, vaddr, paddr, filesz, memsz, _al) in loads:
        start = pos + paddr % PAGE
        out_ph.append((PT_LOAD, flags or 7, start, vaddr, paddr, filesz, memsz, PAGE))
        if filesz:
            copies.append((off, start, filesz))
        if filesz:
            pos = _roundup(start + filesz)

    ehdr = _EHDR.pack(ident, e_type, e_machine, e_version, e_entry, _EHDR.size, 0,
                      e_flags, _EHDR.size, _PHDR.size, phnum, 0, 0, 0)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(ehdr)
        for p in out_ph:
            fout.write(_PHDR.pack(*p))
        fout.seek(note_off)
        fout.write(note_bytes)
        for s_off, d_off, size in copies:
            fout.seek(d_off)
            _copy_range(fin, fout, s_off, size)
        fout.truncate(pos)


def _copy_range(fin, fout, s_off: int, size: int) -> None:
    fin.seek(s_off)
    left = size
    while left:
        block = fin.read(min(left, 1 << 22))
        if not block:
            raise ValueError("source ELF shorter than its PT_LOAD")
        fout.write(block)
        left -= len(block)
