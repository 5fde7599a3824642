"""The main job, offline: a small CNN learns to find a digit among distractors while
``GradCamCallback`` watches 16 held-out probes in TensorBoard.

The data come from :func:`gradcam_callbacks.demo.datasets.make_cluttered_digits` (scikit-learn's
bundled handwritten digits, placed at random on a noisy canvas with distractor strokes, so
each digit's box is known; nothing is downloaded). After training it prints the test accuracy
and the pointing-game accuracy of Grad-CAM on held-out images (the share whose heatmap peak
falls in the digit's box), saves a contact sheet (probes x logged epochs) and prints the
``tensorboard`` command to watch the run.

Run it as ``gradcam-callbacks demo`` or ``python examples/cluttered_digits.py``, on any
Keras backend.
"""

from __future__ import annotations

from .. import _lazy

# The demo's names, imported on first use: ``gradcam-callbacks demo --help`` reads the
# settings alone and loads no Keras.
_EXPORTS = {
    **{name: "settings" for name in (
        "BATCH_SIZE", "CANVAS_SIZE", "CLUTTER", "DIGIT_SIZE", "EPOCHS", "GRADCAM_LAYER",
        "LABEL_SMOOTHING", "LEARNING_RATE", "MARKER_REACH", "NOISE", "NUM_TEST", "NUM_TRAIN",
        "SHORTCUT_PATIENCE", "SHORTCUT_RATE", "parse_args")},
    **{name: "run" for name in (
        "SmoothedSparseCrossentropy", "build_model", "cosine_learning_rate", "load_data",
        "main", "pretrained", "pretrained_record", "train")},
    **{name: "shortcut" for name in (
        "format_shortcut_row", "marker_regions", "shortcut_rows", "shortcut_scores")},
    **{name: "datasets" for name in ("ClutteredDigits", "make_cluttered_digits")},
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = _lazy.lazy_names(__name__, _EXPORTS, globals())
