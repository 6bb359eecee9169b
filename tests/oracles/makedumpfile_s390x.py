"""makedumpfile 1.7.2 (the s390x binary from Debian 12) run through qemu-user, as
zgetdump is (zgetdump.py): it reads s390x dumps, which the host's x86_64 makedumpfile
does not. Installed by ``.ci/install-oracles.sh`` into the same s390x root."""

from __future__ import annotations

import functools
import os
import re
import subprocess

import pytest

from .zgetdump import QEMU, ROOT, _no_core_dumps, _qemu

MAKEDUMPFILE = ROOT / "usr" / "bin" / "makedumpfile"


def run_makedumpfile(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """makedumpfile ARGS under qemu-user; stdout and stderr captured as text."""
    return subprocess.run([_qemu() or QEMU, "-L", str(ROOT), str(MAKEDUMPFILE),
                           *map(os.fspath, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_no_core_dumps)


@functools.lru_cache(maxsize=None)
def _probe() -> tuple[str | None, str]:
    if _qemu() is None:
        return None, f"{QEMU} not found (see .ci/install-oracles.sh)"
    if not MAKEDUMPFILE.is_file():
        return None, f"s390x makedumpfile not found at {MAKEDUMPFILE} (run .ci/install-oracles.sh)"
    try:
        p = run_makedumpfile("-v", timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"makedumpfile under qemu-user does not run: {e}"
    m = re.search(r"version (\d+(?:\.\d+)+)", p.stdout + p.stderr)
    if not m:
        return None, f"makedumpfile -v under qemu-user failed: {(p.stdout + p.stderr)[:200]}"
    return m.group(1), ""


needs_makedumpfile_s390x = pytest.mark.skipif(
    _probe()[0] is None, reason=f"needs the s390x makedumpfile under qemu-user: {_probe()[1]}")
