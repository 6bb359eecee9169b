"""Progress reporting: zfcpdump's line every 10 s (behaviour.md §2.4), zgetdump's copy
lines (§6.5), and a live bar when the stream is a terminal."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

MIB = 1 << 20


def mib(n: int) -> int:
    """MiB rounded to nearest, halves up (behaviour.md §6.9)."""
    return (n + (MIB >> 1)) // MIB


def zfcpdump_line(done: int, total: int, elapsed_s: float) -> str:
    seconds = int(elapsed_s)
    pct = 100.0 * done / total if total else 100.0
    rate = done // seconds if seconds >= 1 else 0
    if rate:
        left = (total - done) // rate
        eta = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
    else:
        eta = "unknown"
    return f" {mib(done):6d} of {mib(total)} MB {pct:5.1f}% {mib(rate):4d} MB/s {eta:<5} ETA"


def zgetdump_line(done: int, total: int) -> str:
    return f"  {mib(done):08d} / {mib(total):08d} MB"


class Progress:
    """Calls `emit(line)` at 0, then at most every `interval_s`, and once at the end;
    draws a bar on `tty` (a terminal stream) in between."""

    def __init__(self, total: int, emit: Callable[[str], None], *, style: str = "zfcpdump",
                 interval_s: float = 10.0, tty: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic, start: Optional[float] = None):
        self.total = total
        self.emit = emit
        self.style = style
        self.interval_s = interval_s
        self.clock = clock
        self.start = clock() if start is None else start
        self.tty = tty if tty is not None and tty.isatty() else None
        self.last_line = -1e18
        self.last_bar = -1e18
        self.done = 0
        self.finished = False

    def _line(self, done: int, now: float) -> str:
        if self.style == "zgetdump":
            return zgetdump_line(done, self.total)
        return zfcpdump_line(done, self.total, now - self.start)

    def update(self, done: int) -> None:
        self.done = done
        now = self.clock()
        if now - self.last_line >= self.interval_s or self.last_line < -1e17:
            self._clear_bar()
            self.emit(self._line(done, now))
            self.last_line = now
        elif self.tty and now - self.last_bar >= 0.2:
            self._draw_bar(done, now)

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._clear_bar()
        self.emit(self._line(self.done, self.clock()))

    def _draw_bar(self, done: int, now: float) -> None:
        assert self.tty is not None
        width = 30
        frac = done / self.total if self.total else 1.0
        fill = int(width * frac)
        elapsed = max(now - self.start, 1e-9)
        self.tty.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {frac * 100:5.1f}% "
                       f"{done / elapsed / MIB:7.1f} MiB/s")
        self.tty.flush()
        self.last_bar = now

    def _clear_bar(self) -> None:
        if self.tty and self.last_bar > -1e17:
            self.tty.write("\r" + " " * 60 + "\r")
            self.tty.flush()
            self.last_bar = -1e18


def stderr_tty() -> Optional[TextIO]:
    return sys.stderr if sys.stderr.isatty() else None
