"""Grad-CAM (Selvaraju et al. 2017), with ELI5's arithmetic: ``w_c = mean_ij G``,
``map = sum_c w_c A_c``."""

from __future__ import annotations

from dataclasses import dataclass

from ..explanation import DESCRIPTION
from .base import CamInputs, CamResult, Method, per_target


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


@dataclass(frozen=True)
class GradCAM(Method):
    """Grad-CAM: see the module's docstring.

    Example:
        >>> GradCAM().name, GradCAM().title
        ('gradcam', 'Grad-CAM')
    """

    name = "gradcam"
    title = "Grad-CAM"
    description = DESCRIPTION

    def compute(self, inputs: CamInputs) -> CamResult:
        """See :meth:`Method.compute`."""
        return compute(inputs)
