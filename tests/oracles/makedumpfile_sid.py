"""makedumpfile from Debian sid (1.7.8 when this was written) for the Linux 6.12
end-to-end test: Debian 12's 1.7.2 predates that kernel's struct page changes.

It needs glibc >= 2.38, so ``.ci/install-oracles.sh`` unpacks it with Debian 13's
libraries (not installed) into ``${ZFCPDUMP_ORACLES:-/var/cache/zfcpdump-oracles}/
makedumpfile-sid/root``, and it runs through that root's own dynamic loader:
``ROOT/usr/lib64/ld-linux-x86-64.so.2 --library-path ROOT/usr/lib/x86_64-linux-gnu
ROOT/usr/bin/makedumpfile ARGS``.

Stdlib only: the install script checks it with the system python3
(``python3 tests/oracles/makedumpfile_sid.py -v`` runs makedumpfile -v).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

ORACLES = Path(os.environ.get("ZFCPDUMP_ORACLES", "/var/cache/zfcpdump-oracles"))
ROOT = ORACLES / "makedumpfile-sid" / "root"
MAKEDUMPFILE = ROOT / "usr" / "bin" / "makedumpfile"


def command(*args) -> list[str]:
    """The argv that runs makedumpfile ARGS (paths may be os.PathLike)."""
    return [str(ROOT / "usr" / "lib64" / "ld-linux-x86-64.so.2"),
            "--library-path", str(ROOT / "usr" / "lib" / "x86_64-linux-gnu"),
            str(MAKEDUMPFILE), *map(os.fspath, args)]


def run_makedumpfile(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """makedumpfile ARGS; stdout and stderr captured as text."""
    return subprocess.run(command(*args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, errors="replace", timeout=timeout)


@functools.lru_cache(maxsize=None)
def probe() -> tuple[str | None, str]:
    """(version, reason-if-unavailable)."""
    if os.uname().machine != "x86_64":
        return None, "the sid makedumpfile oracle is the x86_64 binary"
    if not MAKEDUMPFILE.is_file():
        return None, f"no makedumpfile at {MAKEDUMPFILE} (run .ci/install-oracles.sh)"
    try:
        p = run_makedumpfile("-v", timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{MAKEDUMPFILE} does not run: {e}"
    m = re.search(r"version (\d+(?:\.\d+)+)", p.stdout + p.stderr)
    if p.returncode != 0 or not m:
        return None, (f"makedumpfile -v failed (exit {p.returncode}): "
                      f"{(p.stdout + p.stderr).strip()[:200]}")
    return at_least(m.group(1), MIN_VERSION, MAKEDUMPFILE)


#: the first release that reads Linux 6.12's buddy pages (1.7.6 leaves them all in)
MIN_VERSION = (1, 7, 8)


def at_least(version: str, least: tuple[int, ...], binary) -> tuple[str | None, str]:
    """(version, "") if `version` is `least` or later, else (None, why)."""
    if tuple(int(n) for n in version.split(".")) < least:
        return None, (f"{binary} is makedumpfile {version}, older than "
                      f"{'.'.join(map(str, least))} (run .ci/install-oracles.sh)")
    return version, ""


if __name__ == "__main__":
    sys.exit(subprocess.call(command(*sys.argv[1:]), stdin=subprocess.DEVNULL))
