"""What the faithfulness metrics (:mod:`gradcam_callbacks.faithfulness`) compute on arrays
alone, without the model: the baselines deletion and insertion move towards, ROAD's noisy
linear imputation of removed pixels, the Sobel edge maps a faithful map must beat and the
row-wise Spearman correlation the sanity check compares maps by. NumPy and SciPy only; every
name here is also reachable as ``gradcam_callbacks.faithfulness.<name>``.

Example:
    >>> import numpy as np
    >>> baseline_images(np.ones((1, 2, 2, 1)), 0.5).ravel().tolist()
    [0.5, 0.5, 0.5, 0.5]
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Baseline = float | str | Callable[[np.ndarray], np.ndarray]
BASELINES = ("blur", "mean")
# RISE's blurred canvas (Petsiuk et al. 2018): a Gaussian of sigma 5 px over 11 px.
BLUR_SIGMA, BLUR_RADIUS = 5.0, 5
# ROAD's noisy linear imputation (Rong et al. 2022): a removed pixel is the weighted mean of
# its 8 neighbours (1/6 for the 4 direct ones, 1/12 for the diagonal ones), plus noise.
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
# Images per sparse system of the imputation: 64 images of 48x48 half removed took 1.66 s
# as one block-diagonal system, 0.59 s as 8 systems of 8 and 0.76 s as 64 of 1 (SuperLU).
IMPUTE_GROUP = 8


def baseline_images(images: np.ndarray, baseline: Baseline,
                    data_format: str = "channels_last") -> np.ndarray:
    """The images that :func:`~gradcam_callbacks.faithfulness.deletion` moves towards (and
    :func:`~gradcam_callbacks.faithfulness.insertion` starts from):
    a number (every pixel that value), ``"mean"`` (each image's mean colour),
    ``"blur"`` (each image blurred by RISE's Gaussian, sigma 5 px over 11 px, edges
    reflected) or a callable ``images -> baselines`` of the same shape.

    Raises:
        TypeError: ``baseline`` is none of those.
        ValueError: a callable's result has another shape or is not finite.

    Example:
        >>> import numpy as np
        >>> baseline_images(np.arange(4.0).reshape(1, 2, 2, 1), "mean").ravel().tolist()
        [1.5, 1.5, 1.5, 1.5]
    """
    images = np.asarray(images)
    axes = (2, 3) if data_format == "channels_first" else (1, 2)
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        return np.full(images.shape, baseline, images.dtype)
    if isinstance(baseline, str) and baseline in BASELINES:
        if baseline == "mean":
            mean = images.mean(axis=axes, keepdims=True, dtype=np.float64)
            return np.broadcast_to(mean, images.shape).astype(images.dtype)
        height, width = (images.shape[a] for a in axes)
        rows, cols = _blur_matrix(height), _blur_matrix(width)
        spec = "Hh,nchw,Ww->ncHW" if data_format == "channels_first" else "Hh,nhwc,Ww->nHWc"
        return np.einsum(spec, rows, images.astype(np.float64), cols).astype(images.dtype)
    if callable(baseline) and not isinstance(baseline, (str, type)):
        found = np.asarray(baseline(images))
        if found.shape != images.shape:
            raise ValueError(
                f"baseline (a callable) must return an array of the images' shape "
                f"{images.shape}; received shape {found.shape}")
        if not np.isfinite(found).all():
            raise ValueError("baseline (a callable) returned NaN or inf")
        return found.astype(images.dtype)
    raise TypeError(
        f"baseline must be a number, one of {list(BASELINES)} or a callable images -> "
        f"baselines; received {type(baseline).__name__}: {baseline!r}")


def _blur_matrix(size: int) -> np.ndarray:
    """``(size, size)`` 1D Gaussian blur, edges reflected (``abcd|dcba``)."""
    offsets = np.arange(-BLUR_RADIUS, BLUR_RADIUS + 1)
    kernel = np.exp(-0.5 * (offsets / BLUR_SIGMA) ** 2)
    kernel /= kernel.sum()
    matrix = np.zeros((size, size))
    for offset, weight in zip(offsets, kernel):
        source = np.arange(size) + offset
        period = 2 * size
        source = np.mod(source, period)
        source = np.where(source >= size, period - 1 - source, source)
        np.add.at(matrix, (np.arange(size), source), weight)
    return matrix


def impute(images: np.ndarray, removed: np.ndarray, noise: float = 0.0,
           seeds: Sequence[Any] | None = None) -> np.ndarray:
    """ROAD's noisy linear imputation of ``images (B, H, W, C)`` (channels last) where
    ``removed (B, H, W)`` is true: each removed pixel becomes the weighted mean of its
    in-image neighbours (:data:`NEIGHBOURS`), known or removed, which is one sparse linear
    system for the whole batch, plus ``noise`` times a standard normal draw
    (``np.random.default_rng(seeds[b])`` for image ``b``).

    Example:
        >>> import numpy as np
        >>> x = np.array([[[[0.0], [5.0]], [[5.0], [2.0]]]])
        >>> removed = np.array([[[True, False], [False, False]]])
        >>> impute(x, removed).ravel().round(6).tolist()  # (2 * 5 + 2 * 5 + 2) / 5
        [4.4, 5.0, 5.0, 2.0]
    """
    batch = len(removed)
    seeds = list(range(batch)) if seeds is None else list(seeds)
    if batch > IMPUTE_GROUP:  # SuperLU slows down more than linearly with the block count
        return np.concatenate([
            impute(images[start:start + IMPUTE_GROUP], removed[start:start + IMPUTE_GROUP],
                   noise, seeds[start:start + IMPUTE_GROUP])
            for start in range(0, batch, IMPUTE_GROUP)])
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    batch, height, width = removed.shape
    values = np.asarray(images, np.float64).reshape(batch * height * width, -1)
    result = values.copy()
    flags = removed.reshape(-1)
    unknown = np.flatnonzero(flags)
    if unknown.size == 0:
        return result.reshape(images.shape).astype(images.dtype)
    variable = np.full(flags.size, -1)
    variable[unknown] = np.arange(unknown.size)
    image, row, col = np.unravel_index(unknown, (batch, height, width))
    diagonal = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, values.shape[1]))
    entries_row, entries_col, entries = [], [], []
    for (down, right), weight in NEIGHBOURS:
        r, c = row + down, col + right
        inside = np.flatnonzero((r >= 0) & (r < height) & (c >= 0) & (c < width))
        neighbour = (image[inside] * height + r[inside]) * width + c[inside]
        diagonal[inside] += weight
        missing = flags[neighbour]
        entries_row.append(inside[missing])
        entries_col.append(variable[neighbour[missing]])
        entries.append(np.full(missing.sum(), weight))
        rhs[inside[~missing]] -= weight * values[neighbour[~missing]]
    entries_row.append(np.arange(unknown.size))
    entries_col.append(np.arange(unknown.size))
    entries.append(-diagonal)
    system = coo_matrix((np.concatenate(entries),
                         (np.concatenate(entries_row), np.concatenate(entries_col))),
                        shape=(unknown.size, unknown.size)).tocsc()
    solved = np.asarray(spsolve(system, rhs)).reshape(unknown.size, -1)
    if noise:
        counts = np.bincount(image, minlength=batch)
        draws = [np.random.default_rng(seeds[b]).standard_normal((counts[b], values.shape[1]))
                 for b in range(batch) if counts[b]]
        solved += noise * np.concatenate(draws)  # unknowns are sorted by image
    result[unknown] = solved
    return result.reshape(images.shape).astype(images.dtype)


def spearman_rows(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``(N,)`` Spearman rank correlation of each row of ``first`` with the same row of
    ``second`` (ties: average ranks); NaN where a row is constant or not finite.

    Example:
        >>> import numpy as np
        >>> spearman_rows(np.array([[1.0, 2, 3]]), np.array([[10.0, 30, 20]])).tolist()
        [0.5]
    """
    from scipy.stats import rankdata

    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    bad = ~(np.isfinite(first).all(axis=1) & np.isfinite(second).all(axis=1))
    a = rankdata(np.nan_to_num(first), axis=1)
    b = rankdata(np.nan_to_num(second), axis=1)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        found = (a * b).sum(axis=1) / denominator
    found[bad | (denominator == 0)] = np.nan
    return found


def sobel_maps(images: np.ndarray, data_format: str = "channels_last") -> np.ndarray:
    """``(N, H, W)`` edge maps of images, the gradient magnitude of a 3x3 Sobel filter on the
    channel mean (edges reflected): a map that knows the picture but not the model, the
    baseline a faithful map must beat.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((1, 4, 4, 1)); x[0, :, 2:] = 1.0
        >>> (sobel_maps(x)[0] > 0).astype(int).tolist()[0]
        [0, 1, 1, 0]
    """
    images = np.asarray(images, np.float64)
    gray = images.mean(axis=1 if data_format == "channels_first" else -1)
    padded = np.pad(gray, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    height, width = gray.shape[1:]

    def at(down: int, right: int) -> np.ndarray:
        return padded[:, 1 + down:1 + down + height, 1 + right:1 + right + width]

    horizontal = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    vertical = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return np.hypot(horizontal, vertical)
