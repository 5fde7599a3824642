"""``explain``'s progress bar and messages on stderr."""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import TextIO


class Progress:
    """A one-line progress bar on stderr: count, share, rate, time left and failures.

    Draws nothing unless ``enabled`` (the CLI enables it on a terminal, without --quiet);
    messages are printed either way, above the bar. Safe to call from several threads.

    Example:
        >>> bar = Progress(10, enabled=False)
        >>> bar.advance(failed=False); bar.done
        1
    """

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.done = self.failed = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._width = 0
        self._lock = threading.Lock()

    @property
    def elapsed(self) -> float:
        """Seconds since the bar was made."""
        return time.monotonic() - self._started

    def advance(self, failed: bool) -> None:
        """Count one more input (``failed`` or not) and redraw, at most ten times a second."""
        with self._lock:
            self.done += 1
            self.failed += bool(failed)
            now = time.monotonic()
            if self.enabled and (now - self._drawn >= 0.1 or self.done == self.total):
                self._drawn = now
                self._draw(now)

    def message(self, line: str) -> None:
        """Print a line above the bar."""
        with self._lock:
            self._clear()
            print(line, file=self.stream, flush=True)
            if self.enabled and self.done:
                self._draw(time.monotonic())

    def close(self) -> None:
        """End the bar's line."""
        with self._lock:
            self._clear()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else math.inf
        filled = int(24 * self.done / max(self.total, 1))
        eta = "--:--" if math.isinf(left) else f"{int(left) // 60:02d}:{int(left) % 60:02d}"
        line = (f"[{'#' * filled}{'.' * (24 - filled)}] {self.done}/{self.total} "
                f"{100 * self.done / max(self.total, 1):3.0f}% {rate:.1f} img/s ETA {eta}"
                + (f" ({self.failed} failed)" if self.failed else ""))
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def _clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
