"""XGrad-CAM (Fu et al. 2020): ``w_c = sum_ij (G A) / (sum_ij A + 1e-7)``,
``map = sum_c w_c A_c``."""

from __future__ import annotations

import numpy as np

from .base import channel_weighted, method_class


def xgradcam_weights(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Channel weights ``(..., C)``: gradients averaged with the activations as weights.

    Example:
        >>> import numpy as np
        >>> a = np.array([[[1.0]], [[3.0]]]); g = np.array([[[2.0]], [[0.0]]])
        >>> float(xgradcam_weights(a, g)[0].round(6))
        0.5
    """
    activations = np.asarray(activations, np.float64)
    weighted = (np.asarray(grads, np.float64) * activations).sum(axis=(-3, -2))
    return weighted / (activations.sum(axis=(-3, -2)) + 1e-7)


XGradCAM = method_class(
    "XGradCAM", "xgradcam", "XGrad-CAM",
    "XGrad-CAM: like Grad-CAM, but each channel's gradient is averaged with the channel's "
    "own activations as weights, which makes the map satisfy the sensitivity and conservation "
    "axioms. Scaled to [0, 1].",
    channel_weighted(xgradcam_weights))
