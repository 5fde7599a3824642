"""Plain data for the results of any method (Grad-CAM, its family, rollout):
:class:`Explanation` and :class:`TargetExplanation`.

The field names follow ELI5's ``eli5.base`` classes so that code written against ELI5's Keras
support keeps working. Formatting lives in :mod:`gradcam_callbacks.image`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

DESCRIPTION = (
    "Grad-CAM for image classification: each target's heatmap is the ReLU of the layer's "
    "activation maps weighted by the spatially averaged gradient of the target's score, "
    "scaled to [0, 1]. Bright regions raise the target's score; dark regions matter little."
)


@dataclass
class TargetExplanation:
    """The explanation of one target class for one image.

    Attributes:
        target: The class index that was explained, or for a score function (see
            :mod:`gradcam_callbacks.targets`) its ``repr``, e.g.
            ``"SegmentationScore(class_index=3, mask=None)"``.
        score: The model's raw output for ``target`` (a probability when the model ends in
            softmax), or the score function's value.
        heatmap: A 2D float array in [0, 1] at the layer's spatial resolution.
        proba: Kept for ELI5 compatibility; always ``None`` (the score is in ``score``).

    Example:
        >>> import numpy as np
        >>> t = TargetExplanation(target=3, score=0.9, heatmap=np.zeros((7, 7)))
        >>> t.target, t.heatmap.shape
        (3, (7, 7))
    """

    target: int | str
    score: float
    heatmap: np.ndarray
    proba: float | None = None


@dataclass
class Explanation:
    """An explanation of one image by one method, with one :class:`TargetExplanation` per target.

    Attributes:
        estimator: The model's name.
        description: What the method computes, in one paragraph.
        error: An error message, empty when the explanation succeeded.
        method: The title of the method that made the heatmaps: ``"Grad-CAM"`` (ELI5's
            value, and the default on CNNs), ``"Attention rollout"`` (the default on ViT,
            DeiT, DINOv2), ``"HiResCAM"``, ...
        image: The Pillow image the heatmaps belong to (given or derived from the input).
        targets: One entry per explained target, in the order asked for.
        layer: The path of the layer used, e.g. ``"mobilenetv2_1.00_224/out_relu"``; for
            an attention method (rollout), the attention layers it reads, e.g.
            ``"vit_backbone/vit_encoder/transformer_block_1/mha .. transformer_block_2/mha
            (2 attention layers)"``.

    In Jupyter an Explanation shows its overlay (see :func:`gradcam_callbacks.format_as_image`).

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> e = Explanation(estimator="cnn", image=Image.new("RGB", (8, 8)),
        ...                 targets=[TargetExplanation(1, 0.5, np.ones((2, 2)))])
        >>> e.method, e.targets[0].target
        ('Grad-CAM', 1)
    """

    estimator: str
    description: str = DESCRIPTION
    error: str = ""
    method: str = "Grad-CAM"
    image: Image.Image | None = None
    targets: list[TargetExplanation] = field(default_factory=list)
    layer: str | None = None

    def _repr_png_(self) -> bytes:
        """PNG bytes of the overlay of every target side by side (Jupyter display hook)."""
        from .image import explanation_strip

        buffer = io.BytesIO()
        explanation_strip(self).save(buffer, format="PNG")
        return buffer.getvalue()
