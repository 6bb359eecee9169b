"""The two kdump writers (`_core.kdump_write`, Rust, and `_pykdump.kdump_write`, its
pure-Python twin) write the same bytes for random memory layouts: partly covered
pages, ranges without file data, HSA boundaries and page-class filtering bitmaps."""

from __future__ import annotations

import os
import random
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from zfcpdump import _core, _pykdump

PAGE = 4096
NOTES = b"\x0b\0\0\0\x05\0\0\0\0\0\0\0VMCOREINFO\0\0OSREL\0\0\0"


@st.composite
def layouts(draw):
    """Sorted, non-overlapping (paddr, src or None, size) and a source file's bytes."""
    segments, paddr, src = [], draw(st.integers(0, 3)) * PAGE, PAGE
    for _ in range(draw(st.integers(1, 5))):
        paddr += draw(st.sampled_from([0, 100, PAGE, 7 * PAGE + 40]))
        size = draw(st.sampled_from([PAGE, 3 * PAGE, 10 * PAGE, 200, PAGE + 300]))
        if draw(st.booleans()) or not segments:
            segments.append((paddr, src, size))
            src += size
        else:
            segments.append((paddr, None, size))
        paddr += size
    return segments, src


@settings(max_examples=60, deadline=None)
@given(layout=layouts(), seed=st.integers(0, 2**32 - 1), filtered=st.booleans(),
       hsa_pages=st.integers(0, 12), compress=st.sampled_from(["none", "zlib"]),
       big=st.booleans(), level=st.sampled_from([0, 1, 31]))
def test_writers_agree(layout, seed, filtered, hsa_pages, compress, big, level):
    segments, src_size = layout
    rng = random.Random(seed)
    # a third of the pages zero, the rest text-like or random
    data = bytearray()
    while len(data) < src_size:
        kind = rng.randrange(3)
        data += (bytes(PAGE) if kind == 0 else rng.randbytes(PAGE) if kind == 1
                 else (b"kernel text %d " % rng.randrange(1000)) * 256)
    max_mapnr = -(-(segments[-1][0] + segments[-1][2]) // PAGE)
    dumpable = (bytes(rng.randrange(256) for _ in range(-(-max_mapnr // 8)))
                if filtered else None)
    outs = []
    with tempfile.TemporaryDirectory() as tmp:
        src_path = os.path.join(tmp, "src")
        with open(src_path, "wb") as f:
            f.write(bytes(data[:src_size]))
        for writer in (_core.kdump_write, _pykdump.kdump_write):
            hsa_calls = []
            dst_path = os.path.join(tmp, f"dst{len(outs)}")
            src = os.open(src_path, os.O_RDONLY)
            dst = os.open(dst_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                res = writer(src, dst, segments, base=PAGE, limit=1 << 30,
                             utsname=["Linux", "n", "6.1", "#1", "x86_64", "(none)"],
                             tv_sec=1, nr_cpus=1, big_endian=big, notes=NOTES,
                             vmcoreinfo=(24, 5), compress=compress, dump_level=level,
                             threads=2, direct=False, block_size=512, batch_pages=3,
                             hsa_pfn=hsa_pages, on_hsa_read=lambda: hsa_calls.append(1),
                             dumpable=dumpable)
            finally:
                os.close(src)
                os.close(dst)
            with open(dst_path, "rb") as f:
                outs.append((f.read(), bytes(res.header), res.pages, res.zero_pages,
                             res.compressed_pages, res.file_size, len(hsa_calls)))
    assert outs[0] == outs[1]
    if filtered:
        ram = {p for a, _s, n in segments for p in range(a // PAGE, -(-(a + n) // PAGE))}
        kept = {p for p in ram if dumpable[p >> 3] & (1 << (p & 7))}
        assert outs[0][2] == len(kept)
