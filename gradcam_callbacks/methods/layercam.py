"""LayerCAM (Jiang et al. 2021): ``map = sum_c ReLU(G_c) * A_c`` element-wise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import CamInputs, CamResult, Method, elementwise


def layercam_maps(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Unnormalised maps ``(..., h, w)`` from activations and gradients ``(..., h, w, C)``.

    Example:
        >>> import numpy as np
        >>> layercam_maps(np.ones((1, 2, 1)), np.array([[[1.0], [-1.0]]])).tolist()
        [[1.0, 0.0]]
    """
    grads = np.maximum(np.asarray(grads, np.float64), 0)
    return (grads * np.asarray(activations, np.float64)).sum(axis=-1)


compute = elementwise(layercam_maps)


@dataclass(frozen=True)
class LayerCAM(Method):
    """LayerCAM: see the module's docstring.

    Example:
        >>> LayerCAM().name, LayerCAM().title
        ('layercam', 'LayerCAM')
    """

    name = "layercam"
    title = "LayerCAM"
    description = (
        "LayerCAM: the activation maps weighted element-wise by the positive part of the "
        "gradient of the target's score, summed over channels; finer than Grad-CAM, and usable "
        "at earlier layers. Scaled to [0, 1]."
    )

    def compute(self, inputs: CamInputs) -> CamResult:
        """See :meth:`Method.compute`."""
        return compute(inputs)
