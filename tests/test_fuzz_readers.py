"""Hostile input (issue #5): property-based tests over every reader of untrusted bytes.
Only zfcpdump's own errors may come out — never another exception, a hang or an
allocation far beyond the input's real size. Inputs are random bytes and mutations of
the seed corpus in tests/corpus/<target>/ (the coverage-guided atheris run in
test_fuzz_atheris.py starts from the same seeds).

ZFCPDUMP_FUZZ_EXAMPLES (default 150 per target) sets the number of cases."""

from __future__ import annotations

import os
import signal
import struct
import tracemalloc
from pathlib import Path

import pytest
from conftest import sha256_file, sparse_vmcore
from faults.fuzz_targets import TARGETS, run_one
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zfcpdump.cli.main import main

CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = int(os.environ.get("ZFCPDUMP_FUZZ_EXAMPLES", "150"))
MEM_LIMIT = 48 << 20  # bytes a reader may allocate for an input of at most ~256 KiB
STATS = {"cases": 0, "rejected_nothing_written": 0, "accepted": 0}
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                    suppress_health_check=list(HealthCheck), database=None)
BOUNDARY = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF,
            1 << 32, 1 << 40, (1 << 63) - 1, (1 << 64) - 1, 56, 64, 4096]


def seeds(target: str) -> list[bytes]:
    d = CORPUS / target
    return [p.read_bytes() for p in sorted(d.glob("*"))] if d.exists() else [b""]


@st.composite
def mutated(draw, target: str):
    data = bytearray(draw(st.sampled_from(seeds(target))))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["byte", "u16", "u32", "u64", "truncate", "splice"]))
        if not data:
            break
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "splice":
            data[pos:pos] = draw(st.binary(max_size=64))
        else:
            n = {"u16": 2, "u32": 4, "u64": 8}[kind]
            v = draw(st.sampled_from(BOUNDARY) | st.integers(0, (1 << (8 * n)) - 1)) % (1 << (8 * n))
            order = draw(st.sampled_from([">", "<"]))
            fmt = order + {"u16": "H", "u32": "I", "u64": "Q"}[kind]
            if pos + n <= len(data):
                struct.pack_into(fmt, data, pos, v)
    return bytes(data)


class Hang(Exception):
    pass


def _alarm(_s, _f):
    raise Hang("reader did not finish within 20 s")


def check_target(name: str, data: bytes) -> None:
    STATS["cases"] += 1
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    tracemalloc.start()
    try:
        run_one(name, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert peak < MEM_LIMIT, f"{name}: {peak} bytes allocated for a {len(data)}-byte input"


def _make_test(name):
    @SETTINGS
    @given(data=st.one_of(mutated(name), st.binary(max_size=4096)))
    def test(data):
        check_target(name, data)

    test.__name__ = f"test_fuzz_{name}"
    return test


for _name in TARGETS:
    globals()[f"test_fuzz_{_name}"] = _make_test(_name)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seed_corpus_is_clean(target):
    for data in seeds(target):
        check_target(target, data)


# -- rejected inputs leave every disk byte as it was ------------------------------------

@pytest.fixture(scope="module")
def tiny_core(tmp_path_factory):
    p = tmp_path_factory.mktemp("core") / "tiny.elf"
    sparse_vmcore(p, 4096)
    return p


@settings(max_examples=max(20, EXAMPLES // 3), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=mutated("locate"))
def test_fuzzed_disk_refused_with_nothing_written_or_accepted(tmp_path_factory, tiny_core, data):
    img = tmp_path_factory.mktemp("img") / "d.img"
    img.write_bytes(data)
    before = sha256_file(img)
    code = main(["dump", "-i", str(tiny_core), "--engine", "python", str(img)])
    STATS["cases"] += 1
    if code != 0:
        assert sha256_file(img) == before, "a refused disk was written to"
        STATS["rejected_nothing_written"] += 1
    else:
        STATS["accepted"] += 1
        assert main(["check", str(img)]) == 0


def test_report_fuzz_counts():
    print(f"\nfuzz/property cases: {STATS}")
