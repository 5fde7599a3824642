"""The Grad-CAM arithmetic (numpy only): ELI5's formula, batching, edge cases, properties."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcam_callbacks import gradcam
from gradcam_callbacks.cam import channel_weights, gradcam_maps

pytestmark = pytest.mark.backend_agnostic


def eli5_formula(weights, activations):
    """ELI5 0.16's gradcam(), transcribed step by step as the reference."""
    lmap = np.zeros(activations.shape[:2], dtype=np.float64)
    for i, w in enumerate(weights):
        lmap += w * activations[..., i]
    lmap = np.maximum(lmap, 0)
    return lmap / (np.max(lmap) + keras.config.epsilon())


def test_matches_eli5_formula_bit_for_bit():
    rng = np.random.RandomState(0)
    acts = rng.rand(7, 7, 64).astype("float32")
    weights = rng.standard_normal(64).astype("float32")
    np.testing.assert_array_equal(gradcam(weights, acts), eli5_formula(weights, acts))


def test_batched_maps_equal_single_maps_bit_for_bit():
    rng = np.random.RandomState(1)
    acts = rng.rand(3, 5, 6, 16).astype("float32")
    weights = rng.standard_normal((3, 2, 16)).astype("float32")
    batched = gradcam_maps(weights, acts[:, None])
    assert batched.shape == (3, 2, 5, 6)
    for n in range(3):
        for k in range(2):
            np.testing.assert_array_equal(batched[n, k], gradcam(weights[n, k], acts[n]))


def test_known_values():
    acts = np.zeros((2, 2, 2), "float32")
    acts[0, 0, 0] = 1.0
    acts[1, 1, 1] = 3.0
    result = gradcam(np.array([2.0, 1.0], "float32"), acts)
    np.testing.assert_allclose(result, [[2 / (3 + 1e-7), 0], [0, 3 / (3 + 1e-7)]], rtol=1e-12)


def test_negative_and_zero_maps_stay_zero_without_nan():
    acts = np.ones((3, 3, 2), "float32")
    for weights in ([-1.0, -2.0], [0.0, 0.0]):
        result = gradcam(np.array(weights, "float32"), acts)
        assert np.all(result == 0) and not np.isnan(result).any()


def test_channel_weights_are_spatial_means():
    grads = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    np.testing.assert_allclose(channel_weights(grads), grads.mean(axis=(0, 1)))
    assert channel_weights(grads).dtype == np.float32


@pytest.mark.parametrize("weights, acts, message", [
    ("abc", np.zeros((2, 2, 1)), "weights must be a real numeric array of rank 1"),
    (np.zeros((1, 1)), np.zeros((2, 2, 1)), "weights must be a real numeric array of rank 1"),
    (np.zeros(1), np.zeros((2, 2)), "activations must be a real numeric array of rank 3"),
])
def test_bad_arguments_are_type_errors(weights, acts, message):
    with pytest.raises(TypeError, match=message):
        gradcam(weights, acts)


def test_channel_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="same number of channels"):
        gradcam(np.zeros(3, "float32"), np.zeros((2, 2, 4), "float32"))


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 8),
    scale=st.floats(1e-3, 1e3),
)
def test_properties(data, h, w, c, scale):
    acts = data.draw(hnp.arrays(np.float32, (h, w, c), elements=finite))
    weights = data.draw(hnp.arrays(np.float32, (c,), elements=finite))
    result = gradcam(weights, acts)
    assert result.shape == (h, w)
    assert np.isfinite(result).all()
    assert result.min() >= 0 and result.max() <= 1
    # Scale invariance: multiplying the weights by a positive constant leaves the map
    # unchanged up to the epsilon in the denominator.
    scaled = gradcam((weights * np.float32(scale)).astype(np.float32), acts)
    raw = np.maximum(np.tensordot(acts.astype(np.float64), weights.astype(np.float64), 1), 0)
    # The epsilon moves a map by about 1e-7 / its peak: both peaks, before and after the
    # scaling, must be well above it (a peak of 0.01 scaled by 1/16 is off by 1.6e-4).
    if raw.max() * min(scale, 1.0) > 1e-2:
        np.testing.assert_allclose(scaled, result, atol=1e-4)
    # The map's peak is where the weighted sum peaks.
    if raw.max() > 1e-2 and np.sum(raw == raw.max()) == 1:
        assert np.unravel_index(result.argmax(), result.shape) == np.unravel_index(
            raw.argmax(), raw.shape)
