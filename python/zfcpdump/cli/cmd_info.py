"""`zfcpdump info DUMP`: zgetdump -i (behaviour.md §6.3), or --json."""

from __future__ import annotations

import argparse

from .zgetdump import SELECTS, do_info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print dump information and validate the dump (zgetdump -i)")
    p.add_argument("dump", help="dump file, block device, or IMAGE:N")
    p.add_argument("-V", "--verbose", action="count", default=0, help="one memory map line per chunk")
    p.add_argument("-s", "--select", choices=SELECTS)
    p.add_argument("--partition", type=int, help="partition N inside a disk image")
    p.add_argument("--json", action="store_true", help="print a JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    return do_info(args.dump, select=args.select, verbose=args.verbose,
                   partition=args.partition, as_json=args.json, s390x_only=False)
