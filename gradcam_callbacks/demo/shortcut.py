"""The shortcut demo's numbers: where the model looks on marked images
(:func:`shortcut_scores`), the markers' regions the callback watches as ``artifact_boxes``
(:func:`marker_regions`), and the per-epoch table read from what the library logged
(:func:`shortcut_rows`, :func:`format_shortcut_row`). Re-exported by
:mod:`gradcam_callbacks.demo`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from ..watch.tags import (
    LOG_ARTIFACT_MASS,
    LOG_BOX_MASS,
    LOG_POINTING_GAME,
    MEAN_ARTIFACT_MASS,
    MEAN_BOX_MASS,
    POINTING_GAME,
    step_label,
)
from .datasets import ClutteredDigits
from .settings import GRADCAM_LAYER, MARKER_REACH

__all__ = ["format_shortcut_row", "marker_regions", "shortcut_rows", "shortcut_scores"]


def shortcut_scores(
    model: keras.Model, data: ClutteredDigits, *, batch_size: int = 250
) -> dict[str, float]:
    """Where the model looks on marked images: the digit or the marker.

    Grad-CAM explains each image's *predicted* class (what drove the answer). Scores:
    ``accuracy``; ``pointing_game`` and ``digit_mass`` (the heatmap's peak in, and the
    mean share of its mass on, the digit's box); ``marker_mass`` and ``marker_pointing``
    (the same for the marker's box grown by `MARKER_REACH` pixels each way, clipped to the
    image); ``marker_area`` (the share of the image that grown box covers: the mass a
    heatmap spread evenly would put there).

    Args:
        model: A classifier such as `build_model` returns.
        data: Images with markers (made with ``marker=`` a number).
        batch_size: Images per Grad-CAM pass.

    Returns:
        A dict of floats with the keys above.

    Raises:
        ValueError: If ``data`` has no markers.

    Example:
        >>> from gradcam_callbacks.demo import build_model, load_data
        >>> _, test_set = load_data(num_train=8, num_test=8, marker=0.9)
        >>> sorted(shortcut_scores(build_model((48, 48, 1)), test_set))[:3]
        ['accuracy', 'digit_mass', 'marker_area']
    """
    from ..explain import explain_predictions
    from ..watch.metrics import box_masses, pointing_hits

    marker = marker_regions(data)  # refuses data without markers
    expls = explain_predictions(model, data.x, layer=GRADCAM_LAYER, batch_size=batch_size)
    predicted = np.array([e.targets[0].target for e in expls])
    heatmaps = np.stack([e.targets[0].heatmap for e in expls])
    size = data.x.shape[1:3]
    marker_area = (marker[:, 2] - marker[:, 0]) * (marker[:, 3] - marker[:, 1])
    return {
        "accuracy": float(np.mean(predicted == data.y)),
        "pointing_game": float(pointing_hits(heatmaps, data.boxes, size).mean()),
        "digit_mass": float(box_masses(heatmaps, data.boxes, size).mean()),
        "marker_mass": float(box_masses(heatmaps, marker, size).mean()),
        "marker_pointing": float(pointing_hits(heatmaps, marker, size).mean()),
        "marker_area": float(marker_area.mean() / (size[0] * size[1])),
    }


def marker_regions(data: ClutteredDigits) -> np.ndarray:
    """The markers' boxes grown by `MARKER_REACH` pixels each way, clipped to the image: where
    a map that uses the marker puts its mass (the last conv layer's cells are coarse). The
    shortcut demo's ``artifact_boxes``.

    Example:
        >>> from gradcam_callbacks.demo import load_data
        >>> _, test_set = load_data(num_train=2, num_test=2, marker=0.9)
        >>> test_set.marker_boxes[0].tolist(), marker_regions(test_set)[0].tolist()  # clipped
        ([43, 43, 47, 47], [39, 39, 48, 48])
    """
    if data.marker_boxes is None:
        raise ValueError("data must have markers (make_cluttered_digits(..., marker=p)); "
                         "received data.marker_boxes=None")
    height, width = data.x.shape[1:3]
    reach = np.array([-MARKER_REACH, -MARKER_REACH, MARKER_REACH, MARKER_REACH])
    return np.clip(data.marker_boxes + reach, 0, [width, height, width, height])


#: The table's columns: row key, the epoch ``logs`` key it is read from (``History``), and
#: the callback's TensorBoard tag that holds it at the untrained step -1 (None: not there).
_COLUMNS = (
    ("train_accuracy", "accuracy", None),
    ("accuracy", "val_accuracy", None),
    ("pointing_game", LOG_POINTING_GAME, POINTING_GAME),
    ("digit_mass", LOG_BOX_MASS, MEAN_BOX_MASS),
    ("marker_mass", LOG_ARTIFACT_MASS, MEAN_ARTIFACT_MASS),
)


def shortcut_rows(
    history: Mapping[str, Sequence[float]], run_dir: str | os.PathLike | None = None
) -> list[dict[str, float | int | None]]:
    """The shortcut demo's table, read from what the library logged; nothing is re-scored.

    One row per epoch from the epoch ``logs`` (a ``History``'s ``history``): ``step`` (as
    Keras' TensorBoard and `GradCamCallback` count: ``e`` after epoch ``e``, 0-based),
    ``train_accuracy`` (``accuracy``, Keras' own over the epoch), ``accuracy`` (on the
    held-out images: ``val_accuracy``), and the callback's means over its probes:
    ``pointing_game`` (``gradcam_pointing_game``: the share of peaks on the digit's box),
    ``digit_mass`` (``gradcam_box_mass``) and ``marker_mass`` (``gradcam_artifact_mass``:
    the mass on its ``artifact_boxes``, the grown markers). A key missing from the logs
    gives None. With ``run_dir`` (the callback's ``run_dir``), a first row at step -1: the
    untrained model's means, from the callback's TensorBoard scalars (no accuracies).

    Example:
        >>> rows = shortcut_rows({"accuracy": [0.5], "val_accuracy": [0.25],
        ...                       "gradcam_pointing_game": [0.5], "gradcam_box_mass": [0.3],
        ...                       "gradcam_artifact_mass": [0.2]})
        >>> print(format_shortcut_row(rows[0]))
          epoch 1 | acc train 0.500 test 0.250 | digit peak 0.50 mass 0.30 | marker mass 0.20
    """
    from ..watch.tensorboard import read_events

    epochs = max((len(values) for values in history.values()), default=0)
    rows: list[dict[str, float | int | None]] = [
        {"step": epoch, **{name: _value(history.get(key), epoch) for name, key, _ in _COLUMNS}}
        for epoch in range(epochs)]
    if run_dir is not None:
        untrained = {record.tag: record.value for record in read_events(run_dir)
                     if record.step == -1}
        rows.insert(0, {"step": -1, **{name: None if tag is None else untrained.get(tag)
                                       for name, _, tag in _COLUMNS}})
    return rows


def _value(values: Sequence[float] | None, epoch: int) -> float | None:
    return None if values is None or epoch >= len(values) else float(values[epoch])


def format_shortcut_row(row: Mapping[str, float | int | None]) -> str:
    """One line of the shortcut demo's table (a `shortcut_rows` row): the accuracies, then on
    the probes the share of Grad-CAM peaks on the digit (``peak``) and the mean share of heatmap
    mass on the digit and on the marker (``mass``); ``-`` where a number is missing.

    Example:
        >>> print(format_shortcut_row({"step": -1, "train_accuracy": None, "accuracy": None,
        ...     "pointing_game": 0.81, "digit_mass": 0.22, "marker_mass": 0.07}))
        untrained | acc train   -   test   -   | digit peak 0.81 mass 0.22 | marker mass 0.07
    """
    def shown(key: str, digits: int) -> str:
        value = row.get(key)
        return f"{'-':^{digits + 2}}" if value is None else f"{float(value):.{digits}f}"

    return (f"{step_label(int(row['step'])):>9} | acc train {shown('train_accuracy', 3)} test "
            f"{shown('accuracy', 3)} | digit peak {shown('pointing_game', 2)} mass "
            f"{shown('digit_mass', 2)} | marker mass {shown('marker_mass', 2)}")
