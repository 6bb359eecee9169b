"""faultfs: a FUSE file system that serves the files of a backing directory and makes
chosen operations fail with real errno values, so that the kernel itself hands the
error to the program under test (pwrite, O_DIRECT pwrite, fsync/fdatasync, pread) —
directly on the FUSE file, or through a loop device set up over it.

    python faultfs.py BACKING MOUNTPOINT --rules RULES.json [--log LOG]

Mounted with direct_io, so every read and write reaches this process (no page cache
in between) and the log shows the real order of writes and flushes.

RULES.json (re-read whenever it changes; counters restart then) is a list of:
    {"op": "write"|"read"|"fsync"|"flip"|"stall",  # flip: store the written data with
                                           #   one byte inverted at `start` (silent
                                           #   corruption); stall: hold the write
                                           #   `seconds` (default 1), then make it
     "file": "disk.img",                   # optional: only this file
     "start": 1048576, "end": 1052672,     # byte range the op must touch (read/write/flip)
     "data": "7f454c46",                   # optional: the written bytes at `start` must be these
     "errno": "EIO",                       # EIO, ENOSPC, ... (not for flip)
     "after": 0,                           # let this many matching ops through first
     "times": 1,                           # fail this many times (-1: forever)
     "armed_by": {"start": .., "end": .., "data": ..}}  # optional: only once a write
                                           #   like this (same keys) has been seen
A failing write first writes (and reports) the bytes before `start`, as a file system
that fills up does, so the caller sees a short write and then the error ("short": false
fails the whole write instead; use that under a loop device, whose driver takes a short
write from its backing file for a complete one and silently drops the rest).

The log (one line per op, flushed at once): `<seq> write <file> <offset> <size>`,
`<seq> fsync <file> <datasync>`, `<seq> flush <file>`, `<seq> read <file> <offset> <size>`
(reads only with --log-reads), `<seq> FAIL <op> <file> <offset> <errno>`,
`<seq> STALL write <file> <offset>` (when a stall begins).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import threading
import time

import mfusepy as fuse


class Rules:
    def __init__(self, path: str):
        self.path = path
        self.mtime = None
        self.rules: list[dict] = []
        self.hits: list[int] = []
        self.armed: list[bool] = []
        self.lock = threading.Lock()

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.mtime is not None:
                self.rules, self.hits, self.mtime = [], [], None
            return
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key != self.mtime:
            with open(self.path) as f:
                text = f.read()
            self.rules = json.loads(text) if text.strip() else []
            self.hits = [0] * len(self.rules)
            self.armed = ["armed_by" not in r for r in self.rules]
            self.mtime = key

    @staticmethod
    def _touches(r: dict, offset: int, size: int, data: bytes) -> bool:
        start, end = r.get("start", 0), r.get("end", 1 << 63)
        if not (offset < end and start < offset + size):
            return False
        if "data" in r:
            want = bytes.fromhex(r["data"])
            rel = start - offset
            if rel < 0 or bytes(data[rel : rel + len(want)]) != want:
                return False
        return True

    def saw_write(self, name: str, offset: int, size: int, data: bytes) -> None:
        """Arm the rules waiting for this write (called after it succeeded)."""
        with self.lock:
            for i, r in enumerate(self.rules):
                a = r.get("armed_by")
                if a is not None and not self.armed[i] and a.get("file", r.get("file")) in (None, name) \
                        and self._touches(a, offset, size, data):
                    self.armed[i] = True

    def match(self, op: str, name: str, offset: int = 0, size: int = 0,
              data: bytes = b"") -> tuple[dict, int] | None:
        """The first rule that fires for this op (and counts it), or None."""
        with self.lock:
            self._reload()
            for i, r in enumerate(self.rules):
                if not self.armed[i]:
                    continue
                if r["op"] != op and not (op == "write" and r["op"] in ("flip", "stall")):
                    continue
                if r.get("file") not in (None, name):
                    continue
                if op in ("read", "write") and not self._touches(r, offset, size, data):
                    continue
                if "datasync" in r and op == "fsync" and r["datasync"] != data:
                    continue
                self.hits[i] += 1
                n = self.hits[i] - r.get("after", 0)
                times = r.get("times", -1)
                if n <= 0 or (times >= 0 and n > times):
                    continue
                return r, i
        return None


class FaultFS(fuse.Operations):
    use_ns = True

    def __init__(self, backing: str, rules: Rules, log, log_reads: bool):
        self.backing = backing
        self.rules = rules
        self.log_file = log
        self.log_reads = log_reads
        self.seq = 0
        self._mu = threading.Lock()

    def _log(self, text: str) -> None:
        if self.log_file is None:
            return
        with self._mu:
            self.seq += 1
            self.log_file.write(f"{self.seq} {text}\n")
            self.log_file.flush()

    def _path(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    @staticmethod
    def _name(path: str) -> str:
        return path.lstrip("/")

    def _fail(self, rule: dict, op: str, name: str, offset: int):
        code = getattr(errno, rule.get("errno", "EIO"))
        self._log(f"FAIL {op} {name} {offset} {errno.errorcode[code]}")
        raise fuse.FuseOSError(code)

    # ---- metadata -------------------------------------------------------------------
    def getattr(self, path, fh=None):
        st = os.lstat(self._path(path))
        out = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid",
                                           "st_size", "st_blocks")}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            out[k] = getattr(st, k + "_ns")
        return out

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._path(path))

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize",
                                            "f_favail", "f_ffree", "f_files", "f_flag",
                                            "f_frsize", "f_namemax")}

    def truncate(self, path, length, fh=None):
        os.truncate(self._path(path), length)

    def chmod(self, path, mode):
        os.chmod(self._path(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._path(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._path(path), ns=times)

    def unlink(self, path):
        os.unlink(self._path(path))

    def create(self, path, mode, fi=None):
        return os.open(self._path(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)

    # ---- data -----------------------------------------------------------------------
    def open(self, path, flags):
        flags &= ~(os.O_DIRECT | os.O_CREAT | os.O_EXCL | os.O_TRUNC)
        return os.open(self._path(path), flags)

    def read(self, path, size, offset, fh):
        name = self._name(path)
        if self.log_reads:
            self._log(f"read {name} {offset} {size}")
        hit = self.rules.match("read", name, offset, size)
        if hit is not None:
            rule, _ = hit
            if rule["op"] == "read":
                start = rule.get("start", 0)
                if start > offset:  # deliver the bytes before the bad spot
                    return os.pread(fh, start - offset, offset)
                self._fail(rule, "read", name, offset)
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        name = self._name(path)
        hit = self.rules.match("write", name, offset, len(data), data)
        if hit is not None:
            rule, _ = hit
            start = rule.get("start", 0)
            if rule["op"] == "flip":
                buf = bytearray(data)
                buf[start - offset] ^= 0xFF
                self._log(f"FLIP write {name} {start}")
                data = bytes(buf)
            elif rule["op"] == "stall":
                self._log(f"STALL write {name} {offset}")
                time.sleep(rule.get("seconds", 1))
            else:
                if start > offset and rule.get("short", True):  # a short write first, as a file system that fills up does
                    n = os.pwrite(fh, data[: start - offset], offset)
                    self._log(f"write {name} {offset} {n} short")
                    return n
                self._fail(rule, "write", name, offset)
        n = os.pwrite(fh, data, offset)
        self._log(f"write {name} {offset} {n} {bytes(data[:8]).hex()}")
        self.rules.saw_write(name, offset, n, data)
        return n

    def fsync(self, path, datasync, fh):
        name = self._name(path)
        self._log(f"fsync {name} {int(bool(datasync))}")
        hit = self.rules.match("fsync", name, data=int(bool(datasync)))
        if hit is not None:
            self._fail(hit[0], "fsync", name, 0)
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def flush(self, path, fh):
        self._log(f"flush {self._name(path)}")
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("backing")
    ap.add_argument("mountpoint")
    ap.add_argument("--rules", required=True)
    ap.add_argument("--log")
    ap.add_argument("--log-reads", action="store_true")
    args = ap.parse_args(argv)
    log = open(os.path.abspath(args.log), "a", buffering=1) if args.log else None
    ops = FaultFS(os.path.abspath(args.backing), Rules(os.path.abspath(args.rules)), log, args.log_reads)
    fuse.FUSE(ops, args.mountpoint, foreground=True, nothreads=True, direct_io=True,
              fsname="faultfs", allow_other=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
