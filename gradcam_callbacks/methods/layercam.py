"""LayerCAM (Jiang et al. 2021): ``map = sum_c ReLU(G_c) * A_c`` element-wise."""

from __future__ import annotations

import numpy as np

from .base import elementwise, method_class


def layercam_maps(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Unnormalised maps ``(..., h, w)`` from activations and gradients ``(..., h, w, C)``.

    Example:
        >>> import numpy as np
        >>> layercam_maps(np.ones((1, 2, 1)), np.array([[[1.0], [-1.0]]])).tolist()
        [[1.0, 0.0]]
    """
    grads = np.maximum(np.asarray(grads, np.float64), 0)
    return (grads * np.asarray(activations, np.float64)).sum(axis=-1)


LayerCAM = method_class(
    "LayerCAM", "layercam", "LayerCAM",
    "LayerCAM: the activation maps weighted element-wise by the positive part of the "
    "gradient of the target's score, summed over channels; finer than Grad-CAM, and usable "
    "at earlier layers. Scaled to [0, 1].",
    elementwise(layercam_maps))
