"""s390-tools 2.16 ``zgetdump`` (the s390x binary from Debian 12) run through qemu-user.

Installed by ``.ci/install-oracles.sh`` into
``${ZFCPDUMP_ORACLES:-/var/cache/zfcpdump-oracles}/s390x/root`` and run as
``qemu-s390x-static -L ROOT ROOT/sbin/zgetdump ARGS...`` (interop.md §2).
"""

from __future__ import annotations

import functools
import os
import re
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

ORACLES = Path(os.environ.get("ZFCPDUMP_ORACLES", "/var/cache/zfcpdump-oracles"))
ROOT = ORACLES / "s390x" / "root"
ZGETDUMP = ROOT / "sbin" / "zgetdump"
QEMU = "qemu-s390x-static"


def _qemu() -> str | None:
    return shutil.which(QEMU) or (f"/usr/bin/{QEMU}" if os.access(f"/usr/bin/{QEMU}", os.X_OK)
                                  else None)


def _no_core_dumps() -> None:
    # zgetdump 2.16 segfaults on some inputs (e_phoff != 64); qemu-user would then write
    # a guest core file into the working directory if core dumps are allowed.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def command(*args) -> list[str]:
    """The argv that runs zgetdump with ARGS (paths may be os.PathLike)."""
    return [_qemu() or QEMU, "-L", str(ROOT), str(ZGETDUMP), *map(os.fspath, args)]


def run_zgetdump(*args, stdout=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run zgetdump ARGS; stdin is /dev/null.

    stdout=None captures stdout as bytes in ``.stdout``; otherwise it is passed to
    subprocess (an open binary file object, a file descriptor or subprocess.DEVNULL) and
    ``.stdout`` is None. stderr is always captured as text. A crash shows as a negative
    returncode (-11 for SIGSEGV). Raises subprocess.TimeoutExpired on timeout.
    """
    return _run(args, stdout, timeout)


def _run(args, stdout, timeout) -> subprocess.CompletedProcess:
    p = subprocess.run(
        command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        preexec_fn=_no_core_dumps,
    )
    p.stderr = p.stderr.decode("utf-8", errors="replace")
    return p


def probe_version(name: str, binary: Path,
                  version_run: Callable[[], tuple[int, str]]) -> tuple[str | None, str]:
    """(version, reason-if-unavailable) of an s390x tool in ROOT under qemu-user;
    `version_run` runs its `-v` and returns (exit status, output)."""
    if _qemu() is None:
        return None, f"{QEMU} not found (apt-get install qemu-user-static; see .ci/install-oracles.sh)"
    if not binary.is_file():
        return None, f"s390x {name} not found at {binary} (run .ci/install-oracles.sh)"
    try:
        rc, text = version_run()
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{name} under qemu-user does not run: {e}"
    m = re.search(r"version (\d+(?:\.\d+)+)", text)
    if rc != 0 or not m:
        return None, f"{name} -v under qemu-user failed (exit {rc}): {text.strip()[:200]}"
    return m.group(1), ""


@functools.lru_cache(maxsize=None)
def _probe() -> tuple[str | None, str]:
    """(version, reason-if-unavailable)."""
    def version_run() -> tuple[int, str]:
        p = _run(("-v",), None, 60)
        return p.returncode, p.stdout.decode(errors="replace") + p.stderr

    return probe_version("zgetdump", ZGETDUMP, version_run)


def zgetdump_available() -> bool:
    return _probe()[0] is not None


def zgetdump_version() -> str | None:
    """e.g. "2.16.0", or None if unavailable."""
    return _probe()[0]


def unavailable_reason() -> str:
    return _probe()[1]


needs_zgetdump = pytest.mark.skipif(
    not zgetdump_available(),
    reason=f"needs s390-tools zgetdump under qemu-user: {unavailable_reason()}")
