"""`zfcpdump mount DUMP DIR`: DIR/dump.<fmt> as a read-only FUSE file (zgetdump -m)."""

from __future__ import annotations

import argparse

from .zgetdump import SELECTS, do_mount


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mount", help="mount a dump as DIR/dump.<fmt> (FUSE)")
    p.add_argument("dump")
    p.add_argument("dir")
    p.add_argument("-f", "--fmt", choices=("elf", "s390"), default="elf")
    p.add_argument("-s", "--select", choices=SELECTS)
    p.add_argument("--partition", type=int)
    p.add_argument("--foreground", action="store_true", help="stay in the foreground")


def run(args: argparse.Namespace) -> int:
    return do_mount(args.dump, args.dir, args.fmt, select=args.select,
                    partition=args.partition, foreground=args.foreground, s390x_only=False)
