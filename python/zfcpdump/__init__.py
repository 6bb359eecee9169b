"""zfcpdump: capture a crashed Linux system's memory to a SCSI dump partition, read it back.

Command line: `zfcpdump --help` (and `zgetdump` with s390-tools' syntax). In Python:

    import zfcpdump
    with zfcpdump.open_dump("/dev/sdb1") as dump:        # or "disk.img:1", "dump.elf"
        print(dump.format, dump.arch, len(dump.cpus), dump.attrs.utsname)
        page = dump.read_phys(0x10000, 4096)
        zfcpdump.write_dump(dump, "dump.s390", fmt="s390")
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zfcpdump")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

from .api import cpus, info, info_text, layout, open_dump, write_dump  # noqa: E402
from .errors import DumpDamaged, NotThisFormat, ZfcpdumpError  # noqa: E402
from .model import Cpu, Dump, DumpAttrs, MemChunk, S390Regs  # noqa: E402

__all__ = [
    "__version__", "open_dump", "write_dump", "layout", "info", "info_text", "cpus",
    "Dump", "DumpAttrs", "MemChunk", "Cpu", "S390Regs",
    "ZfcpdumpError", "NotThisFormat", "DumpDamaged",
]
