"""A toy CAM method in one file, as a contributor would write it: Grad-CAM's map raised to
``power`` (so its bright cells stand out more). tests/test_toy_method.py registers it with
one line and uses it from explain, the callback and the command line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcam_callbacks.methods import (
    CamInputs,
    CamResult,
    GradCAM,
    Method,
    option,
    positive_or_none,
)


@dataclass(frozen=True)
class PowerCAM(Method):
    """Grad-CAM's map, its positive part raised to ``power``."""

    name = "powercam"
    title = "Power-CAM"
    description = "Power-CAM: Grad-CAM's map raised to a power. Scaled to [0, 1]."
    power: int | None = option(None, "raise Grad-CAM's map to this power (default: 2)",
                               positive_or_none)

    def compute(self, inputs: CamInputs) -> CamResult:
        found = GradCAM().compute(inputs)
        return CamResult(np.maximum(found.maps, 0) ** (self.power or 2), found.weights)
