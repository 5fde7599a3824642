"""Where :class:`GradCamCallback`'s images and scalars go, and the thread that sends them.

A sink is anything with ``add_image``, ``add_scalar``, ``flush`` and ``close`` (the
:class:`Sink` protocol); :class:`~gradcam_callbacks.tensorboard.EventWriter` is the one the
callback uses. :class:`BackgroundWriter` runs drawing-and-writing jobs on one worker thread,
one logged epoch at a time, so the training thread only computes the maps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from PIL import Image

__all__ = ["BackgroundWriter", "Sink"]


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


class BackgroundWriter:
    """Runs jobs ``job(sink)`` one at a time on a daemon worker thread.

    Back-pressure instead of a backlog: :meth:`submit` first waits until the previous job is
    done, so at most one job is ever pending. Training therefore overlaps with the writing
    of the previous logged epoch, memory stays bounded when the disk is slow, and a process
    killed at any moment loses at most the one job being written. A job that raises does not
    stop the worker: its error becomes a message naming the job, kept for :meth:`take_errors`
    (the caller warns, on its own thread).

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
        self._jobs: queue.Queue[tuple[Job, str] | None] = queue.Queue(maxsize=1)
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job, what: str) -> None:
        """Queue ``job`` after the previous one finished; ``what`` names it in errors."""
        if not self._thread.is_alive():
            raise RuntimeError("the background writer is closed")
        self._jobs.join()
        self._jobs.put((job, what))

    def drain(self) -> None:
        """Wait until every submitted job is done."""
        self._jobs.join()

    def take_errors(self) -> list[str]:
        """The messages of the jobs that failed since the last call, oldest first."""
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def close(self) -> None:
        """Finish the pending job, stop the worker and close the sink (its errors raise)."""
        if self._thread.is_alive():
            self._jobs.join()
            self._jobs.put(None)
            self._thread.join()
        self.sink.close()

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            try:
                if item is None:
                    return
                job, what = item
                try:
                    job(self.sink)
                except Exception as error:  # noqa: BLE001 - reported, never raised here
                    with self._lock:
                        self._errors.append(_describe(what, error))
            finally:
                # drop the job while waiting for the next: it holds its callback, which must
                # stay collectable (and so free its log directory) after a fit that raised
                item = job = None
                self._jobs.task_done()


def _describe(what: str, error: BaseException) -> str:
    if isinstance(error, OSError):
        return f"could not write {what} ({error})"
    return f"could not draw {what} ({type(error).__name__}: {error})"

