"""The checks of ``GradCamCallback``'s arguments that are not about methods: where it writes
(``sink``, ``log_dir``), ``faithfulness``, the probes' object and artifact regions, and the
``alarm`` that compares them.

Each check raises ``TypeError`` or ``ValueError`` naming the argument, what it expects and
what it received, when the callback is made: before any epoch runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..faithfulness import DEFAULT_METRICS, METRICS
from . import logdirs
from .alarm import ShortcutAlarm
from .probes import check_boxes, check_masks, object_masks
from .sinks import Sink, TensorBoardSink

__all__ = ["Regions", "check_alarm", "check_faithfulness", "check_log_dir", "check_sinks"]


def check_sinks(sink: Any) -> tuple[list[Sink], TensorBoardSink | None]:
    """``GradCamCallback``'s ``sink``: None (TensorBoard alone), one sink or a non-empty
    list; returns the sinks other than TensorBoard, and the :class:`TensorBoardSink` (None
    when a list names none: no event files).

    Raises:
        TypeError: an entry is neither a ``TensorBoardSink`` nor meets the ``Sink`` protocol.
        ValueError: an empty list, or two ``TensorBoardSink``.

    Example:
        >>> from gradcam_callbacks.watch.sinks import MLflowSink
        >>> others, tensorboard = check_sinks([TensorBoardSink("logs/a"), MLflowSink()])
        >>> len(others), tensorboard
        (1, TensorBoardSink(log_dir='logs/a'))
    """
    if sink is None:
        return [], TensorBoardSink()
    given = list(sink) if isinstance(sink, (list, tuple)) else [sink]
    if not given:
        raise ValueError("sink must be a sink or a non-empty list of sinks; received []")
    boards = [s for s in given if isinstance(s, TensorBoardSink)]
    if len(boards) > 1:
        raise ValueError(f"sink may hold one TensorBoardSink; received {len(boards)}: "
                         f"{boards!r}")
    others = [s for s in given if not isinstance(s, TensorBoardSink)]
    for s in others:
        if not isinstance(s, Sink):
            raise TypeError("sink must be TensorBoardSink, MLflowSink, WandbSink or an object "
                            "with add_image, add_scalar, flush and close (the Sink protocol), "
                            f"or a list of them; received {type(s).__name__}: {s!r}")
    return others, boards[0] if boards else None


def check_log_dir(log_dir: Any, tensorboard: TensorBoardSink | None) -> str:
    """``GradCamCallback``'s ``log_dir``, with the ``TensorBoardSink`` among its sinks (or
    None): the directory either names, or a new default one
    (:func:`~gradcam_callbacks.watch.logdirs.default_log_dir`) when neither does.

    Raises:
        TypeError: ``log_dir`` is not a path.
        ValueError: ``log_dir`` and the ``TensorBoardSink`` name two directories.

    Example:
        >>> check_log_dir(None, TensorBoardSink("logs/b"))
        'logs/b'
    """
    if tensorboard is not None and tensorboard.log_dir is not None:
        if log_dir is not None and os.fspath(log_dir) != tensorboard.log_dir:
            raise ValueError(f"log_dir and sink=TensorBoardSink(log_dir) name two "
                             f"directories; pass one: received log_dir={log_dir!r}, "
                             f"{tensorboard!r}")
        log_dir = tensorboard.log_dir
    if log_dir is None:
        log_dir = logdirs.default_log_dir()
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"log_dir must be a path; received log_dir={log_dir!r}")
    return os.fspath(log_dir)


def check_faithfulness(faithfulness: Any) -> tuple[str, ...]:
    """``GradCamCallback``'s ``faithfulness``: ``False`` (off), ``True`` (insertion and
    deletion, :data:`~gradcam_callbacks.faithfulness.DEFAULT_METRICS`), a metric's name or a
    non-empty list of distinct names from :data:`~gradcam_callbacks.faithfulness.METRICS`;
    returns the names, in order (``()`` when off).

    Raises:
        TypeError: neither a bool nor a name nor a list of names.
        ValueError: an unknown or repeated name, or an empty list.

    Example:
        >>> check_faithfulness(True), check_faithfulness(["deletion"]), check_faithfulness(False)
        (('insertion', 'deletion'), ('deletion',), ())
    """
    expected = f"True, False, or a list of metric names from {list(METRICS)}"
    if isinstance(faithfulness, (bool, np.bool_)):
        return tuple(DEFAULT_METRICS) if faithfulness else ()
    names = [faithfulness] if isinstance(faithfulness, str) else faithfulness
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"faithfulness must be {expected}; received "
                        f"{type(faithfulness).__name__}: {faithfulness!r}")
    if not names:
        raise ValueError(f"faithfulness must be {expected} (False turns it off); received "
                         f"an empty list: {faithfulness!r}")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"faithfulness must be {expected}; received {faithfulness!r} "
                         f"(unknown: {unknown})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"faithfulness must name each metric once; received "
                         f"{faithfulness!r} (repeated: {repeated})")
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class Regions:
    """The probes' object regions (``probe_boxes`` or ``probe_masks``) and artifact regions
    (``artifact_boxes`` or ``artifact_masks``) as given, each checked for ``count`` probes
    (:func:`~gradcam_callbacks.watch.probes.check_boxes`,
    :func:`~gradcam_callbacks.watch.probes.check_masks`);
    :meth:`masks` turns them into masks in picture pixels.

    Example:
        >>> regions = Regions.check(1, probe_boxes=[[0, 0, 2, 1]])
        >>> objects, artifacts = regions.masks([Image.new("L", (4, 2))])
        >>> objects.astype(int).tolist(), artifacts
        ([[[1, 1, 0, 0], [0, 0, 0, 0]]], None)
    """

    probe_boxes: np.ndarray | None = None
    probe_masks: np.ndarray | None = None
    artifact_boxes: np.ndarray | None = None
    artifact_masks: np.ndarray | None = None

    @classmethod
    def check(cls, count: int, probe_boxes: Any = None, probe_masks: Any = None,
              artifact_boxes: Any = None, artifact_masks: Any = None) -> Regions:
        """The regions given for ``count`` probes, checked (None where not given)."""
        return cls(
            None if probe_boxes is None else check_boxes(probe_boxes, count),
            None if probe_masks is None else check_masks(probe_masks, count),
            None if artifact_boxes is None else check_boxes(
                artifact_boxes, count, "artifact_boxes"),
            None if artifact_masks is None else check_masks(
                artifact_masks, count, "artifact_masks"))

    def masks(self, pictures: Sequence[Image.Image] | None
              ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The object masks and the artifact masks (None where no region is given), in the
        pixels of the pictures drawn on, checked against their sizes when they are known
        (``None``: not yet, the masks as given)."""
        sizes = None if pictures is None else [(p.height, p.width) for p in pictures]
        return (object_masks(self.probe_boxes, self.probe_masks, sizes),
                object_masks(self.artifact_boxes, self.artifact_masks, sizes,
                             kind="artifact"))


def check_alarm(alarm: Any, regions: Regions) -> ShortcutAlarm | None:
    """``GradCamCallback``'s ``alarm``: None or a
    :class:`~gradcam_callbacks.watch.alarm.ShortcutAlarm`, whose default condition needs
    both the object and the artifact ``regions``.

    Raises:
        TypeError: not a ``ShortcutAlarm``.
        ValueError: the alarm compares regions that are not given.

    Example:
        >>> check_alarm(ShortcutAlarm(), Regions.check(1, probe_boxes=[[0, 0, 2, 1]]))
        Traceback (most recent call last):
        ValueError: alarm=ShortcutAlarm() compares the mass on the artifact with ...
    """
    if alarm is not None and not isinstance(alarm, ShortcutAlarm):
        raise TypeError(f"alarm must be a ShortcutAlarm or None; received "
                        f"{type(alarm).__name__}: {alarm!r}")
    objects = _given(regions.probe_boxes, regions.probe_masks)
    artifacts = _given(regions.artifact_boxes, regions.artifact_masks)
    if alarm is not None and alarm.needs_artifacts and "None" in (objects, artifacts):
        raise ValueError("alarm=ShortcutAlarm() compares the mass on the artifact with "
                         "the mass on the object: it needs artifact_boxes (or "
                         "artifact_masks) and probe_boxes (or probe_masks); received "
                         f"artifact_boxes={artifacts}, probe_boxes={objects}")
    return alarm


def _given(boxes: Any, masks: Any) -> str:
    return "given" if boxes is not None else "None (masks given)" if masks is not None \
        else "None"
