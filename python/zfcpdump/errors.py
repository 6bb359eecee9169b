"""Error types and exit codes shared by every command.

Readers raise NotThisFormat ("not mine, try the next reader") or DumpDamaged
("mine but broken"), as zgetdump's readers return -ENODEV / -EINVAL.
The CLI turns every ZfcpdumpError into one stderr line and its exit code.
"""

from __future__ import annotations

# Exit codes (documented in the README and in `zfcpdump --help`).
EXIT_OK = 0
EXIT_FAILED = 1  # dump failed, refusal, bad input
EXIT_USAGE = 2  # bad command line
EXIT_SIGNAL_BASE = 128  # 128 + N when stopped by signal N


class ZfcpdumpError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code = EXIT_FAILED


class NotThisFormat(ZfcpdumpError):
    """The input is not in the format a reader handles."""


class DumpDamaged(ZfcpdumpError):
    """The input is recognised but damaged or incomplete."""


class InvalidCore(ZfcpdumpError):
    """An ELF core that cannot be dumped or read (bad header, bounds, notes)."""


class DiskRefused(ZfcpdumpError):
    """The target disk or partition is not one we may write to."""


class DumpFailed(ZfcpdumpError):
    """The capture failed after it started; the message is the ERROR: line."""


class UsageError(ZfcpdumpError):
    exit_code = EXIT_USAGE
