"""Attention rollout (Abnar & Zuidema 2020): how much each patch token flows into the class
token through all attention layers.

Per layer the heads' attention weights are averaged, the residual connection is added as an
identity (``0.5 A + 0.5 I``), rows are renormalised to sum to 1, and the layers are
multiplied, the last on the left: ``R = A_L ... A_1``. The map is the class token's row of
``R`` over the patch tokens (the prefix tokens dropped); a model without prefix tokens (a
mean-pooled head) gets the mean of the rows, the rollout of the mean token. No gradients: the
same map for every target. Attention weights come from every ``keras.layers.MultiHeadAttention``
of the model, read in a compiled forward pass with no backward pass
(:func:`gradcam_callbacks.taps.attention_weights`,
:func:`gradcam_callbacks.backends.score_function`).
"""

from __future__ import annotations

import numpy as np

from .base import CamInputs, CamResult, method_class, no_channel_weights


def mixed_attention(attention: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """``(..., L, heads, T, T)`` attention weights -> ``(..., L, T, T)``: per layer the head
    mean with ``residual`` identity (the residual connection), rows renormalised.

    Example:
        >>> import numpy as np
        >>> mixed_attention(np.full((1, 1, 2, 2), 0.5)).tolist()  # 1 layer, 1 head, 2 tokens
        [[[0.75, 0.25], [0.25, 0.75]]]
    """
    mixed = np.asarray(attention).mean(axis=-3, dtype=np.float64)
    mixed = (1 - residual) * mixed + residual * np.eye(mixed.shape[-1])
    return mixed / mixed.sum(axis=-1, keepdims=True)


def patch_map(rows: np.ndarray, layout: object) -> np.ndarray:
    """``(..., T)`` relevance per token -> ``(..., h, w)``: the patch tokens on their grid,
    the prefix tokens dropped.

    Example:
        >>> import numpy as np
        >>> from gradcam_callbacks.tokens import TokenLayout
        >>> patch_map(np.arange(5.0)[None], TokenLayout(1, 2, 2)).tolist()
        [[[1.0, 2.0], [3.0, 4.0]]]
    """
    prefix, height, width = layout.prefix, layout.height, layout.width  # type: ignore[attr-defined]
    return rows[..., prefix:].reshape(*rows.shape[:-1], height, width)


def patch_relevance(matrices: np.ndarray, layout: object) -> np.ndarray:
    """``(..., T, T)`` token-to-token relevance -> ``(..., h, w)`` maps: the class token's
    row (token 0) over the patch tokens, or with no prefix tokens the mean of the rows.

    Example:
        >>> import numpy as np
        >>> from gradcam_callbacks.tokens import TokenLayout
        >>> patch_relevance(np.eye(5)[None], TokenLayout(1, 2, 2)).shape
        (1, 2, 2)
    """
    prefix = layout.prefix  # type: ignore[attr-defined]
    return patch_map(matrices[..., 0, :] if prefix else matrices.mean(axis=-2), layout)


def rollout_rows(attention: np.ndarray, prefix: int, residual: float = 0.5) -> np.ndarray:
    """``(..., L, heads, T, T)`` attention weights -> ``(..., T)``: the row of the rollout
    ``A_L ... A_1`` of the layers' :func:`mixed_attention` that the map reads, the class
    token's (token 0) with ``prefix`` tokens, else the mean of the rows. Computed as a row
    vector times each layer from the last back, L vector-matrix products instead of L
    matrix products (at 197 tokens, 8 images and 4 layers: milliseconds instead of half a second).

    Example:
        >>> import numpy as np
        >>> uniform = np.full((1, 2, 1, 2, 2), 0.5)  # 2 layers, 1 head, 2 tokens
        >>> rollout_rows(uniform, prefix=1).round(3).tolist()
        [[0.625, 0.375]]
    """
    mixed = mixed_attention(attention, residual)
    tokens = mixed.shape[-1]
    row = np.zeros(mixed.shape[:-3] + (tokens,))
    if prefix:
        row[..., 0] = 1.0
    else:
        row[...] = 1.0 / tokens
    for layer in reversed(range(mixed.shape[-3])):
        row = np.einsum("...t,...ts->...s", row, mixed[..., layer, :, :])
    return row


def compute(inputs: CamInputs) -> CamResult:
    """Rollout maps, the same for every target slot of a doc."""
    rows = rollout_rows(inputs.attention, inputs.layout.prefix)  # type: ignore[union-attr]
    maps = patch_map(rows, inputs.layout)
    slots = inputs.targets.shape[1]
    return CamResult(np.repeat(maps[:, None], slots, axis=1), no_channel_weights(inputs.grads))


Rollout = method_class(
    "Rollout", "rollout", "Attention rollout",
    "Attention rollout: the attention weights of every layer, averaged over heads, with the "
    "residual as identity, multiplied through the layers; the class token's attention to "
    "each patch (no gradients, the same map for every target). Scaled to [0, 1].",
    compute, needs_attention=True, needs_gradients=False)
