"""Ctrl-C within a second, whatever the main thread is doing.

Python runs its SIGINT handler (raising ``KeyboardInterrupt``) only between bytecodes of the
main thread, so a long native call (loading a model, compiling a pass) would delay it. A
watchdog thread learns of the signal through :func:`signal.set_wakeup_fd` the moment it
arrives; if the process is still running :data:`GRACE` seconds later (or on a second
Ctrl-C), it prints one line and ends the process with status 130.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
from types import TracebackType

from .parse import EXIT_INTERRUPTED, PROG

#: Seconds the main thread has, after Ctrl-C, to stop in order before the watchdog ends it.
GRACE = 1.0


class InterruptWatchdog:
    """A context manager that arms the watchdog in the main thread (elsewhere it does
    nothing); leaving it disarms the watchdog.

    Example:
        >>> with InterruptWatchdog("explain"):
        ...     pass
    """

    def __init__(self, command: str, grace: float = GRACE) -> None:
        self.command, self.grace = command, grace
        self._armed = False
        self._previous_fd = -1
        self._disarm = threading.Event()

    def __enter__(self) -> InterruptWatchdog:
        if threading.current_thread() is not threading.main_thread():
            return self
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return self  # someone else handles Ctrl-C (an embedding program)
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        try:
            self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        except ValueError:  # pragma: no cover - not the main interpreter
            os.close(self._read_fd)
            os.close(self._write_fd)
            return self
        self._armed = True
        threading.Thread(target=self._watch, name="gradcam-ctrl-c", daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if not self._armed:
            return
        self._disarm.set()
        signal.set_wakeup_fd(self._previous_fd)
        self._armed = False

    def _watch(self) -> None:
        interrupts = 0
        while not self._disarm.is_set():
            ready, _, _ = select.select([self._read_fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self._read_fd, 64)
            except BlockingIOError:
                continue
            interrupts += data.count(signal.SIGINT.to_bytes(1, "little"))
            if interrupts >= 2:
                self._end()
            if interrupts == 1 and not self._disarm.wait(self.grace):
                self._end()
        for descriptor in (self._read_fd, self._write_fd):
            os.close(descriptor)

    def _end(self) -> None:
        try:
            sys.stderr.write(f"\n{PROG} {self.command}: interrupted\n")
            sys.stderr.flush()
        finally:
            os._exit(EXIT_INTERRUPTED)
