"""`zfcpdump prepare`: make a partition a dump target (`zipl -d` for SCSI)."""

from __future__ import annotations

import argparse

from ..disk.target import partition_for_prepare
from ..errors import EXIT_OK
from ..prepare import DEFAULT_IMAGE, DEFAULT_INITRD, prepare

HELP = """\
Prepare PARTITION as a zfcpdump dump target, as `zipl -d` does on a SCSI disk: the
zIPL boot record (scsi_mbr with boot_info: dump, SCSI) goes into block 0 of the disk
(the partition table is kept), the dump superblock and the dump-tool area go at the end
of the partition, and the first 64 KiB of the partition are zeroed.

PARTITION is a partition node (/dev/sdb1, /dev/loop0p1), or a disk image file together
with --partition N (MBR or GPT; works without root).

The dump tool: with --image (default /lib/s390-tools/zfcpdump/zfcpdump-image) and an
optional --initrd, zipl's space reservation is used exactly, so the maximum dump size
matches zipl's, and the kernel, parameter line and initrd are stored in the tool area.
No zipl stage-3 loader is written: the disk is recognised by zfcpdump and by
`zgetdump -d`, but to IPL it on IBM Z run s390-tools' `zipl -d` there.
With --metadata-only, no kernel is installed and only 8 blocks are reserved.

A partition that holds a dump (ELF header or busy marker) is refused unless --force.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="prepare a partition as a dump target (zipl -d)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("partition", metavar="PARTITION", help="partition node, or disk image file")
    p.add_argument("-p", "--partition", dest="number", type=int, metavar="N",
                   help="partition number, when PARTITION is a disk image (or a whole disk)")
    p.add_argument("--block-size", type=int, choices=[512, 4096],
                   help="logical block size of a disk image (default: detected, else 512)")
    p.add_argument("--image", default=None,
                   help=f"dump kernel image (default {DEFAULT_IMAGE})")
    p.add_argument("--initrd", default=None,
                   help=f"dump ramdisk (default {DEFAULT_INITRD} when it exists)")
    p.add_argument("--metadata-only", action="store_true",
                   help="install no dump kernel: superblock, boot record and script only")
    p.add_argument("--force", action="store_true",
                   help="overwrite a partition that holds a dump")


def run(args: argparse.Namespace) -> int:
    import os

    image = initrd = None
    if not args.metadata_only:
        image = args.image or DEFAULT_IMAGE
        initrd = args.initrd or (DEFAULT_INITRD if args.image is None and os.path.exists(DEFAULT_INITRD) else None)
    part = partition_for_prepare(args.partition, args.number, args.block_size)
    result = prepare(part, image, initrd, force=args.force)
    print(f"Maximum dump size: {result.dump_size} bytes ({result.dump_size >> 20} MB)")
    return EXIT_OK
