"""`zfcpdump device DISK`: zgetdump -d (behaviour.md §6.4); disk images are accepted too."""

from __future__ import annotations

import argparse

from .zgetdump import do_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("device", help="show the dump tool on a SCSI disk (zgetdump -d)")
    p.add_argument("disk", help="whole disk block device or disk image file")


def run(args: argparse.Namespace) -> int:
    return do_device(args.disk, allow_image=True)
