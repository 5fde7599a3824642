"""HiResCAM (Draelos & Carin 2020): ``map = sum_c G_c * A_c`` element-wise, no spatial
averaging, so the map shows exactly where the score's first-order change comes from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import CamInputs, CamResult, Method, elementwise


def hirescam_maps(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Unnormalised maps ``(..., h, w)`` from activations and gradients ``(..., h, w, C)``.

    Example:
        >>> import numpy as np
        >>> hirescam_maps(np.ones((1, 2, 1)), np.array([[[1.0], [-1.0]]])).tolist()
        [[1.0, -1.0]]
    """
    return (np.asarray(grads, np.float64) * np.asarray(activations, np.float64)).sum(axis=-1)


compute = elementwise(hirescam_maps)


@dataclass(frozen=True)
class HiResCAM(Method):
    """HiResCAM: see the module's docstring.

    Example:
        >>> HiResCAM().name, HiResCAM().title
        ('hirescam', 'HiResCAM')
    """

    name = "hirescam"
    title = "HiResCAM"
    description = (
        "HiResCAM: the activation maps multiplied element-wise by the gradient of the target's "
        "score and summed over channels (no spatial averaging), so every bright cell raised the "
        "score there. Scaled to [0, 1]."
    )

    def compute(self, inputs: CamInputs) -> CamResult:
        """See :meth:`Method.compute`."""
        return compute(inputs)
