"""libkdumpfile 0.5.1 (Debian python3-libkdumpfile) as an oracle.

The ``kdumpfile`` module imports only under Debian's /usr/bin/python3, so every query runs
``kdumpfile_probe.py`` in a subprocess and parses its JSON (interop.md §3).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

PYTHON = os.environ.get("ZFCPDUMP_KDUMPFILE_PYTHON", "/usr/bin/python3")
PROBE = Path(__file__).resolve().with_name("kdumpfile_probe.py")


@functools.lru_cache(maxsize=None)
def _check() -> str:
    """'' if usable, else the reason."""
    if not os.access(PYTHON, os.X_OK):
        return f"{PYTHON} not found"
    try:
        p = subprocess.run([PYTHON, "-c", "import kdumpfile"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{PYTHON} does not run: {e}"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [""])[-1]
        return (f"{PYTHON} cannot import kdumpfile ({last}); "
                "apt-get install python3-libkdumpfile (see .ci/install-oracles.sh)")
    return ""


def kdumpfile_available() -> bool:
    return _check() == ""


needs_libkdumpfile = pytest.mark.skipif(
    not kdumpfile_available(), reason=f"needs libkdumpfile Python bindings: {_check()}")


def probe(path, reads=(), timeout: float = 600) -> dict:
    """Open PATH with libkdumpfile and return the probe's JSON as a dict.

    reads: iterable of (physical address, size); each result in ``["reads"]`` has
    ``sha256`` (hex of the bytes read through KDUMP_MACHPHYSADDR) or ``error`` and
    ``error_class``. If libkdumpfile cannot open the file, the dict has ``error`` and
    ``error_class`` (e.g. "OSErrorException") instead of the attributes.
    Raises RuntimeError if the probe itself fails.
    """
    request = json.dumps({"reads": [[int(a), int(s)] for a, s in reads]})
    cmd = [PYTHON, str(PROBE), os.fspath(path)]
    if len(request) > 100_000:
        # Keep argv small: hand the request over on a pipe.
        cmd.append("@/dev/stdin")
        p = subprocess.run(cmd, input=request, capture_output=True, text=True,
                           timeout=timeout)
    else:
        cmd.append(request)
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {p.returncode}): {p.stderr}")
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError as e:
        raise RuntimeError(f"kdumpfile probe printed no JSON ({e}): {p.stdout[:500]!r} "
                           f"stderr: {p.stderr[:500]}") from None
