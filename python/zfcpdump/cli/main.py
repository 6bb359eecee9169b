"""`zfcpdump`: one CLI, one module per subcommand (cli/cmd_<name>.py).

Each command module has `register(subparsers)` and `run(args) -> int`. Errors the
project raises on purpose end in one stderr line and a documented exit code; a
traceback only with --debug.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from typing import NoReturn, Optional, Sequence

from ..errors import EXIT_FAILED, EXIT_SIGNAL_BASE, EXIT_USAGE, ZfcpdumpError

# Order is the order of `zfcpdump --help`.
COMMANDS = ["dump", "prepare", "info", "device", "copy", "check", "mount", "umount", "bench", "demo"]

EPILOG = """\
exit status:
  0    success ("Dump successful")
  1    failure: dump failed, disk refused, bad input
  2    usage error
  128+N  stopped by signal N (130 for Ctrl-C, 143 for SIGTERM)

With no command, `zfcpdump` runs `zfcpdump dump` with its defaults (/proc/vmcore to
/dev/sda), as s390-tools' zfcpdump does in a dump kernel.
"""


class SignalExit(BaseException):
    """Raised from a signal handler (SIGTERM, SIGHUP) so the capture unwinds cleanly."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_signal(signum: int, _frame: object) -> None:
    raise SignalExit(signum)


class _VersionAction(argparse.Action):
    """--version, reading the version only when asked (see zfcpdump.__getattr__)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 help: Optional[str] = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[no-untyped-def]
        from .. import __version__

        sys.stdout.write(f"zfcpdump {__version__}\n")
        parser.exit()


#: the global options that take no value (--help and --version end the program)
GLOBAL_FLAGS = ("--debug",)


class _Parser(argparse.ArgumentParser):
    """One line for a usage error (the usage block is what --help is for); the
    subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = _Parser(
        prog="zfcpdump",
        description="Capture a crashed Linux system's memory (/proc/vmcore) to a prepared "
        "SCSI dump partition, byte-compatible with s390-tools, and read dumps back.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".cmd_{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"cmd_{name}"):
                continue  # command not built yet
            raise
        module.register(sub)  # type: ignore[attr-defined]
        modules[name] = module
    return parser, modules


def _parse(parser: argparse.ArgumentParser, args_list: list[str]) -> argparse.Namespace:
    """Options may also come between a command's positionals (`copy DUMP --fmt s390
    OUT`), which plain parsing takes the second positional for an unknown argument."""
    args, extra = parser.parse_known_args(args_list)
    if not extra:
        return args
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = commands.choices.get(args.command) if args.command else None
    if sub is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # the command's first occurrence is the command: global options take no values
    at = args_list.index(args.command)
    # a fresh namespace with the global options only: counted options must not add up twice
    own = {a.dest for a in parser._actions if a.option_strings}
    fresh = argparse.Namespace(**{k: v for k, v in vars(args).items() if k in own},
                               command=args.command)
    return sub.parse_intermixed_args(args_list[at + 1:], namespace=fresh)


def _with_default_command(args_list: list[str]) -> list[str]:
    """With no command `zfcpdump` runs `dump`, as s390-tools' zfcpdump does: after the
    global flags, nothing or an option (not help or version) is the dump command's."""
    at = 0
    while at < len(args_list) and args_list[at] in GLOBAL_FLAGS:
        at += 1
    rest = args_list[at:]
    if not rest or (rest[0].startswith("-") and rest[0] not in ("-h", "--help", "--version")):
        return [*args_list[:at], "dump", *rest]
    return args_list


def main(argv: Optional[Sequence[str]] = None) -> int:
    args_list = _with_default_command(list(sys.argv[1:] if argv is None else argv))
    parser, modules = build_parser()
    try:
        args = _parse(parser, args_list)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_signal)
    try:
        return int(modules[args.command].run(args))  # type: ignore[attr-defined]
    except ZfcpdumpError as exc:
        if args.debug:
            raise
        print(f"zfcpdump: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zfcpdump: interrupted", file=sys.stderr)
        return EXIT_SIGNAL_BASE + signal.SIGINT
    except SignalExit as exc:
        print(f"zfcpdump: stopped by signal {exc.signum}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + exc.signum
    except BrokenPipeError:
        return EXIT_FAILED
    except OSError as exc:
        # a failure the command did not put in its own words: still one line, no traceback
        if args.debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"zfcpdump: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
