"""makedumpfile 1.7.2 (the s390x binary from Debian 12) run through qemu-user, as
zgetdump is (zgetdump.py): it reads s390x dumps, which the host's x86_64 makedumpfile
does not. Installed by ``.ci/install-oracles.sh`` into the same s390x root."""

from __future__ import annotations

import functools
import os
import subprocess

import pytest

from .zgetdump import QEMU, ROOT, _no_core_dumps, _qemu, probe_version

MAKEDUMPFILE = ROOT / "usr" / "bin" / "makedumpfile"


def run_makedumpfile(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """makedumpfile ARGS under qemu-user; stdout and stderr captured as text."""
    return subprocess.run([_qemu() or QEMU, "-L", str(ROOT), str(MAKEDUMPFILE),
                           *map(os.fspath, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_no_core_dumps)


@functools.lru_cache(maxsize=None)
def _probe() -> tuple[str | None, str]:
    """(version, reason-if-unavailable)."""
    def version_run() -> tuple[int, str]:
        p = run_makedumpfile("-v", timeout=60)
        return p.returncode, p.stdout + p.stderr

    return probe_version("makedumpfile", MAKEDUMPFILE, version_run)


needs_makedumpfile_s390x = pytest.mark.skipif(
    _probe()[0] is None, reason=f"needs the s390x makedumpfile under qemu-user: {_probe()[1]}")
