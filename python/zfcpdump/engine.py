"""Select the bulk-copy engine: the native one (``zfcpdump._core``, Rust) or its
pure-Python twin (``zfcpdump._pyengine``). Both have the same functions, produce the
same bytes and digests, and raise the same :class:`EngineIOError`.

    eng = get_engine()            # "rust" by default
    res = eng.copy_ranges(src_fd, dst_fd, [(src_off, dst_off, length), ...], digest=True)
    res.bytes_copied, res.digests, res.direct
"""

from __future__ import annotations

from typing import Any, Callable

from ._pyengine import EngineIOError

__all__ = ["ENGINES", "EngineIOError", "Engine", "get_engine"]

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


def get_engine(name: str = "rust") -> Engine:
    """Return the engine called ``name`` (one of :data:`ENGINES`).

    Raises :class:`ValueError` for an unknown name, :class:`ImportError` if the native
    module is missing.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    eng = _cache.get(name)
    if eng is None:
        if name == "rust":
            from . import _core as module
        else:
            from . import _pyengine as module
        eng = _cache[name] = Engine(name, module)
    return eng
