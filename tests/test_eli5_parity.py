"""The same numbers as ELI5: against ELI5 itself under TensorFlow (ELI5 runs nowhere else),
and against ELI5's stored results on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from eli5_reference import PATH, STORED_ATOL, collect, compute_with_eli5
from models import images, small_cnn
from PIL import Image

import gradcam_callbacks as gc

# scripts/run_tests.py runs these under JAX's default XLA flags too, as users run it
pytestmark = pytest.mark.xla_defaults

REFERENCE = dict(np.load(PATH))
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="ELI5 0.16 runs on the TensorFlow backend only")


def ours():
    return collect(gc.explain_prediction, gc.format_as_image)


def test_every_backend_matches_eli5_reference():
    got = ours()
    np.testing.assert_array_equal(got["targets"], REFERENCE["targets"])
    np.testing.assert_allclose(got["scores"], REFERENCE["scores"], rtol=1e-5)
    np.testing.assert_allclose(got["heatmaps"], REFERENCE["heatmaps"], atol=1e-4)
    # overlays: 8-bit truncation may flip a level where a heatmap value sits on a boundary
    diff = np.abs(got["overlays"].astype(int) - REFERENCE["overlays"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@TF_ONLY
def test_tensorflow_matches_eli5_to_the_last_digits():
    reference = compute_with_eli5()
    # the stored reference is still what ELI5 computes, within the spread CPUs and oneDNN
    # settings give (measured: eli5_reference.py); exact claims are live against live only
    np.testing.assert_array_equal(reference["targets"], REFERENCE["targets"])
    np.testing.assert_allclose(reference["heatmaps"], REFERENCE["heatmaps"], atol=STORED_ATOL)
    np.testing.assert_allclose(reference["scores"], REFERENCE["scores"], rtol=1e-6)
    got = ours()
    np.testing.assert_array_equal(got["targets"], reference["targets"])
    np.testing.assert_array_equal(got["scores"], reference["scores"])
    np.testing.assert_array_equal(got["heatmaps"], reference["heatmaps"])
    np.testing.assert_array_equal(got["overlays"], reference["overlays"])


@TF_ONLY
def test_tensorflow_gradcam_backend_matches_eli5():
    from eli5.keras.gradcam import gradcam_backend as eli5_backend

    model = small_cnn(seed=3)
    doc = images(1, seed=9)
    for targets in (None, [1]):
        mine = gc.gradcam_backend(model, doc, targets, "feat")
        theirs = eli5_backend(model, doc, targets, model.get_layer("feat"))
        for a, b in zip(mine[:3], theirs[:3]):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        assert mine[3:] == theirs[3:]


@TF_ONLY
def test_tensorflow_format_as_image_matches_eli5_options():
    import eli5
    import matplotlib

    model = small_cnn(seed=4)
    doc = images(1, seed=5)
    expl = gc.explain_prediction(model, doc, image=Image.new("RGB", (40, 30), (200, 10, 10)))
    theirs_expl = eli5.explain_prediction(model, doc,
                                          image=Image.new("RGB", (40, 30), (200, 10, 10)))
    for options in ({}, {"alpha_limit": None}, {"alpha_limit": 0},
                    {"resampling_filter": Image.NEAREST}):
        mine = gc.format_as_image(expl, colormap="jet", **options)
        theirs = eli5.format_as_image(theirs_expl, colormap=matplotlib.colormaps["jet"],
                                      **options)
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    unchanged = gc.format_as_image(expl, alpha_limit=0)
    np.testing.assert_array_equal(np.asarray(unchanged),
                                  np.asarray(expl.image.convert("RGBA")))
