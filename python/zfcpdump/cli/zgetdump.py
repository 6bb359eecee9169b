"""`zgetdump`: s390-tools' option syntax over the read-back package (behaviour.md §6).

    zgetdump DUMP [-s SYS] [-f FMT] > FILE      copy or convert to stdout
    zgetdump DUMP [-s SYS] [-f FMT] FILE        copy into a new file (O_EXCL, 0600)
    zgetdump -i DUMP [-s SYS] [-V]              dump info
    zgetdump -d DUMPDEV                         dump tool on a SCSI disk
    zgetdump -m DUMP [-s SYS] [-f FMT] DIR      FUSE mount;  zgetdump -u DIR

Every message goes to stderr as `zgetdump: <text>`; the exit status is 1 on any error.
The do_* functions are shared with the `zfcpdump info/device/copy/mount/umount` commands.
"""

from __future__ import annotations

import getopt
import os
import sys
from typing import Optional, Sequence, TextIO

from ..errors import ZfcpdumpError

PROG = "zgetdump"
HELP = """\
Usage: zgetdump    DUMP [-s SYS] [-f FMT] > DUMP_FILE
                   DUMP [-s SYS] [-f FMT] DUMP_FILE
                -m DUMP [-s SYS] [-f FMT] DIR
                -i DUMP [-s SYS]
                -d DUMPDEV
                -u DIR

The zgetdump tool reads s390, s390_ext, ELF and kdump dumps from a dump device, a
partition (also IMAGE:N inside a disk image) or a dump file. You can use it to:

  - Write the dump content to standard output or to a new file
  - Mount the dump content to a Linux directory
  - Convert a dump to a different dump format
  - Check if a dump is valid
  - Check if a SCSI disk contains a valid dump tool

-m, --mount    Mount DUMP to mount point DIR
-u, --umount   Unmount dump from mount point DIR
-i, --info     Print DUMP information
-f, --fmt      Specify target dump format FMT ("elf" or "s390")
-s, --select   Select system data SYS ("kdump", "prod", or "all")
-d, --device   Print DUMPDEV (dump device) information
-v, --version  Print version information, then exit
-V, --verbose  More detail (-i: one memory map line per chunk)
    --engine   Copy engine: "rust" (default) or "python"
-h, --help     Print this help, then exit
"""
SELECTS = ("kdump", "prod", "all")


class Fatal(ZfcpdumpError):
    pass


def _lines(err: Optional[TextIO], lines: Sequence[str]) -> None:
    err = err or sys.stderr
    err.write("".join(line + "\n" for line in lines))
    err.flush()


# ---- actions (shared with cli/cmd_*.py) -------------------------------------------
def do_info(path: str, *, select: Optional[str] = None, verbose: int = 0,
            partition: Optional[int] = None, as_json: bool = False,
            err: Optional[TextIO] = None, out: Optional[TextIO] = None,
            s390x_only: bool = True) -> int:
    from ..info import incomplete_lines, info_dict, info_lines
    from ..readers import DumpIncomplete, open_dump

    try:
        dump = open_dump(path, select=select, partition=partition, s390x_only=s390x_only)
    except DumpIncomplete as exc:
        if as_json:
            import json
            (out or sys.stdout).write(json.dumps({"error": str(exc), "detail": exc.detail,
                                  "format": exc.format}) + "\n")
        else:
            _lines(err, incomplete_lines(exc.partial, verbose))
        return 1
    with dump:
        if as_json:
            import json
            (out or sys.stdout).write(json.dumps(info_dict(dump), indent=2) + "\n")
        else:
            _lines(err, info_lines(dump, verbose))
    return 0


def do_device(path: str, *, allow_image: bool = False, err: Optional[TextIO] = None) -> int:
    from ..info import device_info

    _lines(err, device_info(path, allow_image=allow_image).lines())
    return 0


def do_copy(path: str, out_path: Optional[str], fmt: str = "elf", *,
            select: Optional[str] = None, partition: Optional[int] = None,
            engine: str = "rust", err: Optional[TextIO] = None, s390x_only: bool = True) -> int:
    from ..readback import copy_with_messages, open_output
    from ..readers import open_dump
    from ..writers import get_writer

    writer = get_writer(fmt)
    if out_path is None and os.isatty(1):
        raise Fatal("Cannot write the dump to a terminal: redirect standard output "
                    "or give an output file")
    with open_dump(path, select=select, partition=partition, s390x_only=s390x_only) as dump:
        layout = writer(dump)
        fd = open_output(out_path) if out_path is not None else 1
        try:
            copy_with_messages(layout, fd, dump.format, fmt, engine=engine, err=err)
        finally:
            if out_path is not None:
                os.close(fd)
    return 0


def do_mount(path: str, mount_point: str, fmt: str = "elf", *, select: Optional[str] = None,
             partition: Optional[int] = None, foreground: bool = False,
             s390x_only: bool = True) -> int:
    from ..fuse import mount
    from ..readers import open_dump
    from ..writers import get_writer

    dump = open_dump(path, select=select, partition=partition, s390x_only=s390x_only)
    try:
        mount(get_writer(fmt)(dump), mount_point, fmt, foreground=foreground)
    finally:
        dump.close()
    return 0


def do_umount(mount_point: str) -> int:
    from ..fuse import umount_dir

    umount_dir(mount_point)
    return 0


# ---- option parsing ---------------------------------------------------------------
def _parse(argv: list[str]) -> dict:
    try:
        opts, args = getopt.gnu_getopt(
            argv, "hvVidmus:f:X",
            ["help", "version", "info", "device", "mount", "umount", "fmt=", "select=",
             "debug", "verbose", "engine="])
    except getopt.GetoptError as exc:
        raise Fatal(f"{exc.msg}\nTry '{PROG} --help' for more information.") from None
    o: dict = {"action": "copy", "action_set": False, "fmt": "elf", "fmt_set": False,
               "select": None, "verbose": 0, "engine": "rust", "args": args}
    for opt, val in opts:
        if opt in ("-h", "--help"):
            o["action"] = "help"
            return o
        if opt in ("-v", "--version"):
            o["action"] = "version"
            return o
        if opt in ("-V", "--verbose"):
            o["verbose"] += 1
        elif opt in ("-i", "--info", "-d", "--device", "-m", "--mount", "-u", "--umount"):
            if o["action_set"]:
                raise Fatal('Please specify only one of the "-i", "-d", "-m" or "-u" option')
            o["action"] = {"i": "info", "d": "device", "m": "mount", "u": "umount"}[opt.lstrip("-")[0]]
            o["action_set"] = True
        elif opt in ("-f", "--fmt"):
            if val not in ("elf", "s390"):
                raise Fatal(f'Invalid target format "{val}" specified')
            o["fmt"], o["fmt_set"] = val, True
        elif opt in ("-s", "--select"):
            if val not in SELECTS:
                raise Fatal(f'Invalid select argument "{val}" specified')
            o["select"] = val
        elif opt == "--engine":
            if val not in ("rust", "python"):
                raise Fatal(f'Invalid engine "{val}" specified')
            o["engine"] = val
    _verify(o)
    return o


def _verify(o: dict) -> None:
    action, args = o["action"], o["args"]
    if o["select"] and action not in ("mount", "copy", "info"):
        raise Fatal('The "--select" option can only be specified for info, mount, or copy')
    if o["fmt_set"] and action in ("info", "device", "umount"):
        word = {"info": "--info", "device": "--device", "umount": "--umount"}[action]
        raise Fatal(f'The "--fmt" option cannot be specified together with "{word}"')
    if action in ("info", "device", "copy") and not args:
        raise Fatal("No device or dump specified")
    limit = {"info": 1, "device": 1, "copy": 2, "mount": 2, "umount": 1}[action]
    if action == "mount" and len(args) == 0:
        raise Fatal("No dump specified")
    if action == "mount" and len(args) == 1:
        raise Fatal("No mount point specified")
    if action == "umount" and not args:
        raise Fatal("No mount point specified")
    if len(args) > limit:
        raise Fatal("Too many positional parameters specified")


def run(argv: list[str]) -> int:
    o = _parse(argv)
    action, args = o["action"], o["args"]
    if action == "help":
        sys.stdout.write(HELP)
        return 0
    if action == "version":
        from .. import __version__

        sys.stdout.write(f"{PROG}: Tool for copying and converting dumps version {__version__}\n")
        return 0
    if action == "info":
        return do_info(args[0], select=o["select"], verbose=o["verbose"])
    if action == "device":
        return do_device(args[0])
    if action == "mount":
        return do_mount(args[0], args[1], o["fmt"], select=o["select"])
    if action == "umount":
        return do_umount(args[0])
    return do_copy(args[0], args[1] if len(args) > 1 else None, o["fmt"],
                   select=o["select"], engine=o["engine"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except ZfcpdumpError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        detail = getattr(exc, "detail", "")
        if detail and ("-V" in args or "--verbose" in args):
            sys.stderr.write(f"{PROG}: ({detail})\n")
        return 1
    except BrokenPipeError:
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"{PROG}: {exc.strerror or exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
