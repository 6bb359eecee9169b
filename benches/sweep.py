#!/usr/bin/env python3
"""Engine defaults sweep: `zfcpdump dump --engine rust` at several (buffer size, queue
depth) pairs, each paired with fio's O_DIRECT limit for the same request shape, on a
loop device (root) or a disk image file. Same measuring code as run_bench.py.

    sudo /tmp/venv/bin/python benches/sweep.py --size 2G --runs 5 \
        --configs 1M:4,4M:4,4M:8,8M:4,16M:4
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:  # the installed package (wheel or editable); the source tree has no _core
    import zfcpdump._core  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HERE.parent / "python"))

from zfcpdump import bench as B  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="2G")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--configs", default="1M:4,4M:4,4M:8,8M:4,16M:4")
    ap.add_argument("--target", choices=["loop", "file"], default="loop" if B.is_root() else "file")
    ap.add_argument("--workdir", default="/dev/shm")
    ap.add_argument("--diskdir", default="/var/tmp/zfcpdump-bench")
    args = ap.parse_args()
    Path(args.diskdir).mkdir(parents=True, exist_ok=True)
    vm = os.path.join(args.workdir, "zfcpdump-sweep.elf")
    n = B.write_fast_vmcore(vm, B.parse_size(args.size))
    target = (B.loop_target if args.target == "loop" else B.image_target)(
        os.path.join(args.diskdir, "sweep.img"), n)
    try:
        methods, ratios = [], []
        for cfg in args.configs.split(","):
            bs_txt, qd_txt = cfg.split(":")
            bs, qd = B.parse_size(bs_txt), int(qd_txt)
            ms = {m.name: m for m in B.capture_methods(vm, n, target, buffer_size=bs, queue_depth=qd,
                                                       engines=("rust",))}
            tag = f"{bs_txt}/QD{qd}"
            for key in ("capture-rust", "limit-fio"):
                m = ms[key]
                m.name = f"{key.split('-')[0]}-{tag}"
                methods.append(m)
            ratios.append((f"capture-{tag}", f"limit-{tag}"))
        for m in methods:
            m.name = m.name.replace("capture-", "rust ").replace("limit-", "fio  ")
        ratios = [(a.replace("capture-", "rust "), b.replace("limit-", "fio  ")) for a, b in ratios]
        sec = B.run_series("sweep: capture-rust vs fio limit, same request shape", methods,
                           runs=args.runs, target=target,
                           input_desc=f"generated vmcore {B.fmt_size(n)} on tmpfs", ratios=ratios,
                           log=lambda s: print(s, file=sys.stderr, flush=True))
        print(B.format_section(sec))
    finally:
        target.close()
        os.unlink(vm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
