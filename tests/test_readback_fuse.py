"""zgetdump -m / -u: DIR/dump.<fmt> holds exactly the bytes the copy writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from test_readback_support import file_sha, make_vmcore
from zfcpdump import api
from zfcpdump.fuse import fuse_unavailable_reason
from zfcpdump.readers import open_dump

REASON = fuse_unavailable_reason()
pytestmark = pytest.mark.skipif(bool(REASON) or os.geteuid() != 0,
                                reason=REASON or "FUSE mounts in tests need root")


@pytest.mark.parametrize("fmt", ["elf", "s390"])
def test_mount_serves_the_copy(tmp_path, fmt):
    src = make_vmcore(str(tmp_path / "vmcore"), cpus=2, ranges=[(0, 4 << 20), (8 << 20, 1 << 20)])
    copy = str(tmp_path / f"copy.{fmt}")
    with open_dump(src) as d:
        api.write_dump(d, copy, fmt)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run([sys.executable, "-m", "zfcpdump.cli.zgetdump", "-m", "-f", fmt, src,
                        str(mnt)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    try:
        target = mnt / f"dump.{fmt}"
        for _ in range(50):
            if target.exists():
                break
            time.sleep(0.1)
        assert os.listdir(mnt) == [f"dump.{fmt}"]
        assert file_sha(str(target)) == file_sha(copy)
    finally:
        u = subprocess.run([sys.executable, "-m", "zfcpdump.cli.zgetdump", "-u", str(mnt)],
                           capture_output=True, text=True, timeout=60)
    assert u.returncode == 0, u.stderr
    assert os.listdir(mnt) == []
