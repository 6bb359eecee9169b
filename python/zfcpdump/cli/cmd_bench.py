"""`zfcpdump bench`: measure a disk the way zfcpdump writes it, before trusting it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
from typing import Optional

from ..capture import DEFAULT_BUFFER_SIZE, DEFAULT_QUEUE_DEPTH, MAX_BUFFER_SIZE, MAX_QUEUE_DEPTH
from ..disk import device
from ..errors import EXIT_OK, EXIT_USAGE, DiskRefused, ZfcpdumpError

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


ENGINES = ("rust", "python")


def _usage(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the command line, checked before anything is generated or
    written (None: nothing)."""
    from .. import bench as B

    problem = _target_problem(args)  # first: a destructive target is refused whatever else
    if problem:
        return problem
    try:
        size = B.parse_size(args.size)
        buffer_size = B.parse_size(args.buffer_size)
    except ValueError:
        return f"--size and --buffer-size take a byte count such as 512M or 4G " \
               f"(got {args.size!r}, {args.buffer_size!r})"
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or any(e not in ENGINES for e in engines):
        return f"--engines is a comma-separated list of {', '.join(ENGINES)} (got {args.engines!r})"
    if args.runs < 1:
        return "--runs must be 1 or more"
    if not 4096 <= buffer_size <= MAX_BUFFER_SIZE or buffer_size % 4096:
        return f"--buffer-size must be a multiple of 4096 up to {MAX_BUFFER_SIZE >> 20}M"
    if not 1 <= args.queue_depth <= MAX_QUEUE_DEPTH:
        return f"--queue-depth must be 1 to {MAX_QUEUE_DEPTH}"
    if args.vmcore is None:
        if not max(64 << 10, buffer_size) <= size <= 1 << 50:
            return (f"--size must be at least 64K and one buffer ({B.fmt_size(buffer_size)}), "
                    "at most 1P")
        workdir = args.workdir or _default_workdir(size)
        try:
            free = shutil.disk_usage(workdir).free
        except OSError as exc:
            return f"--workdir {workdir}: {exc.strerror}"
        if free < size + (64 << 20):
            return (f"--size {B.fmt_size(size)} does not fit in {workdir} "
                    f"({B.fmt_size(free)} free); give a smaller --size or another --workdir")
    else:
        problem = _vmcore_problem(args.vmcore)
        if problem:
            return f"--vmcore {args.vmcore}: {problem}"
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        return f"--json {args.json}: its directory does not exist"
    if device.is_block_device(args.target):
        return None
    # a disk image of the vmcore's size goes into the target's directory
    nbytes = size if args.vmcore is None else os.path.getsize(args.vmcore)
    where = args.target if os.path.isdir(args.target) else os.path.dirname(os.path.abspath(args.target))
    free = shutil.disk_usage(where).free
    if free < nbytes + (64 << 20):
        return (f"{args.target}: the disk image ({B.fmt_size(nbytes)}) does not fit in {where} "
                f"({B.fmt_size(free)} free)")
    return None


def _vmcore_problem(path: str) -> Optional[str]:
    from ..readers.elf import parse_elf_core

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return exc.strerror
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        core = parse_elf_core(fd, st.st_size)
        if not core.loads:
            return "an ELF core without memory (no PT_LOAD)"
    except ZfcpdumpError as exc:
        return f"not an ELF core ({exc})"
    except OSError as exc:
        return exc.strerror
    finally:
        os.close(fd)
    return None


def _target_problem(args: argparse.Namespace) -> Optional[str]:
    """The bench makes its own image file in a directory or under a new name, or writes
    a block device given with --yes-destroy; anything else is refused up front."""
    try:
        st = os.stat(args.target)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(args.target))
        return None if os.path.isdir(parent) else f"{args.target}: its directory does not exist"
    except OSError as exc:
        return f"{args.target}: {exc.strerror}"
    if stat.S_ISBLK(st.st_mode):
        if not args.yes_destroy:
            return (f"{args.target} is a block device: benchmarking DESTROYS its contents; "
                    "add --yes-destroy")
        try:
            device.check_not_mounted(args.target)
        except DiskRefused as exc:
            return str(exc)
        return None
    if stat.S_ISDIR(st.st_mode):
        return None
    return (f"{args.target} exists and is not a directory or a block device: the bench makes "
            "its own disk image file; give a directory or a new file name")


def run(args: argparse.Namespace) -> int:
    from .. import bench as B

    problem = _usage(args)
    if problem:
        print(f"zfcpdump bench: {problem}", file=sys.stderr)
        return EXIT_USAGE
    size = B.parse_size(args.size)
    buffer_size = B.parse_size(args.buffer_size)
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
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
    elif st is not None:  # _target_problem refused it before anything was generated
        raise DiskRefused(f"{path} exists and is not a directory or a block device")
    else:
        image = path
    created.append(image)
    t = B.image_target(image, nbytes)
    return t, args.copy_dir or os.path.dirname(os.path.abspath(image))
