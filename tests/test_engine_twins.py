"""The Rust engine and its pure-Python twin produce byte-identical results."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import shutil
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zfcpdump import engine
from zfcpdump.engine import EngineIOError, get_engine

RUST = get_engine("rust")
PY = get_engine("python")
SRC_SIZE = 96 * 1024
DST_SIZE = 80 * 1024
BLKFLSBUF = 0x1261


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


SRC = _bytes(SRC_SIZE, 1)
BASE = _bytes(DST_SIZE, 2)


@st.composite
def layouts(draw, dst_size=DST_SIZE, src_size=SRC_SIZE):
    """Disjoint destination ranges in random order, random (unaligned) offsets."""
    cuts = sorted(draw(st.lists(st.integers(0, dst_size), min_size=0, max_size=12, unique=True)))
    pieces = list(zip(cuts[0::2], cuts[1::2]))
    ranges = []
    for a, b in pieces:
        n = b - a
        s = draw(st.integers(0, src_size - n))
        ranges.append((s, a, n))
    if draw(st.booleans()):
        ranges.append((draw(st.integers(0, src_size)), draw(st.integers(0, dst_size)), 0))
    return draw(st.permutations(ranges))


def model(ranges, base=BASE, src=SRC):
    out = bytearray(base)
    for s, d, n in ranges:
        if len(out) < d + n:
            out.extend(bytes(d + n - len(out)))
        out[d:d + n] = src[s:s + n]
    return bytes(out)


def model_digests(ranges, src=SRC):
    return [hashlib.sha256(src[s:s + n]).digest() for s, _, n in ranges]


def tmpfile_with(data: bytes):
    f = tempfile.TemporaryFile(dir=os.environ.get("TMPDIR", "/tmp"))
    f.write(data)
    f.flush()
    return f


def run_copy(eng, ranges, base=BASE, **kw):
    with tmpfile_with(SRC) as s, tmpfile_with(base) as d:
        r = eng.copy_ranges(s.fileno(), d.fileno(), ranges, **kw)
        d.seek(0)
        return r, d.read()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranges=layouts(), bs=st.sampled_from([512, 4096]),
       buffer_size=st.sampled_from([4096, 8192, 65536, 4 << 20]),
       queue_depth=st.integers(1, 5), direct=st.sampled_from([None, False]),
       digest=st.booleans(), io_engine=st.sampled_from(["threads", "aio"]), mmap=st.booleans())
def test_twins_identical_on_files(ranges, bs, buffer_size, queue_depth, direct, digest, io_engine,
                                  mmap):
    kw = dict(block_size=bs, buffer_size=buffer_size, queue_depth=queue_depth, digest=digest,
              io_engine=io_engine, mmap=mmap)
    r1, b1 = run_copy(RUST, ranges, direct=direct, **kw)
    r2, b2 = run_copy(PY, ranges, direct=direct, **kw)
    want = model(ranges)
    assert b1 == want
    assert b2 == want
    assert r1.digests == r2.digests == (model_digests(ranges) if digest else [])
    # AIO only when asked for and where it applies (direct writes, no digests)
    assert r1.io_engine == ("aio" if r1.direct and not digest and io_engine == "aio"
                            else "threads")
    assert r2.io_engine == "sequential" and r2.read_mode == "pread"
    # mappings only where asked for and where they apply (threads, no digests)
    if not mmap or digest or r1.io_engine == "aio":
        assert r1.read_mode == "pread"
    assert r1.bytes_copied == r2.bytes_copied == sum(n for _, _, n in ranges)
    assert r2.direct is False
    if direct is False:
        assert r1.direct is False


@pytest.mark.parametrize("eng", [RUST, PY], ids=["rust", "python"])
def test_grows_empty_file_exactly(eng):
    ranges = [(0, 4096, 5000), (5000, 0, 4096), (100, 20000, 1)]
    r, got = run_copy(eng, ranges, base=b"", block_size=4096, digest=True)
    assert got == model(ranges, base=b"")
    assert r.digests == model_digests(ranges)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=9000), seed=st.integers(0, 0xFFFFFFFF))
def test_cksm_twins(data, seed):
    assert RUST.cksm(data, seed) == PY.cksm(data, seed)
    assert RUST.cksm(data) == PY.cksm(data)


@settings(max_examples=30, deadline=None)
@given(ranges=st.lists(st.tuples(st.integers(0, SRC_SIZE), st.integers(0, SRC_SIZE)), max_size=6),
       buffer_size=st.sampled_from([4096, 12288, 1 << 20]))
def test_read_digests_twins(ranges, buffer_size):
    ranges = [(o, min(n, SRC_SIZE - o)) for o, n in ranges]
    want = [hashlib.sha256(SRC[o:o + n]).digest() for o, n in ranges]
    with tmpfile_with(SRC) as f:
        assert RUST.read_digests(f.fileno(), ranges, buffer_size=buffer_size) == want
        assert PY.read_digests(f.fileno(), ranges, buffer_size=buffer_size) == want


# ---------------------------------------------------------------------------------------
# errors


def _err(eng, fn):
    with pytest.raises(EngineIOError) as ei:
        fn(eng)
    e = ei.value
    assert isinstance(e, OSError)
    return (e.op, e.offset, e.length, e.errno)


@pytest.mark.parametrize("buffer_size", [4096, 4 << 20])
def test_early_eof_same_error(buffer_size):
    def go(eng):
        with tmpfile_with(SRC) as s, tmpfile_with(b"") as d:
            eng.copy_ranges(s.fileno(), d.fileno(), [(0, 0, 100), (SRC_SIZE - 5000, 200, 9000)],
                            direct=False, buffer_size=buffer_size)

    a, b = _err(RUST, go), _err(PY, go)
    assert a == b
    assert a[0] == "read" and a[1] == SRC_SIZE and a[3] == errno.EIO and a[2] > 0

    def rd(eng):
        with tmpfile_with(SRC) as s:
            eng.read_digests(s.fileno(), [(SRC_SIZE - 10, 20)], buffer_size=buffer_size)

    assert _err(RUST, rd) == _err(PY, rd) == ("read", SRC_SIZE, 10, errno.EIO)


def _closed_fd():
    # far above any descriptor in use (a recycled low number could be reused by the
    # engine's own O_DIRECT reopen)
    fd = 987_654
    with pytest.raises(OSError):
        os.fstat(fd)
    return fd


def test_bad_source_fd():
    def go(eng):
        with tmpfile_with(b"") as d:
            eng.copy_ranges(_closed_fd(), d.fileno(), [(7, 4096, 100)])

    assert _err(RUST, go) == _err(PY, go) == ("read", 7, 100, errno.EBADF)


@pytest.mark.parametrize("direct", [None, False])
def test_bad_destination_fd(direct):
    def go(eng):
        with tmpfile_with(SRC) as s:
            eng.copy_ranges(s.fileno(), _closed_fd(), [(0, 4096, 100)], direct=direct)

    assert _err(RUST, go) == _err(PY, go) == ("write", 4096, 100, errno.EBADF)


def test_readonly_destination_not_reopened(tmp_path):
    p = tmp_path / "ro"
    p.write_bytes(b"x" * 8192)

    def go(eng):
        with tmpfile_with(SRC) as s, open(p, "rb") as d:
            eng.copy_ranges(s.fileno(), d.fileno(), [(0, 4096, 4096)], direct=None)

    assert _err(RUST, go) == _err(PY, go) == ("write", 4096, 4096, errno.EBADF)
    assert p.read_bytes() == b"x" * 8192


def test_direct_true_unavailable_is_open_error():
    with tmpfile_with(SRC) as s:
        with pytest.raises(EngineIOError) as ei:
            RUST.copy_ranges(s.fileno(), _closed_fd(), [(0, 0, 1)], direct=True)
    assert ei.value.op == "open"


def test_error_has_filename_and_message():
    with tmpfile_with(SRC) as s, tmpfile_with(b"") as d:
        for eng in (RUST, PY):
            with pytest.raises(EngineIOError) as ei:
                eng.copy_ranges(s.fileno(), d.fileno(), [(SRC_SIZE, 0, 1)], direct=False)
            assert ei.value.strerror == "unexpected end of file"
            assert ei.value.filename and "offset=0x" in str(ei.value)


def test_bad_arguments():
    for eng in (RUST, PY):
        with pytest.raises(ValueError):
            eng.copy_ranges(0, 1, [], block_size=1000)
        with pytest.raises(ValueError):
            eng.copy_ranges(0, 1, [], buffer_size=0)
        with pytest.raises(ValueError, match="io_engine"):
            eng.copy_ranges(0, 1, [], io_engine="uring")
        with pytest.raises(OverflowError):
            eng.copy_ranges(0, 1, [(-1, 0, 1)])
    with pytest.raises(ValueError):
        get_engine("nope")
    assert engine.ENGINES == ("rust", "python")


# ---------------------------------------------------------------------------------------
# O_DIRECT on a real loop device with 4096-byte sectors


LOOP_SIZE = 4 << 20


@pytest.fixture(scope="module")
def loopdev():
    if os.geteuid() != 0:
        pytest.skip("needs root for losetup")
    if shutil.which("losetup") is None:
        pytest.skip("losetup not installed")
    d = tempfile.mkdtemp(prefix="zfcp-engine-")
    img = os.path.join(d, "disk.img")
    with open(img, "wb") as f:
        f.truncate(LOOP_SIZE)
    try:
        dev = subprocess.run(["losetup", "-f", "--show", "-b", "4096", "--direct-io=on", img],
                             check=True, capture_output=True, text=True).stdout.strip()
    except (subprocess.CalledProcessError, OSError) as e:
        shutil.rmtree(d)
        pytest.skip(f"cannot create a loop device: {e}")
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        shutil.rmtree(d)


def _fill(dev, data):
    fd = os.open(dev, os.O_RDWR)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_device(dev, n):
    fd = os.open(dev, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKFLSBUF)  # drop the page cache: read what is on the device
        return os.pread(fd, n, 0)
    finally:
        os.close(fd)


LOOP_BASE = _bytes(DST_SIZE, 3)


@pytest.mark.root
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ranges=layouts(), bs=st.sampled_from([512, 4096]),
       buffer_size=st.sampled_from([4096, 16384, 1 << 20]), queue_depth=st.integers(1, 4),
       digest=st.booleans(), io_engine=st.sampled_from(["aio", "threads"]), mmap=st.booleans())
def test_twins_identical_on_4k_loop_device_direct(loopdev, ranges, bs, buffer_size, queue_depth,
                                                  digest, io_engine, mmap):
    results = []
    for eng in (RUST, PY):
        _fill(loopdev, LOOP_BASE)
        with tmpfile_with(SRC) as s:
            fd = os.open(loopdev, os.O_RDWR | os.O_EXCL)
            try:
                r = eng.copy_ranges(s.fileno(), fd, ranges, direct=True, block_size=bs,
                                    buffer_size=buffer_size, queue_depth=queue_depth,
                                    digest=digest, io_engine=io_engine, mmap=mmap)
            finally:
                os.close(fd)
        results.append((r, _read_device(loopdev, DST_SIZE)))
    (r1, b1), (r2, b2) = results
    want = model(ranges, base=LOOP_BASE)
    assert b1 == want
    assert b2 == want
    assert r1.direct is True and r2.direct is False
    assert r1.digests == r2.digests == (model_digests(ranges) if digest else [])
    # AIO ran whenever it applies: direct writes without digests
    assert r1.io_engine == ("aio" if io_engine == "aio" and not digest else "threads")


@pytest.mark.root
def test_direct_auto_on_loop_device_and_edges_shared(loopdev):
    # two ranges share edge blocks in both directions; interior written with O_DIRECT
    ranges = [(100, 4096 + 1000, 20000), (30000, 1000, 4096), (50000, 4096 + 21000, 3000)]
    _fill(loopdev, LOOP_BASE)
    with tmpfile_with(SRC) as s:
        fd = os.open(loopdev, os.O_RDWR | os.O_EXCL)
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            r = RUST.copy_ranges(s.fileno(), fd, ranges, block_size=512, digest=True)
            assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags  # caller's fd untouched
        finally:
            os.close(fd)
    assert r.direct is True
    assert _read_device(loopdev, DST_SIZE) == model(ranges, base=LOOP_BASE)
    assert r.digests == model_digests(ranges)


@pytest.mark.root
def test_mmap_writes_straight_from_a_file_mapping(loopdev):
    # page-aligned source chunks, direct writes: the O_DIRECT writes go straight from the
    # mapping of the (regular) source file; the bytes are those of the Python twin
    ranges = [(0, 0, 32768), (40960, 49152, 16384 + 100)]
    got = []
    for eng, kw in ((RUST, {"mmap": True}), (RUST, {}), (PY, {"mmap": True})):
        _fill(loopdev, LOOP_BASE)
        with tmpfile_with(SRC) as s:
            fd = os.open(loopdev, os.O_RDWR | os.O_EXCL)
            try:
                r = eng.copy_ranges(s.fileno(), fd, ranges, block_size=4096, buffer_size=8192, **kw)
            finally:
                os.close(fd)
        got.append((r.read_mode, _read_device(loopdev, DST_SIZE)))
    assert [m for m, _ in got] == ["mmap-direct", "pread", "pread"]
    assert got[0][1] == got[1][1] == got[2][1] == model(ranges, base=LOOP_BASE)


def test_mmap_of_an_unmappable_source_falls_back_to_pread(tmp_path):
    # A pipe cannot be mapped: the engine goes back to pread, which a pipe refuses with
    # ESPIPE; that read error (not a mapping error, not a crash) is what the caller sees.
    r_fd, w_fd = os.pipe()
    try:
        os.write(w_fd, _bytes(8192, 9))
        with open(tmp_path / "out", "wb") as f, pytest.raises(EngineIOError) as ei:
            RUST.copy_ranges(r_fd, f.fileno(), [(0, 0, 8192)], mmap=True, buffer_size=8192,
                             queue_depth=1)
    finally:
        os.close(r_fd)
        os.close(w_fd)
    assert ei.value.errno == errno.ESPIPE and ei.value.op == "read"
