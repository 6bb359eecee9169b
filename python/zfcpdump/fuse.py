"""Mount a dump as a read-only file DIR/dump.<fmt> served from a Layout (zgetdump -m).

Uses mfusepy (PyPI, libfuse 2 or 3 through ctypes). The file's bytes are exactly those
that the copy would write; reads go through Layout.read. Unmount with `umount_dir`
(fusermount3 -u, fusermount -u, or umount).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import threading
import time
from typing import Any, Optional

from .errors import ZfcpdumpError
from .layout import Layout


def fuse_unavailable_reason() -> str:
    """'' when mounting can work here, else why not."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    try:
        import mfusepy  # noqa: F401  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or OSError when libfuse is missing
        return f"mfusepy is not usable ({exc}); pip install mfusepy"
    return ""


def _operations(layout: Layout, name: str, mtime: float) -> Any:
    import mfusepy  # type: ignore[import-not-found]

    lock = threading.Lock()

    class DumpFS(mfusepy.Operations):  # type: ignore[misc]
        use_ns = False

        def getattr(self, path: str, fh: Optional[int] = None) -> dict[str, Any]:
            base = {"st_uid": os.getuid(), "st_gid": os.getgid(), "st_atime": mtime,
                    "st_mtime": mtime, "st_ctime": mtime}
            if path == "/":
                return dict(base, st_mode=stat.S_IFDIR | 0o500, st_nlink=2)
            if path == "/" + name:
                return dict(base, st_mode=stat.S_IFREG | 0o400, st_nlink=1,
                            st_size=layout.size())
            raise mfusepy.FuseOSError(errno.ENOENT)

        def readdir(self, path: str, fh: int) -> list[str]:
            if path != "/":
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            return [".", "..", name]

        def open(self, path: str, flags: int) -> int:
            if path != "/" + name:
                raise mfusepy.FuseOSError(errno.ENOENT)
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise mfusepy.FuseOSError(errno.EROFS)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            with lock:
                return layout.read(offset, size)

    return DumpFS()


def mount(layout: Layout, mount_point: str, fmt: str, *, foreground: bool = False) -> None:
    """Serve `layout` as MOUNT_POINT/dump.<fmt>. Returns after unmount in the foreground
    mode; otherwise libfuse daemonises and this returns in the parent once mounted."""
    reason = fuse_unavailable_reason()
    if reason:
        raise ZfcpdumpError(f"Cannot mount: {reason}")
    if not os.path.isdir(mount_point):
        raise ZfcpdumpError(f'Mount point "{mount_point}" is not a directory')
    import mfusepy  # type: ignore[import-not-found]

    ops = _operations(layout, f"dump.{fmt}", time.time())
    try:
        mfusepy.FUSE(ops, mount_point, foreground=foreground, ro=True, nothreads=True,
                     fsname="zgetdump", default_permissions=True)
    except RuntimeError as exc:
        raise ZfcpdumpError(f'Could not mount "{mount_point}" ({exc})') from None


def umount_dir(mount_point: str) -> None:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            cmd = [tool, "-u", mount_point]
            break
    else:
        cmd = ["umount", mount_point]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        detail = (p.stderr or p.stdout).strip().splitlines()
        raise ZfcpdumpError(f'Could not unmount "{mount_point}"'
                            + (f" ({detail[-1]})" if detail else ""))
