"""`zfcpdump dump`: capture /proc/vmcore into the prepared partition (zfcpdump v3)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Callable, Optional

from ..capture import (DEFAULT_BUFFER_SIZE, DEFAULT_QUEUE_DEPTH, MAX_BUFFER_SIZE, MAX_QUEUE_DEPTH,
                       Capture, CaptureOptions, Console, release_signals)
from ..engine import default_engine, default_mmap
from ..readers import split_image_partition
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_SIGNAL_BASE, EXIT_USAGE, ZfcpdumpError
from . import dumpkernel

HELP = """\
Copy a vmcore (default /proc/vmcore) byte for byte into the dump partition of DISK
(default /dev/sda), as s390-tools' zfcpdump does: the partition is found from the zIPL
boot record in block 0 and the dump superblock it points to, its checksum must match
("filesystem changed" otherwise), the vmcore must fit, then a busy marker goes first,
HSA-backed ranges next, the ELF header page last, and the checksum is updated and
flushed. An interrupted or failed dump never looks valid.

DISK is the whole disk (block device or disk image file), not the partition.
Nothing is written unless every check passes.

With --compress the partition receives a kdump-compressed ("diskdump") file instead,
as makedumpfile writes it (crash, drgn, libkdumpfile and makedumpfile read it): zero
pages elided (--dump-level 1, the default), every other page compressed on all CPUs
and stored compressed only where that makes it smaller. Higher dump levels also leave
out page cache, user data and free pages, as makedumpfile -d does, decided from the
crashed kernel's own struct pages before the first write. The protocol is the same; the
disk_dump_header in the first block is written last. Since the compressed size is known
only at the end, only the fixed part is checked before writing; the dump fails with
"Disk too small" (and stays invalid) as soon as it would pass the end of the partition.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dump", help="capture a vmcore into a prepared dump partition",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("disk", nargs="?", default="/dev/sda", metavar="DISK",
                   help="whole disk or disk image holding the dump partition (default /dev/sda)")
    p.add_argument("-i", "--vmcore", default="/proc/vmcore",
                   help="the ELF core to copy (default /proc/vmcore)")
    p.add_argument("--engine", choices=["rust", "python"], default=default_engine(),
                   help="copy engine: rust (fast; the default where the extension is built) "
                   "or python (the pure-Python twin: same bytes, slower, buffered writes)")
    p.add_argument("--verify", action="store_true",
                   help="read the dump back and compare SHA-256 digests with the source")
    p.add_argument("--meta", metavar="FILE",
                   help="with --verify: write an ngdump.meta-style file (version, file, sha256sum)")
    p.add_argument("--direct", choices=["auto", "on", "off"], default="auto",
                   help="O_DIRECT writes to the disk (default auto: when the target allows)")
    p.add_argument("--buffer-size", type=_size, default=None, metavar="BYTES",
                   help="bytes per I/O request (default 2M; 1M in a dump kernel with "
                   "under 256 MiB of memory)")
    p.add_argument("--queue-depth", type=_depth, default=None, metavar="N",
                   help=f"writes in flight, rust engine (default {DEFAULT_QUEUE_DEPTH}; "
                   f"{SMALL_KERNEL_QUEUE_DEPTH} in a dump kernel with under 256 MiB of memory)")
    p.add_argument("--io-engine", choices=["threads", "aio"], default="threads",
                   help="how the rust engine keeps writes in flight: threads (default: N "
                   "threads each reading and writing) or aio (one thread, Linux native "
                   "AIO, writes reach the disk in order; O_DIRECT without --verify only; "
                   "compare both on your disk with `zfcpdump bench`)")
    p.add_argument("--mmap", action=argparse.BooleanOptionalAction, default=None,
                   help="rust engine: read the vmcore through mmap windows (one per buffer) "
                   "instead of read() (HSA ranges excepted; falls back to read() if mapping fails); "
                   "O_DIRECT writes then go straight from the mapping where the kernel "
                   "allows it (files), else through one copy (/proc/vmcore); with "
                   "--compress the compressors read the windows themselves. Default: on for "
                   "/proc/vmcore, as makedumpfile does, except on s390x, where upstream "
                   "zfcpdump left mmap for read() (its dump kernel is too small for mmap's "
                   "allocations); off for files, where an I/O error under a mapping ends as "
                   "an EFAULT on the write or a SIGBUS instead of a read error)")
    p.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between progress lines (default 10, as zfcpdump)")
    p.add_argument("--block-size", type=int, choices=[512, 4096],
                   help="logical block size of a disk image (default: detected)")
    p.add_argument("--zcore-dir", default="/sys/kernel/debug/zcore",
                   help="where the HSA control files are (default /sys/kernel/debug/zcore)")
    p.add_argument("--no-release-hsa", action="store_true",
                   help="do not release the HSA after copying the HSA-backed ranges")
    p.add_argument("--dump-kernel", action="store_true",
                   help="dump-kernel mode: mount /proc, /sys, debugfs and print the banner "
                   "(automatic when running as PID 1)")
    p.add_argument("--reipl", action="store_true",
                   help="at the end, re-IPL the crashed system through zcore/reipl")
    p.add_argument("--poweroff", action="store_true", help="at the end, power the machine off")
    k = p.add_argument_group("kdump-compressed output")
    k.add_argument("--compress", metavar="ALGO",
                   help="write a kdump-compressed dump: zstd, zlib, lzo (python engine only), "
                   "snappy or none (pages stored raw, zero pages still elided). lz4 is refused: "
                   "the format has no LZ4 page flag")
    k.add_argument("--level", type=int, metavar="N",
                   help="compression level for zlib (0-9) and zstd (1-19); default 1 as makedumpfile")
    k.add_argument("--dump-level", type=int, default=None, metavar="N",
                   help="makedumpfile dump level (0-31, default 1), bits add up: 1 zero pages, "
                   "2 cache, 4 cache and private cache, 8 user process data, 16 free pages are "
                   "left out. 2-16 are decided from the crashed kernel's struct pages (x86_64 "
                   "Linux 4.16-7.3, s390x 4.16-7.2, VMCOREINFO); elsewhere a WARNING says "
                   "why and only zero pages are left out")
    k.add_argument("--adaptive", action="store_true",
                   help="rust engine: compression must not make the dump slower. The "
                   "capture times itself compressing and storing raw (zero pages still left "
                   "out), a fraction of a second each, and goes on the faster way, timing "
                   "both again now and then; while compressing, a batch is stored raw "
                   "whenever the disk would wait for the compressors. The dump is larger on "
                   "a fast disk or busy CPUs; which pages end up compressed depends on timing")
    k.add_argument("--threads", type=int, default=0, metavar="N",
                   help="compression threads, rust engine (default: the available CPUs, never more)")


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower()
    mult = units.get(t[-1:], 1)
    try:
        value = int(t[:-1] if t[-1:] in units else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or a number "
                                         "with K, M or G)") from None
    if value < 4096 or value % 4096:
        raise argparse.ArgumentTypeError("must be a multiple of 4096")
    if value > MAX_BUFFER_SIZE:
        raise argparse.ArgumentTypeError(f"at most {MAX_BUFFER_SIZE >> 20}M")
    return value


def _depth(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= MAX_QUEUE_DEPTH:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_QUEUE_DEPTH}")
    return value


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _error(console: Console, message: str) -> None:
    first, _, rest = message.partition("\n")
    console.err(f"ERROR: {first}")
    if rest:
        console.err(rest)


def run(args: argparse.Namespace) -> int:
    console = Console(_out, _err)
    kernel_mode = args.dump_kernel or os.getpid() == 1
    # everything after the banner is guarded: a signal at any point of it ends in
    # "Dump failed", not only one that comes once the capture has begun
    status = _guarded(lambda: _dump(args, console, kernel_mode), console)
    if status == EXIT_USAGE:
        return status
    console.blank()
    console.out("Dump successful" if status == EXIT_OK else "Dump failed")
    release_signals()  # a signal after the dump was complete does not undo it
    dumpkernel.finish(console, reipl=args.reipl or kernel_mode, poweroff=args.poweroff or kernel_mode,
                      zcore_dir=args.zcore_dir, sleep=kernel_mode)
    return status


def _dump(args: argparse.Namespace, console: Console, kernel_mode: bool) -> Optional[int]:
    """The banner, the parameters, the usage checks (EXIT_USAGE, nothing written) and
    the capture; raises what the capture raises."""
    if kernel_mode:
        dumpkernel.start(console)
    else:
        dumpkernel.banner(console)
    console.out("Dump start at:")
    console.out(" " + time.strftime("%a, %d %b %Y %H:%M:%S %z"))
    console.blank()
    console.out("Dump parameters:")
    if kernel_mode:
        dumpkernel.print_ipl_parameters(console)
    console.out(f" vmcore...: {args.vmcore}")
    console.out(f" engine...: {args.engine}")
    opts = CaptureOptions(
        vmcore=args.vmcore, disk=args.disk, engine=args.engine, zcore_dir=args.zcore_dir,
        release_hsa=not args.no_release_hsa, verify=args.verify or bool(args.meta),
        direct={"auto": None, "on": True, "off": False}[args.direct],
        buffer_size=_buffer_size(args.buffer_size, kernel_mode),
        queue_depth=_queue_depth(args.queue_depth, kernel_mode),
        io_engine=args.io_engine, mmap=default_mmap(args.vmcore) if args.mmap is None else args.mmap,
        progress_interval_s=args.progress_interval,
        block_size=args.block_size,
        meta_path=args.meta,
        live_bar=not kernel_mode,  # the dump kernel's console shows only the 10 s lines
        hold_signals_after_commit=True,
    )
    problem = _meta_problem(args) or (_kdump_usage(args) if args.compress is not None
                                      else _raw_usage(args))
    if problem:
        console.err(f"ERROR: {problem}")
        return EXIT_USAGE
    if args.compress is not None:
        _run_kdump(args, opts, console)
    else:
        _run_raw(args, opts, console)
    return None


# A dump kernel with under 256 MiB of memory (crashkernel= of 160M and less): the
# engine's (queue depth + 2) buffers decide whether the capture fits, so they stay at
# 6 x 1 MiB there, what docs/dump-kernel-initramfs.md measured.
SMALL_KERNEL_MEMORY = 256 << 20
SMALL_KERNEL_BUFFER_SIZE = 1 << 20
SMALL_KERNEL_QUEUE_DEPTH = 4


def _small_dump_kernel(kernel_mode: bool) -> bool:
    return kernel_mode and dumpkernel.mem_total_bytes() < SMALL_KERNEL_MEMORY


def _buffer_size(requested: Optional[int], kernel_mode: bool) -> int:
    """2 MiB buffers by default; 1 MiB in a small dump kernel."""
    if requested is not None:
        return requested
    return SMALL_KERNEL_BUFFER_SIZE if _small_dump_kernel(kernel_mode) else DEFAULT_BUFFER_SIZE


def _queue_depth(requested: Optional[int], kernel_mode: bool) -> int:
    """8 writes in flight by default; 4 in a small dump kernel."""
    if requested is not None:
        return requested
    return SMALL_KERNEL_QUEUE_DEPTH if _small_dump_kernel(kernel_mode) else DEFAULT_QUEUE_DEPTH


def _guarded(work: Callable[[], Optional[int]], console: Console) -> int:
    """Run a capture; every failure becomes an ERROR: line and an exit status (`work`
    may return one itself; None is success)."""
    try:
        status = work()
        return EXIT_OK if status is None else status
    except ZfcpdumpError as exc:
        _error(console, str(exc))
    except ValueError as exc:  # a compressor module missing in the python engine
        _error(console, str(exc))
    except KeyboardInterrupt:
        console.err(f"ERROR: Got signal: {signal.SIGINT}")
        return EXIT_SIGNAL_BASE + signal.SIGINT
    except BaseException as exc:
        signum = getattr(exc, "signum", None)
        if signum is None:
            raise
        console.err(f"ERROR: Got signal: {signum}")
        return EXIT_SIGNAL_BASE + signum
    return EXIT_FAILED


def _run_raw(args: argparse.Namespace, opts: CaptureOptions, console: Console) -> None:
    result = Capture(opts, console).run()
    # asked for, or on by default and used (the python engine always reads)
    if opts.mmap and (args.mmap is not None or result.read_mode != "pread"):
        console.out(f" reads....: {_READ_MODES.get(result.read_mode, result.read_mode)}")
    if result.digest:
        console.out(f" sha256...: {result.digest} (verified)")
        if args.meta:
            _write_meta(args.meta, args.disk, result.digest)


_READ_MODES = {
    "pread": "read() (mapping the vmcore failed; or python engine, --verify, --io-engine aio)",
    "mmap": "mmap windows, one copy (O_DIRECT cannot pin /proc/vmcore's pages, or the "
            "writes are buffered)",
    "mmap-direct": "mmap windows, O_DIRECT writes straight from the mapping",
}


def _raw_usage(args: argparse.Namespace) -> Optional[str]:
    for flag, given in (("--dump-level", args.dump_level is not None),
                        ("--adaptive", args.adaptive), ("--level", args.level is not None)):
        if given:
            return f"{flag} needs --compress (a raw dump keeps every page as it is)"
    return None


def _meta_problem(args: argparse.Namespace) -> Optional[str]:
    """--meta FILE, checked before the disk is opened."""
    if not args.meta:
        return None
    meta = args.meta
    parent = os.path.dirname(os.path.abspath(meta))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        return f"--meta {meta}: its directory does not exist or is not writable"
    if os.path.lexists(meta):
        if not os.path.isfile(meta) or os.path.islink(meta):
            return f"--meta {meta}: exists and is not a regular file"
        for what, path in (("the dump disk", split_image_partition(args.disk)[0]),
                           ("the vmcore", args.vmcore)):
            try:
                if os.path.samefile(meta, path):
                    return f"--meta {meta} is {what}"
            except OSError:
                pass
    return None


def _write_meta(path: str, disk: str, digest: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"version=1\nfile={disk}\nsha256sum={digest}\n")
    os.replace(tmp, path)


MAX_THREADS = 1024  # compression threads; beyond this, a typo

# compression levels --level accepts, per algorithm (as its help says)
LEVELS = {"zlib": (0, 9), "zstd": (1, 19)}


def _kdump_usage(args: argparse.Namespace) -> str | None:
    from ..capture_kdump import COMPRESSIONS
    from ..formats.kdump_layout import LZ4_REFUSED

    if args.compress == "lz4":
        return f"--compress {LZ4_REFUSED}"
    if args.compress not in COMPRESSIONS:
        return f"--compress must be one of {', '.join(COMPRESSIONS)} (got {args.compress!r})"
    if args.compress == "lzo" and args.engine == "rust":
        return ("--compress lzo is available with --engine python only (python-lzo); "
                "the rust engine has zstd, zlib, snappy and none")
    if args.verify or args.meta:
        return "--verify/--meta are not supported with --compress"
    if args.dump_level is not None and not 0 <= args.dump_level <= 31:
        return "--dump-level must be 0-31"
    if args.level is not None:
        # the libraries would clamp a level out of range, and the console would still
        # report the level asked for
        lo, hi = LEVELS.get(args.compress, (None, None))
        if lo is None:
            return f"--level applies to zlib and zstd only, not to {args.compress}"
        if not lo <= args.level <= hi:
            return f"--level for {args.compress} must be {lo}-{hi}"
    if not 0 <= args.threads <= MAX_THREADS:
        return f"--threads must be 0 (all CPUs) to {MAX_THREADS}"
    return None


def _run_kdump(args: argparse.Namespace, opts: CaptureOptions, console: Console) -> None:
    """The capture with --compress (capture_kdump.py); same messages and exit codes."""
    import dataclasses

    from ..capture_kdump import KdumpCapture, KdumpCaptureOptions

    kopts = KdumpCaptureOptions(**dataclasses.asdict(opts), compress=args.compress,
                                level=args.level,
                                dump_level=1 if args.dump_level is None else args.dump_level,
                                adaptive=args.adaptive,
                                threads=args.threads)
    KdumpCapture(kopts, console).run()
