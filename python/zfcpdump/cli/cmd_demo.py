"""`zfcpdump demo`: the whole chain on a built-in sample, no root needed.

Synthesises a small s390x vmcore (2 CPUs, memory with a hole, a kernel-image LOAD that
repeats part of the identity map), makes a disk image with an MBR partition, prepares
it, captures the vmcore into it with verification, and reads the dump back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from ..capture import Capture, CaptureOptions, Console
from ..disk.image import create_mbr_image
from ..disk.target import partition_for_prepare
from ..errors import EXIT_OK, EXIT_USAGE
from ..prepare import prepare
from ..synth import SynthSpec, write_vmcore

MIB = 1 << 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run prepare, dump and read-back on a built-in sample",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", help="where to put the sample files (default: a temporary directory, removed)")
    p.add_argument("--memory-mib", type=_memory_mib, default=64,
                   help=f"sample memory size ({MIN_MEMORY_MIB}-{MAX_MEMORY_MIB}, default 64)")
    p.add_argument("--engine", choices=["rust", "python"], default="rust")


# The sample's layout (two ranges around a 4 MiB hole, a kernel image at 1-3 MiB)
# needs 16 MiB; 64 GiB is far beyond a demo and about what a scratch disk holds.
MIN_MEMORY_MIB = 16
MAX_MEMORY_MIB = 64 << 10


def _memory_mib(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not MIN_MEMORY_MIB <= value <= MAX_MEMORY_MIB:
        raise argparse.ArgumentTypeError(f"must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}")
    return value


def run(args: argparse.Namespace) -> int:
    where = args.workdir or tempfile.gettempdir()
    probe = where if os.path.isdir(where) else os.path.dirname(os.path.abspath(where))
    need = 2 * args.memory_mib * MIB + 16 * MIB  # the vmcore and the disk image
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        print(f"zfcpdump demo: {where}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    if free < need:
        print(f"zfcpdump demo: {need >> 20} MiB needed in {probe}, {free >> 20} MiB free",
              file=sys.stderr)
        return EXIT_USAGE
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        return _demo(args.workdir, args)
    with tempfile.TemporaryDirectory(prefix="zfcpdump-demo-") as work:
        return _demo(work, args)


def _say(text: str) -> None:
    print(text, flush=True)


def _demo(work: str, args: argparse.Namespace) -> int:
    mem = args.memory_mib * MIB
    vmcore = os.path.join(work, "vmcore.elf")
    disk = os.path.join(work, "disk.img")
    spec = SynthSpec(ranges=[(0, mem // 2), (mem // 2 + 4 * MIB, mem // 2 - 4 * MIB)], cpus=2,
                     kernel_image=(MIB, 2 * MIB))
    size = write_vmcore(vmcore, spec)
    _say(f"== 1. synthesised an s390x vmcore: {vmcore} ({size} bytes, 2 CPUs)")
    part_size = size + 2 * MIB
    for stale in (disk,):
        if os.path.exists(stale):
            os.unlink(stale)
    create_mbr_image(disk, part_size + 2 * MIB, [(MIB, part_size)])
    _say(f"== 2. made a disk image with one MBR partition: {disk}")
    _say("== 3. zfcpdump prepare --metadata-only " + disk + " --partition 1")
    prepare(partition_for_prepare(disk, 1, None), None, None, log=lambda s: _say("   " + s))
    _say(f"== 4. zfcpdump dump -i {vmcore} --verify {disk}")
    console = Console(lambda s: _say("   " + s), lambda s: _say("   " + s))
    result = Capture(CaptureOptions(vmcore=vmcore, disk=disk, engine=args.engine, verify=True),
                     console).run()
    _say("   Dump successful")
    _say(f"   sha256 of the dump on the partition: {result.digest}")
    _say(f"== 5. zfcpdump info {disk}:{result.partition.number}")
    _show(disk, result.partition.number)
    return EXIT_OK


def _show(disk: str, number: int) -> None:
    from ..info import dump_info_text
    from ..readers import open_dump

    with open_dump(f"{disk}:{number}") as dump:
        for line in dump_info_text(dump).splitlines():
            _say("   " + line)
