"""A shortcut alarm: warn, or stop the fit, when the maps hold on a known spurious cue.

:class:`ShortcutAlarm` is given to :class:`~gradcam_callbacks.GradCamCallback` as ``alarm=``.
After each logged epoch (not the untrained step -1) the callback hands it the epoch's means,
the same numbers it adds to Keras' ``logs`` (``gradcam_artifact_mass``,
``gradcam_box_mass``, ``gradcam_pointing_game``, ``gradcam_mean_change``); when its condition
holds for ``patience`` logged epochs in a row, it fires once per fit: a
:class:`ShortcutWarning`, and with ``stop=True`` the end of the fit after this epoch.
Counting logged epochs (not epochs) keeps ``patience`` meaning the same with ``freq > 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from .._validation import check_bool, check_int
from . import tags

__all__ = ["ShortcutAlarm", "ShortcutWarning", "artifact_over_object"]

Condition = Callable[[Mapping[str, float]], bool]


class ShortcutWarning(UserWarning):
    """The warning a :class:`ShortcutAlarm` gives when it fires."""


def artifact_over_object(means: Mapping[str, float]) -> bool:
    """The default alarm condition: more heatmap mass on the artifact than on the object
    (``gradcam_artifact_mass > gradcam_box_mass``); False when either is NaN.

    Example:
        >>> artifact_over_object({"gradcam_artifact_mass": 0.4, "gradcam_box_mass": 0.3})
        True
    """
    artifact, box = means[tags.LOG_ARTIFACT_MASS], means[tags.LOG_BOX_MASS]
    return not (math.isnan(artifact) or math.isnan(box)) and artifact > box


class ShortcutAlarm:
    """Warn or stop when an attention condition holds for ``patience`` logged epochs in a row.

    Args:
        condition: A function of the epoch's means (a mapping with the ``logs`` keys of
            :mod:`gradcam_callbacks.watch.tags`: ``gradcam_artifact_mass``, ``gradcam_box_mass``,
            ``gradcam_pointing_game``, ``gradcam_mean_change``) returning True when the
            maps look wrong. Default :func:`artifact_over_object`, which needs the
            callback's ``artifact_boxes``/``artifact_masks`` and ``probe_boxes``/
            ``probe_masks``.
        patience: How many logged epochs in a row the condition must hold.
        stop: Also end the fit (``model.stop_training``) when it fires; else only warn.

    Attributes:
        fired_at: The 0-based epoch at which it fired in the current (or last) fit, or None.
        streak: Logged epochs in a row the condition has held.

    Example:
        >>> from gradcam_callbacks import GradCamCallback
        >>> alarm = ShortcutAlarm(patience=2, stop=True)
        >>> cam = GradCamCallback(x_val[:4], probe_boxes=boxes[:4],
        ...                       artifact_boxes=[[0, 0, 8, 8]] * 4, alarm=alarm)
        >>> alarm.fired_at is None
        True
    """

    def __init__(self, condition: Condition | None = None, patience: int = 1,
                 stop: bool = False) -> None:
        if condition is not None and not callable(condition):
            raise TypeError(f"condition must be a function of the epoch's means returning a "
                            f"bool; received {type(condition).__name__}: {condition!r}")
        self.condition = condition or artifact_over_object
        self.patience = check_int("patience", patience, minimum=1)
        self.stop = check_bool("stop", stop)
        self.fired_at: int | None = None
        self.streak = 0

    @property
    def needs_artifacts(self) -> bool:
        """Whether the condition is the default one, which reads the artifact and object
        masses."""
        return self.condition is artifact_over_object

    def reset(self) -> None:
        """Forget the streak and the firing: a new fit starts."""
        self.fired_at, self.streak = None, 0

    def update(self, epoch: int, means: Mapping[str, float]) -> str | None:
        """Count one logged ``epoch`` with its ``means``; the message to warn with when the
        alarm fires now (once per fit), else None. A condition that raises propagates (the
        callback turns it into a warning).

        Example:
            >>> alarm = ShortcutAlarm(lambda m: m["gradcam_pointing_game"] < 0.5, patience=2)
            >>> [alarm.update(e, {"gradcam_pointing_game": 0.2}) is None for e in range(3)]
            [True, False, True]
            >>> alarm.fired_at
            1
        """
        holds = bool(self.condition(means))
        self.streak = self.streak + 1 if holds else 0
        if self.fired_at is not None or self.streak < self.patience:
            return None
        self.fired_at = epoch
        shown = ", ".join(f"{key} {value:.3f}" for key, value in sorted(means.items()))
        return (f"ShortcutAlarm: {_name(self.condition)} held for {self.streak} logged "
                f"epoch(s) in a row, up to epoch {epoch + 1} ({shown}): the model may be "
                "using a shortcut" + ("; stopping the fit" if self.stop else ""))

    def __repr__(self) -> str:
        return (f"ShortcutAlarm(condition={_name(self.condition)}, patience={self.patience}, "
                f"stop={self.stop})")


def _name(function: Callable) -> str:
    return getattr(function, "__name__", repr(function))
