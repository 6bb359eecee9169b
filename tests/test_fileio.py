"""fileio.pwrite_together: writes that a kill of the caller must not part (the busy
marker or page 0 and the checksum that matches it)."""

from __future__ import annotations

import errno
import os

import pytest

from zfcpdump.fileio import TogetherWriteError, pwrite_together


def _fd(path, flags=os.O_RDWR | os.O_CREAT):
    return os.open(path, flags, 0o644)


def _no_fork():
    raise OSError(errno.EAGAIN, "Resource temporarily unavailable")


@pytest.mark.parametrize("fork", [True, False])
def test_writes_land_in_order(tmp_path, monkeypatch, fork):
    if not fork:  # fork fails: the same writes, made in this process
        monkeypatch.setattr(os, "fork", _no_fork)
    path = tmp_path / "disk.img"
    fd = _fd(path)
    try:
        pwrite_together(fd, [(b"A" * 4096, 0), (b"B" * 72, 8192), (b"C" * 3, 4094)])
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[:4094] == b"A" * 4094 and data[4094:4097] == b"CCC"
    assert data[8192:8264] == b"B" * 72 and len(data) == 8264


@pytest.mark.parametrize("fork", [True, False])
def test_a_failed_write_says_which_and_nothing_after_it_is_written(tmp_path, monkeypatch, fork):
    if not fork:
        monkeypatch.setattr(os, "fork", _no_fork)
    path = tmp_path / "disk.img"
    fd = _fd(path)
    try:
        with pytest.raises(TogetherWriteError) as info:
            # the second write's offset is past any file's end: EFBIG or EINVAL
            pwrite_together(fd, [(b"A" * 10, 0), (b"B", (1 << 63) - 1), (b"C" * 10, 100)])
    finally:
        os.close(fd)
    assert info.value.index == 1
    assert info.value.errno in (errno.EFBIG, errno.EINVAL)
    assert path.read_bytes() == b"A" * 10  # the third was not written


def test_a_read_only_descriptor_fails_the_first_write(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 16)
    fd = _fd(path, os.O_RDONLY)
    try:
        with pytest.raises(TogetherWriteError) as info:
            pwrite_together(fd, [(b"A", 0), (b"B", 1)])
    finally:
        os.close(fd)
    assert (info.value.index, info.value.errno) == (0, errno.EBADF)
    assert path.read_bytes() == b"\0" * 16
