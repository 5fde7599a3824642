"""The tiny four-headed model of tests/test_targets.py, its score-function cases, and the
cross-backend reference maps (``python tests/targets_reference.py`` under TensorFlow
rewrites ``tests/data/targets_reference.npz``).

One trunk (conv -> ReLU ``"feat"``, 8x8x4) and four heads, one output each: a segmenter
``(N, 8, 8, 3)`` softmax, a regression ``(N, 2)``, a classifier ``(N, 3)`` softmax and a
multi-label ``(N, 3)`` sigmoid head. Weights come from numpy, so every backend computes the
same numbers.

How the stored numbers were made: by this package itself (:func:`reference_runs`, through the
engine), under TensorFlow on CPU (commit 5399d43, 2026-11-30), so they hold the engine still
across backends, not to the definitions. That is done live in tests/test_targets.py: each
ready-made score and its gradients against the backend's own autodiff, the documented sums,
Score-CAM's weights against a softmax of the masked inputs' scores. Measured spread from the
stored numbers (TensorFlow with oneDNN on and off, JAX at XLA level 0 and default, torch):
heatmaps 1.4e-6, grads 1.0e-7, scores 3.8e-6, Score-CAM maps 1.9e-7; the test allows 4e-5.
"""

from __future__ import annotations

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from models import set_numpy_weights  # noqa: E402

from gradcam_callbacks.targets import (  # noqa: E402
    ClassScore,
    MultiLabelScore,
    RegressionScore,
    SegmentationScore,
)

PATH = os.path.join(os.path.dirname(__file__), "data", "targets_reference.npz")
HEADS = ("seg", "reg", "cls", "ml")
SIZE = 8
DOCS = 4


def heads_model(seed: int = 0) -> tuple[keras.Model, dict[str, list[keras.layers.Layer]]]:
    """The model and, per head, the layers after ``"feat"`` (to replay outside the engine)."""
    inputs = keras.Input((SIZE, SIZE, 1))
    features = keras.layers.ReLU(name="feat")(
        keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs))
    pool = keras.layers.GlobalAveragePooling2D(name="gap")
    tails = {
        "seg": [keras.layers.Conv2D(3, 1, name="seg_logits"), keras.layers.Softmax(name="seg")],
        "reg": [pool, keras.layers.Dense(2, name="reg")],
        "cls": [pool, keras.layers.Dense(3, activation="softmax", name="cls")],
        "ml": [pool, keras.layers.Dense(3, activation="sigmoid", name="ml")],
    }
    outputs = []
    for name in HEADS:
        h = features
        for layer in tails[name]:
            h = layer(h)
        outputs.append(h)
    return set_numpy_weights(keras.Model(inputs, outputs, name="heads"), seed, 0.6), tails


def docs(count: int = DOCS, seed: int = 1) -> np.ndarray:
    return np.random.RandomState(seed).rand(count, SIZE, SIZE, 1).astype("float32")


def masks(count: int = DOCS) -> np.ndarray:
    """``(count, 8, 8)`` boolean masks: a different 3x3 square per doc."""
    found = np.zeros((count, SIZE, SIZE), bool)
    for n in range(count):
        found[n, n:n + 3, 4 - n % 3:7 - n % 3] = True
    return found


def cases() -> dict[str, tuple[str, object]]:
    """name -> (head, targets): the ready-made scores, one for all docs or one per doc."""
    square = np.zeros((SIZE, SIZE), bool)
    square[2:6, 1:4] = True
    return {
        "class": ("cls", ClassScore(2)),
        "regression_up": ("reg", RegressionScore(1)),
        "regression_down": ("reg", RegressionScore(0, sign=-1)),
        "multilabel": ("ml", MultiLabelScore(1)),
        "segmentation_mask": ("seg", SegmentationScore(1, square)),
        "segmentation_predicted": ("seg", SegmentationScore(0)),
        "segmentation_per_doc_masks": ("seg", SegmentationScore(2, masks())),
        "one_per_doc": ("seg", [SegmentationScore(0), SegmentationScore(1, square),
                                SegmentationScore(2, masks()[2]), SegmentationScore(1)]),
    }


def reference_runs() -> dict[str, np.ndarray]:
    """Grad-CAM heatmaps and gradients of every case, through the engine."""
    from gradcam_callbacks.explain import explain_raw

    model, _ = heads_model()
    stored = {}
    for name, (head, targets) in cases().items():
        raw = explain_raw(model, docs(), targets, "feat", HEADS.index(head))
        stored[f"{name}/heatmaps"] = raw.heatmaps
        stored[f"{name}/grads"] = raw.grads
        stored[f"{name}/scores"] = raw.scores
    head, targets = cases()["segmentation_per_doc_masks"]
    stored["segmentation_per_doc_masks/scorecam"] = explain_raw(
        model, docs(), targets, "feat", HEADS.index(head), method="scorecam").heatmaps
    return stored


if __name__ == "__main__":
    assert keras.backend.backend() == "tensorflow", "write the reference under TensorFlow"
    stored = reference_runs()
    np.savez_compressed(PATH, **stored)
    print(f"wrote {PATH}: {len(stored)} arrays")
