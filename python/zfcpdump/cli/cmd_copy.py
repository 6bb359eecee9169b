"""`zfcpdump copy DUMP [OUT]`: copy or convert a dump (zgetdump DUMP > OUT)."""

from __future__ import annotations

import argparse

from .zgetdump import SELECTS, do_copy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("copy", help="copy or convert a dump to a new file or stdout")
    p.add_argument("dump", help="dump file, block device, or IMAGE:N")
    p.add_argument("output", nargs="?", help="new file (default: standard output)")
    p.add_argument("-f", "--fmt", choices=("elf", "s390"), default="elf")
    p.add_argument("-s", "--select", choices=SELECTS)
    p.add_argument("--partition", type=int, help="partition N inside a disk image")
    p.add_argument("--engine", choices=("rust", "python"), default="rust",
                   help="bulk copy engine (default rust)")


def run(args: argparse.Namespace) -> int:
    return do_copy(args.dump, args.output, args.fmt, select=args.select,
                   partition=args.partition, engine=args.engine, s390x_only=False)
