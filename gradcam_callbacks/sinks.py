"""Where :class:`GradCamCallback`'s images and scalars go, and the thread that sends them.

A sink is anything with ``add_image``, ``add_scalar``, ``flush`` and ``close`` (the
:class:`Sink` protocol); :class:`~gradcam_callbacks.tensorboard.EventWriter` is the one the
callback uses. :class:`BackgroundWriter` runs drawing-and-writing jobs on one worker thread,
one logged epoch at a time, so the training thread only computes the maps.
"""

from __future__ import annotations

import atexit
import collections
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from PIL import Image

__all__ = ["EXIT_WAIT_S", "BackgroundWriter", "Sink", "close_all"]


@runtime_checkable
class Sink(Protocol):
    """What the callback writes to: images and scalars by tag and step.

    Example:
        >>> import tempfile
        >>> from gradcam_callbacks.tensorboard import EventWriter
        >>> isinstance(EventWriter(tempfile.mkdtemp()), Sink)
        True
    """

    def add_image(self, tag: str, image: Image.Image, step: int,
                  description: str | None = None) -> None:
        """Record one image under ``tag`` at ``step``."""

    def add_scalar(self, tag: str, value: float, step: int,
                   description: str | None = None) -> None:
        """Record one number under ``tag`` at ``step``."""

    def flush(self) -> None:
        """Make what was recorded so far durable."""

    def close(self) -> None:
        """Flush and release the sink; a later write may reopen it."""


Job = Callable[[Sink], None]

EXIT_WAIT_S = 30.0
"""How long the interpreter's exit waits, in all, for background writers to finish the jobs
they hold (see :class:`BackgroundWriter`). One job is one logged epoch: drawing, encoding and
writing 16 probes x 2 methods took 1.3 to 2.7 s on a 2-core machine under a load average of
17, so 30 s leaves room for all seven methods and slow disks, yet is bounded, so that a hung
file system (an unreachable network share) cannot keep alive a process the user stopped with
Ctrl-C. A second Ctrl-C ends the wait."""

_LIVE: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


class BackgroundWriter:
    """Runs jobs ``job(sink)`` one at a time on a daemon worker thread.

    Back-pressure instead of a backlog: :meth:`submit` queues the job, then waits until the
    previous one is done, so at most one job waits while one is written. Training therefore
    overlaps with the writing of the previous logged epoch and memory stays bounded when the
    disk is slow. A job that raises does not stop the worker: its error becomes a message
    naming the job, kept for :meth:`take_errors` (the caller warns, on its own thread).

    A stopped process keeps what was submitted: when the interpreter exits (after Ctrl-C, an
    uncaught exception, ``sys.exit``), an exit handler waits for every live writer's jobs, at
    most :data:`EXIT_WAIT_S` seconds in all, and closes its sink. The worker is a daemon
    thread, which Python would otherwise stop mid-job at exit; the handler runs after
    non-daemon threads are joined and before daemon threads are stopped. ``kill -9`` (and
    signals without a Python handler, such as a default SIGTERM) run no exit handler: they
    lose at most the job being written, whose records written so far stay readable.

    Args:
        sink: Where jobs write.
        name: The worker thread's name.

    Example:
        >>> import tempfile
        >>> from gradcam_callbacks.tensorboard import EventWriter, read_events
        >>> log_dir = tempfile.mkdtemp()
        >>> writer = BackgroundWriter(EventWriter(log_dir))
        >>> writer.submit(lambda sink: sink.add_scalar("a", 1.0, 0), "step 0")
        >>> writer.close()
        >>> [r.tag for r in read_events(log_dir)], writer.take_errors()
        (['a'], [])
    """

    def __init__(self, sink: Sink, name: str = "gradcam-writer") -> None:
        self.sink = sink
        # submitted jobs, oldest first; a job stays here until it is done
        self._jobs: collections.deque[tuple[Job, str]] = collections.deque()
        self._changed = threading.Condition()
        self._closing = False
        self._errors: list[str] = []
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def submit(self, job: Job, what: str) -> None:
        """Queue ``job``, then wait until the previous one is done; ``what`` names it in
        errors. A job queued is written even if this wait is interrupted (Ctrl-C)."""
        with self._changed:
            if self._closing or not self._thread.is_alive():
                raise RuntimeError("the background writer is closed")
            self._jobs.append((job, what))
            self._changed.notify_all()
            self._changed.wait_for(lambda: len(self._jobs) <= 1 or not self._thread.is_alive())

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job is done, at most ``timeout`` seconds (None: no
        limit); True when they are."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._jobs or not self._thread.is_alive(), timeout)

    @property
    def pending(self) -> int:
        """How many submitted jobs are not done yet (the one being written included)."""
        return len(self._jobs)

    def take_errors(self) -> list[str]:
        """The messages of the jobs that failed since the last call, oldest first."""
        with self._changed:
            errors, self._errors = self._errors, []
        return errors

    def close(self, timeout: float | None = None) -> None:
        """Finish the submitted jobs (waiting at most ``timeout`` seconds), stop the worker
        and close the sink (its errors raise). Closing twice is harmless."""
        finished = self.drain(timeout)
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if finished:
            self._thread.join(timeout)
        _LIVE.discard(self)
        self.sink.close()

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._jobs or self._closing)
                if not self._jobs:
                    return
                job, what = self._jobs[0]
            try:
                job(self.sink)
            except Exception as error:  # noqa: BLE001 - reported, never raised here
                with self._changed:
                    self._errors.append(_describe(what, error))
            finally:
                # drop the job while waiting for the next: it holds what it draws, which
                # must stay collectable after a fit that raised
                job = None
                with self._changed:
                    self._jobs.popleft()
                    self._changed.notify_all()


def close_all(timeout: float = EXIT_WAIT_S) -> int:
    """Finish and close every live :class:`BackgroundWriter`, waiting at most ``timeout``
    seconds in all; returns how many still held unfinished jobs when time ran out. Runs at
    interpreter exit; failures are ignored there (a closing file system).

    Example:
        >>> close_all(timeout=1.0)
        0
    """
    deadline = time.monotonic() + timeout
    unfinished = 0
    for writer in list(_LIVE):
        if not writer.drain(max(0.0, deadline - time.monotonic())):
            unfinished += 1
            continue
        try:
            writer.close(timeout=max(0.0, deadline - time.monotonic()))
        except OSError:
            pass  # the records are on disk already; only the final sync failed
    return unfinished


def _close_at_exit() -> None:
    try:
        close_all()
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        pass


atexit.register(_close_at_exit)


def _describe(what: str, error: BaseException) -> str:
    if isinstance(error, OSError):
        return f"could not write {what} ({error})"
    return f"could not draw {what} ({type(error).__name__}: {error})"
