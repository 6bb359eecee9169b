"""What the x86_64 and s390x end-to-end tests share: where the runs go, the report
printed after the tests, "skip here, fail in CI" for a missing requirement,
throwing a run's disks away unless they are to be kept, and the x86_64 guest."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Optional

import pytest

from . import assets, harness

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


def x86_64_unavailable(arch: assets.Arch) -> str:
    """Why an x86_64 guest cannot run here ('' if it can)."""
    if os.uname().machine != "x86_64":
        return "the x86_64 end-to-end test runs on an x86_64 host"
    if shutil.which("dpkg") is None or assets.host_deb_arch() != "amd64":
        return "needs a Debian amd64 host (apt-get download, dpkg-deb)"
    missing = harness.missing_tools(arch)
    if missing:
        return f"needs {', '.join(missing)} (`bash .ci/install-e2e.sh` installs them)"
    return ""


def x86_64_guest(arch: assets.Arch, workdir: Path, report: list) -> harness.Guest:
    """The prepared x86_64 guest (with the wheel), its setup in the report; skipped or
    failed (skip_or_fail) when it cannot be had."""
    reason = x86_64_unavailable(arch)
    if reason:
        skip_or_fail(reason)
    try:
        g = harness.prepare_guest(arch, workdir, log=lambda s: None)
    except assets.FetchError as exc:
        skip_or_fail(f"cannot fetch the guest packages with apt: {exc}")
    except (FileNotFoundError, harness.WheelError) as exc:
        skip_or_fail(f"no wheel for the guest (set ZFCPDUMP_WHEEL or install maturin): {exc}")
    s = g.summary
    report.append(f"guest: {g.kernel.name}, wheel {g.wheel.name}, dump initramfs "
                  f"{s['image_bytes'] >> 10} KiB gz / {s['files_bytes'] >> 10} KiB unpacked; "
                  f"setup: fetch {s['fetch_s']:.1f}s, wheel {s['wheel_s']:.1f}s, "
                  f"initramfs {s['initramfs_s']:.1f}s")
    return g
