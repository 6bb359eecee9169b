"""A bounded coverage-guided fuzz run (atheris) per reader target, from the seed corpus
in tests/corpus/. ZFCPDUMP_ATHERIS_RUNS (default 3000) inputs per target."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from faults.fuzz_targets import TARGETS

pytest.importorskip("atheris")
RUNS = int(os.environ.get("ZFCPDUMP_ATHERIS_RUNS", "3000"))
# A fixed seed makes the CI run repeatable (a finding reproduces on the next run);
# ZFCPDUMP_ATHERIS_SEED=0 explores with a random seed.
SEED = int(os.environ.get("ZFCPDUMP_ATHERIS_SEED", "1"))
SCRIPT = Path(__file__).parent / "faults" / "fuzz_atheris.py"


KNOWN: dict[str, str] = {}  # target -> reason, for a bug found and not yet fixed


@pytest.mark.parametrize("target", [pytest.param(t, marks=pytest.mark.xfail(reason=KNOWN[t], strict=False))
                                    if t in KNOWN else t for t in sorted(TARGETS)])
def test_atheris(target, tmp_path):
    env = dict(os.environ, ZFCPDUMP_FUZZ_WORKDIR=str(tmp_path / "work"))
    res = subprocess.run([sys.executable, str(SCRIPT), target, f"-runs={RUNS}", f"-seed={SEED}",
                          "-rss_limit_mb=0", "-timeout=20", "-max_len=262144",
                          f"-artifact_prefix={tmp_path}/"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    tail = res.stderr[-3000:]
    assert res.returncode == 0, tail
    m = re.search(r"Done (\d+) runs", res.stderr)
    assert m, tail
    print(f"\natheris {target}: {m.group(1)} runs")
