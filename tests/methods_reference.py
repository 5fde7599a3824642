"""Every CAM method's heatmaps on fixed models and inputs, the cross-backend reference.

The models have a convolution after the explained layer ("feat"), so that the gradients vary
over space. Run under TensorFlow to (re)write ``data/methods_reference.npz``:
``KERAS_BACKEND=tensorflow python tests/methods_reference.py``. Every backend's test run
compares its heatmaps with the stored ones (tests/test_methods.py).

How the stored numbers were made: by this package itself (:func:`compute`, through the
engine), under TensorFlow on CPU (commit bd9ce9d, 2026-11-30), so they hold the engine still
across backends and versions, not to its definitions. That is done live: every method's maps
against numpy transcriptions of the definitions, fed with activations and gradients the test
takes with the backend's own autodiff (the two ``*_matches_numpy_transcription_*`` tests
of tests/test_methods.py), on every backend. Measured spread from the stored maps
(TensorFlow with oneDNN on and off, JAX at XLA level 0 and default, torch): at most 3.1e-6;
the test allows 3e-5.
"""

from __future__ import annotations

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from models import images, set_numpy_weights  # noqa: E402

PATH = os.path.join(os.path.dirname(__file__), "data", "methods_reference.npz")
SHAPE = (12, 12, 3)
TARGETS = [[0, 2], [1, 1], [3, 0]]
# (method, max_channels) pairs stored; Score-CAM also with a channel budget.
RUNS = [("gradcam", None), ("gradcam++", None), ("xgradcam", None), ("hirescam", None),
        ("layercam", None), ("eigencam", None), ("scorecam", None), ("scorecam", 3)]


def spatial_cnn(seed: int = 0, activation: str | None = "softmax") -> keras.Model:
    """Conv (stride 2) -> ReLU "feat" (6x6x5, explained) -> Conv -> tanh -> GAP -> Dense(4)."""
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(5, 3, strides=2, padding="same", name="conv1")(inputs)
    h = keras.layers.ReLU(name="feat")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv2")(h)
    h = keras.layers.Activation("tanh", name="act2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(4, activation=activation, name="head")(h)
    return set_numpy_weights(keras.Model(inputs, outputs, name=f"spatial_{seed}"), seed, 0.6)


def cases():
    """``(key, model, docs)`` of every stored case."""
    yield "softmax", spatial_cnn(0, "softmax"), images(3, SHAPE, seed=5)
    yield "logits", spatial_cnn(1, None), images(3, SHAPE, seed=6)


def run_key(case: str, method: str, max_channels: int | None) -> str:
    return f"{case}:{method}" + ("" if max_channels is None else f":{max_channels}")


def compute() -> dict[str, np.ndarray]:
    """Heatmaps ``(N, K, h, w)`` of every case and run, through the engine."""
    from gradcam_callbacks.explain import explain_raw

    result = {}
    for case, model, docs in cases():
        for method, max_channels in RUNS:
            raw = explain_raw(model, docs, TARGETS, "feat", method=method,
                              max_channels=max_channels, batch_size=4)
            result[run_key(case, method, max_channels)] = raw.heatmaps
    return result


if __name__ == "__main__":
    stored = compute()
    np.savez_compressed(PATH, **stored)
    print(f"wrote {PATH}: {len(stored)} arrays of shape {next(iter(stored.values())).shape}")
