"""Ctrl-C within a second, whatever the main thread is doing (when run as a program).

Python runs its SIGINT handler (raising ``KeyboardInterrupt``) only between bytecodes of the
main thread, and no Python thread runs while the main thread holds the GIL in a native call
(``dlopen`` of a backend's libraries while Keras is imported can take seconds). So:

- While nothing has been written (:func:`loading`: importing Keras, loading the model),
  SIGINT keeps the operating system's default action: the process ends at once, killed by
  the signal, which a shell reports as status 130.
- Once outputs are written (:func:`working`), Ctrl-C raises ``KeyboardInterrupt`` so that the
  run stops in order (the PNG being written is finished, every JSON line is whole), and a
  watchdog thread, told of the signal through :func:`signal.set_wakeup_fd`, ends the process
  with status 130 if it still runs :data:`GRACE` seconds later or on a second Ctrl-C.

Called in-process (``main(argv)``, e.g. from a notebook), nothing here changes Python's
own Ctrl-C handling.
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


_program: InterruptWatchdog | None = None


def loading() -> None:
    """From here on (until :func:`working`), Ctrl-C ends the process at once.

    Only when running as a program (inside :class:`InterruptWatchdog`); else a no-op.

    Example:
        >>> loading()
    """
    if _program is not None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def working() -> None:
    """From here on, Ctrl-C raises ``KeyboardInterrupt``, with the watchdog behind it.

    Example:
        >>> working()
    """
    if _program is not None:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class InterruptWatchdog:
    """A context manager for a run as a program: arms the watchdog in the main thread
    (elsewhere it does nothing) and enables :func:`loading` and :func:`working`; leaving it
    disarms the watchdog and restores Python's handler.

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
        global _program
        _program = self
        threading.Thread(target=self._watch, name="gradcam-ctrl-c", daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if not self._armed:
            return
        global _program
        _program = None
        signal.signal(signal.SIGINT, signal.default_int_handler)
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
