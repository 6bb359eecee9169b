"""Where a benchmark writes: a prepared disk image, a loop device with direct I/O, or a raw partition."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Optional

from .common import MIB, _fs_type, _read, _roundup



@dataclass
class Target:
    """Where the benchmark writes.

    kind: "image" (a disk image file prepared by `zfcpdump prepare`), "loop" (a loop
    device with a prepared partition), "raw" (a block device or file written from
    offset 0 without a dump superblock; capture rows use the engine directly).
    `disk`: what `zfcpdump dump` is given; `area`: the node/file the dump lands in and
    `offset` its byte offset there; `capacity`: bytes available from `offset`.
    """

    kind: str
    disk: str
    area: str
    offset: int
    capacity: int
    block_size: int = 4096
    description: str = ""
    cleanup: list = field(default_factory=list, repr=False)
    # the checksum area (first page of the dump area) as the superblock expects it
    _csum: Optional[tuple[int, int]] = field(default=None, repr=False)

    @property
    def prepared(self) -> bool:
        return self.kind in ("image", "loop")

    def close(self) -> None:
        while self.cleanup:
            fn = self.cleanup.pop()
            try:
                fn()
            except Exception:  # noqa: BLE001 - best effort teardown
                pass

    # A foreign writer (dd, fio) overwrites the checksum area; put back what the
    # superblock checksum was computed over, or the next capture is refused.
    def snapshot(self) -> Optional[bytes]:
        if not self.prepared:
            return None
        sb = _superblock(self.disk)
        fd = os.open(self.disk, os.O_RDONLY)
        try:
            return os.pread(fd, sb.csum_size, sb.part_start + sb.csum_offset)
        finally:
            os.close(fd)

    def restore(self, saved: Optional[bytes]) -> None:
        if saved is None:
            return
        sb = _superblock(self.disk)
        fd = os.open(self.disk, os.O_WRONLY)
        try:
            os.pwrite(fd, saved, sb.part_start + sb.csum_offset)
            os.fsync(fd)
        finally:
            os.close(fd)


def _superblock(disk: str):
    from ..disk.zipl import SUPERBLOCK_SIZE, ScsiMbr, Superblock

    fd = os.open(disk, os.O_RDONLY)
    try:
        mbr = ScsiMbr.from_bytes(os.pread(fd, 152, 0))
        return Superblock.from_bytes(os.pread(fd, SUPERBLOCK_SIZE, mbr.superblock_offset))
    finally:
        os.close(fd)


def _quiet_main(argv: list[str]) -> int:
    import contextlib
    import io

    from ..cli.main import main

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"zfcpdump {' '.join(argv)} failed ({rc}):\n{out.getvalue()}{err.getvalue()}")
    return rc


def _fill(path: str, offset: int, length: int, direct: bool) -> None:
    """Write every byte once (no holes, extents allocated): zeros, 4 MiB requests."""
    cmd = ["dd", "if=/dev/zero", f"of={path}", "bs=4M", "iflag=count_bytes",
           f"count={length}", f"seek={offset}", "oflag=seek_bytes" + (",direct" if direct else ""),
           "conv=notrunc,fsync", "status=none"]
    subprocess.run(cmd, check=True)


PART_START = 1 * MIB


def _filled_image(path: str, dump_bytes: int, block_size: int) -> None:
    """A new image file with MBR partition 1 large enough for `dump_bytes`, fully
    written once so that no measured run allocates blocks."""
    from ..disk.image import create_mbr_image

    part_size = _roundup(dump_bytes + 64 * MIB, MIB)
    size = PART_START + part_size + MIB
    if os.path.exists(path):
        os.unlink(path)
    create_mbr_image(path, size, [(PART_START, part_size)], block_size=block_size)
    _fill(path, 4096, size - 4096, direct=True)


def image_target(path: str, dump_bytes: int, *, block_size: int = 4096) -> Target:
    """A disk image file with one partition, prepared with --metadata-only, big enough
    for `dump_bytes`."""
    _filled_image(path, dump_bytes, block_size)
    _quiet_main(["prepare", path, "--partition", "1", "--metadata-only", "--block-size",
                 str(block_size)])
    sb = _superblock(path)
    t = Target("image", path, path, sb.part_start + sb.dump_offset, sb.dump_size, block_size,
               f"disk image file {path} (on {_fs_type(path)}), {block_size}-byte blocks")
    t.cleanup.append(lambda: os.path.exists(path) and os.unlink(path))
    return t


def loop_target(image: str, dump_bytes: int, *, block_size: int = 4096) -> Target:
    """root: a file-backed loop device (`losetup --direct-io=on -b 4096 -P`) with an MBR
    partition 1, prepared with --metadata-only. Detached and removed by close()."""
    _filled_image(image, dump_bytes, block_size)
    out = subprocess.run(["losetup", "-f", "--show", "-P", "--direct-io=on", "-b", str(block_size),
                          image], check=True, capture_output=True, text=True)
    dev = out.stdout.strip()
    part = f"{dev}p1"
    t = Target("loop", dev, part, 0, 0, block_size, "")
    t.cleanup.append(lambda: os.path.exists(image) and os.unlink(image))
    t.cleanup.append(lambda: subprocess.run(["losetup", "-d", dev], capture_output=True))
    for _ in range(100):
        if os.path.exists(part):
            break
        subprocess.run(["partx", "-a", dev], capture_output=True)
        time.sleep(0.1)
    else:
        t.close()
        raise RuntimeError(f"{part} did not appear")
    _quiet_main(["prepare", part, "--metadata-only"])
    sb = _superblock(dev)
    t.offset = sb.dump_offset
    t.capacity = sb.dump_size
    dio = _read(f"/sys/block/{os.path.basename(dev)}/loop/dio")
    t.description = (f"loop device {dev} (--direct-io={'on' if dio == '1' else 'off'}, "
                     f"{block_size}-byte blocks) over {image} ({_fs_type(image)}), partition {part}")
    return t


def raw_target(path: str, capacity: Optional[int] = None) -> Target:
    """A block device (partition) or a file written from offset 0, no zfcpdump metadata."""
    from ..disk import device

    fd = os.open(path, os.O_RDONLY)
    try:
        size = device.size_of(fd)
        bs = device.logical_block_size(fd) if device.is_block_device(path) else 4096
    finally:
        os.close(fd)
    cap = size if capacity is None else capacity
    return Target("raw", path, path, 0, cap, max(bs, 4096) if bs else 4096,
                  f"raw {'block device' if device.is_block_device(path) else 'file'} {path}")
