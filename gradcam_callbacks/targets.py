"""Score functions: what a Grad-CAM map explains, beyond one class of a ``(batch, classes)``
output.

A score function takes the selected model output (a backend tensor of any rank, batch
first) and returns one score per doc, shape ``(batch,)``, floating point. It is written with
``keras.ops``, so it runs on every backend inside the compiled pass; the engine
differentiates it (Grad-CAM and the other gradient methods) or evaluates it on masked inputs
(Score-CAM). Pass one as ``targets`` (one for every doc) or a list with one per doc.
A Keras 2 model's output is a TensorFlow tensor: the ready-made scores take their ops from
the tensor (:func:`gradcam_callbacks.keras_family.tensor_ops`); a function of your own uses tensor
indexing or TensorFlow ops there (``keras.ops`` only with Keras 3 on TensorFlow next to it).

Ready-made ones: :class:`ClassScore` (what an int target means), :class:`RegressionScore`,
:class:`SegmentationScore` and :class:`MultiLabelScore`. Their ``repr`` is what
``Explanation.targets[k].target`` holds, and what captions and the command line's
``results.jsonl`` show. Two equal ready-made scores (same class, same arguments, same mask)
share one compiled pass.

Example:
    >>> import numpy as np
    >>> SegmentationScore(3, mask=np.eye(4, dtype=bool))
    SegmentationScore(class_index=3, mask=<4x4 bool, 4 px>)
    >>> RegressionScore(sign=-1)
    RegressionScore(index=0, sign=-1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from ._validation import is_int
from .keras_family import tensor_ops

__all__ = ["ClassScore", "MultiLabelScore", "RegressionScore", "Score", "ScoreFunction",
           "SegmentationScore", "as_target", "check_result", "describe"]

ScoreFunction = Callable[[Any], Any]
"""``outputs (batch, ...) -> scores (batch,)``, written with ``keras.ops``."""


class Score:
    """Base of the ready-made score functions: equality, hashing and ``repr`` by value.

    Subclasses set ``_fields`` (the constructor arguments shown in ``repr``) and implement
    ``__call__(outputs) -> (batch,)``.

    Example:
        >>> ClassScore(2) == ClassScore(2), ClassScore(2) == ClassScore(3)
        (True, False)
    """

    _fields: tuple[str, ...] = ()

    def __call__(self, outputs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _key(self) -> tuple[Any, ...]:
        return (type(self),) + tuple(_hashable(getattr(self, f)) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Score) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={_shown(getattr(self, f))}" for f in self._fields)
        return f"{type(self).__name__}({shown})"

    def split(self, count: int) -> list[Score]:
        """This score for each of ``count`` docs (a score with per-doc data gives each doc
        its own row). Called by the engine when one score serves every doc."""
        return [self] * count


class ClassScore(Score):
    """The score of class ``class_index`` of a ``(batch, classes)`` output (a ``(batch,)``
    output is one class): what an int target means.

    Example:
        >>> import keras
        >>> keras.ops.convert_to_numpy(ClassScore(1)(keras.ops.convert_to_tensor([[0.2, 0.8]])))
        array([0.8], dtype=float32)
    """

    _fields = ("class_index",)

    def __init__(self, class_index: int) -> None:
        self.class_index = _index("class_index", class_index, type(self).__name__)

    def __call__(self, outputs: Any) -> Any:
        return _column(self, outputs, self.class_index)


class MultiLabelScore(ClassScore):
    """The probability of label ``class_index`` of a sigmoid (multi-label or binary) head:
    ``(batch, labels)``, or ``(batch,)`` / ``(batch, 1)`` for one binary label.

    The score is the sigmoid **probability**, the model's output itself, not the logit: a
    Keras model usually fuses the sigmoid into its last layer, so the logit is not in the
    output a score function receives. For the gradient methods this changes nothing in the
    map: ``d p / d A = p (1 - p) d z / d A``, a positive factor per doc, which the scaling to
    [0, 1] removes. Score-CAM weighs channels by the probabilities, as in its paper. A
    saturated probability (``p`` rounds to 1.0 in float32, logit above about 17) has zero
    gradient: its gradient maps are all zero.

    Example:
        >>> MultiLabelScore(4)
        MultiLabelScore(class_index=4)
    """


class RegressionScore(Score):
    """``sign`` times predicted value ``index`` of a regression head ``(batch,)`` or
    ``(batch, values)``: with ``sign=+1`` the map shows what pushes the value up, with
    ``sign=-1`` what pushes it down.

    Example:
        >>> import keras
        >>> outputs = keras.ops.convert_to_tensor([[3.0, 5.0]])
        >>> keras.ops.convert_to_numpy(RegressionScore(1, sign=-1)(outputs))
        array([-5.], dtype=float32)
    """

    _fields = ("index", "sign")

    def __init__(self, index: int = 0, sign: int = 1) -> None:
        self.index = _index("index", index, "RegressionScore")
        if not is_int(sign) or sign not in (1, -1):
            raise ValueError(f"RegressionScore sign must be +1 or -1; received sign={sign!r}")
        self.sign = int(sign)

    def __call__(self, outputs: Any) -> Any:
        value = _column(self, outputs, self.index)
        return value if self.sign == 1 else -value


class SegmentationScore(Score):
    """The sum of class ``class_index``'s scores over pixels of a segmentation output
    ``(batch, h, w, classes)`` (classes last): Seg-Grad-CAM, "what made the model paint this
    region".

    Args:
        class_index: The class whose scores are summed.
        mask: Which pixels: a boolean array shaped like the output's spatial dims ``(h, w)``
            (the same pixels for every doc) or ``(N, h, w)`` (one mask per doc, for ``N``
            docs). ``None``: the pixels the model assigns to the class (``argmax == class``),
            taken as a constant: no gradient flows through the argmax.

    Example:
        >>> import numpy as np
        >>> import keras
        >>> outputs = np.zeros((1, 2, 2, 3), "float32"); outputs[0, 0, :, 1] = 0.9
        >>> scores = SegmentationScore(1)(keras.ops.convert_to_tensor(outputs))
        >>> round(float(keras.ops.convert_to_numpy(scores)[0]), 3)
        1.8
    """

    _fields = ("class_index", "mask")

    def __init__(self, class_index: int, mask: Any = None) -> None:
        self.class_index = _index("class_index", class_index, "SegmentationScore")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != bool or mask.ndim not in (2, 3):
                raise ValueError(
                    "SegmentationScore mask must be a boolean array (h, w) or (N, h, w); "
                    f"received dtype {mask.dtype}, shape {mask.shape}")
            mask = mask.copy()
            mask.setflags(write=False)
        self.mask = mask

    def __call__(self, outputs: Any) -> Any:
        ops = tensor_ops(outputs)
        shape = tuple(outputs.shape)
        if len(shape) != 4:
            raise ValueError(
                f"SegmentationScore needs a segmentation output (batch, h, w, classes); "
                f"received an output of shape {shape}")
        _check_index(self, self.class_index, shape[-1])
        scores = outputs[..., self.class_index]
        if self.mask is None:
            chosen = ops.cast(ops.equal(ops.argmax(outputs, axis=-1), self.class_index),
                              scores.dtype)
            weights = ops.stop_gradient(chosen)
        else:
            if self.mask.shape[-2:] != shape[1:3] and None not in shape[1:3]:
                raise ValueError(
                    f"SegmentationScore mask must be shaped like the output's spatial dims "
                    f"{shape[1:3]}; received mask of shape {self.mask.shape}")
            weights = ops.cast(ops.convert_to_tensor(self.mask), scores.dtype)
        return ops.sum(scores * weights, axis=(1, 2))

    def split(self, count: int) -> list[Score]:
        """Per-doc scores: a ``(N, h, w)`` mask gives doc ``n`` row ``n``, so ``N`` must be
        ``count``.

        Example:
            >>> import numpy as np
            >>> SegmentationScore(0, np.ones((2, 3, 3), bool)).split(2)[1]
            SegmentationScore(class_index=0, mask=<3x3 bool, 9 px>)
        """
        if self.mask is None or self.mask.ndim == 2:
            return [self] * count
        if len(self.mask) != count:
            raise ValueError(
                f"targets: SegmentationScore with one mask per doc must have {count} masks "
                f"(one per doc); received mask of shape {self.mask.shape}")
        return [SegmentationScore(self.class_index, row) for row in self.mask]


def describe(function: ScoreFunction) -> str:
    """How a score function is named in explanations, captions and ``results.jsonl``: its
    ``repr`` for ready-made scores, else the function's qualified name.

    Example:
        >>> describe(ClassScore(3)), describe(len)
        ('ClassScore(class_index=3)', 'len')
    """
    if isinstance(function, Score):
        return repr(function)
    return getattr(function, "__qualname__", None) or repr(function)


def as_target(value: Any) -> int | str:
    """A slot's target as :class:`~gradcam_callbacks.TargetExplanation` and captions hold
    it: an int class index, or a score function's description (str).

    Example:
        >>> as_target(np.int32(3)), as_target("ClassScore(class_index=3)")
        (3, 'ClassScore(class_index=3)')
    """
    return int(value) if is_int(value) else str(value)


def check_result(function: ScoreFunction, result: Any, output_shape: tuple[Any, ...]) -> None:
    """Raise if ``result`` (what ``function`` returned for an output of ``output_shape``) is
    not one floating-point score per doc. Runs on symbolic and traced tensors (static shapes).

    Raises:
        TypeError: not a tensor, or integer / boolean scores (not differentiable).
        ValueError: not shape ``(batch,)``.

    Example:
        >>> import keras
        >>> check_result(ClassScore(0), keras.KerasTensor((3,)), (3, 10))
    """
    name = describe(function)
    shape, dtype = getattr(result, "shape", None), getattr(result, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(
            f"targets: score function {name} must return a tensor of shape (batch,), one "
            f"score per doc; received {type(result).__name__}: {result!r}")
    shape = tuple(shape)
    batch = output_shape[0] if output_shape else None
    if len(shape) != 1 or (None not in (batch, shape[0]) and shape[0] != batch):
        raise ValueError(
            f"targets: score function {name} must return one score per doc, shape "
            f"({batch if batch is not None else 'batch'},), for an output of shape "
            f"{tuple(output_shape)}; received shape {shape}")
    dtype = getattr(dtype, "name", None) or keras.backend.standardize_dtype(dtype)
    if not (dtype.startswith("float") or dtype.startswith("bfloat")):
        raise TypeError(
            f"targets: score function {name} must return floating-point scores (integer or "
            f"boolean scores have no gradient); received dtype {dtype}")


def _column(score: Score, outputs: Any, index: int) -> Any:
    """Column ``index`` of a ``(batch,)`` or ``(batch, k)`` output."""
    shape = tuple(outputs.shape)
    if len(shape) == 1:
        _check_index(score, index, 1)
        return outputs
    if len(shape) != 2:
        raise ValueError(
            f"{type(score).__name__} needs an output of shape (batch,) or (batch, k); "
            f"received an output of shape {shape}")
    _check_index(score, index, shape[-1])
    return outputs[:, index]


def _check_index(score: Score, index: int, size: int | None) -> None:
    if size is not None and index >= size:
        raise ValueError(f"{score!r}: index {index} is out of range for an output with "
                         f"{size} entries on its last axis")


def _index(name: str, value: Any, owner: str) -> int:
    if not is_int(value) or value < 0:
        raise ValueError(f"{owner} {name} must be an integer >= 0; received {name}={value!r}")
    return int(value)


def _hashable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (value.shape, value.tobytes())
    return value


def _shown(value: Any) -> str:
    if isinstance(value, np.ndarray):
        dims = "x".join(str(d) for d in value.shape)
        return f"<{dims} bool, {int(value.sum())} px>"
    return repr(value)
