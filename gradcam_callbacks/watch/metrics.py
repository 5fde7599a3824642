"""Localisation metrics for Grad-CAM heatmaps laid over images.

A heatmap is a 2D array of non-negative numbers, usually in ``[0, 1]`` at the resolution
of the explained layer (say 8x8) while the object is known in image pixels: a box
``(x0, y0, x1, y1)`` with exclusive ``x1``/``y1`` (the object is ``image[y0:y1, x0:x1]``)
or a boolean mask of the image's size. Heatmaps are laid over the image by bilinear
resizing with pixel centres aligned (``align_corners=False``, as in Pillow and
``tf.image.resize``), in NumPy (:mod:`gradcam_callbacks.resample`). Image sizes are
``(height, width)``.

Each metric has one implementation, its batched form (``box_masses``), which takes a stack of
heatmaps ``(n, h, w)``; its single-image form (``box_mass``) validates its arguments under
their own names and reads the batched form's one value.

Example:
    >>> import numpy as np
    >>> heatmap = np.zeros((8, 8)); heatmap[2, 5] = 1.0
    >>> pointing_hit(heatmap, (40, 16, 48, 24), (64, 64))
    True
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from ..resample import (
    check_box_stack,
    check_heatmaps,
    check_image_size,
    check_mask_stack,
    resize_heatmaps,
    resize_stack,
)

__all__ = [
    "box_mass",
    "box_masses",
    "boxes_to_masks",
    "heatmap_change",
    "heatmap_changes",
    "mask_mass",
    "mask_masses",
    "mask_pointing_hit",
    "mask_pointing_hits",
    "pointing_game",
    "pointing_hit",
    "pointing_hits",
    "resize_heatmaps",
]

Box = Sequence[int]


def boxes_to_masks(boxes: np.ndarray | Sequence[Box], image_size: Sequence[int]) -> np.ndarray:
    """Boolean masks ``(n, height, width)`` that are True inside each box.

    Args:
        boxes: ``(n, 4)`` integer boxes ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive,
            each non-empty and inside the image.
        image_size: ``(height, width)`` of the image in pixels.

    Returns:
        A bool array of shape ``(n, height, width)``.

    Raises:
        TypeError: If ``boxes`` are not integers or ``image_size`` not two integers.
        ValueError: If a box is empty or leaves the image.

    Example:
        >>> boxes_to_masks([(1, 0, 3, 1)], (2, 4)).astype(int).tolist()
        [[[0, 1, 1, 0], [0, 0, 0, 0]]]
    """
    return _box_masks("boxes", boxes, image_size)


def mask_masses(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of each heatmap's mass inside its mask, after resizing to the mask's size.

    Args:
        heatmaps: ``(n, h, w)`` finite, non-negative heatmaps.
        masks: ``(n, height, width)`` boolean masks, each with at least one True pixel.

    Returns:
        float64 array ``(n,)`` with values in ``[0, 1]``; 0.0 where the resized heatmap
        is all zero (no mass, no NaN).

    Raises:
        TypeError: If ``heatmaps`` is not numeric or ``masks`` not boolean.
        ValueError: If shapes disagree or a mask is empty.

    Example:
        >>> masks = np.zeros((1, 4, 4), dtype=bool); masks[0, :2] = True
        >>> mask_masses(np.array([[[1.0, 1.0], [0.0, 0.0]]]), masks).round(3).tolist()
        [0.875]
    """
    stack = check_heatmaps("heatmaps", heatmaps, single=False)
    masks = check_mask_stack("masks", masks, count=len(stack))
    resized = resize_stack(_unit_peak(stack), *masks.shape[1:])
    total = resized.sum(axis=(1, 2))
    inside = np.where(masks, resized, 0.0).sum(axis=(1, 2))
    share = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return np.clip(share, 0.0, 1.0)


def mask_pointing_hits(heatmaps: np.ndarray, masks: np.ndarray, tolerance: float = 0) -> np.ndarray:
    """Whether each heatmap's maximum, in image pixels, falls on (or near) its mask.

    The point is the first maximum, in row-major order, of the heatmap resized to the
    mask's size. It hits when its Euclidean distance to the nearest True pixel is at
    most ``tolerance`` pixels. An all-zero heatmap points nowhere and never hits (nor
    does one whose resized map is all zero, which only strong downsampling can cause).

    Args:
        heatmaps: ``(n, h, w)`` finite, non-negative heatmaps.
        masks: ``(n, height, width)`` boolean masks, each with at least one True pixel.
        tolerance: Non-negative distance in pixels; 0 means the point must be on the mask.

    Returns:
        bool array ``(n,)``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If shapes disagree, a mask is empty or ``tolerance`` is negative.

    Example:
        >>> masks = np.zeros((1, 4, 4), dtype=bool); masks[0, 3, 3] = True
        >>> heatmaps = np.array([[[0.0, 0.0], [0.0, 1.0]]])
        >>> mask_pointing_hits(heatmaps, masks).tolist()
        [True]
    """
    stack = check_heatmaps("heatmaps", heatmaps, single=False)
    masks = check_mask_stack("masks", masks, count=len(stack))
    tolerance = _check_tolerance(tolerance)
    rows, cols, peaks = _peaks(_unit_peak(stack), *masks.shape[1:])
    hits = masks[np.arange(len(masks)), rows, cols]
    if tolerance > 0:
        for i in np.flatnonzero(~hits):
            mask_rows, mask_cols = np.nonzero(masks[i])
            nearest = np.min((mask_rows - rows[i]) ** 2 + (mask_cols - cols[i]) ** 2)
            hits[i] = nearest <= tolerance**2
    return hits & (peaks > 0)


def box_masses(
    heatmaps: np.ndarray, boxes: np.ndarray | Sequence[Box], image_size: Sequence[int]
) -> np.ndarray:
    """Share of each heatmap's mass inside its box; see `mask_masses`.

    Args:
        heatmaps: ``(n, h, w)`` finite, non-negative heatmaps.
        boxes: ``(n, 4)`` integer boxes ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive.
        image_size: ``(height, width)`` of the image in pixels.

    Returns:
        float64 array ``(n,)`` in ``[0, 1]``, 0.0 for an all-zero heatmap.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If shapes disagree or a box is empty or leaves the image.

    Example:
        >>> box_masses(np.ones((1, 2, 2)), [(0, 0, 2, 4)], (4, 4)).tolist()
        [0.5]
    """
    stack = check_heatmaps("heatmaps", heatmaps, single=False)
    return mask_masses(stack, _box_masks("boxes", boxes, image_size, count=len(stack)))


def pointing_hits(
    heatmaps: np.ndarray,
    boxes: np.ndarray | Sequence[Box],
    image_size: Sequence[int],
    tolerance: float = 0,
) -> np.ndarray:
    """Whether each heatmap's maximum falls in (or near) its box; see `mask_pointing_hits`.

    Args:
        heatmaps: ``(n, h, w)`` finite, non-negative heatmaps.
        boxes: ``(n, 4)`` integer boxes ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive.
        image_size: ``(height, width)`` of the image in pixels.
        tolerance: Non-negative distance in pixels from the box that still counts.

    Returns:
        bool array ``(n,)``; False for an all-zero heatmap.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If shapes disagree, a box is empty or leaves the image, or
            ``tolerance`` is negative.

    Example:
        >>> heatmaps = np.array([[[1.0, 0.0], [0.0, 0.0]]])
        >>> pointing_hits(heatmaps, [(0, 0, 2, 2)], (4, 4)).tolist()
        [True]
    """
    stack = check_heatmaps("heatmaps", heatmaps, single=False)
    return mask_pointing_hits(stack, _box_masks("boxes", boxes, image_size, count=len(stack)),
                              tolerance)


def pointing_game(
    heatmaps: np.ndarray,
    boxes: np.ndarray | Sequence[Box],
    image_size: Sequence[int],
    tolerance: float = 0,
) -> float:
    """Pointing-game accuracy: the share of heatmaps whose maximum falls in their box.

    Args:
        heatmaps: ``(n, h, w)`` finite, non-negative heatmaps, ``n >= 1``.
        boxes: ``(n, 4)`` integer boxes ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive.
        image_size: ``(height, width)`` of the image in pixels.
        tolerance: Non-negative distance in pixels from the box that still counts.

    Returns:
        A float in ``[0, 1]``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If there are no heatmaps, shapes disagree, a box is invalid, or
            ``tolerance`` is negative.

    Example:
        >>> heatmaps = np.zeros((2, 2, 2)); heatmaps[:, 0, 0] = 1.0
        >>> pointing_game(heatmaps, [(0, 0, 2, 2), (2, 2, 4, 4)], (4, 4))
        0.5
    """
    hits = pointing_hits(heatmaps, boxes, image_size, tolerance)
    if len(hits) == 0:
        raise ValueError("heatmaps must hold at least one heatmap; received n=0")
    return float(hits.mean())


def heatmap_changes(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``1 - cosine similarity`` between pairs of heatmaps, each flattened.

    Non-negative heatmaps give values in ``[0, 1]``: 0.0 when they are equal (and, up to
    rounding, when equal up to a positive scale), 1.0 when they share no support. When
    both heatmaps are all zero the change is 0.0 (nothing changed); when exactly one is,
    it is 1.0.

    Args:
        previous: ``(n, h, w)`` finite, non-negative heatmaps.
        current: ``(n, h, w)`` finite, non-negative heatmaps, the same shape.

    Returns:
        float64 array ``(n,)``.

    Raises:
        TypeError: If an argument is not numeric.
        ValueError: If the shapes differ or a value is negative or not finite.

    Example:
        >>> heatmap_changes(np.eye(2)[None], np.eye(2)[None] * 3).tolist()
        [0.0]
    """
    before = check_heatmaps("previous", previous, single=False)
    after = check_heatmaps("current", current, single=False)
    if before.shape != after.shape:
        raise ValueError(
            f"previous and current must have the same shape; received previous with shape "
            f"{before.shape}, current with shape {after.shape}"
        )
    before = _unit_peak(before).reshape(len(before), -1)
    after = _unit_peak(after).reshape(len(after), -1)
    # One summation for all three products, so that equal maps give exactly 0.0.
    dot = np.einsum("ij,ij->i", before, after)
    norms = np.sqrt(np.einsum("ij,ij->i", before, before) * np.einsum("ij,ij->i", after, after))
    cosine = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    both_zero = (before.max(axis=1) == 0) & (after.max(axis=1) == 0)
    cosine[both_zero] = 1.0
    return np.clip(1.0 - cosine, 0.0, 1.0)


def box_mass(heatmap: np.ndarray, box: Box, image_size: Sequence[int]) -> float:
    """Share of the heatmap's mass inside the box, after resizing to the image.

    Args:
        heatmap: ``(h, w)`` finite, non-negative heatmap.
        box: ``(x0, y0, x1, y1)`` integers, ``x1``/``y1`` exclusive, inside the image.
        image_size: ``(height, width)`` of the image in pixels.

    Returns:
        A float in ``[0, 1]``; 0.0 for an all-zero heatmap.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range.

    Example:
        >>> box_mass(np.ones((7, 7)), (0, 0, 112, 112), (224, 224))
        0.25
    """
    return float(mask_masses(_one(heatmap), _box_masks("box", box, image_size, single=True))[0])


def pointing_hit(
    heatmap: np.ndarray, box: Box, image_size: Sequence[int], tolerance: float = 0
) -> bool:
    """Whether the heatmap's maximum, in image pixels, falls in the box.

    The point is the first maximum (row-major) of the heatmap resized bilinearly to
    ``image_size``; it hits when it is within ``tolerance`` pixels (Euclidean) of the box.
    An all-zero heatmap never hits.

    Args:
        heatmap: ``(h, w)`` finite, non-negative heatmap.
        box: ``(x0, y0, x1, y1)`` integers, ``x1``/``y1`` exclusive, inside the image.
        image_size: ``(height, width)`` of the image in pixels.
        tolerance: Non-negative distance in pixels from the box that still counts.

    Returns:
        True on a hit.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range.

    Example:
        >>> heatmap = np.zeros((7, 7)); heatmap[0, 0] = 1.0
        >>> pointing_hit(heatmap, (32, 32, 64, 64), (224, 224))
        False
    """
    masks = _box_masks("box", box, image_size, single=True)
    return bool(mask_pointing_hits(_one(heatmap), masks, tolerance)[0])


def mask_mass(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's mass on the mask, after resizing to the mask's size.

    Args:
        heatmap: ``(h, w)`` finite, non-negative heatmap.
        mask: ``(height, width)`` boolean mask of the image with at least one True pixel.

    Returns:
        A float in ``[0, 1]``; 0.0 for an all-zero heatmap.

    Raises:
        TypeError: If ``heatmap`` is not numeric or ``mask`` not boolean.
        ValueError: If a shape or value is out of range or the mask is empty.

    Example:
        >>> mask = np.zeros((4, 4), dtype=bool); mask[:, :2] = True
        >>> mask_mass(np.ones((2, 2)), mask)
        0.5
    """
    return float(mask_masses(_one(heatmap), check_mask_stack("mask", mask, single=True))[0])


def mask_pointing_hit(heatmap: np.ndarray, mask: np.ndarray, tolerance: float = 0) -> bool:
    """Whether the heatmap's maximum falls on (or near) the mask; see `mask_pointing_hits`.

    Args:
        heatmap: ``(h, w)`` finite, non-negative heatmap.
        mask: ``(height, width)`` boolean mask of the image with at least one True pixel.
        tolerance: Non-negative distance in pixels from the mask that still counts.

    Returns:
        True on a hit; False for an all-zero heatmap.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape or value is out of range or the mask is empty.

    Example:
        >>> mask = np.zeros((4, 4), dtype=bool); mask[0, 3] = True
        >>> mask_pointing_hit(np.array([[0.0, 1.0], [0.0, 0.0]]), mask)
        True
    """
    stack, masks = _one(heatmap), check_mask_stack("mask", mask, single=True)
    return bool(mask_pointing_hits(stack, masks, tolerance)[0])


def heatmap_change(previous: np.ndarray, current: np.ndarray) -> float:
    """``1 - cosine similarity`` of two heatmaps; see `heatmap_changes`.

    Args:
        previous: ``(h, w)`` finite, non-negative heatmap.
        current: ``(h, w)`` finite, non-negative heatmap of the same shape.

    Returns:
        A float in ``[0, 1]``: 0.0 for identical maps (or both all zero), 1.0 for maps
        with no overlap (or exactly one all zero).

    Raises:
        TypeError: If an argument is not numeric.
        ValueError: If the shapes differ or a value is negative or not finite.

    Example:
        >>> heatmap_change(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
        1.0
    """
    return float(heatmap_changes(_one(previous, "previous"), _one(current, "current"))[0])


def _one(heatmap: object, name: str = "heatmap") -> np.ndarray:
    """One heatmap, validated under its argument's name, as a stack of one for the batched
    form that every single-image form calls."""
    return check_heatmaps(name, heatmap, single=True)


def _box_masks(name: str, boxes: object, image_size: object, *, count: int | None = None,
               single: bool = False) -> np.ndarray:
    """Boxes (one, ``single``, or ``count``: one per heatmap), checked under the argument's
    ``name`` inside an image of ``image_size``, as boolean masks ``(n, height, width)``."""
    height, width = check_image_size(image_size)
    boxes = check_box_stack(name, boxes, count=count, sizes=(height, width), single=single)
    rows, cols = np.arange(height), np.arange(width)
    inside_rows = (rows >= boxes[:, 1, None]) & (rows < boxes[:, 3, None])
    inside_cols = (cols >= boxes[:, 0, None]) & (cols < boxes[:, 2, None])
    return inside_rows[:, :, None] & inside_cols[:, None, :]


def _unit_peak(stack: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (all-zero maps kept), for scale-free metrics.

    Without it, tiny but positive values (say 1e-300) would underflow to zero mass.
    """
    peak = stack.max(axis=(1, 2), keepdims=True)
    return stack / np.where(peak > 0, peak, 1.0)


def _peaks(stack: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and value of the first maximum of each resized heatmap."""
    flat = resize_stack(stack, height, width).reshape(len(stack), height * width)
    first = flat.argmax(axis=1)
    rows, cols = np.unravel_index(first, (height, width))
    return rows, cols, flat[np.arange(len(flat)), first]


def _check_tolerance(tolerance: object) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a number of pixels; received tolerance={tolerance!r}")
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be finite and >= 0; received tolerance={tolerance!r}")
    return float(tolerance)
