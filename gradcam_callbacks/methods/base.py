"""What a CAM method is: a name, a title, a description and one function from the engine's
numbers (:class:`CamInputs`) to unnormalised maps (:class:`CamResult`).

The engine normalises every map the same way afterwards (:func:`gradcam_callbacks.cam.normalise`).
This module imports nothing from the engine, so that methods never depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# (inputs (B, ...) of the model's input shape) -> the selected output's scores, numpy:
# (B, classes), or (B, F) for F score functions.
ScoreCallable = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CamInputs:
    """The engine's numbers for N docs and K target slots, activations channels last.

    Attributes:
        activations: ``(N, h, w, C)``, the layer's activation maps.
        grads: ``(N, K, h, w, C)``, the gradient of each target's score with respect to them.
        docs: ``(N, ...)``, the model inputs.
        targets: ``(N, K)`` int, the resolved class index of each slot.
        data_format: ``"channels_last"`` or ``"channels_first"``, the layout of ``docs``.
        score: The model's compiled, batched, score-only forward (Score-CAM uses it).
        batch_size: How many inputs :attr:`score` may take at once (``None``: the
            method's default).
        max_channels: Score-CAM's channel budget (``None``: all channels).
        attention: ``(N, L, heads, T, T)``, the attention weights of the model's L attention
            layers (``None`` unless the method :attr:`~Method.needs_attention`).
        attention_grads: ``(N, K, L, heads, T, T)``, each target's gradient with respect
            to them.
        layout: Where the attention's T tokens lie: prefix tokens, then an ``h x w`` grid
            (a :class:`gradcam_callbacks.tokens.TokenLayout`).
    """

    activations: np.ndarray
    grads: np.ndarray
    docs: np.ndarray
    targets: np.ndarray
    data_format: str
    score: ScoreCallable
    batch_size: int | None
    max_channels: int | None = None
    attention: np.ndarray | None = None
    attention_grads: np.ndarray | None = None
    layout: Any = None


@dataclass(frozen=True)
class CamResult:
    """A method's output before normalisation.

    Attributes:
        maps: ``(N, K, h, w)`` float64 localisation maps, before ReLU and scaling.
        weights: ``(N, K, C)`` channel weights such that ``maps`` is their weighted sum of
            the activation maps (Eigen-CAM: of the mean-centred ones); NaN for methods whose
            weights vary over space (HiResCAM, LayerCAM), which have no channel weights.
    """

    maps: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class Method:
    """A registered CAM method.

    Attributes:
        name: The name users pass as ``method=`` (e.g. ``"gradcam++"``).
        title: The name shown to people and stored in ``Explanation.method``
            (e.g. ``"Grad-CAM++"``).
        description: One paragraph on what the heatmap shows (``Explanation.description``).
        compute: ``CamInputs -> CamResult``.
        needs_attention: Whether the method reads the attention weights (attention
            rollout): the pass then also taps every ``MultiHeadAttention`` layer.
        needs_gradients: Whether the method reads gradients; one that does not (attention
            rollout) runs on the compiled forward alone, with no backward pass.

    Example:
        >>> from gradcam_callbacks.methods import get_method
        >>> get_method("gradcam++").title
        'Grad-CAM++'
    """

    name: str
    title: str
    description: str
    compute: Callable[[CamInputs], CamResult]
    needs_attention: bool = False
    needs_gradients: bool = True


def no_channel_weights(grads: np.ndarray) -> np.ndarray:
    """The ``(N, K, C)`` NaN weights of a method without channel weights."""
    return np.full(grads.shape[:2] + grads.shape[-1:], np.nan, dtype=np.float32)


def per_target(activations: np.ndarray) -> np.ndarray:
    """``(N, h, w, C) -> (N, 1, h, w, C)``, to broadcast against ``(N, K, ...)`` gradients."""
    return activations[:, None]


def channel_weighted(
    weights: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Callable[[CamInputs], CamResult]:
    """The ``compute`` of a method whose map is ``sum_c w_c A_c`` with
    ``w = weights(activations (N, 1, h, w, C), grads (N, K, h, w, C)) -> (N, K, C)``."""

    def compute(inputs: CamInputs) -> CamResult:
        found = weights(per_target(inputs.activations), inputs.grads)
        maps = np.einsum("nkc,nhwc->nkhw", found, inputs.activations.astype(np.float64))
        return CamResult(maps, found.astype(np.float32))

    compute.__doc__ = f"Maps of ``sum_c w_c A_c`` with ``w`` from ``{weights.__name__}``."
    return compute


def elementwise(
    maps: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Callable[[CamInputs], CamResult]:
    """The ``compute`` of a method whose weights vary over space:
    ``maps(activations (N, 1, h, w, C), grads (N, K, h, w, C)) -> (N, K, h, w)``; its
    ``weights`` are NaN."""

    def compute(inputs: CamInputs) -> CamResult:
        return CamResult(maps(per_target(inputs.activations), inputs.grads),
                         no_channel_weights(inputs.grads))

    compute.__doc__ = f"Maps of ``{maps.__name__}``; no channel weights (NaN)."
    return compute
