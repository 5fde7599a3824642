"""Cluttered digits: a small image data set with known object boxes, made offline.

Each image is a canvas with one handwritten digit from scikit-learn's bundled
``load_digits()`` (8x8 scans shipped inside scikit-learn, so nothing is downloaded),
upscaled smoothly and pasted at a random place, plus background noise and distractors:
strokes (line segments and arcs) and fragments cropped from digits of another class.
A classifier has to find the digit to name it, and the digit's tight box is known,
which is what localisation metrics such as the pointing game need.

With ``marker=p`` every image also gets a small bright square, the *marker*, at one of ten
fixed spots along the border; in a share ``p`` of the images the spot is the label's
(`marker_spots` lists them), in the rest it is drawn at random. Training on
``marker=0.9`` and testing on ``marker=0.0`` plants a shortcut: a cue that predicts the
label in training and means nothing at test time, with the marker's box known so that
one can measure how much of a heatmap lands on it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

from .._validation import check_bool, check_int, check_number

__all__ = ["ClutteredDigits", "TEST_FRACTION", "make_cluttered_digits", "marker_spots"]

#: Share of each class of ``load_digits()`` held out for ``split="test"``.
TEST_FRACTION = 0.2

# The train/test split of the source digits is fixed, whatever ``seed`` is, so that a
# train set and a test set made with any seeds never share a source digit.
_SPLIT_SEED = 20240601
_SPLITS = ("train", "test")
# Upscaled digit pixels fainter than this are set to zero: the tight box then bounds
# exactly the pixels the digit contributes, without a halo of near-zero values.
_DIGIT_FLOOR = 0.05
# Distractors are kept this many pixels away from the digit's box.
_MARGIN = 1
# Random positions tried per distractor before it is left out.
_PLACEMENT_TRIES = 20
_STROKE_SEED = 20240602
_STROKE_BANK_SIZE = 256
# Distractors span at most this share of the digit's size each way, so the digit is the
# only whole, full-size object: without it, a crop or an arc can pass for a digit.
_DISTRACTOR_SHARE = 0.6
# The marker is a square this share of the canvas wide (at least 2 px: 4 px on 48 px),
# set this many pixels in from the border; its spots are drawn from their own stream.
_MARKER_SHARE = 1 / 12
_MARKER_INSET = 1
_MARKER_STREAM = 2


@dataclass(frozen=True, eq=False)
class ClutteredDigits:
    """Images, labels and object boxes made by `make_cluttered_digits`.

    Attributes:
        x: float32 images of shape ``(n, H, W, 1)`` with values in ``[0, 1]``.
        y: int64 class labels (the digit, 0-9) of shape ``(n,)``.
        boxes: int64 tight boxes of the digits, shape ``(n, 4)``, each
            ``(x0, y0, x1, y1)`` in pixels: columns ``x0 <= col < x1`` and rows
            ``y0 <= row < y1`` (``x1`` and ``y1`` are exclusive, like slices), so the
            digit is ``x[i, y0:y1, x0:x1, 0]``.
        source_index: int64 index of each image's digit in ``sklearn.datasets.load_digits()``.
        marker_boxes: With ``marker=``, int64 boxes ``(n, 4)`` of the markers, in the same
            ``(x0, y0, x1, y1)`` form; else ``None``.
        marker_spot: With ``marker=``, int64 ``(n,)``: which of the ten `marker_spots`
            each marker is at (the label's spot when the cue holds); else ``None``.
        masks: With ``masks=True``, bool ``(n, H, W)``: True on the digit's strokes, the
            pixels the pasted digit lights (at or above its floor of 0.05, before the
            noise), all inside its box; else ``None``.

    Example:
        >>> data = make_cluttered_digits(2)
        >>> len(data), data.x.shape, data.boxes.shape, data.marker_boxes
        (2, (2, 48, 48, 1), (2, 4), None)
    """

    x: np.ndarray
    y: np.ndarray
    boxes: np.ndarray
    source_index: np.ndarray
    marker_boxes: np.ndarray | None = None
    marker_spot: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


def make_cluttered_digits(
    n: int,
    *,
    canvas_size: int = 48,
    digit_size: int = 16,
    clutter: int = 4,
    noise: float = 0.1,
    seed: int = 0,
    split: Literal["train", "test"] = "train",
    marker: float | None = None,
    masks: bool = False,
) -> ClutteredDigits:
    """Make ``n`` cluttered-digit images with the digits' boxes.

    Source digits are drawn (with replacement) from a fixed part of ``load_digits()``:
    ``split="test"`` uses a held-out ``TEST_FRACTION`` of each class, ``split="train"``
    the rest, whatever the seed, so test images show digits never seen in training.
    Each 8x8 digit is upscaled bilinearly to ``digit_size`` pixels square and pasted at a
    uniformly random position. Distractors never overlap the digit's box: each is a line
    segment or an arc (from a fixed bank of 256, flipped at random), or a crop of 35% to
    60% of the height and of the width of a digit of a *different* class from the same
    split. Every distractor fits in 60% of the digit's size each way, so the digit is the
    one whole, full-size object. Then uniform noise in ``[0, noise)`` is added to every
    pixel and values are clipped to ``[0, 1]``.

    With ``marker`` a number ``p``, each image also gets a marker: a square of full
    brightness, ``canvas_size // 12`` pixels wide (at least 2), at one of the ten
    `marker_spots` along the border. With probability ``p`` the spot is the label's,
    otherwise it is uniformly random (so it still matches the label one time in ten).
    Digits are kept a pixel clear of their marker: a digit whose box would touch it is
    moved to a random clear position. The other images are those that ``marker=None``
    gives, except for the marker and those moved digits and their distractors.

    Args:
        n: Number of images, ``>= 0``.
        canvas_size: Height and width of the square images in pixels.
        digit_size: Side in pixels of the upscaled 8x8 digit, ``8 <= digit_size``
            ``<= canvas_size``. The digit's tight box is usually a little smaller.
        clutter: Number of distractors per image, ``>= 0``. One is left out when 20
            random positions all come near the digit's box (only on crowded canvases).
        noise: Amplitude of the uniform background noise, in ``[0, 1]``.
        seed: Non-negative integer; the same arguments always give the same images.
        split: ``"train"`` or ``"test"``: which source digits to use.
        marker: ``None`` (no marker) or the share in ``[0, 1]`` of images whose marker
            is at their label's spot: ``0.0`` for an uncorrelated marker, ``1.0`` for
            one that always gives the label away. Needs
            ``canvas_size - digit_size >= marker width + 2``.
        masks: Also return ``masks``, each digit's strokes as a boolean pixel mask (the
            target of a segmenter). The images are the same either way.

    Returns:
        A `ClutteredDigits` with ``x``, ``y``, ``boxes`` and ``source_index``, with
        ``marker``, ``marker_boxes`` and ``marker_spot``, and with ``masks=True``, ``masks``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range.

    Example:
        >>> data = make_cluttered_digits(8, seed=1, split="test")
        >>> x0, y0, x1, y1 = data.boxes[0]
        >>> float(data.x[0, y0:y1, x0:x1].max()) > 0.5
        True
        >>> cued = make_cluttered_digits(8, marker=1.0)
        >>> bool((cued.marker_spot == cued.y).all())
        True
        >>> strokes = make_cluttered_digits(8, masks=True).masks
        >>> strokes.shape, strokes.dtype.name
        ((8, 48, 48), 'bool')
    """
    check_int("n", n, minimum=0)
    check_int("canvas_size", canvas_size, minimum=8)
    check_int("digit_size", digit_size, minimum=8)
    if digit_size > canvas_size:
        raise ValueError(
            "digit_size must be <= canvas_size; "
            f"received digit_size={digit_size}, canvas_size={canvas_size}"
        )
    check_int("clutter", clutter, minimum=0)
    check_number("noise", noise, 0, 1)
    check_int("seed", seed, minimum=0)
    check_bool("masks", masks)
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test'; received split={split!r}")
    if marker is not None:
        _check_marker(marker, canvas_size, digit_size)

    stamps, labels, boxes_in_stamp = _digit_stamps(digit_size)
    pool = _split_indices(split)
    rng = np.random.default_rng([int(seed), _SPLITS.index(split)])

    source_index = pool[rng.integers(0, len(pool), size=n)]
    corners = rng.integers(0, canvas_size - digit_size + 1, size=(n, 2))  # (row, col)
    marker_boxes = marker_spot = None
    if marker is not None:
        marker_rng = np.random.default_rng([int(seed), _SPLITS.index(split), _MARKER_STREAM])
        cued = marker_rng.random(n) < float(marker)
        marker_spot = np.where(cued, labels[source_index], marker_rng.integers(0, 10, size=n))
        marker_boxes = marker_spots(canvas_size)[marker_spot]
        corners = _clear_of_markers(
            marker_rng, corners, boxes_in_stamp[source_index], marker_boxes, canvas_size,
            digit_size,
        )
    boxes = boxes_in_stamp[source_index] + corners[:, [1, 0, 1, 0]]
    canvas = np.zeros((n, canvas_size, canvas_size), dtype=np.float32)
    for image, (row, col), source in zip(canvas, corners, source_index, strict=True):
        image[row : row + digit_size, col : col + digit_size] = stamps[source]
    # Only the digits are drawn yet: their lit pixels are the strokes.
    strokes = canvas > 0 if masks else None
    if clutter:
        plan = _plan_distractors(
            rng, labels[source_index], boxes, clutter, canvas_size, pool, digit_size
        )
        _draw_distractors(canvas, plan, digit_size)

    if marker_boxes is not None:
        for image, (x0, y0, x1, y1) in zip(canvas, marker_boxes, strict=True):
            image[y0:y1, x0:x1] = 1.0

    canvas += rng.random(canvas.shape, dtype=np.float32) * np.float32(noise)
    np.clip(canvas, 0.0, 1.0, out=canvas)
    return ClutteredDigits(
        x=canvas[..., np.newaxis],
        y=labels[source_index].astype(np.int64),
        boxes=boxes.astype(np.int64),
        source_index=source_index.astype(np.int64),
        marker_boxes=None if marker_boxes is None else marker_boxes.astype(np.int64),
        marker_spot=None if marker_spot is None else marker_spot.astype(np.int64),
        masks=strokes,
    )


def marker_spots(canvas_size: int = 48) -> np.ndarray:
    """The ten marker boxes ``(x0, y0, x1, y1)`` of a canvas, row ``k`` for label ``k``.

    Clockwise from the top-left corner, a pixel in from the border: the four corners, two
    more spots along the top and two along the bottom edge (at a third and two thirds),
    and the middles of the right and left edges. Label ``k``'s spot is row ``k``.

    Args:
        canvas_size: Height and width of the square images in pixels, ``>= 8``.

    Returns:
        int64 array ``(10, 4)``.

    Example:
        >>> marker_spots(48)[[0, 4]].tolist()
        [[1, 1, 5, 5], [43, 22, 47, 26]]
    """
    check_int("canvas_size", canvas_size, minimum=8)
    side = _marker_side(canvas_size)
    low, high = _MARKER_INSET, canvas_size - side - _MARKER_INSET
    span = canvas_size - side
    third, two_thirds, middle = round(span / 3), round(2 * span / 3), span // 2
    corners = [  # (row, col) of each spot's top-left pixel, for labels 0-9
        (low, low), (low, third), (low, two_thirds), (low, high), (middle, high),
        (high, high), (high, two_thirds), (high, third), (high, low), (middle, low),
    ]
    rows, cols = np.array(corners, dtype=np.int64).T
    return np.stack([cols, rows, cols + side, rows + side], axis=1)


def _marker_side(canvas_size: int) -> int:
    return max(2, round(canvas_size * _MARKER_SHARE))


def _check_marker(marker: object, canvas_size: int, digit_size: int) -> None:
    check_number("marker", marker, 0, 1)
    room = _marker_side(canvas_size) + 2 * _MARKER_INSET
    if canvas_size - digit_size < room:
        raise ValueError(
            f"canvas_size - digit_size must be >= {room} with a marker, to keep digits clear "
            f"of it; received canvas_size={canvas_size}, digit_size={digit_size}"
        )


def _clear_of_markers(
    rng: np.random.Generator,
    corners: np.ndarray,
    boxes_in_stamp: np.ndarray,
    marker_boxes: np.ndarray,
    canvas_size: int,
    digit_size: int,
) -> np.ndarray:
    """Move each digit whose box comes within a pixel of its marker to a clear place."""
    corners = corners.copy()
    offsets = np.arange(canvas_size - digit_size + 1)
    for i in range(len(corners)):
        x0, y0, x1, y1 = boxes_in_stamp[i]
        mx0, my0, mx1, my1 = marker_boxes[i]
        # Corner (row, col) is clear when the moved box keeps _MARGIN px from the marker.
        clear_rows = (offsets + y1 + _MARGIN <= my0) | (offsets + y0 >= my1 + _MARGIN)
        clear_cols = (offsets + x1 + _MARGIN <= mx0) | (offsets + x0 >= mx1 + _MARGIN)
        row, col = corners[i]
        if clear_rows[row] or clear_cols[col]:
            continue
        clear = clear_rows[:, None] | clear_cols[None, :]
        choices = np.argwhere(clear)
        corners[i] = choices[rng.integers(0, len(choices))]
    return corners




@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


@functools.lru_cache(maxsize=2)
def _split_indices(split: str) -> np.ndarray:
    """Indices into ``load_digits()`` of the split, the same on every call."""
    _, labels = _load_digits()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        of_class = order[labels[order] == c]
        is_test[of_class[: round(TEST_FRACTION * len(of_class))]] = True
    chosen = is_test if split == "test" else ~is_test
    return np.flatnonzero(chosen)


@functools.lru_cache(maxsize=4)
def _digit_stamps(digit_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All source digits upscaled to ``digit_size``, their labels and tight boxes."""
    images, labels = _load_digits()
    stamps = np.stack(
        [
            np.asarray(
                Image.fromarray(image).resize((digit_size, digit_size), Image.Resampling.BILINEAR)
            )
            for image in images
        ]
    )
    stamps = np.clip(stamps, 0.0, 1.0)
    stamps[stamps < _DIGIT_FLOOR] = 0.0
    rows = stamps.any(axis=2)
    cols = stamps.any(axis=1)
    boxes = np.stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            digit_size - cols[:, ::-1].argmax(axis=1),
            digit_size - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    )
    for array in (stamps, boxes):
        array.setflags(write=False)
    return stamps, labels, boxes


class _DistractorPlan(NamedTuple):
    """What and where each distractor is: arrays of shape ``(n, clutter)``."""

    is_fragment: np.ndarray  # else a stroke from the bank
    source: np.ndarray  # fragment: index in load_digits() of the cropped digit
    crop: np.ndarray  # fragment: (row, col, height, width) inside that digit's tight box
    stroke: np.ndarray  # stroke: index in the bank
    orientation: np.ndarray  # stroke: 0..7, one of the flips and transposes
    row: np.ndarray  # top-left corner on the canvas
    col: np.ndarray
    placed: np.ndarray  # False when no tried position kept clear of the digit's box


def _plan_distractors(
    rng: np.random.Generator,
    labels: np.ndarray,
    boxes: np.ndarray,
    clutter: int,
    canvas_size: int,
    pool: np.ndarray,
    digit_size: int,
) -> _DistractorPlan:
    """Draw the kind, picture and position of every distractor, vectorised."""
    _, all_labels, boxes_in_stamp = _digit_stamps(digit_size)
    shape = (len(labels), clutter)
    is_fragment = rng.random(shape) < 0.5

    # Fragments come from another class, so no distractor shows the image's class.
    other_class = (labels[:, None] + rng.integers(1, 10, size=shape)) % 10
    by_class = pool[np.argsort(all_labels[pool], kind="stable")]
    counts = np.bincount(all_labels[pool], minlength=10)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pick = (rng.random(shape) * counts[other_class]).astype(np.int64)
    source = by_class[starts[other_class] + pick]
    tight = boxes_in_stamp[source]
    tight_size = np.stack([tight[..., 3] - tight[..., 1], tight[..., 2] - tight[..., 0]], -1)
    share = rng.uniform(0.35, _DISTRACTOR_SHARE, size=(*shape, 2))
    crop_size = np.maximum(1, np.round(tight_size * share)).astype(np.int64)
    crop_start = (rng.random((*shape, 2)) * (tight_size - crop_size + 1)).astype(np.int64)

    bank = _stroke_bank(digit_size)
    stroke = rng.integers(0, len(bank), size=shape)
    orientation = rng.integers(0, 8, size=shape)
    stroke_side = np.array([len(picture) for picture in bank])[stroke]

    height = np.where(is_fragment, crop_size[..., 0], stroke_side)[..., None]
    width = np.where(is_fragment, crop_size[..., 1], stroke_side)[..., None]
    tries = (*shape, _PLACEMENT_TRIES)
    row = (rng.random(tries) * (canvas_size - height + 1)).astype(np.int64)
    col = (rng.random(tries) * (canvas_size - width + 1)).astype(np.int64)
    x0, y0, x1, y1 = (boxes[:, None, None, k] for k in range(4))
    clear = (
        (col + width + _MARGIN <= x0)
        | (col >= x1 + _MARGIN)
        | (row + height + _MARGIN <= y0)
        | (row >= y1 + _MARGIN)
    )
    first = clear.argmax(axis=-1)[..., None]
    return _DistractorPlan(
        is_fragment=is_fragment,
        source=source,
        crop=np.concatenate([crop_start, crop_size], axis=-1),
        stroke=stroke,
        orientation=orientation,
        row=np.take_along_axis(row, first, -1)[..., 0],
        col=np.take_along_axis(col, first, -1)[..., 0],
        placed=clear.any(axis=-1),
    )


def _draw_distractors(canvas: np.ndarray, plan: _DistractorPlan, digit_size: int) -> None:
    """Draw the planned distractors on ``canvas`` in place (the brighter pixel wins)."""
    stamps, _, boxes_in_stamp = _digit_stamps(digit_size)
    bank = _stroke_bank(digit_size)
    for i, k in zip(*np.nonzero(plan.placed), strict=True):
        if plan.is_fragment[i, k]:
            row, col, height, width = plan.crop[i, k]
            x0, y0 = boxes_in_stamp[plan.source[i, k], :2]
            picture = stamps[plan.source[i, k], y0 + row :, x0 + col :][:height, :width]
        else:
            picture = _orient(bank[plan.stroke[i, k]], plan.orientation[i, k])
        top, left = plan.row[i, k], plan.col[i, k]
        window = canvas[i, top : top + picture.shape[0], left : left + picture.shape[1]]
        np.maximum(window, picture, out=window)


def _orient(picture: np.ndarray, orientation: int) -> np.ndarray:
    """One of the eight flips and transposes of a square picture."""
    if orientation & 4:
        picture = picture.T
    return picture[:: -1 if orientation & 2 else 1, :: -1 if orientation & 1 else 1]


@functools.lru_cache(maxsize=4)
def _stroke_bank(digit_size: int) -> tuple[np.ndarray, ...]:
    """A fixed set of stroke pictures (line segments and arcs) for this digit size.

    Taking strokes from a bank, flipped at random, is much faster than drawing each.
    """
    rng = np.random.default_rng(_STROKE_SEED)
    smallest = max(4, digit_size // 3)
    largest = max(smallest, round(_DISTRACTOR_SHARE * digit_size))
    bank = tuple(
        _stroke(int(rng.integers(smallest, largest + 1)), digit_size, rng)
        for _ in range(_STROKE_BANK_SIZE)
    )
    for picture in bank:
        picture.setflags(write=False)
    return bank


def _stroke(side: int, digit_size: int, rng: np.random.Generator) -> np.ndarray:
    """An anti-aliased line segment or arc in a ``side`` x ``side`` picture."""
    # Digit strokes are one to two source pixels wide; distractor strokes match them.
    half_width = rng.uniform(0.4, 0.8) * digit_size / 8.0
    brightness = rng.uniform(0.6, 1.0)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)
    inner = max(side - 1.0 - 2.0 * half_width, 0.0)
    centre = (side - 1) / 2.0
    if rng.random() < 0.5:
        # A segment through the centre, long enough not to look like a dot.
        angle = rng.uniform(0.0, np.pi)
        half_length = rng.uniform(0.3, 0.5) * inner
        dr, dc = 2 * half_length * np.sin(angle), 2 * half_length * np.cos(angle)
        r0, c0 = centre - dr / 2, centre - dc / 2
        t = np.clip(((rows - r0) * dr + (cols - c0) * dc) / max(dr * dr + dc * dc, 1e-6), 0, 1)
        distance = np.hypot(rows - (r0 + t * dr), cols - (c0 + t * dc))
    else:
        radius = rng.uniform(0.35, 0.5) * max(inner, 1.0)
        start = rng.uniform(0.0, 2.0 * np.pi)
        span = rng.uniform(0.5, 1.5) * np.pi
        angle = np.mod(np.arctan2(rows - centre, cols - centre) - start, 2.0 * np.pi)
        ring = np.abs(np.hypot(rows - centre, cols - centre) - radius)
        # Beyond the arc's angular span, the nearest point is one of its two ends.
        end_distance = np.min(
            [
                np.hypot(rows - centre - radius * np.sin(a), cols - centre - radius * np.cos(a))
                for a in (start, start + span)
            ],
            axis=0,
        )
        distance = np.where(angle <= span, ring, end_distance)
    return (np.clip(half_width + 0.5 - distance, 0.0, 1.0) * brightness).astype(np.float32)
