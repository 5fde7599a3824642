"""gradcam-callbacks: Grad-CAM for Keras 3 image classifiers on TensorFlow, JAX and PyTorch.

Example:
    >>> from gradcam_callbacks import explain_prediction, format_as_image  # doctest: +SKIP
    >>> overlay = format_as_image(explain_prediction(model, doc))  # doctest: +SKIP
"""

from .callback import GradCamCallback
from .explain import explain_prediction, explain_predictions, show_prediction
from .explanation import Explanation, TargetExplanation
from .gradcam import gradcam, gradcam_backend
from .image import format_as_image

__version__ = "0.1.0"

__all__ = [
    "Explanation",
    "GradCamCallback",
    "TargetExplanation",
    "explain_prediction",
    "explain_predictions",
    "format_as_image",
    "gradcam",
    "gradcam_backend",
    "show_prediction",
]
