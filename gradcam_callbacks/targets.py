"""Targets: what a map explains. Score functions, beyond one class of a ``(batch, classes)``
output, and the normalisation of every ``targets=`` argument into :class:`Slots`, shared by
explain, the engine and the callback's probes.

A score function takes the selected model output (a backend tensor of any rank, batch
first) and returns one floating-point score per doc, ``(batch,)``, written with ``keras.ops``
so that it runs on every backend inside the compiled pass (a Keras 2 model's output is a
TensorFlow tensor: the ready-made scores take their ops from it,
:func:`gradcam_callbacks.keras_family.tensor_ops`; your own use tensor indexing or TensorFlow
ops there). Ready-made: :class:`ClassScore` (what an int target means),
:class:`RegressionScore`, :class:`SegmentationScore`, :class:`MultiLabelScore`; their
``repr`` is what ``Explanation.targets[k].target``, captions and ``results.jsonl`` show, and
two equal ones share one compiled pass.

Example:
    >>> SegmentationScore(3, mask=np.eye(4, dtype=bool))
    SegmentationScore(class_index=3, mask=<4x4 bool, 4 px>)
    >>> RegressionScore(sign=-1)
    RegressionScore(index=0, sign=-1)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ._validation import is_int
from .keras_family import tensor_ops

__all__ = ["ClassScore", "MultiLabelScore", "RegressionScore", "Score", "ScoreFunction",
           "SegmentationScore", "Slots", "as_target", "check_result",
           "check_target_range", "class_slots", "describe", "function_slots",
           "has_score_functions"]

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


@dataclass(frozen=True)
class Slots:
    """Validated targets of N docs, plain data: ``indices`` ``(N, K)`` int32 (class indices,
    -1 for "the top class"; with score functions, positions in ``functions``), ``counts``
    ``(N,)`` how many of each doc's K slots are real (the rest repeat its last target) and
    ``functions``, the distinct score functions in order of first use (``None``: classes).
    Indexing takes docs: ``slots[2:4]`` runs as those docs of the whole.

    Example:
        >>> slots = Slots(np.zeros((2, 1), np.int32), np.ones(2, np.int32), (ClassScore(0),))
        >>> slots[1:].functions, len(slots)
        ((ClassScore(class_index=0),), 2)
    """

    indices: np.ndarray
    counts: np.ndarray
    functions: tuple[ScoreFunction, ...] | None = None

    def __getitem__(self, docs: Any) -> Slots:
        return Slots(self.indices[docs], self.counts[docs], self.functions)

    def __len__(self) -> int:
        return len(self.indices)


def class_slots(targets: Any, count: int, classes: int | None, noun: str = "doc") -> Slots:
    """Class-index targets for ``count`` docs (``noun`` names them in errors): ``None`` (each
    one's top class, -1), a list of ``count`` class indices, or a list of ``count`` lists.

    Example:
        >>> class_slots([[1, 2], 0], 2, classes=3).indices.tolist()
        [[1, 2], [0, 0]]
    """
    if targets is None:
        return Slots(np.full((count, 1), -1, np.int32), np.ones(count, np.int32))
    if isinstance(targets, np.ndarray):
        targets = targets.tolist()
    if not isinstance(targets, (list, tuple)):
        raise TypeError(
            f"targets must be None, a list of {count} class indices or a list of {count} lists; "
            f"received {type(targets).__name__}: {targets!r}")
    if len(targets) != count:
        raise ValueError(
            f"targets must have one entry per {noun} ({count}); received {len(targets)} entries"
        )
    rows = []
    for n, entry in enumerate(targets):
        row = list(entry) if isinstance(entry, (list, tuple, np.ndarray)) else [entry]
        if not row:
            raise ValueError(f"targets[{n}] must not be empty; received {entry!r}")
        for value in row:
            if not is_int(value):
                raise TypeError(
                    f"targets[{n}] must hold integer class indices; received "
                    f"{type(value).__name__}: {value!r}"
                )
            if value < 0:
                raise ValueError(
                    f"targets must be class indices in [0, classes); received {value} in "
                    f"targets[{n}]"
                )
        rows.append([int(v) for v in row])
    found = _padded(rows)
    check_target_range(found.indices, classes)
    return found


def has_score_functions(targets: Any) -> bool:
    """Whether ``targets`` holds a score function (then every entry is read as one).

    Example:
        >>> has_score_functions([0, ClassScore(1)]), has_score_functions([0, 1])
        (True, False)
    """
    if callable(targets):
        return True
    if not isinstance(targets, (list, tuple)):
        return False
    return any(callable(entry) or (isinstance(entry, (list, tuple))
                                   and any(callable(v) for v in entry)) for entry in targets)


def function_slots(targets: Any, count: int, check: Callable[[ScoreFunction], None] | None = None,
                   noun: str = "doc") -> Slots:
    """Score-function targets for ``count`` docs: one function for all, or one entry per
    doc (a function, a class index, read as :class:`ClassScore`, or a list of those);
    ``check`` is called on each distinct function (the engine runs it on the model's
    symbolic output).

    Example:
        >>> function_slots(RegressionScore(), 2).functions
        (RegressionScore(index=0, sign=1),)
    """
    def one(value: Any, where: str) -> ScoreFunction:
        if is_int(value) and value >= 0:
            return ClassScore(int(value))
        _check_callable(value, where)
        return _split(value, 1)[0]

    if callable(targets):
        _check_callable(targets, "targets")
        rows = [[f] for f in _split(targets, count)]
    else:
        if len(targets) != count:
            raise ValueError(
                f"targets must be one score function for all {noun}s or a list with one entry "
                f"per {noun} ({count}); received {len(targets)} entries")
        rows = []
        for n, entry in enumerate(targets):
            row = list(entry) if isinstance(entry, (list, tuple)) else [entry]
            if not row:
                raise ValueError(f"targets[{n}] must not be empty; received {entry!r}")
            rows.append([one(value, f"targets[{n}]") for value in row])
    functions: list[ScoreFunction] = []
    indices = []
    for row in rows:
        found = []
        for function in row:
            position = next((i for i, known in enumerate(functions)
                             if known is function or known == function), None)
            if position is None:
                position = len(functions)
                functions.append(function)
                if check is not None:
                    check(function)
            found.append(position)
        indices.append(found)
    return _padded(indices, tuple(functions))


def _padded(rows: list[list[int]], functions: tuple[ScoreFunction, ...] | None = None) -> Slots:
    """Rows of slots, each padded to the longest by repeating its last target."""
    width = max(len(r) for r in rows)
    return Slots(np.array([r + r[-1:] * (width - len(r)) for r in rows], np.int32),
                 np.array([len(r) for r in rows], np.int32), functions)


def _check_callable(value: Any, where: str) -> None:
    if not callable(value) or isinstance(value, type):  # a class is callable, but no score
        raise TypeError(
            f"{where} must be a score function (a callable: outputs -> one score per doc, "
            "such as ClassScore(k) or SegmentationScore(k)) or a class index; received "
            f"{type(value).__name__}: {value!r}")


def _split(function: Any, count: int) -> list[Any]:
    if isinstance(function, Score):
        return function.split(count)
    return [function] * count


def check_target_range(targets: np.ndarray, classes: int | None) -> None:
    """A ValueError naming the first class index ``>= classes`` (``None``: unknown).

    Example:
        >>> check_target_range(np.array([[0, 2]]), 3) is None
        True
    """
    if classes is None:
        return
    # -1 marks "top class" internally; users cannot pass negative targets.
    bad = targets[targets >= classes]
    if bad.size:
        raise ValueError(
            f"targets must be class indices in [0, {classes}); received {int(bad.flat[0])}"
        )




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
