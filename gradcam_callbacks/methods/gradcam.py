"""Grad-CAM (Selvaraju et al. 2017), with ELI5's arithmetic: ``w_c = mean_ij G``,
``map = sum_c w_c A_c``."""

from __future__ import annotations

from ..explanation import DESCRIPTION
from .base import CamInputs, CamResult, method_class, per_target


def compute(inputs: CamInputs) -> CamResult:
    """Grad-CAM's weights and maps, bit for bit ELI5's under TensorFlow.

    Example:
        >>> import numpy as np
        >>> from gradcam_callbacks.methods import heatmaps
        >>> heatmaps("gradcam", np.ones((1, 2, 2, 3)), np.ones((1, 1, 2, 2, 3))).round(3).tolist()
        [[[[1.0, 1.0], [1.0, 1.0]]]]
    """
    from ..cam import channel_weights, weighted_sum  # Keras' reductions, ELI5's bits

    weights = channel_weights(inputs.grads)
    return CamResult(weighted_sum(weights, per_target(inputs.activations)), weights)


GradCAM = method_class(
    "GradCAM", "gradcam", "Grad-CAM", DESCRIPTION,
    compute)
