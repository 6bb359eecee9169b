"""Test-side helpers for faultfs: mount it, arm rules, read its log, loop devices."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def fuse_available() -> str | None:
    """None when faultfs can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        import mfusepy  # noqa: F401
    except Exception as exc:  # OSError when libfuse is missing
        return f"mfusepy unusable: {exc}"
    return None


class FaultMount:
    def __init__(self, root: Path):
        self.root = root
        self.backing = root / "backing"
        self.mnt = root / "mnt"
        self.rules = root / "rules.json"
        self.log = root / "faultfs.log"
        for d in (self.backing, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        self.rules.write_text("[]")
        self.log.write_text("")
        self.stderr = open(root / "faultfs.stderr", "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "faultfs.py"), str(self.backing), str(self.mnt),
             "--rules", str(self.rules), "--log", str(self.log)],
            stdout=self.stderr, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("faultfs did not mount: "
                                   + (root / "faultfs.stderr").read_text()[-2000:])
            time.sleep(0.05)

    def set_rules(self, rules: list[dict]) -> None:
        tmp = self.rules.with_suffix(".tmp")
        tmp.write_text(json.dumps(rules))
        os.replace(tmp, self.rules)  # a new inode: faultfs reloads and resets counters

    def clear_log(self) -> None:
        os.truncate(self.log, 0)

    def log_entries(self) -> list[list[str]]:
        return [line.split()[1:] for line in self.log.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        if os.path.ismount(self.mnt):
            subprocess.run(["umount", str(self.mnt)], capture_output=True)
            if os.path.ismount(self.mnt):
                subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.stderr.close()


class Loop:
    """A loop device with partitions over `path` (for example a faultfs file)."""

    def __init__(self, path: Path, block_size: int = 512):
        out = subprocess.run(["losetup", "-f", "--show", "-P", "-b", str(block_size), str(path)],
                             check=True, capture_output=True, text=True)
        self.dev = out.stdout.strip()
        for _ in range(100):
            if os.path.exists(self.dev + "p1"):
                break
            subprocess.run(["partx", "-a", self.dev], capture_output=True)
            time.sleep(0.05)

    def detach(self) -> None:
        for _ in range(50):
            if subprocess.run(["losetup", "-d", self.dev], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)


def copy_sparse(src: Path, dst: Path) -> None:
    if shutil.which("cp"):
        subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    else:
        shutil.copyfile(src, dst)
