"""Resizing heatmaps to an image: bilinear, in NumPy, shared by the localisation metrics
(:mod:`gradcam_callbacks.watch.metrics`), the faithfulness metrics and Score-CAM's upsampling.

A heatmap is a 2D array of non-negative numbers, usually at the resolution of the explained
layer (say 8x8); it is laid over an image of ``(height, width)`` pixels by bilinear resizing
with pixel centres aligned (``align_corners=False``, as in Pillow and ``tf.image.resize``).

Example:
    >>> resize_heatmaps(np.ones((2, 2)), (3, 3)).shape
    (3, 3)
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from ._validation import as_array, describe, index_list

__all__ = ["interpolation_matrix", "resize_heatmaps"]


def resize_heatmaps(heatmaps: np.ndarray, image_size: Sequence[int]) -> np.ndarray:
    """Resize heatmaps bilinearly to an image's size, pixel centres aligned.

    Args:
        heatmaps: One heatmap ``(h, w)`` or a stack ``(n, h, w)``: finite, non-negative.
        image_size: ``(height, width)`` of the image in pixels.

    Returns:
        float64 array ``(height, width)`` or ``(n, height, width)``. Each value is a convex
        combination of heatmap values, so the range never grows.

    Raises:
        TypeError: If ``heatmaps`` is not numeric or ``image_size`` not two integers.
        ValueError: If a shape or value is out of range.

    Example:
        >>> resize_heatmaps(np.array([[0.0, 1.0]]), (1, 4)).tolist()
        [[0.0, 0.25, 0.75, 1.0]]
    """
    single = np.ndim(heatmaps) == 2
    stack = check_heatmaps("heatmaps", heatmaps, single=single)
    height, width = check_image_size(image_size)
    resized = resize_stack(stack, height, width)
    return resized[0] if single else resized


def interpolation_matrix(size_out: int, size_in: int, *, align_corners: bool = False
                         ) -> np.ndarray:
    """``(size_out, size_in)`` weights of 1D linear interpolation: output ``i`` samples the
    input at ``(i + 0.5) * size_in / size_out - 0.5`` (pixel centres aligned, as image
    resizing does), or with ``align_corners`` at ``i * (size_in - 1) / (size_out - 1)`` (the
    end pixels aligned, as torch's ``UpsamplingBilinear2d``, which Score-CAM uses).

    Example:
        >>> interpolation_matrix(3, 2, align_corners=True).tolist()
        [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
        >>> interpolation_matrix(2, 2).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    if align_corners:
        scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        position = np.arange(size_out) * scale
    else:
        position = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    position = np.clip(position, 0.0, size_in - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    fraction = position - low
    weights = np.zeros((size_out, size_in))
    np.add.at(weights, (np.arange(size_out), low), 1.0 - fraction)
    np.add.at(weights, (np.arange(size_out), high), fraction)
    return weights


def resize_stack(stack: np.ndarray, height: int, width: int) -> np.ndarray:
    """A stack ``(n, h, w)`` resized bilinearly to ``(n, height, width)``, pixel centres
    aligned (:func:`interpolation_matrix`); unchecked (:func:`resize_heatmaps` checks).

    Example:
        >>> resize_stack(np.array([[[0.0, 1.0]]]), 1, 4).tolist()
        [[[0.0, 0.25, 0.75, 1.0]]]
    """
    rows = interpolation_matrix(height, stack.shape[1])
    cols = interpolation_matrix(width, stack.shape[2])
    return np.einsum("Hh,nhw,Ww->nHW", rows, stack, cols)


def check_heatmaps(name: str, value: object, *, single: bool) -> np.ndarray:
    """Validate one heatmap (``single``) or a stack; return a float64 stack ``(n, h, w)``.

    Example:
        >>> check_heatmaps("heatmap", [[0, 1]], single=True).shape
        (1, 1, 2)
    """
    array = np.asarray(value)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(f"{name} must be an array of real numbers; received dtype {array.dtype}")
    as_stack(name, array, single=single)
    if 0 in array.shape[-2:]:
        raise ValueError(f"{name} must be non-empty; received shape {array.shape}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} must be finite; received {bad} NaN or infinite value(s)")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be non-negative (as Grad-CAM maps are); received a "
                         f"minimum of {array.min()}")
    return array[np.newaxis] if single else array


def check_image_size(image_size: object) -> tuple[int, int]:
    """Validate ``(height, width)``: two positive integers.

    Example:
        >>> check_image_size((48, 64))
        (48, 64)
    """
    try:
        height, width = image_size  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError(
            f"image_size must be (height, width); received image_size={image_size!r}"
        ) from None
    for part in (height, width):
        if isinstance(part, bool) or not isinstance(part, numbers.Integral):
            raise TypeError(f"image_size must be two integers (height, width); received "
                            f"image_size={image_size!r}")
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive; received image_size={image_size!r}")
    return int(height), int(width)


def as_stack(name: str, array: np.ndarray, *, single: bool) -> np.ndarray:
    """``array`` as a stack ``(n, height, width)``: one map (``single``, 2D) gets a leading
    axis; a ValueError naming ``name`` if its rank is not 2 (``single``) or 3.

    Example:
        >>> as_stack("mask", np.ones((2, 3), bool), single=True).shape
        (1, 2, 3)
    """
    expected = "a 2D array (height, width)" if single else "a 3D array (n, height, width)"
    if array.ndim != (2 if single else 3):
        raise ValueError(f"{name} must be {expected}; received shape {array.shape}")
    return array[np.newaxis] if single else array


def check_box_stack(name: str, boxes: object, *, count: int | None = None,
                    sizes: object = None, single: bool = False, per: str = "heatmap",
                    whole_floats: bool = False) -> np.ndarray:
    """Boxes ``(x0, y0, x1, y1)`` in pixels (``x1``/``y1`` exclusive, ``x0 < x1``, ``y0 < y1``),
    checked under the argument's ``name``, as an int64 stack ``(n, 4)``: one box (``single``,
    shape ``(4,)``) or one box per ``per`` (``count`` of them; ``None``: any number), each
    inside its image when ``sizes`` gives ``(height, width)`` (one for all boxes, or one per
    box). Integer coordinates; with ``whole_floats`` also floats that are whole numbers.

    The one check of boxes: the localisation metrics and the callback's ``probe_boxes`` /
    ``artifact_boxes`` call it.

    Example:
        >>> check_box_stack("box", (0, 1, 2, 3), single=True, sizes=(4, 4)).tolist()
        [[0, 1, 2, 3]]
        >>> check_box_stack("boxes", [(0, 0, 5, 2)], sizes=(4, 4))
        Traceback (most recent call last):
        ...
        ValueError: boxes[0] must lie inside its 4x4 image (...); received [0, 0, 5, 2]
    """
    array = as_array(boxes, name)
    floats = whole_floats and np.issubdtype(array.dtype, np.floating)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or floats):
        raise TypeError(f"{name} must hold integer pixel coordinates; received dtype "
                        f"{array.dtype}")
    if single and array.shape != (4,):
        raise ValueError(f"{name} must have shape (4,), one (x0, y0, x1, y1); received shape "
                         f"{array.shape}")
    if not single and (array.ndim != 2 or array.shape[1] != 4
                       or count is not None and len(array) != count):
        raise ValueError(f"{name} must have shape ({'n' if count is None else count}, 4), one "
                         f"(x0, y0, x1, y1) per {per}; received shape {array.shape}")
    stack = array.reshape(-1, 4)

    def where(index: int) -> str:
        return name if single else f"{name}[{index}]"

    if floats:
        whole = (np.isfinite(stack) & (stack == np.round(stack))).all(axis=1)
        if not whole.all():
            first = int(np.flatnonzero(~whole)[0])
            raise ValueError(f"{name} must hold whole pixel coordinates; received "
                             f"{stack[first].tolist()} for {per} {first}")
    stack = stack.astype(np.int64)
    x0, y0, x1, y1 = stack.T
    bad = np.flatnonzero(~((x0 < x1) & (y0 < y1)))
    if bad.size:
        raise ValueError(f"{where(bad[0])} must satisfy x0 < x1 and y0 < y1 (x1, y1 exclusive); "
                         f"received {stack[bad[0]].tolist()}")
    if sizes is not None:
        heights, widths = np.broadcast_to(np.asarray(sizes).reshape(-1, 2), (len(stack), 2)).T
        bad = np.flatnonzero(~((0 <= x0) & (x1 <= widths) & (0 <= y0) & (y1 <= heights)))
        if bad.size:
            first, height, width = bad[0], heights[bad[0]], widths[bad[0]]
            raise ValueError(
                f"{where(first)} must lie inside its {height}x{width} image (0 <= x0 < x1 <= "
                f"{width}, 0 <= y0 < y1 <= {height}); received {stack[first].tolist()}")
    return stack


def check_mask_stack(name: str, masks: object, *, count: int | None = None,
                     single: bool = False, per: str = "heatmap",
                     marks: str = "the object") -> np.ndarray:
    """Boolean masks, checked under the argument's ``name``, as a stack ``(n, H, W)``: one
    mask (``single``, ``(H, W)``) or one mask per ``per`` (``count`` of them; ``None``: any
    number), each marking ``marks`` with at least one True pixel.

    The one check of masks: the localisation metrics and the callback's ``probe_masks`` /
    ``artifact_masks`` call it.

    Example:
        >>> check_mask_stack("mask", np.ones((2, 3), bool), single=True).shape
        (1, 2, 3)
        >>> check_mask_stack("masks", np.zeros((2, 2, 2), bool), count=2)
        Traceback (most recent call last):
        ...
        ValueError: masks[0] must mark the object ...; received an all-False mask (... [0, 1])
    """
    array = as_array(masks, name)
    shape = "(H, W)" if single else f"({'n' if count is None else count}, H, W)"
    if array.dtype != bool:
        raise TypeError(f"{name} must be a boolean array {shape}; received {describe(array)}")
    if array.ndim != (2 if single else 3):
        raise ValueError(f"{name} must be a boolean array {shape}; received shape {array.shape}")
    stack = array[np.newaxis] if single else array
    if count is not None and len(stack) != count:
        raise ValueError(f"{name} must hold one mask per {per} ({count}); received "
                         f"{len(stack)} masks")
    empty = np.flatnonzero(~stack.any(axis=(1, 2)))
    if empty.size:
        where, rest = (name, "") if single else (
            f"{name}[{int(empty[0])}]", f" (empty masks: {per}(s) {index_list(empty)})")
        raise ValueError(f"{where} must mark {marks} with at least one True pixel; received an "
                         f"all-False mask{rest}")
    return stack
