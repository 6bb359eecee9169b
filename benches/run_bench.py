#!/usr/bin/env python3
"""zfcpdump benchmark harness (issue #4). Uses zfcpdump.bench (the same code as
`zfcpdump bench`).

    sudo /tmp/venv/bin/python benches/run_bench.py                 # the full run
    /tmp/venv/bin/python benches/run_bench.py --quick --out DIR    # CI smoke (tiny)

Phases:
  A  capture + copy, generated vmcore (--size, default 4G), on each --targets
     (loop: losetup --direct-io=on -b 4096 with an MBR partition; file: disk image file)
  B  the same with the real s390x sample (tests/oracles/sample.py), if available
  C  capture-rust at --rss-sizes (default 1G,8G), interleaved run by run: peak RSS
     (child VmHWM, plus one /usr/bin/time -v cross-check), user+sys per GiB, linearity
     t(big) / (big/small * t(small)) pair by pair

Inputs live in --workdir (default /dev/shm: memory, as /proc/vmcore is); targets and
copy destinations in --diskdir (default /var/tmp/zfcpdump-bench). As root the page cache
is dropped before every measurement. Writes <out>/bench-<time>.txt and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
try:  # the installed package (wheel or editable); the source tree has no _core
    import zfcpdump._core  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "python"))

from zfcpdump import bench as B  # noqa: E402
from zfcpdump.capture import DEFAULT_BUFFER_SIZE, DEFAULT_QUEUE_DEPTH  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sample_path() -> Path | None:
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from oracles.sample import sample_available, sample_elf_path  # type: ignore

        if sample_available():
            return sample_elf_path()
    except Exception as exc:  # noqa: BLE001
        log(f"sample not available: {exc}")
    return None


def make_target(kind: str, diskdir: Path, nbytes: int) -> B.Target:
    if kind == "loop":
        return B.loop_target(str(diskdir / "loop-backing.img"), nbytes)
    return B.image_target(str(diskdir / "image-target.img"), nbytes)


def phase_ab(args, kinds, inputs, diskdir) -> list[dict]:
    out = []
    biggest = max(os.path.getsize(p) for p, _ in inputs)
    for kind in kinds:
        target = make_target(kind, diskdir, biggest)
        log(f"target {kind}: {target.description}")
        try:
            for path, desc in inputs:
                cfg = B.BenchConfig(vmcore=str(path), target=target, runs=args.runs,
                                    buffer_size=args.buffer_size, queue_depth=args.queue_depth,
                                    copy_dir=str(diskdir), drop=not args.no_drop, input_desc=desc)
                for sec in B.bench(cfg, log=log):
                    d = B.section_dict(sec)
                    d["target_kind"], d["input_name"] = kind, Path(path).name
                    out.append(d)
                    print(B.format_section(sec), flush=True)
        finally:
            target.close()
    return out


def time_v_rss(vmcore: str, target: B.Target, args) -> int | None:
    """One `/usr/bin/time -v python -m zfcpdump dump` run: Maximum resident set size."""
    if not shutil.which("time") and not os.path.exists("/usr/bin/time"):
        return None
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "zfcpdump", "dump", "-i", vmcore,
           "--engine", "rust", "--buffer-size", str(args.buffer_size), "--queue-depth",
           str(args.queue_depth), "--progress-interval", "1e9", "--zcore-dir", "/nonexistent/zb"]
    if target.kind == "image":
        cmd += ["--block-size", str(target.block_size)]
    cmd.append(target.disk)
    B.drop_caches()
    r = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return int(m.group(1)) if (m and r.returncode == 0) else None


def phase_c(args, kind, workdir, diskdir) -> dict:
    sizes = [B.parse_size(s) for s in args.rss_sizes.split(",")]
    paths = []
    try:
        for n in sizes:
            p = workdir / f"zfcpdump-bench-rss-{n}.elf"
            log(f"generating {B.fmt_size(n)} vmcore {p}")
            B.write_fast_vmcore(str(p), n)
            paths.append(p)
        target = make_target(kind, diskdir, max(os.path.getsize(p) for p in paths))
        log(f"RSS/linearity target {kind}: {target.description}")
        try:
            samples: dict[int, list[B.Sample]] = {n: [] for n in sizes}
            for r in range(args.rss_runs):
                for n, p in (zip(sizes, paths) if r % 2 == 0 else reversed(list(zip(sizes, paths)))):
                    m = B.capture_methods(str(p), os.path.getsize(p), target,
                                          buffer_size=args.buffer_size,
                                          queue_depth=args.queue_depth, engines=("rust",))[0]
                    if not args.no_drop:
                        B.drop_caches()
                    s = m.run()
                    samples[n].append(s)
                    log(f"  [rss] run {r + 1} {B.fmt_size(n):>8} {s.seconds:7.3f} s "
                        f"{os.path.getsize(p) / B.MIB / s.seconds:8.1f} MiB/s cpu {s.user + s.sys:.2f} s "
                        f"hwm {s.maxrss_kib / 1024:.1f} MiB")
            timev = {n: time_v_rss(str(p), target, args) for n, p in zip(sizes, paths)}
        finally:
            target.close()
        res = {"target": target.description, "runs": args.rss_runs, "sizes": []}
        for n, p in zip(sizes, paths):
            fs = os.path.getsize(p)
            ss = samples[n]
            res["sizes"].append({
                "size": n, "file_bytes": fs,
                "seconds": B.summary([s.seconds for s in ss]),
                "mib_s": B.summary([fs / B.MIB / s.seconds for s in ss]),
                "cpu_s_per_gib": B.summary([(s.user + s.sys) / (fs / B.GIB) for s in ss]),
                "user_s_per_gib": B.summary([s.user / (fs / B.GIB) for s in ss]),
                "sys_s_per_gib": B.summary([s.sys / (fs / B.GIB) for s in ss]),
                "hwm_mib": B.summary([s.maxrss_kib / 1024 for s in ss]),
                "time_v_maxrss_mib": None if timev[n] is None else timev[n] / 1024,
            })
        small, big = res["sizes"][0], res["sizes"][-1]
        k = big["file_bytes"] / small["file_bytes"]
        lin = [b.seconds / (k * a.seconds) for a, b in zip(samples[sizes[0]], samples[sizes[-1]])]
        res["linearity"] = {"factor": k, **B.summary(lin), "values": lin}
        return res
    finally:
        for p in paths:
            if p.exists():
                p.unlink()


def format_c(res: dict) -> str:
    lines = ["== capture-rust: peak RSS, CPU, linearity",
             f"   target : {res['target']}; {res['runs']} runs per size, interleaved; page cache dropped"
             " before each run (root)",
             f"   {'size':>8} {'MiB/s median (min-max)':>26} {'seconds':>8} {'u+s s/GiB':>18}"
             f" {'user/GiB':>9} {'sys/GiB':>8} {'VmHWM MiB (min-max)':>22} {'time -v MiB':>11}"]
    for s in res["sizes"]:
        m, c, h = s["mib_s"], s["cpu_s_per_gib"], s["hwm_mib"]
        tv = "-" if s["time_v_maxrss_mib"] is None else f"{s['time_v_maxrss_mib']:.1f}"
        lines.append(f"   {B.fmt_size(s['size']):>8} {m['median']:9.1f} ({m['min']:6.1f}-{m['max']:6.1f})"
                     f"   {s['seconds']['median']:8.3f} {c['median']:6.3f} ({c['min']:.3f}-{c['max']:.3f})"
                     f" {s['user_s_per_gib']['median']:9.3f} {s['sys_s_per_gib']['median']:8.3f}"
                     f" {h['median']:8.1f} ({h['min']:.1f}-{h['max']:.1f}) {tv:>11}")
    lin = res["linearity"]
    lines.append(f"   linearity t(big) / ({lin['factor']:.3f} x t(small)), pair by pair: "
                 f"{lin['median']:.3f} ({lin['min']:.3f}-{lin['max']:.3f})  (target: within 1 +/- 0.15)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4G")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--targets", default=None, help="loop,file (default: loop too when root)")
    ap.add_argument("--no-sample", action="store_true")
    ap.add_argument("--rss-sizes", default="1G,8G")
    ap.add_argument("--rss-runs", type=int, default=5)
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--phases", default="ab,c", help="ab, c or ab,c")
    ap.add_argument("--buffer-size", type=B.parse_size, default=DEFAULT_BUFFER_SIZE)
    ap.add_argument("--queue-depth", type=int, default=DEFAULT_QUEUE_DEPTH)
    ap.add_argument("--workdir", default="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
    ap.add_argument("--diskdir", default="/var/tmp/zfcpdump-bench")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--no-drop", action="store_true", help="do not drop caches")
    ap.add_argument("--quick", action="store_true",
                    help="smoke: --size 32M --runs 1 --rss-sizes 8M,16M --rss-runs 1 --no-sample")
    args = ap.parse_args()
    if args.quick:
        args.size, args.runs, args.rss_sizes, args.rss_runs, args.no_sample = "32M", 1, "8M,16M", 1, True
    root = B.is_root() and os.path.exists("/dev/loop-control") and shutil.which("losetup")
    kinds = (args.targets.split(",") if args.targets else (["loop", "file"] if root else ["file"]))
    if "loop" in kinds and not root:
        ap.error("loop targets need root")
    workdir, diskdir, outdir = Path(args.workdir), Path(args.diskdir), Path(args.out)
    diskdir.mkdir(parents=True, exist_ok=True)
    outdir.mkdir(parents=True, exist_ok=True)
    env = B.environment()
    env.update({"buffer_size": args.buffer_size, "queue_depth": args.queue_depth,
                "caches_dropped": B.is_root() and not args.no_drop, "argv": sys.argv,
                "loadavg": os.getloadavg()})
    print(f"zfcpdump benchmark {env['time']}: {env['kernel']} {env['machine']}, {env['cpus']} CPUs, "
          f"root={env['root']}, buffer {B.fmt_size(args.buffer_size)}, QD {args.queue_depth}, "
          f"{env['fio']}; loadavg at start {env['loadavg']}", flush=True)
    report: dict = {"environment": env, "sections": [], "rss": None}
    phases = args.phases.split(",")
    gen = workdir / "zfcpdump-bench-vmcore.elf"
    inputs = []
    try:
        if "ab" in phases:
            n = B.parse_size(args.size)
            log(f"generating {B.fmt_size(n)} vmcore {gen}")
            t0 = time.perf_counter()
            size = B.write_fast_vmcore(str(gen), n)
            log(f"  {size} bytes in {time.perf_counter() - t0:.1f} s")
            inputs.append((gen, f"generated s390x vmcore, {B.fmt_size(size)} ({size} bytes), mixed "
                                f"zero/text/random pages, fully written, on {B._fs_type(str(gen))} "
                                f"({gen})"))
            sp = None if args.no_sample else sample_path()
            if sp is not None:
                dst = workdir / "zfcpdump-bench-sample.elf"
                shutil.copyfile(sp, dst)
                inputs.append((dst, f"real s390x sample (QEMU dump-guest-memory), {os.path.getsize(dst)} "
                                    f"bytes, copied to {B._fs_type(str(dst))} ({dst})"))
            report["sections"] = phase_ab(args, kinds, inputs, diskdir)
        for p, _ in inputs:
            if p.exists():
                p.unlink()
        if "c" in phases and not args.no_rss:
            kind = "loop" if "loop" in kinds else "file"
            report["rss"] = phase_c(args, kind, workdir, diskdir)
            print(format_c(report["rss"]), flush=True)
    finally:
        for p, _ in inputs:
            if p.exists():
                p.unlink()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(outdir / f"bench-{stamp}.json", "w") as f:
        json.dump(report, f, indent=1)
    log(f"report: {outdir / f'bench-{stamp}.json'}")
    return 0


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # unwinds through the `finally`s: loop devices detached, huge pages given back
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
