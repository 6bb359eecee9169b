"""`zfcpdump umount DIR`: unmount a dump mounted with `zfcpdump mount` (zgetdump -u)."""

from __future__ import annotations

import argparse

from .zgetdump import do_umount


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("umount", help="unmount a mounted dump")
    p.add_argument("dir")


def run(args: argparse.Namespace) -> int:
    return do_umount(args.dir)
