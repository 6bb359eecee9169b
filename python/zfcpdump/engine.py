"""Select the bulk-copy engine: the native one (``zfcpdump._core``, Rust) or its
pure-Python twin (``zfcpdump._pyengine``). Both have the same functions, produce the
same bytes and digests, and raise the same :class:`EngineIOError`.

    eng = get_engine()            # "rust" by default (python if the extension is missing)
    res = eng.copy_ranges(src_fd, dst_fd, [(src_off, dst_off, length), ...], digest=True)
    res.bytes_copied, res.digests, res.direct
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from ._pyengine import EngineIOError

__all__ = ["ENGINES", "EngineIOError", "Engine", "get_engine", "default_engine",
           "rust_available"]

ENGINES = ("rust", "python")


class Engine:
    """The functions of one engine: ``copy_ranges``, ``read_digests``, ``cksm``."""

    __slots__ = ("name", "copy_ranges", "read_digests", "cksm", "CopyResult")

    def __init__(self, name: str, module: Any) -> None:
        self.name: str = name
        self.copy_ranges: Callable[..., Any] = module.copy_ranges
        self.read_digests: Callable[..., Any] = module.read_digests
        self.cksm: Callable[..., int] = module.cksm
        self.CopyResult: type = module.CopyResult

    def __repr__(self) -> str:
        return f"<zfcpdump engine {self.name!r}>"


_cache: dict = {}

FALLBACK_WARNING = ("WARNING: Rust engine not available (zfcpdump._core missing), "
                    "using the Python engine")


def rust_available() -> bool:
    """True if the native module ``zfcpdump._core`` imports (it is not built for every
    architecture: a pure-Python install, e.g. in an s390x dump kernel, has none)."""
    try:
        from . import _core  # noqa: F401
    except ImportError:
        return False
    return True


def default_engine() -> str:
    """Return "rust" when the native module is there, else "python"."""
    return "rust" if rust_available() else "python"


def default_mmap(vmcore: str) -> bool:
    """Whether the rust engine reads `vmcore` through mmap windows unless told
    (--mmap/--no-mmap): for /proc/vmcore (any procfs), as makedumpfile does, but not on
    s390x (performance.md §2.3: proven in the x86_64 dump kernel of the end-to-end test,
    1.4x faster there than read(); never run in an s390 one, where upstream zfcpdump
    left mmap for read() in 2024). Never for files: an I/O error under a mapping is a
    SIGBUS or an EFAULT on the write, not a read error naming the offset."""
    if os.uname().machine == "s390x":
        return False
    try:
        return os.stat(vmcore).st_dev == os.stat("/proc").st_dev
    except OSError:
        return False


def get_engine(name: str = "rust", *, fallback: bool = True) -> Engine:
    """Return the engine called ``name`` (one of :data:`ENGINES`).

    If ``name`` is "rust" and the native module is missing, the Python engine is
    returned instead (its ``name`` is "python") and one ``WARNING:`` line goes to stderr
    (once per process); with ``fallback=False`` that raises :class:`ImportError`.
    Raises :class:`ValueError` for an unknown name.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    eng = _cache.get(name)
    if eng is None:
        if name == "rust":
            try:
                from . import _core as module
            except ImportError as exc:
                if not fallback:
                    raise ImportError(f"the Rust engine is not available: {exc}") from exc
                eng = get_engine("python")
                if not _cache.get("warned"):
                    _cache["warned"] = True
                    print(FALLBACK_WARNING, file=sys.stderr, flush=True)
                return eng
        else:
            from . import _pyengine as module
        eng = _cache[name] = Engine(name, module)
    return eng
