"""gradcam-callbacks: Grad-CAM for Keras 3 image classifiers on TensorFlow, JAX and PyTorch.

Public names are imported on first use, so that ``import gradcam_callbacks`` (and the
command line's ``sheet``) does not pay for importing Keras and a backend.

Example:
    >>> from gradcam_callbacks import explain_prediction, format_as_image
    >>> overlay = format_as_image(explain_prediction(model, doc))
    >>> overlay.size, overlay.mode
    ((48, 48), 'RGBA')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _lazy, _moved

__version__ = "0.1.0"
_moved.install()  # old module paths (gradcam_callbacks.callback, ...) keep working, and warn

_EXPORTS = {
    "ClassScore": "targets",
    "Explanation": "explanation",
    "GradCamCallback": "watch.callback",
    "MultiLabelScore": "targets",
    "RegressionScore": "targets",
    "SegmentationScore": "targets",
    "TargetExplanation": "explanation",
    "explain_prediction": "explain",
    "explain_predictions": "explain",
    "format_as_image": "image",
    "gradcam": "cam",
    "gradcam_backend": "explain",
    "show_prediction": "explain",
}

__all__ = [
    "ClassScore",
    "Explanation",
    "GradCamCallback",
    "MultiLabelScore",
    "RegressionScore",
    "SegmentationScore",
    "TargetExplanation",
    "explain_prediction",
    "explain_predictions",
    "format_as_image",
    "gradcam",
    "gradcam_backend",
    "show_prediction",
]

if TYPE_CHECKING:
    from .cam import gradcam
    from .explain import (
        explain_prediction,
        explain_predictions,
        gradcam_backend,
        show_prediction,
    )
    from .explanation import Explanation, TargetExplanation
    from .image import format_as_image
    from .targets import ClassScore, MultiLabelScore, RegressionScore, SegmentationScore
    from .watch.callback import GradCamCallback


__getattr__, __dir__ = _lazy.lazy_names(__name__, _EXPORTS, globals())
