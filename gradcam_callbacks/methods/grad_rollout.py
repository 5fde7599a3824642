"""Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021, "Generic Attention-model
Explainability", their rule for self-attention): class-specific rollout.

Per layer the attention weights are weighted by the target score's gradient with respect to
them, the positive part kept and the heads averaged, ``Ā = E_h[(∇A ⊙ A)+]``; the relevance
starts at the identity and accumulates ``R = R + Ā R`` layer by layer. The map is the class
token's row of ``R`` over the patch tokens (prefix tokens dropped); without prefix tokens,
the mean of the rows.
"""

from __future__ import annotations

import numpy as np

from .base import CamInputs, CamResult, method_class, no_channel_weights
from .rollout import patch_relevance


def relevance_matrices(attention: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """``(..., L, heads, T, T)`` weights and gradients -> ``(..., T, T)`` relevance
    ``R = prod_l (I + Ā_l)`` applied in layer order, ``Ā = mean_h (grads * attention)+``.

    Example:
        >>> import numpy as np
        >>> a = np.full((1, 1, 2, 2), 0.5)  # 1 layer, 1 head, 2 tokens
        >>> relevance_matrices(a, np.ones_like(a)).tolist()
        [[1.5, 0.5], [0.5, 1.5]]
    """
    weighted = np.maximum(np.asarray(grads, np.float64) * attention, 0).mean(axis=-3)
    tokens = weighted.shape[-1]
    result = np.broadcast_to(np.eye(tokens), weighted.shape[:-3] + (tokens, tokens)).copy()
    for layer in range(weighted.shape[-3]):
        result = result + weighted[..., layer, :, :] @ result
    return result


def compute(inputs: CamInputs) -> CamResult:
    """Gradient-weighted rollout maps, one per target slot."""
    attention = inputs.attention[:, None]  # (N, 1, L, heads, T, T) against (N, K, ...)
    maps = patch_relevance(relevance_matrices(attention, inputs.attention_grads), inputs.layout)
    return CamResult(maps, no_channel_weights(inputs.grads))


GradRollout = method_class(
    "GradRollout", "grad-rollout", "Gradient rollout",
    "Gradient-weighted attention rollout (Chefer et al. 2021): each layer's attention "
    "weighted by the target's gradient, positive part, averaged over heads, accumulated "
    "with the identity through the layers; the class token's relevance to each patch. "
    "Scaled to [0, 1].",
    compute, needs_attention=True)
