"""Where ``GradCamCallback``'s logged steps go, fit by fit: the run directory of each fit
(:mod:`gradcam_callbacks.watch.logdirs`), its sinks, and the background writer that draws and
writes each step while the next epoch trains, until the fit ends, raises or is deleted.

Nothing here may end a training run: failures become one ``RuntimeWarning`` each
(:func:`warn`), and the next logged epoch tries again.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from typing import Any

import numpy as np

from . import logdirs
from .distribute import is_chief
from .report import EpochMaps, Measures, ProbeReport
from .sinks import EXIT_WAIT_S, BackgroundWriter, FanOut, Sink
from .tensorboard import EventWriter

__all__ = ["GOES_ON", "FitRun", "optimizer_steps", "warn"]

GOES_ON = "training goes on and the next logged epoch tries again"

Job = tuple[ProbeReport, EpochMaps, Measures | None]


def warn(message: str) -> None:
    """Warn, as ``GradCamCallback``, of a failure that does not end the fit.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn(f"could not write step 0 (OSError: disk full); {GOES_ON}")
        >>> str(caught[0].message)[:40]
        'GradCamCallback could not write step 0 ('
    """
    warnings.warn(f"GradCamCallback {message}", RuntimeWarning, stacklevel=3)


class FitRun:
    """One callback's fits, seen from their output: :meth:`start` takes the fit's run
    directory (one per fit, so that no two fits share steps) and starts its sinks and a
    :class:`~gradcam_callbacks.watch.sinks.BackgroundWriter` on them; :meth:`submit` hands it one
    logged step; :meth:`stop` finishes the writing and lets the directory go.

    A fit that raised (Ctrl-C, another callback's error) never calls :meth:`stop`: the next
    :meth:`start` does, and so does this object's deletion (with its callback), bounded as at
    the interpreter's exit (:data:`~gradcam_callbacks.watch.sinks.EXIT_WAIT_S`), where
    :func:`~gradcam_callbacks.watch.sinks.close_all` waits for every writer.

    Attributes:
        fits: How many fits have started.
        run_dir: The run directory of the current (or last) fit; None without event files.

    Example:
        >>> run = FitRun()
        >>> run.start([], "logs/fit-run", tensorboard=True)
        >>> run.run_dir, run.writing
        ('logs/fit-run', True)
        >>> run.stop()
    """

    def __init__(self) -> None:
        self.fits = 0
        self.run_dir: str | None = None
        self._writer: BackgroundWriter | None = None
        self._run: logdirs.RunDir | None = None
        self._release: weakref.finalize | None = None

    @property
    def writing(self) -> bool:
        """Whether a fit's writer is open (not on the chief process, or after :meth:`stop`:
        False)."""
        return self._writer is not None

    def start(self, sinks: list[Sink], log_dir: str, tensorboard: bool) -> None:
        """A new fit: the previous one's writing stopped; on the chief process alone, the
        ``sinks`` started, and with ``tensorboard`` an event file in a run directory of the
        fit's own, ``log_dir`` or the first free ``log_dir-N``."""
        self.stop()
        self.fits += 1
        if not is_chief():  # only one process of a distributed run writes
            return
        sinks = list(sinks)
        for sink in sinks:  # on the training thread (MLflow's active run is per-thread)
            start = getattr(sink, "start", None)
            if callable(start):
                start()
        run = None
        if tensorboard:
            run = self._run = logdirs.take_run_dir(log_dir)
            self.run_dir = run.path
            if self.fits == 1 and run.path != log_dir:
                warnings.warn(f"GradCamCallback writes this fit to {run.path!r}: log_dir="
                              f"{log_dir!r} is another fit's run (one run directory per "
                              "fit, so that no two fits share steps)", UserWarning,
                              stacklevel=4)
            sinks.insert(0, EventWriter(run.path, png_compress_level=1))
        # one sink: as before; several: drawn once, sent to each
        self._writer = BackgroundWriter(sinks[0] if len(sinks) == 1 else FanOut(sinks))
        # a fit that raised (no on_train_end), then deleted with its callback, still
        # finishes its writing and lets its directory go; the finalizer holds neither
        self._release = weakref.finalize(self, _finish, self._writer, run)
        self._release.atexit = False  # at exit, sinks.close_all waits for all, bounded

    def submit(self, jobs: list[Job], step: int, log_dir: str) -> None:
        """Hand ``step`` (each method's report, maps and measures) to the writer: it waits
        for the previous step only."""
        if self._writer is None:
            return
        try:
            # the job holds the reports, not the callback: a callback whose fit raised stays
            # collectable (and frees its log directory) while its last step is written
            self._writer.submit(functools.partial(_write_reports, jobs),
                                f"step {step} to {log_dir!r}")
        except Exception as error:  # noqa: BLE001 - e.g. the writer thread is gone
            warn(f"could not queue step {step} ({type(error).__name__}: {error}); {GOES_ON}")

    def flush(self) -> None:
        """Wait until every step submitted is written, and flush the sinks."""
        if self._writer is None:
            return
        self._writer.drain()
        try:
            self._writer.sink.flush()
        except OSError as error:
            warn(f"could not sync its event file ({error})")
        except Exception as error:  # noqa: BLE001 - a sink's own error (MLflow, W&B)
            warn(f"could not flush its sinks ({type(error).__name__}: {error})")
        self.report_errors()

    def stop(self) -> None:
        """Finish the fit's writing, close its sinks and let its run directory go."""
        writer, self._writer = self._writer, None
        release, self._release = self._release, None
        if release is not None:
            release.detach()
        try:
            if writer is not None:
                writer.close()
        except OSError as error:
            warn(f"could not close its event file ({error})")
        except Exception as error:  # noqa: BLE001 - a sink's own error (MLflow, W&B)
            warn(f"could not close its sinks ({type(error).__name__}: {error})")
        finally:
            if self._run is not None:
                self._run.release()
                self._run = None
        if writer is not None:
            self.report_errors(writer)

    def report_errors(self, writer: BackgroundWriter | None = None) -> None:
        """Warn of each step the writer failed to write since the last call."""
        writer = writer or self._writer
        for message in writer.take_errors() if writer is not None else []:
            warn(f"{message}; {GOES_ON}")


def optimizer_steps(model: Any) -> int | None:
    """How many steps the model's optimizer has taken, or None if that cannot be read.

    Example:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> net.compile("sgd", "mse")
        >>> optimizer_steps(net), optimizer_steps(keras.Sequential())
        (0, None)
    """
    try:
        return int(np.asarray(model.optimizer.iterations.numpy()))
    except Exception:  # noqa: BLE001 - no optimizer, or one without a step counter
        return None


def _finish(writer: BackgroundWriter, run: logdirs.RunDir | None) -> None:
    """Finish a deleted callback's writing (bounded, as at exit) and free its directory."""
    try:
        writer.close(timeout=EXIT_WAIT_S)
    except Exception:  # noqa: BLE001 - nobody is left to warn; the records are written
        pass
    finally:
        if run is not None:
            run.release()


def _write_reports(jobs: list[Job], sink: Any) -> None:
    """Write one step of every method, in order (on the background writer's thread)."""
    for report, maps, measures in jobs:
        report.write(maps, sink, measures)
