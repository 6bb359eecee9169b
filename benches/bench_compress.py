#!/usr/bin/env python3
"""Compressed capture (`zfcpdump dump --compress`) vs makedumpfile and vs the raw capture.

    python benches/bench_compress.py [--size-mib 256] [--runs 5] [--workdir DIR]
    python benches/bench_compress.py --vmcore VMCORE --dump-level 31 [--runs 5]

Input: one x86_64 ELF core (makedumpfile reads only its own architecture, interop.md
§4), memory made of real file bytes from /usr (binaries, libraries, text; like the
corpus of performance.md §5) with `--zero-percent` of the pages zero (default 25: every
4th page). Every run is timed until its data is flushed (our capture ends with
fdatasync; makedumpfile's output is fsync'ed inside the timing).

Targets (`--target`):
* `file` (default): a prepared disk image file; makedumpfile writes a file beside it.
* `loop` (root): a loop device (`--direct-io=on`, 4096-byte blocks) with a prepared
  partition; our raw and compressed captures only (makedumpfile writes files, not
  partitions). `--throttle-mibs N` caps the loop device's writes at N MiB/s for the
  benchmark process (cgroup v1 blkio.throttle.write_bps_device, or v2 io.max): a disk
  of that speed, e.g. 300 MiB/s as the FCP LUNs of performance.md §1.

`--adaptive` adds our captures with `--adaptive` (batches stored raw while the disk
waits for the compressors). `--vmcore` takes a real x86_64 ELF vmcore (with VMCOREINFO) instead of the generated
memory, and `--dump-level N` runs ours and makedumpfile at that level; above 1 the
page-class walk alone is timed too, with the Rust and the pure-Python classifier.

`--makedumpfile sid` compares with makedumpfile 1.7.8 from Debian sid (as
`.ci/install-oracles.sh` unpacks it) instead of the host's 1.7.2: its build has `-z`
(zstd), which Debian 12's lacks (neither has `-p`, snappy; a codec a build lacks is
left out, as makedumpfile would write the pages raw).

Ours run inside this process (the engine's own time); the fastest codec runs once more
as a whole `python -m zfcpdump` process, start-up included, as makedumpfile does.
Runs are interleaved (every command once per round, order rotated by round). Reports
median, min and max of `--runs` runs for each command, throughput over the memory size,
output size, and ratios pair by pair within each round (median, min, max). Targets
(issue #6): output <= makedumpfile's at the same algorithm and dump level; compressed
capture wall time <= raw capture when the data compresses >= 2:1; >= 3x makedumpfile's
best throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

PAGE = 4096
MIB = 1 << 20


def corpus_pages(total_pages: int, zero_percent: int = 25):
    """Pages of real file bytes, `zero_percent` of them zero pages spread evenly (the
    default 25: every 4th page)."""
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
                        if (produced + 1) * zero_percent // 100 > produced * zero_percent // 100:
                            yield bytes(PAGE)
                        else:
                            yield buf[:PAGE]
                            buf = buf[PAGE:]
                        produced += 1
                        if produced == total_pages:
                            return


def write_x86_core(path: str, mem_bytes: int, zero_percent: int = 25) -> None:
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
        for page in corpus_pages(mem_bytes // PAGE, zero_percent):
            f.write(page)


class FileTarget:
    """A disk image file, prepared again before every run."""

    def __init__(self, work: str, part_size: int):
        self.disk = os.path.join(work, "disk.img")
        self.part_size = part_size
        self.description = f"disk image file {self.disk}"

    def reset(self) -> None:
        from zfcpdump.cli.main import main
        from zfcpdump.disk.image import create_mbr_image

        if os.path.exists(self.disk):
            os.remove(self.disk)
        create_mbr_image(self.disk, self.part_size + 2 * MIB, [(MIB, self.part_size)])
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["prepare", self.disk, "--partition", "1", "--metadata-only"]) == 0

    def close(self) -> None:
        if os.path.exists(self.disk):
            os.remove(self.disk)


class LoopTarget:
    """A loop device with direct I/O and a prepared partition 1 (zfcpdump.bench), its
    writes optionally capped for this process by the block cgroup throttle."""

    def __init__(self, work: str, part_size: int, throttle_mibs: int = 0):
        from zfcpdump.bench import loop_target

        self.t = loop_target(os.path.join(work, "loop.img"), part_size - 64 * MIB)
        self.disk = self.t.disk
        self.description = self.t.description
        self.cgroup = None
        if throttle_mibs:
            self.cgroup = throttle_self(self.disk, throttle_mibs * MIB)
            self.description += f", writes capped at {throttle_mibs} MiB/s ({self.cgroup})"

    def reset(self) -> None:
        from zfcpdump.cli.main import main

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["prepare", self.t.area, "--metadata-only", "--force"]) == 0

    def close(self) -> None:
        if self.cgroup:
            unthrottle_self(self.cgroup)
        self.t.close()


def throttle_self(dev: str, bps: int) -> str:
    """Move this process into a new block cgroup that caps its writes to `dev`."""
    st = os.stat(dev)
    majmin = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    v1 = "/sys/fs/cgroup/blkio"
    if os.path.exists(os.path.join(v1, "blkio.throttle.write_bps_device")):
        path = os.path.join(v1, f"zfcpdump-bench-{os.getpid()}")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "blkio.throttle.write_bps_device"), "w") as f:
            f.write(f"{majmin} {bps}")
    else:
        root = next((r for r in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                     if os.path.exists(os.path.join(r, "cgroup.controllers"))), None)
        if root is None:
            raise SystemExit("--throttle-mibs: no blkio (v1) or io (v2) cgroup controller here")
        with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
            f.write("+io")
        path = os.path.join(root, f"zfcpdump-bench-{os.getpid()}")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "io.max"), "w") as f:
            f.write(f"{majmin} wbps={bps}")
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    return path


def unthrottle_self(path: str) -> None:
    parent = os.path.dirname(path)
    with open(os.path.join(parent, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    os.rmdir(path)


def run_ours(vmcore: str, target, extra: list[str]) -> tuple[float, int]:
    from zfcpdump.cli.main import main

    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(["dump", "-i", vmcore, "--progress-interval", "1000", *extra, target.disk])
    dt = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(out.getvalue())
    size = os.path.getsize(vmcore)
    if "--compress" in extra:
        size = kdump_size(target.disk, MIB)
    return dt, size


def run_ours_cli(vmcore: str, target, extra: list[str]) -> tuple[float, int]:
    """As run_ours, but the whole `python -m zfcpdump dump` process, start-up included,
    as makedumpfile is timed."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "zfcpdump", "dump", "-i", vmcore,
                        "--progress-interval", "1000", *extra, target.disk],
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    return dt, kdump_size(target.disk, MIB)


def memory_size(vmcore: str) -> int:
    """Bytes of memory in an ELF vmcore's PT_LOADs (for MiB/s)."""
    from zfcpdump.readers.elf import read_elf

    fd = os.open(vmcore, os.O_RDONLY)
    try:
        return sum(c.size for c in read_elf(fd, os.fstat(fd).st_size).chunks)
    finally:
        os.close(fd)


def run_walk(vmcore: str, dump_level: int, engine: str) -> tuple[float, int]:
    """The page-class walk alone (pagefilter.filter_pages), as the capture runs it."""
    from zfcpdump.formats import kdump_layout as K
    from zfcpdump.pagefilter import filter_pages
    from zfcpdump.readers.elf import read_elf

    fd = os.open(vmcore, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        dump = read_elf(fd, os.fstat(fd).st_size)
        ram = K.pfn_ranges(K.page_runs([(c.start, 0, c.size) for c in dump.chunks], PAGE))
        res = filter_pages(dump.read_phys, dump.vmcoreinfo_fields(), arch=dump.arch,
                           big_endian=dump.byteorder == "big", page_size=PAGE, ram=ram,
                           dump_level=dump_level, engine=engine)
        return time.perf_counter() - t0, len(res.dumpable)
    finally:
        os.close(fd)


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


def makedumpfile_command(which: str) -> list[str]:
    """argv prefix of makedumpfile: the host's (Debian 12: 1.7.2, LZO and zlib only), or
    `sid`: 1.7.8 from Debian sid as .ci/install-oracles.sh unpacks it, with zstd and
    snappy too (tests/oracles/makedumpfile_sid.py); [] if it is not there."""
    if which == "host":
        return ["makedumpfile"] if shutil.which("makedumpfile") else []
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from oracles import makedumpfile_sid

    return makedumpfile_sid.command() if makedumpfile_sid.probe()[0] else []


def makedumpfile_codecs(md: list[str]) -> set[str]:
    """The compressors this makedumpfile was built with (`-v`: "zstd\tenabled")."""
    p = subprocess.run([*md, "-v"], capture_output=True, text=True)
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+enabled$", p.stdout + p.stderr, re.M)}


def run_makedumpfile(md: list[str], vmcore: str, out: str,
                     flags: list[str]) -> tuple[float, int]:
    if os.path.exists(out):
        os.remove(out)
    t0 = time.perf_counter()
    subprocess.run([*md, *flags, vmcore, out], check=True, capture_output=True)
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
    ap.add_argument("--target", choices=["file", "loop"], default="file")
    ap.add_argument("--throttle-mibs", type=int, default=0,
                    help="loop target: cap its writes at this many MiB/s")
    ap.add_argument("--algos", default="none,zlib,zstd,snappy")
    ap.add_argument("--zero-percent", type=int, default=25,
                    help="share of zero pages in the generated memory (default 25)")
    ap.add_argument("--no-makedumpfile", action="store_true")
    ap.add_argument("--makedumpfile", choices=["host", "sid"], default="host",
                    help="which makedumpfile: the host's (default), or sid's 1.7.8 (from "
                    ".ci/install-oracles.sh), which adds -z (zstd)")
    ap.add_argument("--vmcore", help="an x86_64 ELF vmcore to use instead of generated memory")
    ap.add_argument("--dump-level", type=int, default=1,
                    help="makedumpfile dump level for ours and makedumpfile (default 1)")
    ap.add_argument("--adaptive", action="store_true",
                    help="also time ours with --adaptive (raw batches while the disk waits)")
    args = ap.parse_args()
    if args.throttle_mibs and args.target != "loop":
        ap.error("--throttle-mibs needs --target loop")
    work = args.workdir or tempfile.mkdtemp(prefix="bench_compress.")
    os.makedirs(work, exist_ok=True)
    if args.vmcore:
        vmcore = args.vmcore
        mem = memory_size(vmcore)
    else:
        vmcore = os.path.join(work, f"x86-z{args.zero_percent}.elf")
        mem = args.size_mib * MIB
        if not os.path.exists(vmcore) or os.path.getsize(vmcore) != mem + 2 * PAGE:
            write_x86_core(vmcore, mem, args.zero_percent)
    lvl = args.dump_level
    part_size = (os.path.getsize(vmcore) // MIB + 80) * MIB
    target = (LoopTarget(work, part_size, args.throttle_mibs) if args.target == "loop"
              else FileTarget(work, part_size))
    md = [] if args.no_makedumpfile else makedumpfile_command(args.makedumpfile)
    have_md = (bool(md)
               and args.target == "file")

    RAW = "raw capture (ELF copy)"
    cases: list[tuple[str, callable]] = [(RAW, lambda: run_ours(vmcore, target, []))]
    for algo in args.algos.split(","):
        cases.append((f"ours --compress {algo} -d{lvl}",
                      lambda a=algo: run_ours(vmcore, target, ["--compress", a,
                                                               "--dump-level", str(lvl)])))
    # the fastest codec once more as a whole process (ours above run in this process,
    # without the interpreter's start-up and imports, which makedumpfile's times include)
    fastest = "snappy" if "snappy" in args.algos.split(",") else args.algos.split(",")[-1]
    CLI = f"ours --compress {fastest} -d{lvl}, CLI process"
    cases.append((CLI, lambda: run_ours_cli(vmcore, target, ["--compress", fastest,
                                                              "--dump-level", str(lvl)])))
    if args.adaptive:
        for algo in args.algos.split(","):
            cases.append((f"ours --compress {algo} --adaptive -d{lvl}",
                          lambda a=algo: run_ours(vmcore, target, ["--compress", a, "--adaptive",
                                                                   "--dump-level", str(lvl)])))
    if lvl & 30:
        for engine in ("rust", "python"):
            cases.append((f"page walk -d{lvl}, {engine}",
                          lambda e=engine: run_walk(vmcore, lvl, e)))
    if have_md:
        out = os.path.join(work, "md.kdump")
        d = ["-d", str(lvl)]
        # -z (zstd) and -p (snappy) only where the build has them: without, makedumpfile
        # silently writes the pages uncompressed (Debian 12's 1.7.2 has neither, sid's
        # 1.7.8 zstd but not snappy)
        codecs = makedumpfile_codecs(md)
        variants = [d, ["-c", *d], ["-l", *d],
                    *([["-z", *d]] if "zstd" in codecs else []),
                    *([["-p", *d]] if "snappy" in codecs else []),
                    ["-l", *d, "--num-threads", "1"], ["-l", *d, "--num-threads", "2"]]
        for flags in variants:
            cases.append(("makedumpfile " + " ".join(flags),
                          lambda f=flags: run_makedumpfile(md, vmcore, out, f)))
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    sizes: dict[str, int] = {}
    crashed: dict[str, str] = {}  # makedumpfile variants that died, and how
    try:
        for r in range(args.runs):
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for name, fn in order:
                if name in crashed:
                    continue
                target.reset()
                try:
                    dt, size = fn()
                except subprocess.CalledProcessError as exc:
                    if not name.startswith("makedumpfile"):
                        raise
                    # theirs, not ours (1.7.8's --num-threads 2 aborted once in CI):
                    # reported and left out, the rest of the comparison stands
                    crashed[name] = f"run {r + 1}: {exc}"
                    del times[name]
                    continue
                times[name].append(dt)
                sizes[name] = size
                print(f"  run {r + 1}/{args.runs} {name:40} {dt:7.3f} s", file=sys.stderr, flush=True)
    finally:
        target.close()

    what = (f"{vmcore} ({mem // MIB} MiB memory)" if args.vmcore else
            f"x86_64 core, {args.size_mib} MiB memory (real /usr file bytes, "
            f"{args.zero_percent}% zero pages)")
    print(f"input: {what}, dump level {lvl}, {args.runs} interleaved runs, "
          f"{os.cpu_count()} CPUs")
    print(f"target: {target.description}")
    print(f"{'command':40} {'median s':>9} {'min':>7} {'max':>7} {'MiB/s':>7} {'out MiB':>8} {'ratio':>6}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, ts in times.items():
        print(f"{name:40} {med[name]:9.3f} {min(ts):7.3f} {max(ts):7.3f} {mem / MIB / med[name]:7.0f} "
              f"{sizes[name] / MIB:8.2f} {sizes[name] / mem:6.3f}")

    def pair(a: str, b: str) -> None:
        if a in times and b in times:
            speed = [tb / ta for ta, tb in zip(times[a], times[b])]
            print(f"  {a} vs {b}: speed x{statistics.median(speed):.2f} "
                  f"({min(speed):.2f}-{max(speed):.2f}), size {sizes[a] / sizes[b]:.3f}")

    for name, why in crashed.items():
        print(f"{name}: left out, it died in {why}")
    print("pairs, round by round (speed = their time / ours: median (min-max); size = ours / theirs):")
    pair(f"ours --compress zlib -d{lvl}", f"makedumpfile -c -d {lvl}")
    pair(f"ours --compress zlib -d{lvl}", f"makedumpfile -c -d {lvl} --num-threads 1")
    pair(f"ours --compress none -d{lvl}", f"makedumpfile -d {lvl}")
    pair(f"ours --compress zstd -d{lvl}", f"makedumpfile -l -d {lvl}")
    pair(f"ours --compress zstd -d{lvl}", f"makedumpfile -c -d {lvl}")
    pair(f"ours --compress snappy -d{lvl}", f"makedumpfile -l -d {lvl}")
    pair(f"ours --compress zstd -d{lvl}", f"makedumpfile -z -d {lvl}")
    pair(f"ours --compress snappy -d{lvl}", f"makedumpfile -p -d {lvl}")
    for algo in args.algos.split(","):
        pair(f"ours --compress {algo} -d{lvl}", RAW)
        pair(f"ours --compress {algo} --adaptive -d{lvl}", RAW)
        pair(f"ours --compress {algo} --adaptive -d{lvl}", f"ours --compress {algo} -d{lvl}")
    pair(f"page walk -d{lvl}, rust", f"page walk -d{lvl}, python")
    if have_md:
        theirs = [k for k in times if k.startswith("makedumpfile")
                  and any(f" {f} " in k for f in ("-c", "-l", "-z", "-p"))]
        best = min(theirs, key=lambda k: med[k])
        ours = min((k for k in times if k.startswith("ours") and "none" not in k
                    and k != CLI), key=lambda k: med[k])
        for mine in (ours, CLI):
            speed = [tb / ta for ta, tb in zip(times[mine], times[best])]
            print(f"fastest compressed: ours {mine!r} {med[mine]:.3f}s vs makedumpfile's best "
                  f"{best!r} {med[best]:.3f}s: x{statistics.median(speed):.2f} "
                  f"({min(speed):.2f}-{max(speed):.2f}) round by round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
