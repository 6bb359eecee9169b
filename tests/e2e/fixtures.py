"""What the x86_64 and s390x end-to-end tests share: where the runs go, the report
printed after the tests, "skip here, fail in CI" for a missing requirement, and
throwing a run's disks away unless they are to be kept."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

import pytest

REQUIRED = bool(os.environ.get("CI") or os.environ.get("ZFCPDUMP_E2E_REQUIRED"))


def skip_or_fail(reason: str, what: str = "end-to-end test") -> None:
    if REQUIRED:
        pytest.fail(f"{what} required in CI but cannot run: {reason}")
    pytest.skip(reason)


def make_workdir(tmp_path_factory, sub: str) -> Path:
    """ZFCPDUMP_E2E_KEEP=DIR keeps the disks and dumps for a look afterwards."""
    keep = os.environ.get("ZFCPDUMP_E2E_KEEP")
    if keep:
        d = Path(keep) / sub
        d.mkdir(parents=True, exist_ok=True)
        return d
    return tmp_path_factory.mktemp(sub)


def discard(*paths: Optional[Path]) -> None:
    """Remove a run's disks and dumps, unless ZFCPDUMP_E2E_KEEP keeps them."""
    if os.environ.get("ZFCPDUMP_E2E_KEEP"):
        return
    for f in paths:
        if f is not None and f.exists():
            f.unlink()


def report_lines(request, prefix: str):
    """A list the test appends to; printed after the module's tests, even with -q."""
    lines: list[str] = []
    yield lines
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or not lines:
        return
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        tr.write_line("")
        for line in lines:
            tr.write_line(f"{prefix}: {line}")
