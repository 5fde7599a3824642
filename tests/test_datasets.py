"""Tests for gradcam_callbacks.demo.datasets: the cluttered-digits data set."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from gradcam_callbacks.demo import datasets
from gradcam_callbacks.demo.datasets import TEST_FRACTION, ClutteredDigits, make_cluttered_digits

pytestmark = pytest.mark.backend_agnostic

DIGITS = load_digits()


def expected_digit(source: int, digit_size: int) -> np.ndarray:
    """The source digit as the data set should draw it, cropped to its tight box."""
    image = Image.fromarray((DIGITS.images[source] / 16.0).astype(np.float32))
    stamp = np.clip(np.asarray(image.resize((digit_size, digit_size), Image.BILINEAR)), 0, 1)
    stamp = np.where(stamp < 0.05, 0.0, stamp)
    rows = np.flatnonzero(stamp.any(axis=1))
    cols = np.flatnonzero(stamp.any(axis=0))
    return stamp[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def test_shapes_dtypes_and_ranges():
    data = make_cluttered_digits(40, canvas_size=56, digit_size=20, seed=3)

    assert isinstance(data, ClutteredDigits)
    assert len(data) == 40
    assert data.x.shape == (40, 56, 56, 1) and data.x.dtype == np.float32
    assert data.y.shape == (40,) and data.y.dtype == np.int64
    assert data.boxes.shape == (40, 4) and np.issubdtype(data.boxes.dtype, np.integer)
    assert data.source_index.shape == (40,)
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert set(data.y.tolist()) <= set(range(10))
    np.testing.assert_array_equal(data.y, DIGITS.target[data.source_index])


def test_same_arguments_give_same_images_and_seeds_differ():
    first = make_cluttered_digits(20, seed=7, split="test")
    again = make_cluttered_digits(20, seed=7, split="test")
    other = make_cluttered_digits(20, seed=8, split="test")

    for name in ("x", "y", "boxes", "source_index"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.x, other.x)
    assert not np.array_equal(first.boxes, other.boxes)


@pytest.mark.parametrize("canvas_size, digit_size", [(64, 24), (48, 16), (28, 28)])
def test_box_holds_exactly_the_source_digit_and_distractors_stay_out(canvas_size, digit_size):
    data = make_cluttered_digits(
        60, canvas_size=canvas_size, digit_size=digit_size, clutter=6, noise=0.0, seed=1
    )

    for image, box, source in zip(data.x[..., 0], data.boxes, data.source_index, strict=True):
        x0, y0, x1, y1 = (int(v) for v in box)
        np.testing.assert_allclose(image[y0:y1, x0:x1], expected_digit(source, digit_size))


def test_without_clutter_or_noise_every_lit_pixel_is_in_a_tight_box():
    data = make_cluttered_digits(50, clutter=0, noise=0.0, seed=2)

    for image, (x0, y0, x1, y1) in zip(data.x[..., 0], data.boxes, strict=True):
        outside = image.copy()
        outside[y0:y1, x0:x1] = 0
        assert not outside.any()
        inside = image[y0:y1, x0:x1] > 0
        # Tight: each edge row and column of the box has a digit pixel.
        assert inside[0].any() and inside[-1].any()
        assert inside[:, 0].any() and inside[:, -1].any()


@pytest.mark.parametrize("canvas_size, digit_size", [(64, 24), (32, 8), (24, 24)])
def test_boxes_lie_inside_the_canvas_and_positions_vary(canvas_size, digit_size):
    data = make_cluttered_digits(300, canvas_size=canvas_size, digit_size=digit_size, seed=4)
    x0, y0, x1, y1 = data.boxes.T

    assert (0 <= x0).all() and (x0 < x1).all() and (x1 <= canvas_size).all()
    assert (0 <= y0).all() and (y0 < y1).all() and (y1 <= canvas_size).all()
    if canvas_size > digit_size:
        spread = canvas_size - digit_size
        assert np.ptp(x0) > spread // 2 and np.ptp(y0) > spread // 2


def test_clutter_draws_outside_the_box():
    plain = make_cluttered_digits(30, clutter=0, noise=0.0, seed=5)
    cluttered = make_cluttered_digits(30, clutter=4, noise=0.0, seed=5)

    def lit_outside(data: ClutteredDigits) -> np.ndarray:
        counts = []
        for image, (x0, y0, x1, y1) in zip(data.x[..., 0], data.boxes, strict=True):
            outside = image > 0
            outside[y0:y1, x0:x1] = False
            counts.append(outside.sum())
        return np.array(counts)

    assert (lit_outside(plain) == 0).all()
    assert (lit_outside(cluttered) > 0).mean() > 0.9


def test_noise_is_uniform_background_of_the_given_amplitude():
    data = make_cluttered_digits(20, clutter=0, noise=0.2, seed=6)
    background = np.ones(data.x.shape[:3], dtype=bool)
    for mask, (x0, y0, x1, y1) in zip(background, data.boxes, strict=True):
        mask[y0:y1, x0:x1] = False
    values = data.x[..., 0][background]

    assert values.min() >= 0.0 and values.max() < 0.2
    assert values.mean() == pytest.approx(0.1, abs=0.01)


def test_train_and_test_use_disjoint_source_digits_whatever_the_seeds():
    train = make_cluttered_digits(3000, clutter=0, seed=0, split="train")
    test = make_cluttered_digits(3000, clutter=0, seed=1, split="test")
    train_sources = set(train.source_index.tolist())
    test_sources = set(test.source_index.tolist())

    assert not train_sources & test_sources
    assert set(test.y.tolist()) == set(range(10))
    # 3000 draws from the held-out pool see nearly all of it, and no more.
    assert len(test_sources) <= round(TEST_FRACTION * len(DIGITS.target)) + 10
    assert len(test_sources) > 0.9 * TEST_FRACTION * len(DIGITS.target)


def test_distractors_are_small_pieces_of_other_classes_from_the_same_split(monkeypatch):
    plans = []
    plan_distractors = datasets._plan_distractors

    def recording(*args, **kwargs):
        plans.append(plan_distractors(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(datasets, "_plan_distractors", recording)
    data = make_cluttered_digits(200, digit_size=16, clutter=4, seed=9, split="test")
    train_sources = set(make_cluttered_digits(3000, clutter=0, split="train").source_index)

    (plan,) = plans
    fragment = plan.is_fragment
    assert 0.3 < fragment.mean() < 0.7
    assert plan.placed.mean() > 0.95
    fragment_labels = DIGITS.target[plan.source[fragment]]
    image_labels = np.broadcast_to(data.y[:, None], fragment.shape)[fragment]
    assert (fragment_labels != image_labels).all()
    assert not set(plan.source[fragment].tolist()) & train_sources
    _, _, tight = datasets._digit_stamps(16)
    tight_size = np.stack([tight[:, 3] - tight[:, 1], tight[:, 2] - tight[:, 0]], axis=-1)[
        plan.source[fragment]
    ]
    assert (plan.crop[fragment][:, 2:] <= np.round(0.6 * tight_size)).all()
    assert all(len(stroke) <= round(0.6 * 16) for stroke in datasets._stroke_bank(16))


@pytest.mark.parametrize("marker", [None, 0.5])
def test_masks_are_the_digits_strokes_and_change_nothing_else(marker):
    kwargs = {"canvas_size": 40, "digit_size": 16, "clutter": 6, "seed": 5, "marker": marker}
    plain = make_cluttered_digits(30, **kwargs)
    data = make_cluttered_digits(30, masks=True, **kwargs)
    clean = make_cluttered_digits(30, masks=True, noise=0.0, **kwargs)

    assert plain.masks is None
    assert data.masks.shape == (30, 40, 40) and data.masks.dtype == np.bool_
    for name in ("x", "y", "boxes", "source_index", "marker_boxes"):
        np.testing.assert_array_equal(getattr(data, name), getattr(plain, name))
    np.testing.assert_array_equal(data.masks, clean.masks)  # noise does not move strokes
    for image, mask, box, source in zip(
        clean.x[..., 0], data.masks, data.boxes, data.source_index, strict=True
    ):
        x0, y0, x1, y1 = (int(v) for v in box)
        # Inside the box: exactly the source digit's lit pixels; outside: nothing.
        np.testing.assert_array_equal(mask[y0:y1, x0:x1], expected_digit(source, 16) > 0)
        assert mask.sum() == mask[y0:y1, x0:x1].sum()
        assert (image[mask] >= 0.05).all()
    # Strokes, not boxes: the digit lights a part of its box.
    box_area = (data.boxes[:, 2] - data.boxes[:, 0]) * (data.boxes[:, 3] - data.boxes[:, 1])
    assert (data.masks.sum(axis=(1, 2)) < box_area).all()


def test_zero_images():
    data = make_cluttered_digits(0)

    assert data.x.shape == (0, 48, 48, 1) and data.y.shape == (0,) and data.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": -1}, ValueError, "n must be a non-negative integer; received n=-1"),
        ({"n": 2.0}, TypeError, "n must be a non-negative integer; received float"),
        ({"n": True}, TypeError, "n must be a non-negative integer; received bool"),
        ({"n": 2, "canvas_size": 4}, ValueError, "canvas_size must be an integer >= 8"),
        ({"n": 2, "digit_size": 7}, ValueError, "digit_size must be an integer >= 8"),
        ({"n": 2, "digit_size": 40, "canvas_size": 32}, ValueError,
         "digit_size must be <= canvas_size"),
        ({"n": 2, "clutter": -1}, ValueError, "clutter must be a non-negative integer"),
        ({"n": 2, "clutter": "many"}, TypeError, "clutter must be a non-negative integer"),
        ({"n": 2, "noise": 1.5}, ValueError, "noise must be in \\[0, 1\\]; received noise=1.5"),
        ({"n": 2, "noise": "low"}, TypeError, "noise must be a number in \\[0, 1\\]"),
        ({"n": 2, "seed": -3}, ValueError, "seed must be a non-negative integer"),
        ({"n": 2, "split": "validation"}, ValueError, "split must be 'train' or 'test'"),
        ({"n": 2, "masks": 1}, TypeError, "masks must be a bool; received int"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_cluttered_digits(**kwargs)
