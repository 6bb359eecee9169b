"""`zfcpdump dump`: capture /proc/vmcore into the prepared partition (zfcpdump v3)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from ..capture import Capture, CaptureOptions, Console
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_SIGNAL_BASE, ZfcpdumpError
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
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dump", help="capture a vmcore into a prepared dump partition",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("disk", nargs="?", default="/dev/sda", metavar="DISK",
                   help="whole disk or disk image holding the dump partition (default /dev/sda)")
    p.add_argument("-i", "--vmcore", default="/proc/vmcore",
                   help="the ELF core to copy (default /proc/vmcore)")
    p.add_argument("--engine", choices=["rust", "python"], default="rust",
                   help="copy engine: rust (fast, default) or python (pure-Python twin)")
    p.add_argument("--verify", action="store_true",
                   help="read the dump back and compare SHA-256 digests with the source")
    p.add_argument("--meta", metavar="FILE",
                   help="with --verify: write an ngdump.meta-style file (version, file, sha256sum)")
    p.add_argument("--direct", choices=["auto", "on", "off"], default="auto",
                   help="O_DIRECT writes to the disk (default auto: when the target allows)")
    p.add_argument("--buffer-size", type=_size, default=4 << 20, metavar="BYTES",
                   help="bytes per I/O request (default 4M)")
    p.add_argument("--queue-depth", type=int, default=4, metavar="N",
                   help="I/O buffers in flight, rust engine (default 4)")
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


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower()
    mult = units.get(t[-1:], 1)
    value = int(t[:-1] if t[-1:] in units else t) * mult
    if value < 4096 or value % 4096:
        raise argparse.ArgumentTypeError("must be a multiple of 4096")
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
    opts = CaptureOptions(
        vmcore=args.vmcore, disk=args.disk, engine=args.engine, zcore_dir=args.zcore_dir,
        release_hsa=not args.no_release_hsa, verify=args.verify or bool(args.meta),
        direct={"auto": None, "on": True, "off": False}[args.direct],
        buffer_size=args.buffer_size, queue_depth=args.queue_depth,
        progress_interval_s=args.progress_interval, block_size=args.block_size,
        meta_path=args.meta,
    )
    status = EXIT_FAILED
    try:
        result = Capture(opts, console).run()
        if result.digest:
            console.out(f" sha256...: {result.digest} (verified)")
            if args.meta:
                _write_meta(args.meta, args.disk, result.digest)
        status = EXIT_OK
    except ZfcpdumpError as exc:
        _error(console, str(exc))
    except KeyboardInterrupt:
        console.err(f"ERROR: Got signal: {signal.SIGINT}")
        status = EXIT_SIGNAL_BASE + signal.SIGINT
    except BaseException as exc:
        signum = getattr(exc, "signum", None)
        if signum is None:
            raise
        console.err(f"ERROR: Got signal: {signum}")
        status = EXIT_SIGNAL_BASE + signum
    console.blank()
    console.out("Dump successful" if status == EXIT_OK else "Dump failed")
    dumpkernel.finish(console, reipl=args.reipl or kernel_mode, poweroff=args.poweroff or kernel_mode,
                      zcore_dir=args.zcore_dir, sleep=kernel_mode)
    return status


def _write_meta(path: str, disk: str, digest: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"version=1\nfile={disk}\nsha256sum={digest}\n")
    os.replace(tmp, path)
