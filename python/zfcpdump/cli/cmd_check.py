"""`zfcpdump check`: is there a valid dump on this disk? Reads only."""

from __future__ import annotations

import argparse
import sys

from ..check import check_disk
from ..errors import EXIT_FAILED, EXIT_OK, ZfcpdumpError

HELP = """\
Validate the dump on DISK (the whole disk or disk image, as for `dump`) without
writing: the zIPL boot record, the dump superblock and its checksum, the partition,
then the dump itself: not the busy marker of an interrupted capture, an ELF64 core
whose program headers and every PT_LOAD lie inside the dump area, or a kdump-compressed
dump (`dump --compress`) whose header, bitmaps and notes read and whose every page
descriptor points inside the dump area. With --meta FILE (written by `dump --meta
FILE`, raw captures) the SHA-256 of the dump's bytes must match too.

Exit status 0 when the dump is valid, 1 otherwise (the ERROR: line says why).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a dump on a prepared disk (reads only)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("disk", metavar="DISK", help="whole disk or disk image")
    p.add_argument("--meta", metavar="FILE",
                   help="ngdump.meta-style file from `dump --meta`: verify the SHA-256")
    p.add_argument("--block-size", type=int, choices=[512, 4096],
                   help="logical block size of a disk image (default: detected)")


def run(args: argparse.Namespace) -> int:
    def out(line: str) -> None:
        print(line, flush=True)

    out(f"Checking dump on {args.disk}:")
    try:
        check_disk(args.disk, meta_path=args.meta, block_size=args.block_size, out=out)
    except ZfcpdumpError as exc:
        sys.stdout.flush()
        first, _, rest = str(exc).partition("\n")
        print(f"ERROR: {first}", file=sys.stderr)
        if rest:
            print(rest, file=sys.stderr)
        out("Dump invalid")
        return EXIT_FAILED
    out("Dump valid")
    return EXIT_OK
