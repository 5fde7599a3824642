"""The Grad-CAM pass runs the model in inference mode on every backend: a BatchNormalization +
Dropout model's heatmaps equal those of an independently built reference in which the
BatchNormalization is folded into the convolution with its moving statistics and the Dropout
is left out, a model that has no training mode at all. Run in training mode, the pass would
normalise with the batch's own statistics and drop half the pooled features."""

from __future__ import annotations

import keras
import numpy as np
from models import images

import gradcam_callbacks as gc


def _model(batch_norm: bool) -> keras.Model:
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    if batch_norm:
        h = keras.layers.BatchNormalization(name="bn", epsilon=1e-3)(h)
    h = keras.layers.ReLU(name="feat")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    if batch_norm:
        h = keras.layers.Dropout(0.5, seed=0)(h)
    outputs = keras.layers.Dense(4, activation="softmax", name="dense")(h)
    return keras.Model(inputs, outputs)


def test_heatmaps_are_those_of_the_model_in_inference_mode():
    rng = np.random.RandomState(0)
    model = _model(batch_norm=True)
    kernel = rng.randn(3, 3, 3, 6).astype("float32") * 0.3
    bias = rng.randn(6).astype("float32") * 0.1
    # moving statistics far from any batch's own, so batch statistics would show
    gamma = rng.uniform(0.5, 2.0, 6).astype("float32")
    beta = rng.randn(6).astype("float32") * 0.5
    mean = rng.randn(6).astype("float32")
    variance = rng.uniform(0.5, 3.0, 6).astype("float32")
    dense = [rng.randn(6, 4).astype("float32"), rng.randn(4).astype("float32") * 0.1]
    model.get_layer("conv").set_weights([kernel, bias])
    model.get_layer("bn").set_weights([gamma, beta, mean, variance])
    model.get_layer("dense").set_weights(dense)

    reference = _model(batch_norm=False)
    scale = gamma / np.sqrt(variance + 1e-3)
    reference.get_layer("conv").set_weights([kernel * scale, (bias - mean) * scale + beta])
    reference.get_layer("dense").set_weights(dense)

    x = images(4, shape=(12, 12, 3), seed=5)
    targets = [0, 1, 2, 3]
    got = gc.explain_predictions(model, x, targets=targets, layer="feat")
    expected = gc.explain_predictions(reference, x, targets=targets, layer="feat")
    # heatmaps with something in them (a class whose evidence is negative everywhere is 0)
    assert sum(e.targets[0].heatmap.max() > 0 for e in expected) >= 2
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.targets[0].heatmap, b.targets[0].heatmap, atol=1e-4)
        assert np.isclose(a.targets[0].score, b.targets[0].score, atol=1e-5)
