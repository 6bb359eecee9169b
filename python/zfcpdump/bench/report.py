"""Series of runs, medians and pair-by-pair ratios, the printed and JSON report, and bench() itself."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

from ..capture import DEFAULT_BUFFER_SIZE, DEFAULT_QUEUE_DEPTH
from .common import GIB, MIB, Log, _fs_type, drop_caches, fmt_size, is_root
from .measure import Method, Sample, _worker_cmd, capture_methods, copy_methods, run_child_rusage
from .targets import Target



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


CAPTURE_RATIOS = [("capture-rust", "limit-fio-huge"), ("capture-rust", "limit-fio"),
                  ("capture-rust", "limit-dd-4m"),
                  ("capture-rust", "ref-dd-64k"), ("capture-rust", "ref-fio-64k"),
                  ("capture-rust", "capture-python"), ("capture-python", "ref-dd-64k"),
                  ("capture-rust-aio", "capture-rust"),
                  ("capture-rust-aio", "limit-fio"),
                  ("capture-rust-mmap", "capture-rust"),
                  ("capture-rust-mmap", "limit-fio"), ("limit-fio", "limit-fio-huge")]
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
    buffer_size: int = DEFAULT_BUFFER_SIZE
    queue_depth: int = DEFAULT_QUEUE_DEPTH
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
