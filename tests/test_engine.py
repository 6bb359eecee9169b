"""Engine behaviour around Python: signals, progress callbacks, the GIL."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from zfcpdump.engine import ENGINES, get_engine

BIG = 64 << 30  # a sparse source: reading it costs only the kernel's zero-fill


@pytest.fixture
def sparse_src(tmp_path):
    p = tmp_path / "sparse.bin"
    with open(p, "wb") as f:
        f.truncate(BIG)
    return p


CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from zfcpdump.engine import get_engine
    class Terminated(Exception):
        pass
    def on_term(signum, frame):
        raise Terminated(signum)
    signal.signal(signal.SIGTERM, on_term)
    eng = get_engine(sys.argv[1])
    src = os.open(sys.argv[2], os.O_RDONLY)
    dst = os.open("/dev/null", os.O_WRONLY)
    print("start", flush=True)
    t = time.monotonic()
    try:
        eng.copy_ranges(src, dst, [(0, 0, os.fstat(src).st_size)], direct=False, sync=False)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(3)
    except Terminated:
        print("Terminated", flush=True)
        sys.exit(4)
    print("finished", time.monotonic() - t, flush=True)
""")


@pytest.mark.parametrize("eng", ENGINES)
@pytest.mark.parametrize("sig,want,code", [("SIGINT", "KeyboardInterrupt", 3),
                                           ("SIGTERM", "Terminated", 4)])
def test_signal_stops_copy_quickly(eng, sig, want, code, sparse_src):
    p = subprocess.Popen([sys.executable, "-c", CHILD, eng, str(sparse_src)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "start"
        time.sleep(0.5)  # well inside the copy (64 GiB take several seconds)
        t = time.monotonic()
        p.send_signal(getattr(__import__("signal"), sig))
        out, err = p.communicate(timeout=10)
        elapsed = time.monotonic() - t
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert out.strip() == want, (out, err)
    assert p.returncode == code, err
    assert elapsed < 1.0, f"took {elapsed:.2f} s to stop"


@pytest.mark.parametrize("eng", ENGINES)
def test_progress_monotonic_and_final(eng, tmp_path):
    src = tmp_path / "src"
    n = 48 << 20
    with open(src, "wb") as f:
        f.write(os.urandom(1 << 20) * 48)
    seen = []
    ranges = [(0, 4096, n - 4096), (4096, 0, 4096), (0, n + 100, 0)]
    with open(src, "rb") as s, open(tmp_path / "dst", "w+b") as d:
        r = get_engine(eng).copy_ranges(s.fileno(), d.fileno(), ranges, buffer_size=1 << 20,
                                        queue_depth=2, progress=seen.append)
    assert r.bytes_copied == n
    assert seen and seen[-1] == n
    assert all(a <= b for a, b in zip(seen, seen[1:]))
    seen.clear()
    with open(src, "rb") as s:
        get_engine(eng).read_digests(s.fileno(), [(0, n), (5, 7)], progress=seen.append)
    assert seen and seen[-1] == n + 7
    assert all(a <= b for a, b in zip(seen, seen[1:]))


def test_rust_progress_rate_limited(sparse_src):
    calls = []
    n = 1 << 30
    with open(sparse_src, "rb") as s, open("/dev/null", "wb") as d:
        t = time.monotonic()
        get_engine("rust").copy_ranges(s.fileno(), d.fileno(), [(0, 0, n)], direct=False,
                                       sync=False, progress=lambda b: calls.append(time.monotonic()))
        elapsed = time.monotonic() - t
    assert len(calls) <= elapsed / 0.1 + 2
    gaps = [b - a for a, b in zip(calls, calls[1:-1])]
    assert all(g >= 0.09 for g in gaps), gaps


@pytest.mark.parametrize("eng", ENGINES)
def test_progress_exception_propagates(eng, tmp_path):
    class Stop(Exception):
        pass

    def cb(n):
        raise Stop(n)

    with open(tmp_path / "s", "wb") as f:
        f.write(b"a" * 10000)
    with open(tmp_path / "s", "rb") as s, open(tmp_path / "d", "wb") as d:
        with pytest.raises(Stop):
            get_engine(eng).copy_ranges(s.fileno(), d.fileno(), [(0, 0, 10000)], progress=cb)


def test_gil_released_during_copy(sparse_src):
    n = 8 << 30  # large enough to take a measurable time even with parallel reads
    count = 0
    stop = threading.Event()

    def spin():
        nonlocal count
        while not stop.is_set():
            count += 1

    th = threading.Thread(target=spin)
    with open(sparse_src, "rb") as s, open("/dev/null", "wb") as d:
        th.start()
        time.sleep(0.05)
        before = count
        t = time.monotonic()
        get_engine("rust").copy_ranges(s.fileno(), d.fileno(), [(0, 0, n)], direct=False, sync=False)
        elapsed = time.monotonic() - t
        during = count - before
        stop.set()
        th.join()
    assert elapsed > 0.2, "copy too fast to tell"
    # with the GIL held for the whole copy the spinner would hardly run at all
    assert during > 100_000 * elapsed, (during, elapsed)


def test_get_engine():
    assert get_engine().name == "rust"
    assert get_engine("python").name == "python"
    with pytest.raises(ValueError):
        get_engine("c")


def test_engine_io_error_is_shared():
    from zfcpdump import _core, _pyengine, engine
    assert engine.EngineIOError is _pyengine.EngineIOError
    assert issubclass(engine.EngineIOError, OSError)
    with tempfile.TemporaryFile() as d:
        for name in ENGINES:
            with pytest.raises(engine.EngineIOError) as ei:
                get_engine(name).copy_ranges(987_654, d.fileno(), [(0, 0, 1)])
            assert ei.value.errno == 9 and ei.value.op == "read" and ei.value.offset == 0
    assert _core.copy_ranges is get_engine("rust").copy_ranges
