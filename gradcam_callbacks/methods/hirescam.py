"""HiResCAM (Draelos & Carin 2020): ``map = sum_c G_c * A_c`` element-wise, no spatial
averaging, so the map shows exactly where the score's first-order change comes from."""

from __future__ import annotations

import numpy as np

from .base import elementwise, method_class


def hirescam_maps(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Unnormalised maps ``(..., h, w)`` from activations and gradients ``(..., h, w, C)``.

    Example:
        >>> import numpy as np
        >>> hirescam_maps(np.ones((1, 2, 1)), np.array([[[1.0], [-1.0]]])).tolist()
        [[1.0, -1.0]]
    """
    return (np.asarray(grads, np.float64) * np.asarray(activations, np.float64)).sum(axis=-1)


HiResCAM = method_class(
    "HiResCAM", "hirescam", "HiResCAM",
    "HiResCAM: the activation maps multiplied element-wise by the gradient of the target's "
    "score and summed over channels (no spatial averaging), so every bright cell raised the "
    "score there. Scaled to [0, 1].",
    elementwise(hirescam_maps))
