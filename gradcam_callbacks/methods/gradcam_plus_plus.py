"""Grad-CAM++ (Chattopadhay et al. 2018, eq. 19), as pytorch-grad-cam computes it:
``a = G^2 / (2 G^2 + (sum_ij A) G^3 + 1e-6)`` (0 where ``G == 0``),
``w_c = sum_ij a ReLU(G)``, ``map = sum_c w_c A_c``."""

from __future__ import annotations

import numpy as np

from .base import channel_weighted, method_class


def gradcam_plus_plus_weights(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Channel weights ``(..., C)`` from activations and gradients ``(..., h, w, C)``.

    Unlike Grad-CAM's, these weights depend on the gradients' scale (through the ``G^3``
    term), so multiplying the score by a constant can change the map.

    Example:
        >>> import numpy as np
        >>> gradcam_plus_plus_weights(np.ones((1, 1, 1)), np.ones((1, 1, 1))).round(4).tolist()
        [0.3333]
    """
    # In the gradients' own precision (float32 from the engine: no float64 copies of the
    # (N, K, h, w, C) arrays), three temporaries, the rest in place.
    grads = np.asarray(grads)
    dtype = np.result_type(grads.dtype, np.float32)
    grads = grads.astype(dtype, copy=False)
    spatial_sum = np.asarray(activations).sum(axis=(-3, -2), keepdims=True, dtype=np.float64)
    squared = grads * grads
    denominator = grads * spatial_sum.astype(dtype)  # (sum_ij A) G
    denominator += 2
    denominator *= squared  # 2 G^2 + (sum_ij A) G^3
    denominator += 1e-6
    alpha = np.divide(squared, denominator, out=squared)
    alpha *= grads
    # ReLU(G) is 0 wherever G <= 0 (or NaN), which covers "a = 0 where G == 0".
    np.copyto(alpha, 0, where=np.logical_not(grads > 0))
    return alpha.sum(axis=(-3, -2), dtype=np.float64)


GradCAMPlusPlus = method_class(
    "GradCAMPlusPlus", "gradcam++", "Grad-CAM++",
    "Grad-CAM++: like Grad-CAM, but each channel's weight sums only the positive gradients, "
    "each weighted by a second-order coefficient, so that several separate instances of the "
    "target each light up. Scaled to [0, 1].",
    channel_weighted(gradcam_plus_plus_weights))
