"""A model trained on real bundled data (cluttered handwritten digits) looks at the digit:
its Grad-CAM peak falls in the digit's known box far above chance.

The training runs once, under TensorFlow (``backend_agnostic``): on a 2-core machine it costs
minutes on torch and JAX, and what it adds there is Keras' own training arithmetic. That
Grad-CAM of a trained model localises on every backend is held by
``test_pretrained.py`` (the shipped trained weights, pointing game >= 0.9, each backend)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import gradcam_callbacks as gc
from gradcam_callbacks import demo
from gradcam_callbacks.watch.metrics import box_masses, pointing_game


@pytest.mark.backend_agnostic
def test_trained_model_points_at_the_digit():
    keras.utils.set_random_seed(0)
    train_set, test_set = demo.load_data(num_train=3000, num_test=200, seed=0)
    model = demo.build_model(train_set.x.shape[1:])
    untrained = gc.explain_predictions(model, test_set.x, targets=list(test_set.y))
    demo.train(model, train_set, epochs=5, verbose=0)
    _, accuracy = model.evaluate(test_set.x, test_set.y, verbose=0)
    expls = gc.explain_predictions(model, test_set.x, targets=list(test_set.y))
    assert all(e.layer == demo.GRADCAM_LAYER for e in expls)
    heatmaps = np.stack([e.targets[0].heatmap for e in expls])
    size = test_set.x.shape[1:3]
    before = pointing_game(np.stack([e.targets[0].heatmap for e in untrained]),
                           test_set.boxes, size)
    after = pointing_game(heatmaps, test_set.boxes, size)
    chance = float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in test_set.boxes])) / (
        size[0] * size[1])
    print(f"accuracy {accuracy:.3f}, pointing {before:.3f} -> {after:.3f}, chance {chance:.3f}")
    assert accuracy > 0.8
    # 0.85, not the 0.90 goal of docs/demo.md: that is held by the shipped 6-epoch CNN on 1000
    # images (test_pretrained.py); this 5-epoch run measured 0.905 (TF), 0.920 (torch) and
    # 0.935 (JAX), too close to 0.90 for a CI floor (docs/demo.md: "What the tests hold this to")
    assert after >= 0.85 and after > before + 0.3
    assert box_masses(heatmaps, test_set.boxes, size).mean() > 3 * chance
