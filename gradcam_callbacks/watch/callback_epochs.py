"""One fit's logged epochs, from ``GradCamCallback``'s maps on: each method's maps with their
change since its last logged epoch, the first method's measures, the means that go to every
epoch's Keras logs (the ``gradcam_*`` keys of :mod:`gradcam_callbacks.watch.tags`), and the alarm
that reads them.

All of it runs on the training thread, before the epoch end returns, so that the callbacks
after this one see the keys; the drawing is left to the reports, on the writer's thread
(:mod:`gradcam_callbacks.watch.callback_run`). Nothing here may end the fit: a failure becomes a
warning and NaN values.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import tags
from .alarm import ShortcutAlarm, ShortcutWarning
from .callback_run import GOES_ON, Job, optimizer_steps, warn
from .report import EpochMaps, Measures, ProbeReport, measure

__all__ = ["EpochLog", "Faithfulness", "MethodMaps"]

# a method's maps of every probe: (name, heatmaps (N, h, w), targets (N,), scores (N,))
MethodMaps = tuple[str, np.ndarray, np.ndarray, np.ndarray]
# the faithfulness metrics of the first method's maps at a step (None: not measured)
Faithfulness = Callable[[EpochMaps, int, str], "dict[str, dict[int, float]] | None"]


class EpochLog:
    """The logged epochs of one fit, one report per method (the first method's means go to
    the Keras logs): :meth:`add` turns a step's maps into the jobs of the writer, measuring
    on the way; :attr:`values` holds the last logged step's means, which every epoch's logs
    carry; :attr:`ended` and :attr:`logged` tell whether the fit's last epoch is logged.

    Args:
        reports: One :class:`~gradcam_callbacks.watch.report.ProbeReport` per method, in order.
        masks: The probes' object masks, for the localisation measures (None: none given).
        artifact_masks: The masks of a known spurious cue (None: none given).
        faithfulness: The names of the faithfulness metrics measured (``()``: none).
        alarm: Handed the means of each trained step (reset here: a new fit starts).

    Example:
        >>> epochs = EpochLog()
        >>> epochs.failed()
        >>> epochs.values
        {'gradcam_mean_change': nan}
    """

    def __init__(self, reports: Sequence[ProbeReport] = (), masks: np.ndarray | None = None,
                 artifact_masks: np.ndarray | None = None, faithfulness: tuple[str, ...] = (),
                 alarm: ShortcutAlarm | None = None) -> None:
        self.reports = list(reports)
        self.masks, self.artifact_masks = masks, artifact_masks
        self.faithfulness, self.alarm = faithfulness, alarm
        if alarm is not None:
            alarm.reset()
        # each method's last logged maps, for the change; the means of the last logged step
        self._previous: list[np.ndarray | None] = [None] * len(self.reports)
        self.values: dict[str, float] = {}
        self.initial_logged = False
        # the last epoch that ended and the last step logged, for the fit's last epoch
        self.ended: int | None = None
        self.logged: int | None = None

    def add(self, step: int, results: Sequence[MethodMaps], model: Any,
            faithfulness: Faithfulness) -> list[Job]:
        """Each method's maps at ``step`` (``results``, in the reports' order), measured; the
        writer's jobs. With :attr:`faithfulness`, ``faithfulness(maps, step, title)``
        measures the first method's maps (forwards of ``model``: this thread)."""
        steps = optimizer_steps(model)
        jobs: list[Job] = []
        for index, ((_, heatmaps, targets, scores), report) in enumerate(
                zip(results, self.reports)):
            maps = EpochMaps(step, heatmaps, targets, scores, self._previous[index], steps)
            self._previous[index] = maps.carried()
            measures = None  # further methods are measured by the writer, off this thread
            if index == 0:  # the first method's means go to the epoch's Keras logs
                try:
                    measures = measure(maps, self.masks, self.artifact_masks)
                except Exception as error:  # noqa: BLE001 - never end the fit; drawn unscored
                    warn(f"could not score the {report.title} maps at step {step} "
                         f"({type(error).__name__}: {error}); {GOES_ON}")
                    measures = Measures()
                if self.faithfulness:  # forwards of the model: these weights, this thread
                    measures = dataclasses.replace(measures, faithfulness=faithfulness(
                        maps, step, report.title))
                self.values = self._means(measures)
                self._sound_alarm(step, model)
            jobs.append((report, maps, measures))
            broken = int((~maps.finite).sum())
            if broken:
                warn(f"found the {report.title} map or score of {broken} of "
                     f"{len(maps.finite)} probes not finite (NaN or inf) at step "
                     f"{step}: the model may be diverging; those probes are logged "
                     "without overlay or scores and counted in "
                     f"{tags.section_tag('nonfinite', report.method)!r}")
        return jobs

    def failed(self) -> None:
        """A step whose maps could not be computed: its means are NaN."""
        self.values = self._means(Measures())

    def _sound_alarm(self, step: int, model: Any) -> None:
        """Hand a trained step's means to the alarm; warn (and stop) if it fires."""
        if self.alarm is None or step < 0:
            return
        try:
            message = self.alarm.update(step, self.values)
        except Exception as error:  # noqa: BLE001 - a user's condition must not end the fit
            warn(f"could not evaluate its alarm at step {step} "
                 f"({type(error).__name__}: {error}); {GOES_ON}")
            return
        if message is not None:
            warnings.warn(message, ShortcutWarning, stacklevel=4)
            if self.alarm.stop and model is not None:
                model.stop_training = True

    def _means(self, measures: Measures) -> dict[str, float]:
        return measures.means(objects=self.masks is not None,
                              artifacts=self.artifact_masks is not None,
                              faithfulness=self.faithfulness)
