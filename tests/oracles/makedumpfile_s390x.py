"""The s390x makedumpfile run through qemu-user, as zgetdump is (zgetdump.py): it reads
s390x dumps, which the host's x86_64 makedumpfile does not. Two builds:

* 1.7.2 from Debian 12, in the zgetdump root (`run_makedumpfile`): Linux 6.1;
* 1.7.8 from Debian sid with Debian 13's (or sid's) libraries (`run_makedumpfile_sid`),
  unpacked into ``${ZFCPDUMP_ORACLES}/makedumpfile-sid-s390x/root`` and started through
  that root's own dynamic loader: the first release that knows the s390x layout of
  Linux 6.10 and later (kernel image and direct map away from their physical
  addresses), for the Linux 6.12 check.

Both installed by ``.ci/install-oracles.sh``."""

from __future__ import annotations

import functools
import os
import subprocess

import pytest

from .makedumpfile_sid import MIN_VERSION, at_least
from .zgetdump import ORACLES, QEMU, ROOT, _no_core_dumps, _qemu, probe_version

MAKEDUMPFILE = ROOT / "usr" / "bin" / "makedumpfile"
SID_ROOT = ORACLES / "makedumpfile-sid-s390x" / "root"
SID_MAKEDUMPFILE = SID_ROOT / "usr" / "bin" / "makedumpfile"
SID_LIBS = SID_ROOT / "usr" / "lib" / "s390x-linux-gnu"


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", timeout=timeout, preexec_fn=_no_core_dumps)


def run_makedumpfile(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """makedumpfile 1.7.2 ARGS under qemu-user; stdout and stderr captured as text."""
    return _run([_qemu() or QEMU, "-L", str(ROOT), str(MAKEDUMPFILE),
                 *map(os.fspath, args)], timeout)


def sid_command(*args) -> list[str]:
    return [_qemu() or QEMU, str(SID_LIBS / "ld64.so.1"), "--library-path", str(SID_LIBS),
            str(SID_MAKEDUMPFILE), *map(os.fspath, args)]


def run_makedumpfile_sid(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """makedumpfile 1.7.8 (sid) ARGS under qemu-user."""
    return _run(sid_command(*args), timeout)


def _version_of(run):
    def version_run() -> tuple[int, str]:
        p = run("-v", timeout=60)
        return p.returncode, p.stdout + p.stderr
    return version_run


@functools.lru_cache(maxsize=None)
def _probe() -> tuple[str | None, str]:
    """(version, reason-if-unavailable)."""
    return probe_version("makedumpfile", MAKEDUMPFILE, _version_of(run_makedumpfile))


@functools.lru_cache(maxsize=None)
def probe_sid() -> tuple[str | None, str]:
    version, why = probe_version("makedumpfile (sid)", SID_MAKEDUMPFILE,
                                 _version_of(run_makedumpfile_sid))
    return (version, why) if version is None else at_least(version, MIN_VERSION,
                                                              SID_MAKEDUMPFILE)


needs_makedumpfile_s390x = pytest.mark.skipif(
    _probe()[0] is None, reason=f"needs the s390x makedumpfile under qemu-user: {_probe()[1]}")
