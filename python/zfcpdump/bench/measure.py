"""One measurement in a child process: wall time, CPU and peak RSS, for our capture and copy and for dd/fio."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .common import fmt_size
from .targets import Target



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

        from ..cli.main import build_parser, main

        build_parser()  # import every command module before the clock starts
        argv = ["dump", "-i", spec["vmcore"], "--engine", spec["engine"],
                "--buffer-size", str(spec["buffer_size"]), "--queue-depth", str(spec["queue_depth"]),
                "--progress-interval", "1e9", "--zcore-dir", "/nonexistent/zfcpdump-bench",
                "--direct", spec.get("direct", "auto"), "--io-engine", spec.get("io_engine", "threads")]
        if spec.get("mmap") is not None:  # None: the command's default
            argv.append("--mmap" if spec["mmap"] else "--no-mmap")
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
        from ..engine import default_mmap, get_engine

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
                                  digest=False, sync=True,
                                  io_engine=spec.get("io_engine", "threads"),
                                  mmap=default_mmap(spec["src"]) if spec.get("mmap") is None
                                  else spec["mmap"])
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
    # (row suffix, options, io_engine, mmap): the rust engine three times, its default
    # (read() from a file; mmap windows are the default for /proc/vmcore only), native
    # AIO and mmap windows, so that the choice of default stays measured; mmap None:
    # the command's default
    default = ("", "", "threads", None)
    rust = (default, ("-aio", " --io-engine aio", "aio", None),
            ("-mmap", " --mmap", "threads", True))
    variants = [(eng, *v) for eng in engines for v in (rust if eng == "rust" else (default,))]
    for eng, suffix, options, io, mmap in variants:
        if target.prepared:
            spec = {"op": "dump", "engine": eng, "vmcore": vmcore, "disk": target.disk,
                    "buffer_size": buffer_size, "queue_depth": queue_depth, "direct": direct,
                    "io_engine": io, "mmap": mmap}
            if target.kind == "image":
                spec["block_size"] = target.block_size
            label = f"zfcpdump dump --engine {eng}"
        else:
            spec = {"op": "copy", "engine": eng, "src": vmcore, "dst": area, "src_off": 0,
                    "dst_off": off, "length": n, "buffer_size": buffer_size,
                    "queue_depth": queue_depth, "block_size": target.block_size, "direct": direct,
                    "io_engine": io, "mmap": mmap}
            label = f"engine {eng} copy_ranges (capture I/O, no metadata)"
        ms.append(Method(f"capture-{eng}{suffix}", label + options,
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
        limit = fio_common + [f"--bs={bs}", "--direct=1", "--ioengine=libaio",
                              f"--iodepth={queue_depth}"]
        ms.append(Method("limit-fio", f"fio direct=1 bs={fmt_size(bs)} iodepth={queue_depth} libaio",
                         lambda: run_fio(limit), n_dio, foreign=True))
        release = reserve_huge_pages(bs * queue_depth)
        if release is not None:
            target.cleanup.append(release)
            huge = [f"--hugepage-size={huge_page_size()}", "--iomem=shmhuge"]
            ms.append(Method("limit-fio-huge", "the same, buffers in huge pages (--iomem=shmhuge)",
                             lambda: run_fio(limit + huge), n_dio, foreign=True))
    return ms


NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def huge_page_size() -> Optional[int]:
    """The kernel's hugetlbfs page size in bytes (2 MiB on x86_64, 1 MiB on s390x), or
    None without hugetlbfs."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "Hugepagesize":
                    return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reserve_huge_pages(nbytes: int) -> Optional[Callable[[], None]]:
    """Reserve huge pages for fio's `nbytes` of buffers (twice that and two pages more:
    fio rounds its buffer up and adds its alignment, and refuses to start when a page is
    missing) for the rest of the bench. Returns the function that gives them back (the
    target's cleanup calls it; the CLI turns SIGTERM into an exception so that it runs),
    or None, with nothing changed, where it cannot be done: not root, no hugetlbfs,
    memory too fragmented.

    Why: O_DIRECT pins one huge folio where it pins 512 pages otherwise, so on a fast
    device plain fio measures its own page pinning, and the engine's pool (transparent
    huge pages) would beat "the device's limit"."""
    size = huge_page_size()
    if size is None or not os.access(NR_HUGEPAGES, os.W_OK):
        return None
    try:
        with open(NR_HUGEPAGES) as f:
            before = int(f.read())
        want = before + 2 * -(-nbytes // size) + 2
        with open(NR_HUGEPAGES, "w") as f:
            f.write(str(want))
    except (OSError, ValueError):
        return None

    def release() -> None:
        try:
            with open(NR_HUGEPAGES, "w") as f:
                f.write(str(before))
        except OSError as e:
            sys.stderr.write(f"zfcpdump bench: WARNING: huge pages not given back "
                             f"(echo {before} > {NR_HUGEPAGES}): {e}\n")

    with open(NR_HUGEPAGES) as f:
        got = int(f.read())
    if got < want:
        release()
        return None
    return release


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


def main_worker(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "--worker":
        _worker(json.loads(argv[1]))
        return 0
    sys.stderr.write("usage: python -m zfcpdump.bench --worker JSON (internal)\n")
    return 2
