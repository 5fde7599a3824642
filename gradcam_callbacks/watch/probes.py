"""What :class:`~gradcam_callbacks.GradCamCallback` is asked to watch, checked before any
epoch: probe inputs and labels, pictures, targets, class names, object boxes and masks.

Everything here is a pure function of the arguments (and, for the checks against the model,
of numbers read off it); errors name the argument the user passed, what was expected and
what was received.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
from PIL import Image

from .._validation import (
    as_array,
    check_names,
    check_pictures,
    check_real_array,
    index_list,
    is_array_like,
)
from ..keras_family import graph_of
from ..resample import check_box_stack, check_mask_stack
from ..targets import class_slots, function_slots, has_score_functions
from . import metrics

PROBE_SOURCES = ("an array (N, H, W, C), an (x, y) tuple, or a tf.data.Dataset / "
                 "keras.utils.PyDataset / iterable of batches")


def take_probes(probes: Any, limit: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Probe inputs (and labels, if any) from an array, a backend tensor, an ``(x, y)``
    tuple, a list of images, or a source of batches (batched or not), at most ``limit``.

    A source whose elements are single examples (an unbatched ``tf.data.Dataset``, a list of
    images of rank 3) is read example by example: every element of a probe source is either a
    batch (rank 4) or one example (rank 3), never ambiguous for an image model. One image
    ``(H, W, C)`` with 1, 3 or 4 channels last, alone or as ``(x, y)`` with its label, is one
    probe. A rank-3 array without such a channel axis (grayscale images ``(N, H, W)``) is
    refused with a message that says how to add the axis.

    Example:
        >>> x, y = take_probes(np.zeros((5, 8, 8, 3), "float32"), 3)
        >>> x.shape, y
        ((3, 8, 8, 3), None)
        >>> x, y = take_probes((np.zeros((8, 8, 3)), 2), 3)
        >>> x.shape, y
        ((1, 8, 8, 3), array([2]))
    """
    if isinstance(probes, tuple) and len(probes) in (2, 3) and _is_example(probes[0]) and (
            np.ndim(probes[1]) <= 1 and not _is_example(probes[1])):
        label = probes[1]
        if isinstance(label, (int, float)) and not isinstance(label, bool):
            label = np.asarray(label)  # a plain Python label, as y[0] of a list gives
        x, y = as_array(probes[0], "probes x"), as_array(label, "probes labels")
        if not _has_channels(x.shape):
            raise ValueError(_no_channel_axis("probes x", x.shape, labels=y.shape))
        return check_probe_array(x[None]), y[None]  # (x, y) of one example
    if isinstance(probes, tuple) and len(probes) in (2, 3) and not _is_example(probes[0]):
        x, y = (as_array(probes[0], "probes x"), as_array(probes[1], "probes labels"))
        if x.ndim in (2, 3):
            raise ValueError(_no_channel_axis("probes x", x.shape, y.shape))
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise ValueError(
                f"probes as (x, y) must hold as many labels as inputs; received x of shape "
                f"{x.shape} and labels of shape {y.shape}"
            )
        return check_probe_array(x[:limit]), y[:limit]
    if is_array_like(probes):
        array = _stacked(probes)
        if array is not None and array.ndim == 3 and _has_channels(array.shape):
            array = array[None]  # one image
        if array is not None:
            return check_probe_array(array[:limit]), None
    if isinstance(probes, (str, bytes, dict)) or not isinstance(probes, Iterable) and not (
        hasattr(probes, "__getitem__") and hasattr(probes, "__len__")
    ):
        raise TypeError(f"probes must be {PROBE_SOURCES}; received {type(probes).__name__}")
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    taken = 0
    for number, element in enumerate(_batches(probes)):
        x, y = _split(element, number)
        if x.ndim == 3 and _has_channels(x.shape):  # one example (an unbatched dataset)
            x = x[None]
            y = None if y is None else y[None]
        elif x.ndim != 4:
            raise ValueError(_no_channel_axis(f"probes element {number}", x.shape,
                                              None if y is None else y.shape))
        if y is not None and (y.ndim == 0 or len(y) != len(x)):
            raise ValueError(
                f"probes element {number} must hold one label per input; received inputs of "
                f"shape {x.shape} and labels of shape {y.shape}"
            )
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise ValueError(
                f"probes must all have one shape; received element 0 with inputs of shape "
                f"{xs[0].shape[1:]} and element {number} with {x.shape[1:]}"
            )
        if xs and (y is not None) != bool(ys):
            raise ValueError(f"probes must yield labels with every element or with none; "
                             f"element {number} differs from element 0")
        xs.append(x[:limit - taken])
        if y is not None:
            ys.append(y[:limit - taken])
        taken += len(xs[-1])
        if taken >= limit:
            break
    if not xs:
        raise ValueError("probes must yield at least one batch; received an empty source")
    labels = np.concatenate(ys) if ys else None
    return check_probe_array(np.concatenate(xs)), labels


def _has_channels(shape: tuple[int, ...]) -> bool:
    """Whether a rank-3 shape is one image with 1, 3 or 4 channels last (channels-first
    images cannot be told from grayscale batches: they come batched)."""
    return shape[-1] in (1, 3, 4)


def _no_channel_axis(what: str, shape: tuple[int, ...],
                     labels: tuple[int, ...] | None = None) -> str:
    """What was received and what to pass instead, for probes that are not images."""
    received = f"received {what} of shape {shape}" + (
        "" if labels is None else f" with labels of shape {labels}")
    expected = ("probes must be images: a batch (N, H, W, C), one image (H, W, C), or an "
                "(x, y) tuple or batches of them, with a channel axis of 1, 3 or 4")
    if len(shape) == 3:
        return (f"{expected}; {received}, which has no channel axis: for {shape[0]} "
                f"grayscale images of {shape[1]}x{shape[2]} pass x[..., None] (shape "
                f"{(*shape, 1)}); for one channels-first image pass x[None]")
    if len(shape) == 2:
        return (f"{expected}; {received}, one grayscale image without a channel axis: pass "
                f"x[..., None] (shape {(*shape, 1)})")
    return f"{expected}; {received}"


def _is_example(x: Any) -> bool:
    """True when ``x`` of an ``(x, y)`` pair is one image (rank 3): then the tuple is not an
    ``(x, y)`` pair of arrays but, e.g., a tuple of images."""
    return is_array_like(x) and np.ndim(x) == 3 and not isinstance(x, tuple)


def _stacked(probes: Any) -> np.ndarray | None:
    """An array of probes from an array-like, or None for a list/tuple of batches."""
    if isinstance(probes, (list, tuple)):
        try:
            array = np.asarray(probes)
        except (ValueError, TypeError, RuntimeError):
            return None  # ragged: batches of different sizes, (x, y) pairs, ...
        if array.dtype == object or array.ndim != 4:
            return None  # not a stack of images; read as a list of batches / examples
        return array
    return as_array(probes, "probes")


def _split(element: Any, number: int) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(element, dict):
        raise TypeError(f"probes must yield x or (x, y[, weights]) elements; received a dict "
                        f"at element {number}")
    if isinstance(element, (tuple, list)) and len(element) in (1, 2, 3) and (
        is_array_like(element[0]) and np.ndim(element[0]) in (3, 4)
        and (len(element) == 1 or np.ndim(element[1]) <= np.ndim(element[0]) - 2)
    ):  # (x,), (x, y) or (x, y, sample_weights): labels have no image axes
        x = as_array(element[0], f"probes element {number} x")
        y = as_array(element[1], f"probes element {number} labels") if len(element) > 1 else None
        return x, y
    return as_array(element, f"probes element {number}"), None


def _batches(source: Any) -> Iterable[Any]:
    if isinstance(source, getattr(keras.utils, "PyDataset", ())):  # not in Keras 2
        return (source[i] for i in range(len(source)))
    return iter(source)


def check_probe_array(x: np.ndarray) -> np.ndarray:
    """``x`` if it is a non-empty rank-4 batch of finite real numbers.

    Example:
        >>> check_probe_array(np.zeros((1, 4, 4, 1))).shape
        (1, 4, 4, 1)
    """
    if x.ndim != 4:
        raise ValueError(_no_channel_axis("probes", x.shape))
    if len(x) == 0:
        raise ValueError(f"probes must hold at least one image; received an empty batch of "
                         f"shape {x.shape}")
    return check_real_array("probes", x)


def pictures(images: Any, count: int) -> list[Image.Image] | None:
    """One Pillow image per probe, or None to derive them from the probes."""
    return check_pictures(images, count, per="probe")


def labels(y: np.ndarray) -> np.ndarray:
    """Class indices from checked sparse ``(N,)``/``(N, 1)`` or one-hot ``(N, C)`` labels."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    return y.reshape(len(y)).astype(int)


def check_labels(y: np.ndarray) -> np.ndarray:
    """``y`` if usable as ``targets="true"``: sparse class indices ``(N,)`` / ``(N, 1)``
    (whole, non-negative) or one-hot / probability rows ``(N, C)`` (finite, not all zero).

    Example:
        >>> check_labels(np.array([0, 2])).tolist()
        [0, 2]
    """
    y = np.asarray(y)
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(
            f"probes labels must be numbers (sparse class indices (N,) or one-hot (N, C)) for "
            f"targets='true'; received labels of dtype {y.dtype}"
        )
    if y.ndim not in (1, 2):
        raise ValueError(f"probes labels must be sparse (N,) or one-hot (N, C) for "
                         f"targets='true'; received labels of shape {y.shape}")
    rows = y.reshape(len(y), -1)
    bad = ~np.isfinite(rows).all(axis=1) if np.issubdtype(y.dtype, np.floating) else None
    if bad is not None and bad.any():
        raise ValueError(f"probes labels must be finite for targets='true'; received NaN or "
                         f"inf in the labels of probe(s) {index_list(np.flatnonzero(bad))}")
    if rows.shape[1] == 1:
        values = rows[:, 0]
        fractional = values != np.round(values)
        if fractional.any():
            first = int(np.flatnonzero(fractional)[0])
            raise ValueError(
                f"probes labels must be whole class indices for targets='true'; received "
                f"{values[first].item()!r} for probe {first}"
            )
        negative = values < 0
        if negative.any():
            first = int(np.flatnonzero(negative)[0])
            raise ValueError(
                f"probes labels must be class indices >= 0 for targets='true'; received "
                f"{values[first].item()!r} for probe {first}"
            )
        return y
    empty = ~(rows > 0).any(axis=1)
    if empty.any():
        raise ValueError(
            f"probes labels as one-hot rows must mark a class (an entry > 0) for "
            f"targets='true'; received all-zero rows for probe(s) "
            f"{index_list(np.flatnonzero(empty))}"
        )
    return y


def check_targets(targets: Any, y: np.ndarray | None, count: int) -> Any:
    """``None``, ``"true"`` (with checked labels), a list of ``count`` class indices, or
    score functions (:mod:`gradcam_callbacks.targets`): one for every probe, or a list of
    ``count`` (class indices mixed in are read as ``ClassScore``); one target per probe.

    Lists of class indices and score functions are checked by the engine's target checks
    (:func:`~gradcam_callbacks.targets.class_slots`,
    :func:`~gradcam_callbacks.targets.function_slots`), in its words, before any epoch (the
    class range and the functions' outputs when training begins, against the model).

    Example:
        >>> check_targets(np.array([2, 0]), None, 2)
        [2, 0]
        >>> check_targets([1], None, 2)
        Traceback (most recent call last):
        ...
        ValueError: targets must have one entry per probe (2); received 1 entries
    """
    if targets is None:
        return None
    if isinstance(targets, str):
        if targets != "true":
            raise ValueError(f"targets must be None, 'true', a list of class indices or score "
                             f"functions; received targets={targets!r}")
        if y is None:
            raise ValueError("targets='true' needs labels: pass probes as (x, y) or batches "
                             "of (x, y)")
        check_labels(y)
        return "true"
    functions = has_score_functions(targets)
    slots = function_slots(targets, count, noun="probe") if functions else class_slots(
        targets, count, None, noun="probe")
    several = np.flatnonzero(slots.counts > 1)
    if several.size:
        first = int(several[0])
        raise ValueError(f"targets[{first}] must be one class index or score function (the "
                         f"callback draws one map per probe); received {targets[first]!r}")
    if callable(targets):
        return targets
    return list(targets) if functions else [int(t) for t in slots.indices[:, 0]]


def check_class_names(names: Any) -> list[str] | None:
    """``None`` or the names as a list of str (an iterator is read once, into the list)."""
    return None if names is None else check_names("class_names", names)


def check_against_model(model: keras.Model, classes: int | None, class_names: list[str] | None,
                        y: np.ndarray | None, targets: Any) -> None:
    """Checks that need the model's class count: class names and ``targets="true"`` labels.

    Example:
        >>> check_against_model(model, 10, list("0123456789"), None, None)
        >>> check_against_model(model, 10, list("abcde"), None, None)
        Traceback (most recent call last):
        ...
        ValueError: class_names must hold one name per class of model ... (10); received 5 names
    """
    if classes is None:
        return
    if class_names is not None and len(class_names) != classes:
        raise ValueError(
            f"class_names must hold one name per class of model {model.name!r} ({classes}); "
            f"received {len(class_names)} names"
        )
    if targets != "true" or y is None:
        return
    if y.ndim == 2 and y.shape[1] > 1 and y.shape[1] != classes:
        raise ValueError(
            f"probes labels as one-hot rows must have one column per class of model "
            f"{model.name!r} ({classes}); received labels of shape {y.shape}"
        )
    indices = labels(y)
    beyond = np.flatnonzero(indices >= classes)
    if beyond.size:
        first = int(beyond[0])
        raise ValueError(
            f"probes labels must be class indices in [0, {classes}) for model "
            f"{model.name!r}; received {int(indices[first])} for probe {first}"
        )


def warn_integer_probes(model: keras.Model, x: np.ndarray, input_dtype: str) -> None:
    """One UserWarning when uint8/integer probes go into a float model without a
    ``Rescaling`` layer: they are fed as-is (0..255), which is rarely what a model trained
    on 0..1 inputs expects."""
    if not np.issubdtype(x.dtype, np.integer) or not input_dtype.startswith(("float", "bfloat")):
        return
    if any(graph_of(layer).is_a(layer, "Rescaling") for layer in _all_layers(model)):
        return
    warnings.warn(
        f"GradCamCallback probes are {x.dtype} (values {int(x.min())}..{int(x.max())}) and are "
        f"fed to model {model.name!r} as-is, cast to {input_dtype}, without scaling. If the "
        f"model was trained on scaled inputs, pass the probes as the model sees them, e.g. "
        f"probes=x.astype('float32') / 255, and images=x to draw on the originals",
        UserWarning, stacklevel=3,
    )


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        if graph_of(layer).is_a(layer, "Model"):
            found.extend(_all_layers(layer))
    return found


def check_boxes(boxes: Any, count: int, name: str = "probe_boxes") -> np.ndarray:
    """``(count, 4)`` int boxes ``(x0, y0, x1, y1)`` with ``x0 < x1`` and ``y0 < y1``, whole
    numbers (integers or whole floats); ``name`` is the argument's (``probe_boxes``,
    ``artifact_boxes``). Checked against the pictures' sizes by :func:`object_masks`.

    Example:
        >>> check_boxes([[0, 0, 4, 4]], 1).tolist()
        [[0, 0, 4, 4]]
        >>> check_boxes([[0, 0, 4, 4]], 2)
        Traceback (most recent call last):
        ...
        ValueError: probe_boxes must have shape (2, 4), one (...) per probe; received shape (1, 4)
    """
    return check_box_stack(name, boxes, count=count, per="probe", whole_floats=True)


def check_masks(masks: Any, count: int, name: str = "probe_masks") -> np.ndarray:
    """``(count, H, W)`` boolean masks, each with at least one True pixel (the argument
    ``name``: ``probe_masks``, ``artifact_masks``).

    Example:
        >>> check_masks(np.ones((1, 2, 2), bool), 1).shape
        (1, 2, 2)
    """
    what = "artifact" if name.startswith("artifact") else "object"
    return check_mask_stack(name, masks, count=count, per="probe", marks=f"the probe's {what}")


def object_masks(boxes: np.ndarray | None, masks: np.ndarray | None,
                 sizes: list[tuple[int, int]] | None, kind: str = "probe") -> np.ndarray | None:
    """Object masks in picture pixels from checked boxes or masks (``kind``: ``"probe"`` for
    ``probe_boxes``/``probe_masks``, ``"artifact"`` for ``artifact_boxes``/
    ``artifact_masks``), checked against the
    pictures' ``(height, width)`` sizes when known (``None``: not known yet).

    Example:
        >>> object_masks(np.array([[0, 0, 2, 1]]), None, [(2, 4)]).astype(int).tolist()
        [[[1, 1, 0, 0], [0, 0, 0, 0]]]
    """
    if boxes is not None and masks is not None:
        raise ValueError(f"pass {kind}_boxes or {kind}_masks, not both")
    if boxes is None and masks is None:
        return None
    if sizes is None:
        return masks
    if masks is not None:
        for i, (mask, size) in enumerate(zip(masks, sizes)):
            if mask.shape != tuple(size):
                raise ValueError(
                    f"{kind}_masks[{i}] must have its picture's size (height, width) = "
                    f"{tuple(size)}; received shape {mask.shape}"
                )
        return masks
    check_box_stack(f"{kind}_boxes", boxes, sizes=sizes, per=kind)
    if len(set(map(tuple, sizes))) != 1:
        raise ValueError(f"{kind}_boxes needs pictures of one size; use {kind}_masks")
    return metrics.boxes_to_masks(boxes, sizes[0])
