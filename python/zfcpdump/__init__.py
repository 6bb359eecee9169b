"""zfcpdump: capture a crashed Linux system's memory to a SCSI dump partition, read it back.

Start with `zfcpdump --help`, or in Python with `zfcpdump.open_dump(path)`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zfcpdump")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
