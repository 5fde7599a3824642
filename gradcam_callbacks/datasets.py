"""Cluttered digits: a small image data set with known object boxes, made offline.

Each image is a canvas with one handwritten digit from scikit-learn's bundled
``load_digits()`` (8x8 scans shipped inside scikit-learn, so nothing is downloaded),
upscaled smoothly and pasted at a random place, plus background noise and distractors:
strokes (line segments and arcs) and fragments cropped from digits of another class.
A classifier has to find the digit to name it, and the digit's tight box is known,
which is what localisation metrics such as the pointing game need.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["ClutteredDigits", "TEST_FRACTION", "make_cluttered_digits"]

#: Share of each class of ``load_digits()`` held out for ``split="test"``.
TEST_FRACTION = 0.2

# The train/test split of the source digits is fixed, whatever ``seed`` is, so that a
# train set and a test set made with any seeds never share a source digit.
_SPLIT_SEED = 20240601
_SPLITS = ("train", "test")
# Upscaled digit pixels fainter than this are set to zero: the tight box then bounds
# exactly the pixels the digit contributes, without a halo of near-zero values.
_DIGIT_FLOOR = 0.05
# Distractor windows are kept this many pixels away from the digit's box.
_MARGIN = 1
_PLACEMENT_TRIES = 20


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

    Example:
        >>> data = make_cluttered_digits(2)
        >>> len(data), data.x.shape, data.boxes.shape
        (2, (2, 64, 64, 1), (2, 4))
    """

    x: np.ndarray
    y: np.ndarray
    boxes: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def make_cluttered_digits(
    n: int,
    *,
    canvas_size: int = 64,
    digit_size: int = 24,
    clutter: int = 4,
    noise: float = 0.1,
    seed: int = 0,
    split: Literal["train", "test"] = "train",
) -> ClutteredDigits:
    """Make ``n`` cluttered-digit images with the digits' boxes.

    Source digits are drawn (with replacement) from a fixed part of ``load_digits()``:
    ``split="test"`` uses a held-out ``TEST_FRACTION`` of each class, ``split="train"``
    the rest, whatever the seed, so test images show digits never seen in training.
    Each 8x8 digit is upscaled bilinearly to ``digit_size`` pixels square and pasted at a
    uniformly random position. Distractors never overlap the digit's box: each is a line
    segment, an arc, or a crop of at most 60% of the height or width of another digit of
    a *different* class from the same split (so it is never a whole digit). Then uniform
    noise in ``[0, noise)`` is added to every pixel and values are clipped to ``[0, 1]``.

    Args:
        n: Number of images, ``>= 0``.
        canvas_size: Height and width of the square images in pixels.
        digit_size: Side in pixels of the upscaled 8x8 digit, ``8 <= digit_size``
            ``<= canvas_size``. The digit's tight box is usually a little smaller.
        clutter: Number of distractors per image, ``>= 0``.
        noise: Amplitude of the uniform background noise, in ``[0, 1]``.
        seed: Non-negative integer; the same arguments always give the same images.
        split: ``"train"`` or ``"test"``: which source digits to use.

    Returns:
        A `ClutteredDigits` with ``x``, ``y``, ``boxes`` and ``source_index``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range.

    Example:
        >>> data = make_cluttered_digits(8, seed=1, split="test")
        >>> x0, y0, x1, y1 = data.boxes[0]
        >>> float(data.x[0, y0:y1, x0:x1].max()) > 0.5
        True
    """
    _check_int("n", n, minimum=0)
    _check_int("canvas_size", canvas_size, minimum=8)
    _check_int("digit_size", digit_size, minimum=8)
    if digit_size > canvas_size:
        raise ValueError(
            "Expected digit_size <= canvas_size. "
            f"Received: digit_size={digit_size}, canvas_size={canvas_size}"
        )
    _check_int("clutter", clutter, minimum=0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating, np.integer)):
        raise TypeError(f"Expected noise to be a number. Received: noise={noise!r}")
    if not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f"Expected noise in [0, 1]. Received: noise={noise}")
    _check_int("seed", seed, minimum=0)
    if split not in _SPLITS:
        raise ValueError(f"Expected split to be 'train' or 'test'. Received: split={split!r}")

    stamps, labels, boxes_in_stamp = _digit_stamps(digit_size)
    pool = _split_indices(split)
    rng = np.random.default_rng([int(seed), _SPLITS.index(split)])

    source_index = pool[rng.integers(0, len(pool), size=n)]
    corners = rng.integers(0, canvas_size - digit_size + 1, size=(n, 2))  # (row, col)
    canvas = np.zeros((n, canvas_size, canvas_size), dtype=np.float32)
    boxes = np.empty((n, 4), dtype=np.int64)
    # Fragments come from digits of another class, so they never show the image's class.
    others_by_label = [pool[labels[pool] != c] for c in range(10)]

    for i in range(n):
        row, col = (int(v) for v in corners[i])
        canvas[i, row : row + digit_size, col : col + digit_size] = stamps[source_index[i]]
        bx0, by0, bx1, by1 = boxes_in_stamp[source_index[i]]
        box = (col + bx0, row + by0, col + bx1, row + by1)
        boxes[i] = box
        others = others_by_label[labels[source_index[i]]]
        for _ in range(clutter):
            _add_distractor(canvas[i], box, stamps, boxes_in_stamp, others, rng)

    canvas += rng.random(canvas.shape, dtype=np.float32) * np.float32(noise)
    np.clip(canvas, 0.0, 1.0, out=canvas)
    return ClutteredDigits(
        x=canvas[..., np.newaxis],
        y=labels[source_index].astype(np.int64),
        boxes=boxes,
        source_index=source_index.astype(np.int64),
    )


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Expected {name} to be an int. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"Expected {name} >= {minimum}. Received: {name}={value}")


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


def _add_distractor(
    canvas: np.ndarray,
    box: tuple[int, int, int, int],
    stamps: np.ndarray,
    boxes_in_stamp: np.ndarray,
    others: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Draw one distractor on ``canvas`` (in place), outside ``box``; skip if none fits."""
    size = canvas.shape[0]
    digit_size = stamps.shape[1]
    if rng.random() < 0.5:
        picture = _fragment(stamps, boxes_in_stamp, others, rng)
    else:
        side = int(rng.integers(max(4, digit_size // 2), digit_size + 1))
        picture = _stroke(side, digit_size, rng)
    height, width = picture.shape
    if height > size or width > size:
        return
    x0, y0, x1, y1 = box
    for _ in range(_PLACEMENT_TRIES):
        row = int(rng.integers(0, size - height + 1))
        col = int(rng.integers(0, size - width + 1))
        apart = (
            col + width + _MARGIN <= x0
            or col >= x1 + _MARGIN
            or row + height + _MARGIN <= y0
            or row >= y1 + _MARGIN
        )
        if apart:
            window = canvas[row : row + height, col : col + width]
            np.maximum(window, picture, out=window)
            return


def _fragment(
    stamps: np.ndarray, boxes_in_stamp: np.ndarray, others: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A crop of another class's digit, at most 60% of its height or of its width."""
    source = int(others[rng.integers(0, len(others))])
    x0, y0, x1, y1 = (int(v) for v in boxes_in_stamp[source])
    digit = stamps[source, y0:y1, x0:x1]
    height, width = digit.shape
    if rng.random() < 0.5:
        crop = max(2, int(height * rng.uniform(0.35, 0.6)))
        start = int(rng.integers(0, height - crop + 1))
        return digit[start : start + crop]
    crop = max(2, int(width * rng.uniform(0.35, 0.6)))
    start = int(rng.integers(0, width - crop + 1))
    return digit[:, start : start + crop]


def _stroke(side: int, digit_size: int, rng: np.random.Generator) -> np.ndarray:
    """An anti-aliased line segment or arc in a ``side`` x ``side`` window."""
    # Digit strokes are about 1.5 source pixels wide; distractor strokes match them.
    half_width = rng.uniform(0.5, 1.0) * digit_size / 8.0
    brightness = rng.uniform(0.6, 1.0)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)
    inner = side - 1.0 - 2.0 * half_width
    if rng.random() < 0.5:
        (r0, c0), (r1, c1) = half_width + rng.random((2, 2)) * max(inner, 0.0)
        dr, dc = r1 - r0, c1 - c0
        length2 = max(dr * dr + dc * dc, 1e-6)
        t = np.clip(((rows - r0) * dr + (cols - c0) * dc) / length2, 0.0, 1.0)
        distance = np.hypot(rows - (r0 + t * dr), cols - (c0 + t * dc))
    else:
        centre = (side - 1) / 2.0
        radius = rng.uniform(0.3, 0.5) * max(inner, 1.0)
        start = rng.uniform(0.0, 2.0 * np.pi)
        span = rng.uniform(0.5, 1.5) * np.pi
        angle = np.mod(np.arctan2(rows - centre, cols - centre) - start, 2.0 * np.pi)
        ring = np.abs(np.hypot(rows - centre, cols - centre) - radius)
        # Outside the arc's angular span, the distance is to the nearer end point.
        ends = [start, start + span]
        end_distance = np.min(
            [
                np.hypot(
                    rows - (centre + radius * np.sin(a)), cols - (centre + radius * np.cos(a))
                )
                for a in ends
            ],
            axis=0,
        )
        distance = np.where(angle <= span, ring, end_distance)
    return (np.clip(half_width + 0.5 - distance, 0.0, 1.0) * brightness).astype(np.float32)
