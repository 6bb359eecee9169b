"""`zfcpdump bench`: measure a disk the way zfcpdump writes it, before trusting it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile

from ..capture import DEFAULT_BUFFER_SIZE, DEFAULT_QUEUE_DEPTH, MAX_BUFFER_SIZE, MAX_QUEUE_DEPTH
from ..errors import EXIT_OK, EXIT_USAGE, DiskRefused

HELP = """\
Time, on TARGET and for the same number of bytes:
  capture-rust / capture-python  zfcpdump's capture (rust and pure-Python engines,
                                 their defaults)
  capture-rust-aio               the rust engine with --io-engine aio
  capture-rust-mmap              the rust engine with --mmap (the default for
                                 /proc/vmcore, not for the bench's file)
  ref-dd-64k, ref-fio-64k        s390-tools zfcpdump's pattern: 64 KiB buffered
                                 writes, then one fsync
  limit-dd-4m, limit-fio         the device's own O_DIRECT limit (dd bs=4M QD1;
                                 fio libaio with our request size and queue depth)
  limit-fio-huge                 that fio with its buffers in huge pages (as root):
                                 on a fast disk plain fio measures its own pinning of
                                 4 KiB pages; zfcpdump's buffers are huge pages too
and the read-back side (dump area -> ELF file in --copy-dir): copy-rust,
copy-python against dd bs=4M conv=fsync. Each figure is the median of --runs runs
(min and max shown); ratios are taken run by run. As root the page cache is dropped
before every measurement.

TARGET is
  a directory or a new file name: a disk image file is created there, prepared
      (metadata only) and the full `zfcpdump dump` is timed; removed afterwards;
  a block device (e.g. /dev/sdX1): DESTRUCTIVE, needs --yes-destroy; written from
      its first byte by the engine with the capture's options (no boot record or
      superblock is written: block 0 of the disk is not touched).

The input is a generated s390x vmcore of --size bytes (a third each zero, text and
random pages; fully written, not sparse) in --workdir (default /dev/shm, which is
memory like /proc/vmcore), or --vmcore FILE.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure a disk: zfcpdump vs the 64k pattern vs O_DIRECT limit",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, metavar="TARGET",
                   help="block device (destructive, --yes-destroy), directory or new file name")
    p.add_argument("--size", default="1G", help="bytes of vmcore to write (default 1G)")
    p.add_argument("--runs", type=int, default=5, help="runs per method (default 5)")
    p.add_argument("--vmcore", help="use this ELF core instead of generating one")
    p.add_argument("--workdir", help="where the generated vmcore goes (default /dev/shm if it "
                   "has room, else the temp directory)")
    p.add_argument("--copy-dir", help="where the copy benchmark writes its ELF file (default: "
                   "the target's directory for a file target, else the temp directory)")
    p.add_argument("--no-copy", action="store_true", help="skip the copy (read-back) benchmark")
    p.add_argument("--engines", default="rust,python", help="engines to time (default rust,python)")
    p.add_argument("--buffer-size", default=str(DEFAULT_BUFFER_SIZE),
                   help=f"bytes per request (default {DEFAULT_BUFFER_SIZE >> 20}M, the capture's)")
    p.add_argument("--queue-depth", type=int, default=DEFAULT_QUEUE_DEPTH,
                   help=f"requests in flight (default {DEFAULT_QUEUE_DEPTH}, the capture's)")
    p.add_argument("--direct", choices=["auto", "on", "off"], default="auto",
                   help="O_DIRECT for the engines (default auto)")
    p.add_argument("--no-drop-caches", action="store_true",
                   help="do not drop the page cache before each measurement")
    p.add_argument("--json", metavar="FILE", help="also write the full report (every sample) as JSON")
    p.add_argument("--yes-destroy", action="store_true",
                   help="allow writing over a block device target")


def run(args: argparse.Namespace) -> int:
    from .. import bench as B

    size = B.parse_size(args.size)
    buffer_size = B.parse_size(args.buffer_size)
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    if (args.runs < 1 or size < 64 * 1024 or buffer_size % 4096 or not engines
            or not 4096 <= buffer_size <= MAX_BUFFER_SIZE
            or not 1 <= args.queue_depth <= MAX_QUEUE_DEPTH):
        print(f"zfcpdump bench: --runs >= 1, --size >= 64K, --buffer-size a multiple of 4096 "
              f"up to {MAX_BUFFER_SIZE >> 20}M, --queue-depth 1 to {MAX_QUEUE_DEPTH}",
              file=sys.stderr)
        return EXIT_USAGE
    log = (lambda s: print(s, file=sys.stderr, flush=True))
    created: list[str] = []
    target = None
    try:
        vmcore = args.vmcore
        if vmcore is None:
            workdir = args.workdir or _default_workdir(size)
            fd, vmcore = tempfile.mkstemp(prefix="zfcpdump-bench-", suffix=".elf", dir=workdir)
            os.close(fd)
            created.append(vmcore)
            log(f"generating a {B.fmt_size(size)} vmcore in {vmcore} ...")
            B.write_fast_vmcore(vmcore, size)
        nbytes = os.path.getsize(vmcore)
        target, copy_dir = _target(args, nbytes, created)
        if args.no_copy:
            copy_dir = None
        log(f"target: {target.description}")
        cfg = B.BenchConfig(vmcore=vmcore, target=target, runs=args.runs, buffer_size=buffer_size,
                            queue_depth=args.queue_depth, engines=engines, copy_dir=copy_dir,
                            drop=not args.no_drop_caches, direct=args.direct)
        if not B.is_root() and not args.no_drop_caches:
            log("not root: the page cache cannot be dropped between runs")
        sections = B.bench(cfg, log=log)
    finally:
        if target is not None:
            target.close()
        for path in created:
            if os.path.exists(path):
                os.unlink(path)
    env = B.environment()
    print(f"zfcpdump bench on {env['kernel']} {env['machine']}, {env['cpus']} CPUs, "
          f"buffer {B.fmt_size(buffer_size)}, queue depth {args.queue_depth}")
    for sec in sections:
        print(B.format_section(sec))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "sections": [B.section_dict(s) for s in sections]}, f,
                      indent=1)
    return EXIT_OK


def _default_workdir(size: int) -> str:
    shm = "/dev/shm"
    try:
        if os.path.isdir(shm) and shutil.disk_usage(shm).free > size + (512 << 20):
            return shm
    except OSError:
        pass
    return tempfile.gettempdir()


def _target(args: argparse.Namespace, nbytes: int, created: list[str]):
    from .. import bench as B
    from ..disk import device

    path = args.target
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISBLK(st.st_mode):
        if not args.yes_destroy:
            raise DiskRefused(f"{path} is a block device: benchmarking DESTROYS its contents; "
                              "add --yes-destroy")
        device.check_not_mounted(path)
        t = B.raw_target(path)
        if t.capacity < nbytes:
            raise DiskRefused(f"{path} is smaller ({t.capacity} bytes) than the vmcore ({nbytes} bytes)")
        return t, args.copy_dir or tempfile.gettempdir()
    if st is not None and stat.S_ISDIR(st.st_mode):
        fd, image = tempfile.mkstemp(prefix="zfcpdump-bench-", suffix=".img", dir=path)
        os.close(fd)
        os.unlink(image)
    elif st is not None:
        if not args.yes_destroy:
            raise DiskRefused(f"{path} exists: it would be overwritten; add --yes-destroy, or give "
                              "a directory or a new file name")
        image = path
    else:
        image = path
    created.append(image)
    t = B.image_target(image, nbytes)
    return t, args.copy_dir or os.path.dirname(os.path.abspath(image))
