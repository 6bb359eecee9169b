"""Measure a disk the way zfcpdump uses it (issue #4; performance.md §1, §4).

One implementation for ``benches/`` and ``zfcpdump bench``. In one run, on the same
device and for the same byte count, it times:

* ``capture-rust`` / ``capture-python``: ``zfcpdump dump`` (in a child process, timed
  around the command itself, interpreter start-up excluded) into a prepared disk, or,
  on a raw partition, the engine's ``copy_ranges`` with the capture's options;
* ``ref-dd-64k``: s390-tools zfcpdump's I/O pattern, 64 KiB buffered reads and writes
  then one fsync (``dd bs=64k conv=fsync`` from the same vmcore);
* ``ref-fio-64k``: the same pattern by fio (performance.md §1 anchor, writes fio's data);
* ``limit-dd-4m``: ``dd if=/dev/zero bs=4M oflag=direct`` (O_DIRECT, queue depth 1);
* ``limit-fio``: ``fio --direct=1 --bs=<our buffer> --iodepth=<our depth>
  --ioengine=libaio --end_fsync=1`` (the device's own limit for our request shape);

and for the read-back side (dump area -> ELF file): ``copy-rust``, ``copy-python``
(engine ``copy_ranges`` with ``sync=True``) against ``copy-dd-4m`` (``dd bs=4M
conv=fsync``).

Every measurement runs in a child process, so its wall time, user+sys CPU and peak RSS
come from ``wait4``. As root the page cache is dropped (``sync; echo 3 >
/proc/sys/vm/drop_caches``) before every single measurement; the report says whether it
was. The order of the methods is rotated from run to run, and each ratio is taken
between the two methods of the same run, then summarised (median, min, max).

Benchmark inputs come from :func:`write_fast_vmcore`: a kernel-style s390x ELF core
(notes, two PT_LOADs), fully written (no holes), a third each zero pages, text pages and
random pages, every non-zero page stamped with its physical address.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

MIB = 1 << 20
GIB = 1 << 30
PAGE = 4096

Log = Callable[[str], None]


# --------------------------------------------------------------------------- helpers

def parse_size(text: str) -> int:
    """'512M', '4G', '65536', '1.5G' -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= div:
            return f"{n / div:.4g} {unit}"
    return f"{n} B"


def is_root() -> bool:
    return os.geteuid() == 0


def drop_caches() -> bool:
    """`sync; echo 3 > /proc/sys/vm/drop_caches` (root only). True when done."""
    os.sync()
    if not is_root():
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- input

def _tile(pages: int, seed: int) -> tuple[bytearray, list[int]]:
    """`pages` pages (a multiple of 3) of synth.page_content, for the addresses
    [3 * PAGE * 2**20, ...) (never paddr 0), and the in-tile offsets of the non-zero pages."""
    from .synth import page_content

    base = 3 * PAGE << 20
    buf = bytearray()
    stamped = []
    for i in range(pages):
        paddr = base + i * PAGE
        buf += page_content(paddr, seed)
        if (paddr // PAGE) % 3:
            stamped.append(i * PAGE)
    return buf, stamped


def write_fast_vmcore(path: str, size: int, *, seed: int = 1, cpus: int = 2,
                      tile_pages: int = 3 * 1024) -> int:
    """Write a fully allocated, mixed-content s390x vmcore of about `size` bytes (page
    multiple) at `path`, quickly (a 12 MiB tile of synth pages, re-stamped with each
    page's physical address). Two PT_LOADs with a 256 MiB hole between them, kernel-style
    headers and notes (synth.build_notes). Returns the file size."""
    from .synth import SynthSpec, build_notes, _roundup

    spec = SynthSpec(cpus=cpus, seed=seed)
    notes = build_notes(spec)
    note_off = _roundup(64 + 56 * 3, PAGE)
    data_off = note_off + _roundup(len(notes), PAGE)
    mem = max(2 * PAGE, (size - data_off) // PAGE * PAGE)
    first = mem // 2 // PAGE * PAGE
    loads = [(0, first), (first + 256 * MIB, mem - first)]
    phdrs = [struct.pack(">IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 4)]
    off = data_off
    for paddr, length in loads:
        phdrs.append(struct.pack(">IIQQQQQQ", 1, 7, off, paddr, paddr, length, length, PAGE))
        off += length
    ehdr = (b"\x7fELF" + bytes([2, 2, 1, 0]) + bytes(8)
            + struct.pack(">HHIQQQIHHHHHH", 4, 22, 1, 0, 64, 0, 0, 64, 56, len(phdrs), 0, 0, 0))
    tile, stamped = _tile(tile_pages, seed)
    tview = memoryview(tile)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        head = ehdr + b"".join(phdrs)
        _write_all(fd, head + bytes(note_off - len(head)))
        _write_all(fd, notes + bytes(data_off - note_off - len(notes)))
        for paddr, length in loads:
            pos = 0
            while pos < length:
                n = min(len(tile), length - pos)
                base = paddr + pos
                for o in stamped:
                    if o >= n:
                        break
                    tile[o:o + 21] = b"PHYS=%016x" % (base + o)
                if base == 0:  # page 0 of memory is never a zero page (synth rule)
                    tile[0:21] = b"PHYS=%016x" % 0
                _write_all(fd, tview[:n])
                if base == 0:
                    tile[0:21] = bytes(21)  # tile page 0 is a zero page
                pos += n
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --------------------------------------------------------------------------- targets

@dataclass
class Target:
    """Where the benchmark writes.

    kind: "image" (a disk image file prepared by `zfcpdump prepare`), "loop" (a loop
    device with a prepared partition), "raw" (a block device or file written from
    offset 0 without a dump superblock; capture rows use the engine directly).
    `disk`: what `zfcpdump dump` is given; `area`: the node/file the dump lands in and
    `offset` its byte offset there; `capacity`: bytes available from `offset`.
    """

    kind: str
    disk: str
    area: str
    offset: int
    capacity: int
    block_size: int = 4096
    description: str = ""
    cleanup: list = field(default_factory=list, repr=False)
    # the checksum area (first page of the dump area) as the superblock expects it
    _csum: Optional[tuple[int, int]] = field(default=None, repr=False)

    @property
    def prepared(self) -> bool:
        return self.kind in ("image", "loop")

    def close(self) -> None:
        while self.cleanup:
            fn = self.cleanup.pop()
            try:
                fn()
            except Exception:  # noqa: BLE001 - best effort teardown
                pass

    # A foreign writer (dd, fio) overwrites the checksum area; put back what the
    # superblock checksum was computed over, or the next capture is refused.
    def snapshot(self) -> Optional[bytes]:
        if not self.prepared:
            return None
        sb = _superblock(self.disk)
        fd = os.open(self.disk, os.O_RDONLY)
        try:
            return os.pread(fd, sb.csum_size, sb.part_start + sb.csum_offset)
        finally:
            os.close(fd)

    def restore(self, saved: Optional[bytes]) -> None:
        if saved is None:
            return
        sb = _superblock(self.disk)
        fd = os.open(self.disk, os.O_WRONLY)
        try:
            os.pwrite(fd, saved, sb.part_start + sb.csum_offset)
            os.fsync(fd)
        finally:
            os.close(fd)


def _superblock(disk: str):
    from .disk.zipl import SUPERBLOCK_SIZE, ScsiMbr, Superblock

    fd = os.open(disk, os.O_RDONLY)
    try:
        mbr = ScsiMbr.from_bytes(os.pread(fd, 152, 0))
        return Superblock.from_bytes(os.pread(fd, SUPERBLOCK_SIZE, mbr.superblock_offset))
    finally:
        os.close(fd)


def _quiet_main(argv: list[str]) -> int:
    import contextlib
    import io

    from .cli.main import main

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"zfcpdump {' '.join(argv)} failed ({rc}):\n{out.getvalue()}{err.getvalue()}")
    return rc


def _fill(path: str, offset: int, length: int, direct: bool) -> None:
    """Write every byte once (no holes, extents allocated): zeros, 4 MiB requests."""
    cmd = ["dd", "if=/dev/zero", f"of={path}", "bs=4M", "iflag=count_bytes",
           f"count={length}", f"seek={offset}", "oflag=seek_bytes" + (",direct" if direct else ""),
           "conv=notrunc,fsync", "status=none"]
    subprocess.run(cmd, check=True)


PART_START = 1 * MIB


def image_target(path: str, dump_bytes: int, *, block_size: int = 4096) -> Target:
    """A disk image file with one partition, prepared with --metadata-only, big enough
    for `dump_bytes`; fully written once so that no run allocates blocks."""
    from .disk.image import create_mbr_image

    part_size = _roundup(dump_bytes + 64 * MIB, MIB)
    size = PART_START + part_size + MIB
    if os.path.exists(path):
        os.unlink(path)
    create_mbr_image(path, size, [(PART_START, part_size)], block_size=block_size)
    _fill(path, 4096, size - 4096, direct=True)
    _quiet_main(["prepare", path, "--partition", "1", "--metadata-only", "--block-size",
                 str(block_size)])
    sb = _superblock(path)
    t = Target("image", path, path, sb.part_start + sb.dump_offset, sb.dump_size, block_size,
               f"disk image file {path} (on {_fs_type(path)}), {block_size}-byte blocks")
    t.cleanup.append(lambda: os.path.exists(path) and os.unlink(path))
    return t


def loop_target(image: str, dump_bytes: int, *, block_size: int = 4096) -> Target:
    """root: a file-backed loop device (`losetup --direct-io=on -b 4096 -P`) with an MBR
    partition 1, prepared with --metadata-only. Detached and removed by close()."""
    from .disk.image import create_mbr_image

    part_size = _roundup(dump_bytes + 64 * MIB, MIB)
    size = PART_START + part_size + MIB
    if os.path.exists(image):
        os.unlink(image)
    create_mbr_image(image, size, [(PART_START, part_size)], block_size=block_size)
    _fill(image, 4096, size - 4096, direct=True)
    out = subprocess.run(["losetup", "-f", "--show", "-P", "--direct-io=on", "-b", str(block_size),
                          image], check=True, capture_output=True, text=True)
    dev = out.stdout.strip()
    part = f"{dev}p1"
    t = Target("loop", dev, part, 0, 0, block_size, "")
    t.cleanup.append(lambda: os.path.exists(image) and os.unlink(image))
    t.cleanup.append(lambda: subprocess.run(["losetup", "-d", dev], capture_output=True))
    for _ in range(100):
        if os.path.exists(part):
            break
        subprocess.run(["partx", "-a", dev], capture_output=True)
        time.sleep(0.1)
    else:
        t.close()
        raise RuntimeError(f"{part} did not appear")
    _quiet_main(["prepare", part, "--metadata-only"])
    sb = _superblock(dev)
    t.offset = sb.dump_offset
    t.capacity = sb.dump_size
    dio = _read(f"/sys/block/{os.path.basename(dev)}/loop/dio")
    t.description = (f"loop device {dev} (--direct-io={'on' if dio == '1' else 'off'}, "
                     f"{block_size}-byte blocks) over {image} ({_fs_type(image)}), partition {part}")
    return t


def raw_target(path: str, capacity: Optional[int] = None) -> Target:
    """A block device (partition) or a file written from offset 0, no zfcpdump metadata."""
    from .disk import device

    fd = os.open(path, os.O_RDONLY)
    try:
        size = device.size_of(fd)
        bs = device.logical_block_size(fd) if device.is_block_device(path) else 4096
    finally:
        os.close(fd)
    cap = size if capacity is None else capacity
    return Target("raw", path, path, 0, cap, max(bs, 4096) if bs else 4096,
                  f"raw {'block device' if device.is_block_device(path) else 'file'} {path}")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def _fs_type(path: str) -> str:
    try:
        out = subprocess.run(["stat", "-f", "-c", "%T", os.path.dirname(os.path.abspath(path))],
                             capture_output=True, text=True)
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def _roundup(n: int, to: int) -> int:
    return (n + to - 1) // to * to


# --------------------------------------------------------------------------- running one

@dataclass
class Sample:
    seconds: float  # timed part: zfcpdump children around the command itself, fio its
    # job_runtime, dd the whole process
    wall: float  # the whole child process
    user: float
    sys: float
    maxrss_kib: int  # zfcpdump children: VmHWM; others: wait4 ru_maxrss (inflated by fork)


def run_child_rusage(cmd: Sequence[str], *, timed_json: bool = False) -> Sample:
    """Run `cmd`; wall time, and user, sys, peak RSS of that child only (wait4). With
    `timed_json` the child prints {"seconds": ...} as its last stdout line: the timed
    part (the zfcpdump operation, without interpreter start-up)."""
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        t0 = time.perf_counter()
        p = subprocess.Popen(list(cmd), stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {err.decode(errors='replace')[-2000:]}")
    seconds, rss = wall, ru.ru_maxrss
    if timed_json:
        info = json.loads(out.decode().strip().splitlines()[-1])
        seconds = info["seconds"]
        # ru_maxrss survives execve (it would include this parent's RSS at fork time);
        # the child's own VmHWM does not.
        rss = info.get("hwm_kib", rss)
        # CPU of the operation itself (imports and interpreter start-up excluded)
        return Sample(seconds, wall, info.get("user", ru.ru_utime), info.get("sys", ru.ru_stime), rss)
    return Sample(seconds, wall, ru.ru_utime, ru.ru_stime, rss)


def run_fio(cmd: Sequence[str]) -> Sample:
    """fio, timed by its own job_runtime (which includes end_fsync) so that its start-up
    (~0.3 s here) is excluded, as the zfcpdump children's start-up is."""
    fd, path = tempfile.mkstemp(prefix="zfcpdump-bench-fio-", suffix=".json")
    os.close(fd)
    try:
        s = run_child_rusage([*cmd, "--output-format=json", f"--output={path}"])
        with open(path) as f:
            job = json.load(f)["jobs"][0]
    finally:
        os.unlink(path)
    s.seconds = max(job["job_runtime"], 1) / 1000.0
    return s


def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _worker_cmd(spec: dict) -> list[str]:
    return [sys.executable, "-m", "zfcpdump.bench", "--worker", json.dumps(spec)]


def _worker(spec: dict) -> None:
    """Child side: run one zfcpdump operation, print {"seconds": t}."""
    import resource

    if spec["op"] == "dump":
        import contextlib
        import io

        from .cli.main import build_parser, main

        build_parser()  # import every command module before the clock starts
        argv = ["dump", "-i", spec["vmcore"], "--engine", spec["engine"],
                "--buffer-size", str(spec["buffer_size"]), "--queue-depth", str(spec["queue_depth"]),
                "--progress-interval", "1e9", "--zcore-dir", "/nonexistent/zfcpdump-bench",
                "--direct", spec.get("direct", "auto")]
        if spec.get("block_size"):
            argv += ["--block-size", str(spec["block_size"])]
        argv.append(spec["disk"])
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            rc = main(argv)
            t = time.perf_counter() - t0
        if rc != 0:
            sys.stderr.write(out.getvalue() + err.getvalue())
            sys.exit(rc)
    else:  # "copy": engine copy_ranges with sync=True
        from .engine import get_engine

        eng = get_engine(spec["engine"])
        src = os.open(spec["src"], os.O_RDONLY | os.O_CLOEXEC)
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if spec.get("create") else 0)
        dst = os.open(spec["dst"], flags, 0o644)
        try:
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            direct = {"auto": None, "on": True, "off": False}[spec.get("direct", "auto")]
            res = eng.copy_ranges(src, dst, [(spec["src_off"], spec["dst_off"], spec["length"])],
                                  direct=direct, buffer_size=spec["buffer_size"],
                                  queue_depth=spec["queue_depth"], block_size=spec["block_size"],
                                  digest=False, sync=True)
            t = time.perf_counter() - t0
            assert res.bytes_copied == spec["length"], res.bytes_copied
        finally:
            os.close(src)
            os.close(dst)
    r1 = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    print(json.dumps({"seconds": t, "hwm_kib": _hwm_kib(), "user": r1.ru_utime - r0.ru_utime,
                      "sys": r1.ru_stime - r0.ru_stime}))


# --------------------------------------------------------------------------- methods

@dataclass
class Method:
    name: str
    label: str
    run: Callable[[], Sample]
    nbytes: int
    foreign: bool = False  # overwrites the dump area's checksum page (dd, fio)
    before: Optional[Callable[[], None]] = None  # untimed set-up (e.g. unlink dst)


def capture_methods(vmcore: str, vmcore_size: int, target: Target, *, buffer_size: int,
                    queue_depth: int, engines: Sequence[str] = ("rust", "python"),
                    direct: str = "auto") -> list[Method]:
    n = vmcore_size
    n_dio = n // target.block_size * target.block_size
    area, off = target.area, target.offset
    ms: list[Method] = []
    for eng in engines:
        if target.prepared:
            spec = {"op": "dump", "engine": eng, "vmcore": vmcore, "disk": target.disk,
                    "buffer_size": buffer_size, "queue_depth": queue_depth, "direct": direct}
            if target.kind == "image":
                spec["block_size"] = target.block_size
            label = f"zfcpdump dump --engine {eng}"
        else:
            spec = {"op": "copy", "engine": eng, "src": vmcore, "dst": area, "src_off": 0,
                    "dst_off": off, "length": n, "buffer_size": buffer_size,
                    "queue_depth": queue_depth, "block_size": target.block_size, "direct": direct}
            label = f"engine {eng} copy_ranges (capture I/O, no metadata)"
        ms.append(Method(f"capture-{eng}", label,
                         lambda s=spec: run_child_rusage(_worker_cmd(s), timed_json=True), n))
    seek = [f"seek={off}", "oflag=seek_bytes"] if off else []
    dd64 = ["dd", f"if={vmcore}", f"of={area}", "bs=64k", "conv=fsync,notrunc", "status=none",
            *seek]
    ms.append(Method("ref-dd-64k", "dd bs=64k conv=fsync (s390-tools pattern)",
                     lambda: run_child_rusage(dd64), n, foreign=True))
    fio_common = ["fio", "--name=zfcpdump-bench", f"--filename={area}", "--rw=write",
                  f"--size={n_dio}", f"--offset={off}", "--allow_file_create=0",
                  "--end_fsync=1"]
    if shutil.which("fio"):
        ms.append(Method("ref-fio-64k", "fio bs=64k direct=0 psync end_fsync",
                         lambda: run_fio(fio_common + ["--bs=64k", "--direct=0",
                                                                "--ioengine=psync"]),
                         n_dio, foreign=True))
    ddd = ["dd", "if=/dev/zero", f"of={area}", "bs=4M", "iflag=count_bytes", f"count={n_dio}",
           "oflag=direct" + (",seek_bytes" if off else ""), "conv=notrunc,fsync", "status=none",
           *([f"seek={off}"] if off else [])]
    ms.append(Method("limit-dd-4m", "dd if=/dev/zero bs=4M oflag=direct (QD1)",
                     lambda: run_child_rusage(ddd), n_dio, foreign=True))
    if shutil.which("fio"):
        bs = buffer_size
        ms.append(Method("limit-fio", f"fio direct=1 bs={fmt_size(bs)} iodepth={queue_depth} libaio",
                         lambda: run_fio(fio_common + [f"--bs={bs}", "--direct=1",
                                                                "--ioengine=libaio",
                                                                f"--iodepth={queue_depth}"]),
                         n_dio, foreign=True))
    return ms


def copy_methods(target: Target, nbytes: int, dst: str, *, buffer_size: int, queue_depth: int,
                 engines: Sequence[str] = ("rust", "python"), direct: str = "auto") -> list[Method]:
    """Read side: `nbytes` of the dump area -> a new file `dst` (unlinked before each run)."""
    def unlink() -> None:
        if os.path.exists(dst):
            os.unlink(dst)

    ms = []
    for eng in engines:
        spec = {"op": "copy", "engine": eng, "src": target.area, "dst": dst, "create": True,
                "src_off": target.offset, "dst_off": 0, "length": nbytes,
                "buffer_size": buffer_size, "queue_depth": queue_depth,
                "block_size": target.block_size, "direct": direct}
        ms.append(Method(f"copy-{eng}", f"engine {eng} copy_ranges partition -> file, sync",
                         lambda s=spec: run_child_rusage(_worker_cmd(s), timed_json=True),
                         nbytes, before=unlink))
    dd = ["dd", f"if={target.area}", f"of={dst}", "bs=4M", "iflag=count_bytes"
          + (",skip_bytes" if target.offset else ""), f"count={nbytes}", "conv=fsync", "status=none",
          *([f"skip={target.offset}"] if target.offset else [])]
    ms.append(Method("copy-dd-4m", "dd bs=4M conv=fsync partition -> file",
                     lambda: run_child_rusage(dd), nbytes, before=unlink))
    return ms


# --------------------------------------------------------------------------- series

@dataclass
class Row:
    name: str
    label: str
    nbytes: int
    samples: list[Sample] = field(default_factory=list)

    def mibs(self) -> list[float]:
        return [self.nbytes / MIB / s.seconds for s in self.samples]


@dataclass
class Section:
    title: str
    target: str
    input: str
    nbytes: int
    runs: int
    caches_dropped: bool
    rows: list[Row] = field(default_factory=list)
    ratios: list[tuple[str, str]] = field(default_factory=list)  # (faster?, baseline)


def summary(values: Sequence[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def run_series(title: str, methods: list[Method], *, runs: int, target: Target, input_desc: str,
               ratios: Sequence[tuple[str, str]] = (), drop: bool = True,
               log: Log = lambda s: None, after_each: Optional[Callable[[str], None]] = None) -> Section:
    """`runs` rounds; each round runs every method once, in an order rotated by round.
    Before each method: untimed set-up, page cache dropped (root)."""
    sec = Section(title, target.description, input_desc, methods[0].nbytes if methods else 0,
                  runs, False)
    rows = {m.name: Row(m.name, m.label, m.nbytes) for m in methods}
    sec.rows = list(rows.values())
    dropped_all = True
    for r in range(runs):
        order = methods[r % len(methods):] + methods[: r % len(methods)]
        for m in order:
            saved = target.snapshot() if m.foreign else None
            if m.before:
                m.before()
            dropped_all &= drop_caches() if drop else False
            s = m.run()
            if m.foreign:
                target.restore(saved)
            rows[m.name].samples.append(s)
            log(f"  [{title}] run {r + 1}/{runs} {m.name:<16} {m.nbytes / MIB / s.seconds:9.1f} MiB/s"
                f"  {s.seconds:7.3f} s  cpu {s.user + s.sys:6.2f} s  rss {s.maxrss_kib / 1024:6.1f} MiB")
            if after_each:
                after_each(m.name)
    sec.caches_dropped = dropped_all
    sec.ratios = [(a, b) for a, b in ratios if a in rows and b in rows]
    return sec


def ratio_values(sec: Section, a: str, b: str) -> list[float]:
    """Throughput ratio a/b, run by run (same round)."""
    ra = next(r for r in sec.rows if r.name == a)
    rb = next(r for r in sec.rows if r.name == b)
    return [x / y for x, y in zip(ra.mibs(), rb.mibs())]


CAPTURE_RATIOS = [("capture-rust", "limit-fio"), ("capture-rust", "limit-dd-4m"),
                  ("capture-rust", "ref-dd-64k"), ("capture-rust", "ref-fio-64k"),
                  ("capture-rust", "capture-python"), ("capture-python", "ref-dd-64k")]
COPY_RATIOS = [("copy-rust", "copy-dd-4m"), ("copy-python", "copy-dd-4m"),
               ("copy-rust", "copy-python")]


def format_section(sec: Section) -> str:
    lines = [f"== {sec.title}",
             f"   target : {sec.target}",
             f"   input  : {sec.input}",
             f"   bytes  : {sec.nbytes} ({fmt_size(sec.nbytes)}), runs: {sec.runs}, page cache "
             + ("dropped before every measurement (sync; echo 3 > /proc/sys/vm/drop_caches)"
                if sec.caches_dropped else "NOT dropped (not root)"),
             f"   {'method':<16} {'MiB/s median (min-max)':>28} {'seconds':>8} {'cpu u+s s':>9}"
             f" {'s/GiB cpu':>9} {'maxRSS MiB':>10}  command"]
    for row in sec.rows:
        v = summary(row.mibs())
        secs = statistics.median(s.seconds for s in row.samples)
        cpu = statistics.median(s.user + s.sys for s in row.samples)
        rss = max(s.maxrss_kib for s in row.samples) / 1024
        rss_txt = f"{rss:10.1f}" if row.name.startswith(("capture-", "copy-r", "copy-p")) else f"{'-':>10}"
        lines.append(f"   {row.name:<16} {v['median']:9.1f} ({v['min']:7.1f}-{v['max']:7.1f})"
                     f"    {secs:8.3f} {cpu:9.2f} {cpu / (row.nbytes / GIB):9.3f} {rss_txt}  {row.label}")
    if sec.ratios:
        lines.append("   ratios (throughput, pair by pair within a run): median (min-max)")
        for a, b in sec.ratios:
            v = summary(ratio_values(sec, a, b))
            lines.append(f"   {a + ' / ' + b:<36} {v['median']:6.2f}x ({v['min']:.2f}-{v['max']:.2f})")
    return "\n".join(lines)


def section_dict(sec: Section) -> dict:
    d = {"title": sec.title, "target": sec.target, "input": sec.input, "bytes": sec.nbytes,
         "runs": sec.runs, "caches_dropped": sec.caches_dropped, "rows": [], "ratios": []}
    for row in sec.rows:
        d["rows"].append({"name": row.name, "label": row.label, "bytes": row.nbytes,
                          "mib_s": summary(row.mibs()),
                          "seconds": summary([s.seconds for s in row.samples]),
                          "cpu_s": summary([s.user + s.sys for s in row.samples]),
                          "maxrss_kib": max(s.maxrss_kib for s in row.samples),
                          "samples": [asdict(s) for s in row.samples]})
    for a, b in sec.ratios:
        d["ratios"].append({"a": a, "b": b, **summary(ratio_values(sec, a, b)),
                            "values": ratio_values(sec, a, b)})
    return d


# --------------------------------------------------------------------------- one bench

@dataclass
class BenchConfig:
    vmcore: str
    target: Target
    runs: int = 5
    buffer_size: int = 4 << 20
    queue_depth: int = 4
    engines: tuple = ("rust", "python")
    copy_dir: Optional[str] = None  # where the copy benchmark writes its ELF file
    drop: bool = True
    direct: str = "auto"
    input_desc: str = ""


def bench(cfg: BenchConfig, log: Log = lambda s: None) -> list[Section]:
    """Capture series then (if copy_dir and the target is prepared) copy series."""
    size = os.path.getsize(cfg.vmcore)
    if size > cfg.target.capacity:
        raise ValueError(f"vmcore ({size} bytes) does not fit the target ({cfg.target.capacity} bytes)")
    desc = cfg.input_desc or f"{cfg.vmcore} ({fmt_size(size)}, {_fs_type(cfg.vmcore)})"
    ms = capture_methods(cfg.vmcore, size, cfg.target, buffer_size=cfg.buffer_size,
                         queue_depth=cfg.queue_depth, engines=cfg.engines, direct=cfg.direct)
    out = [run_series("capture", ms, runs=cfg.runs, target=cfg.target, input_desc=desc,
                      ratios=CAPTURE_RATIOS, drop=cfg.drop, log=log)]
    if cfg.copy_dir:
        if cfg.target.prepared:  # leave a real dump in the area to read back
            run_child_rusage(_worker_cmd({"op": "dump", "engine": cfg.engines[0], "vmcore": cfg.vmcore,
                                          "disk": cfg.target.disk, "buffer_size": cfg.buffer_size,
                                          "queue_depth": cfg.queue_depth,
                                          **({"block_size": cfg.target.block_size}
                                             if cfg.target.kind == "image" else {})}),
                             timed_json=True)
        dst = os.path.join(cfg.copy_dir, f"zfcpdump-bench-copy.{os.getpid()}.elf")
        cms = copy_methods(cfg.target, size, dst, buffer_size=cfg.buffer_size,
                           queue_depth=cfg.queue_depth, engines=cfg.engines, direct=cfg.direct)
        try:
            out.append(run_series("copy (dump area -> ELF file)", cms, runs=cfg.runs,
                                  target=cfg.target,
                                  input_desc=f"the dump area, {fmt_size(size)}; destination {dst} "
                                             f"({_fs_type(dst)}), new file every run",
                                  ratios=COPY_RATIOS, drop=cfg.drop, log=log))
        finally:
            if os.path.exists(dst):
                os.unlink(dst)
    return out


def environment() -> dict:
    import platform

    return {"kernel": platform.release(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "root": is_root(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "fio": _version(["fio", "--version"]), "dd": _version(["dd", "--version"])}


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "missing"


def main_worker(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "--worker":
        _worker(json.loads(argv[1]))
        return 0
    sys.stderr.write("usage: python -m zfcpdump.bench --worker JSON (internal)\n")
    return 2


if __name__ == "__main__":
    sys.exit(main_worker(sys.argv[1:]))
