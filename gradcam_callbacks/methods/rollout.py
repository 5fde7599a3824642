"""Attention rollout (Abnar & Zuidema 2020): how much each patch token flows into the class
token through all attention layers.

Per layer the heads' attention weights are averaged, the residual connection is added as an
identity (``0.5 A + 0.5 I``), rows are renormalised to sum to 1, and the layers are
multiplied, the last on the left: ``R = A_L ... A_1``. The map is the class token's row of
``R`` over the patch tokens (the prefix tokens dropped); a model without prefix tokens (a
mean-pooled head) gets the mean of the rows, the rollout of the mean token. No gradients: the
same map for every target. Attention weights come from every ``keras.layers.MultiHeadAttention``
of the model, read in a compiled forward pass with no backward pass
(:func:`gradcam_callbacks.layers.attention_weights`,
:func:`gradcam_callbacks.backends.score_function`).
"""

from __future__ import annotations

import numpy as np

from .base import CamInputs, CamResult, Method, no_channel_weights


def rollout_matrices(attention: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """``(..., L, heads, T, T)`` attention weights -> ``(..., T, T)`` rollout ``A_L ... A_1``
    of the head means with ``residual`` identity, rows renormalised.

    Example:
        >>> import numpy as np
        >>> uniform = np.full((1, 2, 1, 2, 2), 0.5)  # 2 layers, 1 head, 2 tokens
        >>> rollout_matrices(uniform).round(3).tolist()
        [[[0.625, 0.375], [0.375, 0.625]]]
    """
    mixed = np.asarray(attention, np.float64).mean(axis=-3)
    tokens = mixed.shape[-1]
    mixed = (1 - residual) * mixed + residual * np.eye(tokens)
    mixed /= mixed.sum(axis=-1, keepdims=True)
    result = np.broadcast_to(np.eye(tokens), mixed.shape[:-3] + (tokens, tokens)).copy()
    for layer in range(mixed.shape[-3]):
        result = mixed[..., layer, :, :] @ result
    return result


def patch_relevance(matrices: np.ndarray, layout: object) -> np.ndarray:
    """``(..., T, T)`` token-to-token relevance -> ``(..., h, w)`` maps: the class token's
    row (token 0) over the patch tokens, or with no prefix tokens the mean of the rows.

    Example:
        >>> import numpy as np
        >>> from gradcam_callbacks.layers import TokenLayout
        >>> patch_relevance(np.eye(5)[None], TokenLayout(1, 2, 2)).shape
        (1, 2, 2)
    """
    prefix, height, width = layout.prefix, layout.height, layout.width  # type: ignore[attr-defined]
    rows = matrices[..., 0, :] if prefix else matrices.mean(axis=-2)
    return rows[..., prefix:].reshape(*rows.shape[:-1], height, width)


def rollout_rows(attention: np.ndarray, prefix: int, residual: float = 0.5) -> np.ndarray:
    """``(..., L, heads, T, T)`` attention weights -> ``(..., T)``: the row of the rollout
    ``A_L ... A_1`` (:func:`rollout_matrices`) that the map reads, the class token's (token
    0) with ``prefix`` tokens, else the mean of the rows. Computed as a row vector times
    each layer from the last back, L vector-matrix products instead of L matrix products
    (at 197 tokens, 8 images and 4 layers: milliseconds instead of half a second).

    Example:
        >>> import numpy as np
        >>> uniform = np.full((1, 2, 1, 2, 2), 0.5)  # 2 layers, 1 head, 2 tokens
        >>> rollout_rows(uniform, prefix=1).round(3).tolist()
        [[0.625, 0.375]]
    """
    mixed = np.asarray(attention).mean(axis=-3, dtype=np.float64)
    tokens = mixed.shape[-1]
    mixed = (1 - residual) * mixed + residual * np.eye(tokens)
    mixed /= mixed.sum(axis=-1, keepdims=True)
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
    layout = inputs.layout
    rows = rollout_rows(inputs.attention, layout.prefix)  # type: ignore[union-attr]
    maps = rows[..., layout.prefix:].reshape(len(rows), layout.height, layout.width)  # type: ignore[union-attr]
    slots = inputs.targets.shape[1]
    return CamResult(np.repeat(maps[:, None], slots, axis=1), no_channel_weights(inputs.grads))


METHOD = Method(
    "rollout", "Attention rollout",
    "Attention rollout: the attention weights of every layer, averaged over heads, with the "
    "residual as identity, multiplied through the layers; the class token's attention to "
    "each patch (no gradients, the same map for every target). Scaled to [0, 1].",
    compute,
    needs_attention=True,
    needs_gradients=False,
)
