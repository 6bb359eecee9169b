#!/usr/bin/env python3
"""Compressed capture (`zfcpdump dump --compress`) vs makedumpfile and vs the raw capture.

    python benches/bench_compress.py [--size-mib 256] [--runs 5] [--workdir DIR]

Input: one x86_64 ELF core (makedumpfile reads only its own architecture, interop.md
§4), memory made of real file bytes from /usr (binaries, libraries, text; like the
corpus of performance.md §5) with every 4th page zero. Every run writes to a file on the
same file system, page cache to page cache, and is timed until its data is flushed
(our capture ends with fdatasync; makedumpfile's output is fsync'ed inside the timing).

Reports median, min and max of `--runs` runs for each command, throughput over the
memory size, output size, and ratios pair by pair against same-run baselines. Targets
(issue #6): output <= makedumpfile's at the same algorithm and dump level; compressed
capture wall time <= raw capture when the data compresses >= 2:1; >= 3x makedumpfile's
best throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

PAGE = 4096
MIB = 1 << 20


def corpus_pages(total_pages: int):
    """Pages of real file bytes, every 4th page zero."""
    roots = ["/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/share/doc", "/usr/lib/python3",
             "/usr/share/perl", "/usr/lib"]
    produced = 0
    buf = b""
    while True:
        for root in roots:
            for dirpath, _dirs, files in os.walk(root):
                for name in sorted(files):
                    path = os.path.join(dirpath, name)
                    if os.path.islink(path) or not os.path.isfile(path):
                        continue
                    try:
                        with open(path, "rb") as f:
                            buf += f.read(8 * MIB)
                    except OSError:
                        continue
                    while len(buf) >= PAGE:
                        if produced % 4 == 3:
                            yield bytes(PAGE)
                        else:
                            yield buf[:PAGE]
                            buf = buf[PAGE:]
                        produced += 1
                        if produced == total_pages:
                            return


def write_x86_core(path: str, mem_bytes: int) -> None:
    note = struct.pack("<III", 5, 336, 1) + b"CORE\0\0\0\0" + bytes(336)
    ranges = [(0, mem_bytes)]
    ph = [struct.pack("<IIQQQQQQ", 4, 0, PAGE, 0, 0, len(note), len(note), 0)]
    off = 2 * PAGE
    for paddr, size in ranges:
        ph.append(struct.pack("<IIQQQQQQ", 1, 7, off, 0xFFFF888000000000 + paddr, paddr, size,
                              size, PAGE))
        off += size
    eh = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
          + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, len(ph), 0, 0, 0))
    with open(path, "wb") as f:
        hdr = eh + b"".join(ph)
        f.write(hdr + bytes(PAGE - len(hdr)) + note + bytes(PAGE - len(note)))
        for page in corpus_pages(mem_bytes // PAGE):
            f.write(page)


def prepared_image(path: str, part_size: int) -> None:
    from zfcpdump.cli.main import main
    from zfcpdump.disk.image import create_mbr_image

    if os.path.exists(path):
        os.remove(path)
    create_mbr_image(path, part_size + 2 * MIB, [(MIB, part_size)])
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["prepare", path, "--partition", "1", "--metadata-only"]) == 0


def run_ours(vmcore: str, image: str, extra: list[str]) -> tuple[float, int]:
    from zfcpdump.cli.main import main

    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(["dump", "-i", vmcore, "--progress-interval", "1000", *extra, image])
    dt = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(out.getvalue())
    size = os.path.getsize(vmcore)
    if "--compress" in extra:
        size = kdump_size(image, MIB)
    return dt, size


def kdump_size(image: str, part_start: int) -> int:
    """Exact size of the kdump file in the partition: end of the last page's data."""
    with open(image, "rb") as f:
        f.seek(part_start)
        hdr = f.read(PAGE)
        e = "<" if struct.unpack_from("<i", hdr, 8)[0] == 6 else ">"
        bs, sub, bmb = struct.unpack_from(e + "iii", hdr, 428)
        f.seek(part_start + (1 + sub + bmb // 2) * bs)
        ndesc = sum(bin(b).count("1") for b in f.read(bmb // 2 * bs))
        desc_off = (1 + sub + bmb) * bs
        f.seek(part_start + desc_off)
        table = f.read(24 * ndesc)
    end = desc_off + 24 * ndesc
    for off, size, _fl, _pf in struct.iter_unpack(e + "QIIQ", table):
        end = max(end, off + size)
    return end


def run_makedumpfile(vmcore: str, out: str, flags: list[str]) -> tuple[float, int]:
    if os.path.exists(out):
        os.remove(out)
    t0 = time.perf_counter()
    subprocess.run(["makedumpfile", *flags, vmcore, out], check=True, capture_output=True)
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    dt = time.perf_counter() - t0
    return dt, os.path.getsize(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-makedumpfile", action="store_true")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench_compress.")
    os.makedirs(work, exist_ok=True)
    vmcore = os.path.join(work, "x86.elf")
    mem = args.size_mib * MIB
    if not os.path.exists(vmcore) or os.path.getsize(vmcore) != mem + 2 * PAGE:
        write_x86_core(vmcore, mem)
    image = os.path.join(work, "disk.img")
    have_md = shutil.which("makedumpfile") is not None and not args.no_makedumpfile

    cases: list[tuple[str, callable]] = [
        ("raw capture (ELF copy)", lambda: run_ours(vmcore, image, [])),
        ("ours --compress none -d1", lambda: run_ours(vmcore, image, ["--compress", "none"])),
        ("ours --compress zlib -d1", lambda: run_ours(vmcore, image, ["--compress", "zlib"])),
        ("ours --compress zstd -d1", lambda: run_ours(vmcore, image, ["--compress", "zstd"])),
        ("ours --compress snappy -d1", lambda: run_ours(vmcore, image, ["--compress", "snappy"])),
    ]
    if have_md:
        out = os.path.join(work, "md.kdump")
        cases += [
            ("makedumpfile -d1", lambda: run_makedumpfile(vmcore, out, ["-d", "1"])),
            ("makedumpfile -c -d1", lambda: run_makedumpfile(vmcore, out, ["-c", "-d", "1"])),
            ("makedumpfile -l -d1", lambda: run_makedumpfile(vmcore, out, ["-l", "-d", "1"])),
            ("makedumpfile -c -d1 --num-threads 1",
             lambda: run_makedumpfile(vmcore, out, ["-c", "-d", "1", "--num-threads", "1"])),
            ("makedumpfile -l -d1 --num-threads 1",
             lambda: run_makedumpfile(vmcore, out, ["-l", "-d", "1", "--num-threads", "1"])),
        ]
    results: dict[str, tuple[float, float, float, int]] = {}
    for name, fn in cases:
        times, size = [], 0
        for _ in range(args.runs):
            prepared_image(image, mem + 16 * MIB)
            dt, size = fn()
            times.append(dt)
        results[name] = (statistics.median(times), min(times), max(times), size)

    print(f"input: x86_64 core, {args.size_mib} MiB memory (real /usr file bytes, 1/4 zero pages), "
          f"{args.runs} runs, {os.cpu_count()} CPUs")
    print(f"{'command':40} {'median s':>9} {'min':>7} {'max':>7} {'MiB/s':>7} {'out MiB':>8} {'ratio':>6}")
    for name, (med, lo, hi, size) in results.items():
        print(f"{name:40} {med:9.3f} {lo:7.3f} {hi:7.3f} {mem / MIB / med:7.0f} {size / MIB:8.2f} "
              f"{size / mem:6.3f}")

    def pair(a: str, b: str) -> None:
        if a in results and b in results:
            ta, sa = results[a][0], results[a][3]
            tb, sb = results[b][0], results[b][3]
            print(f"  {a} vs {b}: speed x{tb / ta:.2f}, size {sa / sb:.3f}")

    print("pairs (speed = their median time / ours; size = ours / theirs):")
    pair("ours --compress zlib -d1", "makedumpfile -c -d1")
    pair("ours --compress zlib -d1", "makedumpfile -c -d1 --num-threads 1")
    pair("ours --compress none -d1", "makedumpfile -d1")
    pair("ours --compress zstd -d1", "makedumpfile -l -d1")
    pair("ours --compress zstd -d1", "makedumpfile -c -d1")
    pair("ours --compress snappy -d1", "makedumpfile -l -d1")
    pair("ours --compress zstd -d1", "raw capture (ELF copy)")
    pair("ours --compress snappy -d1", "raw capture (ELF copy)")
    if have_md:
        md = [k for k in results if k.startswith("makedumpfile") and "-c" in k or "-l" in k]
        best = min(md, key=lambda k: results[k][0])
        ours = min((k for k in results if k.startswith("ours") and "none" not in k),
                   key=lambda k: results[k][0])
        print(f"fastest compressed: ours {ours!r} {results[ours][0]:.3f}s vs makedumpfile "
              f"{best!r} {results[best][0]:.3f}s: x{results[best][0] / results[ours][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
