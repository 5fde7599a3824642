"""Tests for gradcam_callbacks.watch.metrics: localisation metrics on heatmaps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from gradcam_callbacks.watch.metrics import (
    box_mass,
    box_masses,
    boxes_to_masks,
    heatmap_change,
    heatmap_changes,
    mask_mass,
    mask_masses,
    mask_pointing_hit,
    mask_pointing_hits,
    pointing_game,
    pointing_hit,
    pointing_hits,
    resize_heatmaps,
)

pytestmark = pytest.mark.backend_agnostic


def one_hot(shape: tuple[int, int], row: int, col: int, value: float = 1.0) -> np.ndarray:
    heatmap = np.zeros(shape)
    heatmap[row, col] = value
    return heatmap


# --- resizing -----------------------------------------------------------------------------


def test_resize_matches_pillow_bilinear_upsampling():
    heatmap = np.random.default_rng(0).random((7, 5)).astype(np.float32)
    expected = np.asarray(Image.fromarray(heatmap).resize((33, 56), Image.BILINEAR))

    np.testing.assert_allclose(resize_heatmaps(heatmap, (56, 33)), expected, atol=1e-5)


def test_resize_known_values_identity_and_batches():
    np.testing.assert_allclose(
        resize_heatmaps(np.array([[0.0, 1.0]]), (1, 4)), [[0.0, 0.25, 0.75, 1.0]]
    )
    heatmap = np.random.default_rng(1).random((6, 6))
    np.testing.assert_allclose(resize_heatmaps(heatmap, (6, 6)), heatmap)
    stack = np.stack([heatmap, 2 * heatmap])
    resized = resize_heatmaps(stack, (12, 9))
    assert resized.shape == (2, 12, 9)
    np.testing.assert_allclose(resized[1], 2 * resize_heatmaps(heatmap, (12, 9)))


def test_boxes_to_masks_uses_exclusive_ends_and_x_as_columns():
    masks = boxes_to_masks(np.array([[1, 0, 3, 2]]), (3, 4))

    assert masks.tolist() == [
        [[False, True, True, False], [False, True, True, False], [False, False, False, False]]
    ]


# --- mass ---------------------------------------------------------------------------------


def test_uniform_heatmap_mass_is_the_box_area_share():
    assert box_mass(np.ones((7, 7)), (0, 0, 112, 112), (224, 224)) == pytest.approx(0.25)
    assert box_mass(np.full((8, 8), 0.3), (10, 20, 30, 60), (64, 64)) == pytest.approx(
        20 * 40 / 64**2
    )


def test_mass_of_one_hot_cell_is_inside_its_bilinear_support():
    # Cell (2, 5) of an 8x8 map over 64x64 pixels reaches pixels 8j-4 .. 8j+11.
    heatmap = one_hot((8, 8), 2, 5)
    support = (5 * 8 - 4, 2 * 8 - 4, 5 * 8 + 12, 2 * 8 + 12)

    assert box_mass(heatmap, support, (64, 64)) == pytest.approx(1.0)
    x0, y0, x1, y1 = support
    assert box_mass(heatmap, (x0 + 1, y0, x1, y1), (64, 64)) < 1.0
    assert box_mass(heatmap, (x0, y0, x1, y1 - 1), (64, 64)) < 1.0
    assert box_mass(heatmap, (0, 0, 20, 64), (64, 64)) == 0.0


def test_mass_at_image_resolution_is_plain_share():
    heatmap = np.arange(12, dtype=float).reshape(3, 4)

    assert box_mass(heatmap, (2, 1, 4, 3), (3, 4)) == pytest.approx((6 + 7 + 10 + 11) / 66)


def test_all_zero_heatmap_has_zero_mass_not_nan():
    assert box_mass(np.zeros((7, 7)), (0, 0, 64, 64), (64, 64)) == 0.0
    mask = np.ones((64, 64), dtype=bool)
    assert mask_mass(np.zeros((7, 7)), mask) == 0.0


def test_mask_mass_of_an_l_shape():
    heatmap = np.arange(1, 10, dtype=float).reshape(3, 3)
    mask = np.zeros((3, 3), dtype=bool)
    mask[:, 0] = True
    mask[2, :] = True

    assert mask_mass(heatmap, mask) == pytest.approx((1 + 4 + 7 + 8 + 9) / 45)


# --- pointing -----------------------------------------------------------------------------


def test_pointing_hits_the_box_around_the_hot_cell_only():
    heatmap = one_hot((8, 8), 2, 5)  # centre near pixel (row 19.5, col 43.5)

    assert pointing_hit(heatmap, (40, 16, 48, 24), (64, 64))
    assert not pointing_hit(heatmap, (0, 0, 40, 64), (64, 64))
    assert not pointing_hit(heatmap, (40, 24, 64, 64), (64, 64))


def test_pointing_ties_go_to_the_first_maximum_in_row_major_order():
    heatmap = one_hot((8, 8), 0, 7) + one_hot((8, 8), 7, 0)

    assert pointing_hit(heatmap, (56, 0, 64, 8), (64, 64))
    assert not pointing_hit(heatmap, (0, 56, 8, 64), (64, 64))


def test_pointing_uses_the_resized_maximum():
    # A warm right-hand neighbour pulls the peak of cell (1, 1) (centre at pixel 11.5)
    # to column 12, one pixel right of where the cell's centre would point.
    heatmap = one_hot((4, 4), 1, 1) + one_hot((4, 4), 1, 2, 0.9)

    assert pointing_hit(heatmap, (12, 8, 16, 16), (32, 32))
    assert not pointing_hit(heatmap, (8, 8, 12, 16), (32, 32))


def test_tolerance_is_euclidean_distance_in_pixels():
    heatmap = one_hot((64, 64), 10, 10)  # same size as the image: the point is (10, 10)
    beside = (13, 5, 20, 20)  # 3 pixels to the right
    diagonal = (13, 14, 20, 20)  # 3 right, 4 down: 5 pixels away

    assert not pointing_hit(heatmap, beside, (64, 64))
    assert not pointing_hit(heatmap, beside, (64, 64), tolerance=2.9)
    assert pointing_hit(heatmap, beside, (64, 64), tolerance=3)
    assert not pointing_hit(heatmap, diagonal, (64, 64), tolerance=4)
    assert pointing_hit(heatmap, diagonal, (64, 64), tolerance=5)


def test_all_zero_heatmap_points_nowhere():
    assert not pointing_hit(np.zeros((7, 7)), (0, 0, 64, 64), (64, 64))
    assert not pointing_hit(np.zeros((7, 7)), (0, 0, 64, 64), (64, 64), tolerance=100)
    assert not mask_pointing_hit(np.zeros((7, 7)), np.ones((64, 64), dtype=bool))


def test_mask_pointing_with_and_without_tolerance():
    heatmap = one_hot((16, 16), 4, 4)
    mask = np.zeros((16, 16), dtype=bool)
    mask[4, 7] = True
    mask[12, 12] = True

    assert not mask_pointing_hit(heatmap, mask)
    assert not mask_pointing_hit(heatmap, mask, tolerance=2.5)
    assert mask_pointing_hit(heatmap, mask, tolerance=3)
    mask[4, 4] = True
    assert mask_pointing_hit(heatmap, mask)


# --- batches agree with single images -----------------------------------------------------


def test_batched_forms_agree_with_single_forms():
    rng = np.random.default_rng(2)
    heatmaps = rng.random((20, 8, 8)) ** 4
    heatmaps[3] = 0.0
    corners = rng.integers(0, 40, size=(20, 2))
    sizes = rng.integers(1, 24, size=(20, 2))
    boxes = np.concatenate([corners, corners + sizes], axis=1)
    masks = boxes_to_masks(boxes, (64, 64))

    masses = box_masses(heatmaps, boxes, (64, 64))
    hits = pointing_hits(heatmaps, boxes, (64, 64), tolerance=4)
    for i in range(20):
        assert masses[i] == pytest.approx(box_mass(heatmaps[i], boxes[i], (64, 64)))
        assert masses[i] == pytest.approx(mask_mass(heatmaps[i], masks[i]))
        assert hits[i] == pointing_hit(heatmaps[i], boxes[i], (64, 64), tolerance=4)
        assert hits[i] == mask_pointing_hit(heatmaps[i], masks[i], tolerance=4)
    np.testing.assert_allclose(mask_masses(heatmaps, masks), masses)
    np.testing.assert_array_equal(mask_pointing_hits(heatmaps, masks, tolerance=4), hits)
    assert pointing_game(heatmaps, boxes, (64, 64), tolerance=4) == pytest.approx(hits.mean())
    assert not hits[3] and masses[3] == 0.0


# --- change between heatmaps --------------------------------------------------------------


def test_heatmap_change_known_values():
    a = np.array([[1.0, 0.0]])
    b = np.array([[1.0, 1.0]])

    assert heatmap_change(a, a) == 0.0
    assert heatmap_change(a, 5 * a) == pytest.approx(0.0, abs=1e-12)
    assert heatmap_change(a, np.array([[0.0, 1.0]])) == 1.0
    assert heatmap_change(a, b) == pytest.approx(1 - 1 / math.sqrt(2))


def test_heatmap_change_all_zero_cases():
    zero = np.zeros((3, 3))

    assert heatmap_change(zero, zero) == 0.0
    assert heatmap_change(zero, np.ones((3, 3))) == 1.0
    assert heatmap_change(np.ones((3, 3)), zero) == 1.0
    changes = heatmap_changes(np.stack([zero, zero, np.eye(3)]), np.stack([zero, np.eye(3), zero]))
    np.testing.assert_array_equal(changes, [0.0, 1.0, 1.0])


# --- validation ---------------------------------------------------------------------------

GOOD = np.ones((4, 4))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: box_mass(np.ones(4), (0, 0, 2, 2), (4, 4)), ValueError,
         r"heatmap must be a 2D array \(height, width\); received shape \(4,\)"),
        (lambda: box_mass(np.ones((1, 4, 4)), (0, 0, 2, 2), (4, 4)), ValueError, "heatmap"),
        (lambda: box_mass(np.ones((0, 4)), (0, 0, 2, 2), (4, 4)), ValueError, "non-empty"),
        (lambda: box_mass(GOOD.astype(str), (0, 0, 2, 2), (4, 4)), TypeError, "real numbers"),
        (lambda: box_mass(GOOD > 0, (0, 0, 2, 2), (4, 4)), TypeError,
         "heatmap must be an array of real numbers; received dtype bool"),
        (lambda: box_mass(GOOD * np.nan, (0, 0, 2, 2), (4, 4)), ValueError, "finite"),
        (lambda: box_mass(-GOOD, (0, 0, 2, 2), (4, 4)), ValueError, "non-negative"),
        (lambda: box_mass(GOOD, (0.0, 0, 2, 2), (4, 4)), TypeError,
         r"box must hold integer pixel coordinates; received dtype float64"),
        (lambda: box_mass(GOOD, (0, 0, 2), (4, 4)), ValueError,
         r"box must have shape \(4,\), .*; received shape \(3,\)"),
        (lambda: box_mass(GOOD, (0, 0, 5, 2), (4, 4)), ValueError,
         r"box must lie inside its 4x4 image \(0 <= x0 < x1 <= 4, 0 <= y0 < y1 <= 4\); "
         r"received \[0, 0, 5, 2\]"),
        (lambda: box_mass(GOOD, (2, 0, 2, 2), (4, 4)), ValueError, r"\[2, 0, 2, 2\]"),
        (lambda: box_mass(GOOD, (0, 3, 2, 1), (4, 4)), ValueError,
         r"box must satisfy x0 < x1 and y0 < y1"),
        (lambda: box_mass(GOOD, (0, 0, 2, 2), (4,)), TypeError, "image_size"),
        (lambda: box_mass(GOOD, (0, 0, 2, 2), (4.0, 4)), TypeError, "image_size"),
        (lambda: box_mass(GOOD, (0, 0, 2, 2), (0, 4)), ValueError, "image_size"),
        (lambda: pointing_hit(GOOD, (0, 0, 2, 2), (4, 4), -1), ValueError, "tolerance"),
        (lambda: pointing_hit(GOOD, (0, 0, 2, 2), (4, 4), "1"), TypeError, "tolerance"),
        (lambda: pointing_hit(GOOD, (0, 0, 2, 2), (4, 4), math.inf), ValueError, "tolerance"),
        (lambda: mask_mass(GOOD, np.ones((4, 4))), TypeError,
         r"mask must be a boolean array \(H, W\); received an array"),
        (lambda: mask_mass(GOOD, np.zeros((4, 4), bool)), ValueError,
         r"mask must mark the object with at least one True pixel; received an all-False"),
        (lambda: mask_mass(GOOD, np.ones(4, bool)), ValueError,
         r"mask must be a boolean array \(H, W\); received shape \(4,\)"),
        (lambda: mask_pointing_hit(GOOD, np.ones((4, 4), int)), TypeError, "mask"),
        (lambda: heatmap_change(GOOD, np.ones((4, 5))), ValueError, "same shape"),
        (lambda: heatmap_change(GOOD, -GOOD), ValueError, "current must be non-negative"),
        (lambda: heatmap_change(GOOD[0], GOOD[0]), ValueError, "previous must be a 2D"),
        (lambda: box_masses(GOOD[None], [(0, 0, 2, 2)] * 2, (4, 4)), ValueError,
         r"boxes must have shape \(1, 4\), one \(x0, y0, x1, y1\) per heatmap; "
         r"received shape \(2, 4\)"),
        (lambda: box_masses(GOOD, [(0, 0, 2, 2)], (4, 4)), ValueError, "heatmaps must be a 3D"),
        (lambda: box_masses(GOOD[None], (0, 0, 2, 2), (4, 4)), ValueError,
         r"boxes must have shape \(1, 4\), .*; received shape \(4,\)"),
        (lambda: pointing_hits(GOOD[None], [(0, 0, 9, 2)], (4, 4)), ValueError,
         r"boxes\[0\] must lie inside its 4x4 image"),
        (
            lambda: mask_masses(GOOD[None], np.ones((2, 4, 4), bool)),
            ValueError,
            r"masks must hold one mask per heatmap \(1\); received 2 masks",
        ),
        (
            lambda: pointing_game(np.ones((0, 4, 4)), np.zeros((0, 4), int), (4, 4)),
            ValueError,
            "heatmaps must hold at least one heatmap; received n=0",
        ),
    ],
)
def test_bad_inputs_raise_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_tensor_like_inputs_are_accepted():
    heatmap = [[0.0, 1.0], [0.0, 0.0]]

    assert pointing_hit(heatmap, np.array([2, 0, 4, 2], dtype=np.int32), (np.int64(4), 4))
    assert box_mass(np.float32(heatmap), (2, 0, 4, 2), (4, 4)) == pytest.approx(3.0625 / 4)


# --- properties ---------------------------------------------------------------------------


@st.composite
def heatmap_box_and_size(draw):
    heatmap = draw(
        arrays(
            np.float64,
            st.tuples(st.integers(1, 9), st.integers(1, 9)),
            elements=st.floats(0.0, 1.0),
        )
    )
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 40))
    x0 = draw(st.integers(0, width - 1))
    y0 = draw(st.integers(0, height - 1))
    x1 = draw(st.integers(x0 + 1, width))
    y1 = draw(st.integers(y0 + 1, height))
    return heatmap, (x0, y0, x1, y1), (height, width)


@settings(max_examples=150, deadline=None)
@given(heatmap_box_and_size())
def test_mass_and_pointing_ranges_and_whole_image_box(case):
    heatmap, box, size = case
    mass = box_mass(heatmap, box, size)
    whole = (0, 0, size[1], size[0])
    # The metrics scale each heatmap to a unit peak before resizing, so any heatmap with a
    # positive value has mass: comparing with the raw resized sum was wrong for denormal
    # heatmaps (hypothesis: [5e-324, 5e-324] resized to 1 px sums to 0 by underflow).
    resized_total = float(heatmap.max() > 0) * resize_heatmaps(heatmap / heatmap.max()
                                                               if heatmap.max() > 0 else heatmap,
                                                               size).sum()

    assert 0.0 <= mass <= 1.0
    assert isinstance(pointing_hit(heatmap, box, size), bool)
    assert box_mass(heatmap, whole, size) == pytest.approx(1.0 if resized_total > 0 else 0.0)
    assert pointing_hit(heatmap, whole, size) == bool(resized_total > 0)
    # A box and the rest of the image share the mass.
    rest = ~boxes_to_masks([box], size)[0]
    if rest.any():
        assert mass + mask_mass(heatmap, rest) == pytest.approx(1.0 if resized_total > 0 else 0.0)
    # A hit without tolerance stays a hit with tolerance.
    if pointing_hit(heatmap, box, size):
        assert pointing_hit(heatmap, box, size, tolerance=1.5)


@settings(max_examples=150, deadline=None)
@given(
    st.tuples(st.integers(1, 8), st.integers(1, 8)).flatmap(
        lambda shape: st.tuples(
            arrays(np.float64, shape, elements=st.floats(0.0, 1.0)),
            arrays(np.float64, shape, elements=st.floats(0.0, 1.0)),
        )
    )
)
def test_heatmap_change_range_symmetry_and_self(pair):
    previous, current = pair
    change = heatmap_change(previous, current)

    assert 0.0 <= change <= 1.0
    assert change == pytest.approx(heatmap_change(current, previous))
    assert heatmap_change(current, current) == pytest.approx(0.0, abs=1e-9)
