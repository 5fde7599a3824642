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
        raise TypeError(
            f"Expected {name} to be an array of real numbers. "
            f"Received: {name} with dtype {array.dtype}"
        )
    as_stack(name, array, single=single)
    if 0 in array.shape[-2:]:
        raise ValueError(f"Expected {name} to be non-empty. Received: shape {array.shape}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"Expected {name} to be finite. Received: {name} with NaN or inf")
    if array.size and array.min() < 0:
        raise ValueError(
            f"Expected {name} to be non-negative (as Grad-CAM maps are). "
            f"Received: {name} with minimum {array.min()}"
        )
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
            f"Expected image_size to be (height, width). Received: image_size={image_size!r}"
        ) from None
    for part in (height, width):
        if isinstance(part, bool) or not isinstance(part, numbers.Integral):
            raise TypeError(
                "Expected image_size to be two integers (height, width). "
                f"Received: image_size={image_size!r}"
            )
    if height < 1 or width < 1:
        raise ValueError(f"Expected image_size to be positive. Received: image_size={image_size!r}")
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
        raise ValueError(f"Expected {name} to be {expected}. Received: shape {array.shape}")
    return array[np.newaxis] if single else array
