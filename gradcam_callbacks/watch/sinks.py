"""Where :class:`GradCamCallback`'s images and scalars go, and the thread that sends them.

A sink is anything with ``add_image``, ``add_scalar``, ``flush`` and ``close`` (the
:class:`Sink` protocol). ``GradCamCallback(sink=...)`` takes one or a list:
:class:`TensorBoardSink` (the default: event files in a run directory per fit, written by
:class:`~gradcam_callbacks.watch.tensorboard.EventWriter`), :class:`MLflowSink`, :class:`WandbSink`,
or any object meeting the protocol. Each step is drawn once and the same images go to every
sink (:class:`FanOut`); ``flush`` ends a step. :class:`BackgroundWriter` runs the
drawing-and-writing jobs on one worker thread, one logged epoch at a time, so the training
thread only computes the maps. No sink imports TensorFlow: MLflow and W&B are imported when
their sink first writes.
"""

from __future__ import annotations

import atexit
import collections
import importlib
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from PIL import Image

__all__ = ["EXIT_WAIT_S", "BackgroundWriter", "FanOut", "MLflowSink", "Sink", "TensorBoardSink",
           "WandbSink", "close_all"]


@runtime_checkable
class Sink(Protocol):
    """What the callback writes to: images and scalars by tag and step.

    Example:
        >>> import tempfile
        >>> from gradcam_callbacks.watch.tensorboard import EventWriter
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

    # A sink may also have ``start()``: the callback calls it when a fit begins, on the
    # training thread (MLflowSink finds the active run there); all other calls come from
    # the background writer's thread.


Job = Callable[[Sink], None]


class TensorBoardSink:
    """TensorBoard event files, the callback's default sink: each fit writes a run directory
    of its own under ``log_dir`` (see :mod:`gradcam_callbacks.watch.logdirs`; the callback claims
    and releases it, and names it in ``run_dir``). ``TensorBoardSink(d)`` in ``sink=`` is
    ``log_dir=d``; a ``sink=`` list without one writes no event files.

    Args:
        log_dir: The run directory; None: the callback's ``log_dir`` (default
            ``logs/gradcam/<YYYYmmdd-HHMMSS>``).

    Example:
        >>> TensorBoardSink("logs/run1/gradcam")
        TensorBoardSink(log_dir='logs/run1/gradcam')
        >>> from gradcam_callbacks import GradCamCallback
        >>> cam = GradCamCallback(x_val[:4], sink=TensorBoardSink("logs/run1/gradcam"))
    """

    def __init__(self, log_dir: str | os.PathLike | None = None) -> None:
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir must be a path or None; received log_dir={log_dir!r}")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)

    def __repr__(self) -> str:
        return f"TensorBoardSink(log_dir={self.log_dir!r})"


class FanOut:
    """Several sinks as one: every call goes to each, in order, with the same image (drawn
    once). A sink that raises does not stop the others: its first error of the step is kept
    and raised by :meth:`flush` (the step's end) or :meth:`close`, after every sink had
    every call (the background writer turns it into a warning).

    Example:
        >>> import tempfile
        >>> from gradcam_callbacks.watch.tensorboard import EventWriter
        >>> both = FanOut([EventWriter(tempfile.mkdtemp()), EventWriter(tempfile.mkdtemp())])
        >>> both.add_scalar("gradcam/nonfinite", 0.0, 0); both.close()
    """

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self._error: BaseException | None = None

    def _each(self, name: str, *args: Any, **kwargs: Any) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, name)(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - raised at the step's end
                self._error = self._error or error

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def add_image(self, tag: str, image: Image.Image, step: int,
                  description: str | None = None) -> None:
        self._each("add_image", tag, image, step, description=description)

    def add_scalar(self, tag: str, value: float, step: int,
                   description: str | None = None) -> None:
        self._each("add_scalar", tag, value, step, description=description)

    def flush(self) -> None:
        """Flush every sink, then raise the step's first error, if any."""
        self._each("flush")
        self._raise()

    def close(self) -> None:
        """Close every sink, then raise the first error since the last flush, if any."""
        self._each("close")
        self._raise()


def _optional(module: str, sink: str) -> Any:
    """Import an optional extra's package, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{sink} needs the {module} package: pip install "
                          f"'gradcam-callbacks[{module}]' (or pip install {module})") from error


def _mlflow_key(tag: str) -> str:
    """A tag as an MLflow key: characters MLflow refuses (``+`` of ``gradcam++``) become
    ``_``."""
    return re.sub(r"[^\w\-. /]", "_", tag)


def _mlflow_experiment(client: Any) -> str:
    """The id of the experiment ``mlflow.start_run()`` would use, from MLflow's documented
    settings (no private API): ``MLFLOW_EXPERIMENT_ID``, which ``mlflow.set_experiment`` also
    sets, then ``MLFLOW_EXPERIMENT_NAME`` (created if missing, as MLflow does), else ``"0"``."""
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if experiment_id:
        return experiment_id
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        experiment = client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment is not None else \
            client.create_experiment(name)
    return "0"


class MLflowSink:
    """Images and scalars to MLflow: the run active when the fit begins
    (``mlflow.active_run()`` on the training thread), else a run this sink creates then and
    ends when the fit ends (each fit then gets a run of its own, in the current experiment:
    the one ``mlflow.set_experiment`` chose, which MLflow keeps in ``MLFLOW_EXPERIMENT_ID``,
    else the one named by ``MLFLOW_EXPERIMENT_NAME``, created when missing, else MLflow's
    ``Default`` experiment, ``"0"``: where ``mlflow.start_run()`` would put it).

    Images go through ``log_image(image, key=tag, step=step)`` (MLflow's per-step image
    slider), scalars through ``log_metric(tag, value, step=step)``, each tag's description
    once as ``gradcam_descriptions/<tag>.txt``; all by run id through an ``MlflowClient``, as
    the writing happens on the callback's background thread (MLflow's active run is
    per-thread). Tags are MLflow keys with characters MLflow refuses replaced by ``_``
    (``gradcam/gradcam__/grid``). MLflow is imported when a fit begins (``pip install
    gradcam-callbacks[mlflow]``); it follows ``MLFLOW_TRACKING_URI`` or
    ``mlflow.set_tracking_uri`` (MLflow 3 prefers a ``sqlite:`` URI to the file store).

    Args:
        run_name: The name of a run this sink creates (when none is active).

    Attributes:
        run_id: The run written to by the current (or last) fit.

    Example:
        >>> from gradcam_callbacks import GradCamCallback
        >>> sink = MLflowSink(run_name="digits")  # mlflow is imported when a fit begins
        >>> cam = GradCamCallback(x_val[:4], sink=[TensorBoardSink("logs/both"), sink])
    """

    def __init__(self, run_name: str | None = None) -> None:
        self.run_name = run_name
        self.run_id: str | None = None
        self._started = False
        self._described: set[str] = set()
        self._client: Any = None

    def start(self) -> None:
        """At the fit's start, on the training thread: the active run, else a new one."""
        mlflow = _optional("mlflow", "MLflowSink")

        self._client = mlflow.MlflowClient()
        self._described = set()
        active = mlflow.active_run()
        if active is not None:
            self.run_id, self._started = active.info.run_id, False
        else:
            run = self._client.create_run(_mlflow_experiment(self._client),
                                          run_name=self.run_name)
            self.run_id, self._started = run.info.run_id, True

    def _check(self) -> Any:
        if self._client is None or self.run_id is None:
            raise RuntimeError("MLflowSink.start() was not called (GradCamCallback calls it "
                               "when a fit begins)")
        return self._client

    def add_image(self, tag: str, image: Image.Image, step: int,
                  description: str | None = None) -> None:
        client = self._check()
        client.log_image(self.run_id, image, key=_mlflow_key(tag), step=step)
        self._describe(client, tag, description)

    def add_scalar(self, tag: str, value: float, step: int,
                   description: str | None = None) -> None:
        client = self._check()
        client.log_metric(self.run_id, _mlflow_key(tag), float(value), step=step)
        self._describe(client, tag, description)

    def _describe(self, client: Any, tag: str, description: str | None) -> None:
        if description and tag not in self._described:
            self._described.add(tag)
            client.log_text(self.run_id, description,
                            f"gradcam_descriptions/{_mlflow_key(tag)}.txt")

    def flush(self) -> None:
        """MLflow writes each call at once: nothing to do."""

    def close(self) -> None:
        """End the run this sink created, if it did."""
        if self._started and self._client is not None:
            self._started = False
            self._client.set_terminated(self.run_id)


class WandbSink:
    """Images and scalars to Weights & Biases: the active run (``wandb.run``), else one
    ``wandb.init()`` starts with its usual settings (``WANDB_MODE``, ``WANDB_PROJECT``).

    One ``wandb.log`` per step, at its ``flush``: images as ``wandb.Image`` with their
    descriptions as captions, scalars as numbers, against the step metric ``gradcam/step``
    (our step: -1 for the untrained model, then the 0-based epoch), declared with
    ``wandb.define_metric`` so W&B's own step counter stays free for other loggers. W&B is
    imported at the first write (``pip install gradcam-callbacks[wandb]``); unlike W&B's Keras
    callbacks this needs no TensorFlow.

    Example:
        >>> from gradcam_callbacks import GradCamCallback
        >>> cam = GradCamCallback(x_val[:4], sink=WandbSink())  # wandb imported when written
    """

    STEP = "gradcam/step"
    """The step metric the images and scalars are plotted against."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] = {}
        self._step: int | None = None
        self._run: Any = None
        self._started = False

    def start(self) -> None:
        """At the fit's start: W&B must be installed (the run is found at the first write)."""
        _optional("wandb", "WandbSink")

    def _wandb(self) -> Any:
        wandb = _optional("wandb", "WandbSink")

        if wandb.run is None:
            wandb.init()
            self._started = True
        if self._run is not wandb.run:
            self._run = wandb.run
            wandb.define_metric(self.STEP)
            wandb.define_metric("gradcam/*", step_metric=self.STEP)
        return wandb

    def add_image(self, tag: str, image: Image.Image, step: int,
                  description: str | None = None) -> None:
        wandb = self._wandb()
        self._at(step)
        self._pending[tag] = wandb.Image(image, caption=description)

    def add_scalar(self, tag: str, value: float, step: int,
                   description: str | None = None) -> None:
        self._wandb()
        self._at(step)
        self._pending[tag] = float(value)

    def _at(self, step: int) -> None:
        if self._step is not None and step != self._step:
            self.flush()
        self._step = step

    def flush(self) -> None:
        """Log the step's images and scalars in one ``wandb.log``."""
        if self._pending and self._run is not None:
            pending, self._pending = self._pending, {}
            self._run.log({**pending, self.STEP: self._step})

    def close(self) -> None:
        """Log what is pending; finish the run this sink started, if it did."""
        self.flush()
        if self._started and self._run is not None:
            self._started = False
            self._run.finish()
            self._run = None

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
        >>> from gradcam_callbacks.watch.tensorboard import EventWriter, read_events
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
