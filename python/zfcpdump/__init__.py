"""zfcpdump: capture a crashed Linux system's memory to a SCSI dump partition, read it back.

Command line: `zfcpdump --help` (and `zgetdump` with s390-tools' syntax). In Python:

    import zfcpdump
    with zfcpdump.open_dump("/dev/sdb1") as dump:        # or "disk.img:1", "dump.elf"
        print(dump.format, dump.arch, len(dump.cpus), dump.attrs.utsname)
        page = dump.read_phys(0x10000, 4096)
        zfcpdump.write_dump(dump, "dump.s390", fmt="s390")
"""

from .api import cpus, info, info_text, layout, open_dump, write_dump
from .errors import DumpDamaged, NotThisFormat, ZfcpdumpError
from .model import Cpu, Dump, DumpAttrs, MemChunk, S390Regs

__all__ = [
    "__version__", "open_dump", "write_dump", "layout", "info", "info_text", "cpus",
    "Dump", "DumpAttrs", "MemChunk", "Cpu", "S390Regs",
    "ZfcpdumpError", "NotThisFormat", "DumpDamaged",
]


def __getattr__(name: str) -> str:
    # __version__ on first use: importlib.metadata costs a third of the CLI's start-up
    # (in a dump kernel every second of it is downtime)
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("zfcpdump")
    except PackageNotFoundError:  # running from a source tree
        found = "0.0.0+source"
    globals()["__version__"] = found
    return found


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"__version__"})
