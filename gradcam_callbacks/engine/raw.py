"""What one pass gives: :class:`RawExplanation` (the engine's numbers for a batch, per method),
and the refusal of numbers that are not finite (:class:`NonFiniteError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from .. import layers
from .. import targets as scores_module
from .. import tokens as token_maps
from .._validation import index_list
from ..methods.base import Method
from ..methods.gradcam import GradCAM


class NonFiniteError(ValueError):
    """The model produced NaN or infinite values for some inputs, so their Grad-CAM maps
    cannot be normalised to [0, 1].

    ``indices`` are the positions of the affected inputs in the batch passed, ``problems``
    says per input what was not finite (``"score"``, ``"activations"``, ``"gradients"``,
    ``"heatmap"``).

    Example:
        >>> from gradcam_callbacks import explain_predictions
        >>> try:
        ...     explain_predictions(diverged_model, docs[:3])
        ... except NonFiniteError as error:
        ...     print(error.indices)
        [0, 1, 2]
    """

    def __init__(self, message: str, indices: list[int], problems: dict[int, list[str]]):
        super().__init__(message)
        self.indices = indices
        self.problems = problems


@dataclass
class RawExplanation:
    """The engine's numbers for a batch, before they become :class:`Explanation` objects.

    Shapes, with N docs, K target slots and activations ``(h, w, C)`` (channels last):
    ``activations (N, h, w, C)``, ``grads (N, K, h, w, C)``, ``weights (N, K, C)``,
    ``heatmaps (N, K, h, w)``, ``targets (N, K)``, ``scores (N, K)``, ``outputs (N, classes)``.
    ``counts[n]`` is how many of doc n's K slots are real (the rest repeat its last target).
    With score functions (``functions``, see :mod:`gradcam_callbacks.targets`), ``outputs``
    is ``(N, F)``: each of the F distinct functions on each doc, and ``targets`` index them.
    ``heatmaps`` are ``method``'s; ``weights`` its channel weights (Grad-CAM, Grad-CAM++,
    XGrad-CAM, Score-CAM: the map is their weighted sum of the activation maps; Eigen-CAM:
    the first right singular vector, applied to the mean-centred activation maps), and NaN
    for HiResCAM and LayerCAM, whose weights vary over space (``grads``, ``ReLU(grads)``).
    """

    activations: np.ndarray
    grads: np.ndarray
    weights: np.ndarray
    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    outputs: np.ndarray
    counts: np.ndarray
    layer: layers.LayerChoice
    data_format: str
    method: Method = GradCAM()
    functions: tuple[scores_module.ScoreFunction, ...] | None = None
    # attention methods (rollout): the attention weights (N, L, heads, T, T), their
    # gradients (N, K, L, heads, T, T) and where their tokens lie
    attention: np.ndarray | None = None
    attention_grads: np.ndarray | None = None
    layout: token_maps.TokenLayout | None = None
    # False for a forward-only pass (rollout): activations and grads are then empty
    gradients: bool = True

    def explained_targets(self) -> np.ndarray:
        """``(N, K)`` what each slot explained: class indices (int), or with score
        functions their descriptions (``repr``, an object array of str)."""
        if self.functions is None:
            return self.targets
        names = np.array([scores_module.describe(f) for f in self.functions], dtype=object)
        return names[self.targets]


def resolve_targets(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``targets (N, K)`` with each rank ``-r`` replaced by the doc's r-th highest-scoring
    class of ``outputs (N, classes)`` (ties: the lower index first), as the gradient passes
    resolve them, for a forward-only pass.

    Example:
        >>> resolve_targets(np.array([[0.1, 0.7, 0.2]]), np.array([[-1, -2, 0]])).tolist()
        [[1, 2, 0]]
    """
    ranked = np.argsort(-outputs, axis=-1, kind="stable")
    rank = np.clip(-targets - 1, 0, outputs.shape[-1] - 1)
    return np.where(targets < 0, np.take_along_axis(ranked, rank, axis=-1),
                    targets).astype(np.int32)


def check_finite(model: keras.Model, scores: np.ndarray, activations: np.ndarray,
                  grads: np.ndarray, heatmaps: Sequence[np.ndarray], counts: np.ndarray,
                  name: str = "doc") -> None:
    """Raise :class:`NonFiniteError` naming the docs whose numbers are not all finite:
    the pass's scores, activations and gradients, and each method's ``(N, K, h, w)`` maps.

    Example:
        >>> check_finite(model, np.ones((1, 1)), np.ones((1, 2, 2, 3)),
        ...              np.ones((1, 1, 2, 2, 3)), [np.ones((1, 1, 2, 2))], np.ones(1))
    """
    count = len(scores)
    real = np.arange(scores.shape[1])[None, :] < np.asarray(counts)[:, None]  # (N, K)

    def bad(values: np.ndarray, per_slot: bool) -> np.ndarray:
        kept = 2 if per_slot else 1  # empty activations (a forward-only pass) are finite
        finite = np.isfinite(values).all(axis=tuple(range(kept, values.ndim)))
        return ~(finite | ~real).all(axis=1) if per_slot else ~finite

    checks = {"score": bad(scores[..., None], True), "activations": bad(activations, False),
              "gradients": bad(grads, True),
              "heatmap": np.any([bad(maps, True) for maps in heatmaps], axis=0)}
    flagged = np.zeros(count, bool)
    for found in checks.values():
        flagged |= found
    if not flagged.any():
        return
    indices = [int(n) for n in np.flatnonzero(flagged)]
    problems = {n: [what for what, found in checks.items() if found[n]] for n in indices}
    kinds = sorted({what for whats in problems.values() for what in whats},
                   key=list(checks).index)
    raise NonFiniteError(
        f"model {model.name!r} produced non-finite values (NaN or inf: {', '.join(kinds)}) "
        f"for {name}(s) {index_list(indices)} of {count}, so their Grad-CAM maps cannot be "
        f"scaled to [0, 1]: e.g. {name} {indices[0]}: {', '.join(problems[indices[0]])}. A "
        "diverged model (NaN weights) or inputs far outside the training range do this",
        indices, problems,
    )


