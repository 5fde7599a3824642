"""The trained ViT of examples/vit_digit_patch.py, without training: its weights are stored
(tests/data/vit_digit_patch.npz, written by the example: JAX, 6 epochs; see the numbers
below), loaded into the example's own ``build_model``.

The pointing game (the map's peak on the real digit among three distractors; chance 4 of 144
patch cells, 0.03) of the default method (automatic: attention rollout on this ViT) and of
HiResCAM at the automatic layer must pass a threshold that the same architecture with seeded
random weights fails, on every backend; the trained maps equal the stored ones (written
under TensorFlow) on every backend.

keras_hub is installed by scripts/run_tests.py (see tests/test_transformers.py).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from transformers_reference import require_keras_hub

import gradcam_callbacks as gc

require_keras_hub()

from test_target_examples import load_example  # noqa: E402

MAPS = os.path.join(os.path.dirname(__file__), "data", "vit_digit_patch_maps.npz")
# held-out images: the example's test seed (it trains on seed 0)
COUNT, SEED = 48, 1
# Pointing game on these 48 images, measured on TensorFlow (oneDNN on), JAX and PyTorch alike
# (2026-12-05): trained: rollout (the default) 0.979, HiResCAM 0.958; untrained (seeded
# random weights): rollout 0.000 / 0.021 (JAX) / 0.000, HiResCAM 0.000 on all three.
THRESHOLD = {"rollout": 0.8, "hirescam": 0.75}


@pytest.fixture(scope="module")
def example():
    return load_example("vit_digit_patch")


@pytest.fixture(scope="module")
def data(example):
    return example.make_data(COUNT, seed=SEED)


@pytest.fixture(scope="module")
def trained(example):
    return example.load_weights(example.build_model(seed=0)[0])


def maps(model, x, method):
    found = gc.explain_predictions(model, x, method=method)
    return found[0].method, np.stack([e.targets[0].heatmap for e in found])


def test_the_trained_vit_points_at_the_digit_and_its_untrained_twin_does_not(
        example, data, trained):
    x, y, boxes = data
    untrained = example.build_model(seed=0)[0]  # the same architecture, seeded random weights
    accuracy = float(np.mean(np.argmax(trained.predict(x, verbose=0), axis=-1) == y))
    assert accuracy > 0.9  # the stored weights are the trained ones
    for method in (None, "hirescam"):  # None: the default, rollout on this ViT
        title, found = maps(trained, x, method)
        name = {"Attention rollout": "rollout", "HiResCAM": "hirescam"}[title]
        assert name == method or (method is None and name == "rollout")
        hit = example.pointing_game(found, boxes)
        miss = example.pointing_game(maps(untrained, x, method)[1], boxes)
        assert hit > THRESHOLD[name] > miss, (name, hit, miss)
        if method is None:  # the same maps on every backend as the stored ones (TensorFlow)
            np.testing.assert_allclose(found, np.load(MAPS)["rollout"], atol=1e-5)


if __name__ == "__main__":  # KERAS_BACKEND=tensorflow python tests/test_vit_trained.py
    import keras

    assert keras.backend.backend() == "tensorflow", "write the reference under TensorFlow"
    module = load_example("vit_digit_patch")
    model = module.load_weights(module.build_model(seed=0)[0])
    x = module.make_data(COUNT, seed=SEED)[0]
    maps = np.stack([e.targets[0].heatmap for e in gc.explain_predictions(model, x,
                                                                          method="rollout")])
    np.savez_compressed(MAPS, rollout=maps)
    print(f"wrote {MAPS}: {maps.shape}")
