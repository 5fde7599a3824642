"""Score-CAM (Wang et al. 2020), with Faster Score-CAM's channel budget.

For each channel ``k``: ``M_k`` = the bilinear upsampling of ``A_k`` to the input size
(``align_corners=True``, as torch's ``UpsamplingBilinear2d``), scaled to [0, 1] by
``(M - min) / (max - min + 1e-8)``; ``s_k`` = the target's score of the model on
``input * M_k``; ``w = softmax_k(s)``; ``map = sum_k w_k A_k``. With ``max_channels=N`` only
the N channels with the largest spatial standard deviation of ``A`` are scored; the softmax
runs over them and the other channels weigh 0.

Masked inputs are built at most ``batch_size`` at a time (default: 2 MiB of them, never all
C copies of the batch at once) and each chunk is one call of the engine's compiled score-only
forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..resample import interpolation_matrix
from .base import CamInputs, CamResult, Method, ScoreCallable, option, per_target, positive_or_none

# Default bound on one chunk of masked inputs: 2 MiB of them (3 copies of a 224x224x3 float32
# image, 18 of a 96x96x3 one). Memory stays bounded whatever the number of channels, and on a
# CPU small batches are the fast ones: MobileNetV2's forward measured 42-65 ms per 224x224
# image in batches of 4 against 96-101 ms in batches of 32 (its activations stay in cache).
DEFAULT_CHUNK_BYTES = 2 * 2 ** 20


def chunk_size(total: int, sample_bytes: int, batch_size: int | None = None) -> int:
    """Masked inputs per forward for ``total`` of them of ``sample_bytes`` each: at most
    ``batch_size`` (default: as many as fit in :data:`DEFAULT_CHUNK_BYTES`, at least one),
    spread evenly over the fewest chunks, so that the zero padding of the last chunk (which
    keeps one shape for a compiled forward) is less than one row per chunk.

    Example:
        >>> chunk_size(512, 224 * 224 * 3 * 4)  # 2 MiB hold 3 images: 171 chunks of 3
        3
        >>> chunk_size(512, 96 * 96 * 3 * 4)  # 2 MiB hold 18 images: 29 chunks of 18
        18
        >>> chunk_size(18, 100, batch_size=7), chunk_size(3, 100, batch_size=7)
        (6, 3)
    """
    limit = batch_size or max(1, DEFAULT_CHUNK_BYTES // max(1, sample_bytes))
    if total <= limit:
        return max(total, 1)
    chunks = -(-total // limit)
    return -(-total // chunks)


def channel_masks(maps: np.ndarray, height: int, width: int,
                  dtype: type[np.floating] = np.float64) -> np.ndarray:
    """``(B, h, w)`` activation maps -> ``(B, height, width)`` masks in [0, 1]: bilinear
    upsampling (``align_corners=True``), then min-max scaling with ``+1e-8``, computed in
    ``dtype``.

    Example:
        >>> import numpy as np
        >>> channel_masks(np.array([[[0.0, 2.0]]]), 1, 3).round(3).tolist()
        [[[0.0, 0.5, 1.0]]]
    """
    rows = interpolation_matrix(height, maps.shape[-2], align_corners=True).astype(dtype)
    cols = interpolation_matrix(width, maps.shape[-1], align_corners=True).astype(dtype)
    # (B, h, w) @ (w, W) -> (B, h, W), then (H, h) @ -> (B, H, W): two small matmuls
    masks = np.matmul(rows, np.asarray(maps, dtype) @ cols.T)
    low = masks.min(axis=(-2, -1), keepdims=True)
    high = masks.max(axis=(-2, -1), keepdims=True)
    masks -= low
    masks /= high - low + 1e-8
    return masks


def kept_channels(activations: np.ndarray, max_channels: int | None) -> np.ndarray:
    """``(N, C')`` indices of the channels to score per doc: all of them, or the
    ``max_channels`` with the largest spatial standard deviation (ties: lower index first).

    Example:
        >>> import numpy as np
        >>> a = np.zeros((1, 2, 2, 3)); a[0, 0, 0] = [1.0, 5.0, 0.0]
        >>> kept_channels(a, 1).tolist()
        [[1]]
    """
    count = activations.shape[-1]
    if max_channels is None or max_channels >= count:
        return np.broadcast_to(np.arange(count), (len(activations), count))
    spread = np.asarray(activations, np.float64).std(axis=(1, 2))
    order = np.argsort(-spread, axis=-1, kind="stable")[:, :max_channels]
    return np.sort(order, axis=-1)


def channel_scores(
    activations: np.ndarray, docs: np.ndarray, targets: np.ndarray, score: ScoreCallable,
    *, data_format: str = "channels_last", batch_size: int | None = None,
    max_channels: int | None = None,
) -> np.ndarray:
    """``(N, K, C)`` scores ``s_k`` of each target on each masked doc; ``-inf`` for the
    channels left out by ``max_channels``.

    ``score`` takes a ``(B, ...)`` batch of inputs and returns ``(B, classes)``; it is called
    once per chunk of at most ``batch_size`` masked inputs (default: 2 MiB of them; see
    :func:`chunk_size`), all chunks of one size (the last one zero-padded), so that a
    compiled forward sees one shape.
    """
    channels_first = data_format == "channels_first"
    height, width = docs.shape[2:4] if channels_first else docs.shape[1:3]
    kept = kept_channels(activations, max_channels)
    doc_index = np.repeat(np.arange(len(docs)), kept.shape[1])
    channel_index = kept.reshape(-1)
    floating = np.issubdtype(docs.dtype, np.floating)
    mask_dtype = docs.dtype.type if floating else np.float64

    def fill(rows: np.ndarray, out: np.ndarray) -> None:
        n = doc_index[rows]
        masks = channel_masks(activations[n, :, :, channel_index[rows]], height, width,
                              mask_dtype)
        masks = masks[:, None] if channels_first else masks[..., None]
        # doc_index is sorted: each doc's run of masks multiplies it without a gathered copy
        for doc in np.unique(n):
            run = np.flatnonzero(n == doc)
            np.multiply(docs[doc], masks[run[0]:run[-1] + 1],
                        out=out[run[0]:run[-1] + 1], casting="unsafe")

    scores = np.full(targets.shape + activations.shape[-1:], -np.inf)
    scores[doc_index, :, channel_index] = chunked_scores(
        len(doc_index), fill, docs.shape[1:], docs.dtype, score, targets[doc_index],
        batch_size)
    return scores


def chunked_scores(
    total: int, fill: Callable[[np.ndarray, np.ndarray], None], shape: tuple[int, ...],
    dtype: np.dtype | type, score: ScoreCallable, columns: np.ndarray | None,
    batch_size: int | None = None,
) -> np.ndarray:
    """The model's scores on ``total`` inputs of ``shape`` and ``dtype`` that are built a
    chunk at a time: ``fill(rows, out)`` writes inputs ``rows`` (a run of indices in
    ``[0, total)``) into ``out[:len(rows)]``. ``score`` (the compiled score-only forward)
    runs once per chunk of at most ``batch_size`` inputs (default: 2 MiB of them, see
    :func:`chunk_size`), every chunk of one size (the last one zero-padded), so that a
    compiled forward sees one shape and memory stays bounded. Returns ``(total, K)`` float64,
    column ``columns[i, k]`` of input ``i``'s output, or with ``columns=None`` the whole
    outputs ``(total, classes)``. Score-CAM's masked inputs and
    :mod:`gradcam_callbacks.faithfulness`'s perturbed ones both run through it.

    Example:
        >>> import numpy as np
        >>> def fill(rows, out):
        ...     out[:len(rows)] = rows[:, None]
        >>> chunked_scores(5, fill, (1,), np.float32, lambda x: np.c_[x, 2 * x],
        ...                np.ones((5, 1), int), batch_size=2)[:, 0].tolist()
        [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    sample_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    size = chunk_size(total, sample_bytes or 1, batch_size)
    found: np.ndarray | None = None
    chunk = np.empty((size,) + tuple(shape), dtype)
    for start in range(0, total, size):
        rows = np.arange(start, min(start + size, total))
        chunk[len(rows):] = 0  # padding of the last chunk
        fill(rows, chunk)
        outputs = np.asarray(score(chunk))[:len(rows)]
        if columns is not None:
            outputs = np.take_along_axis(outputs, columns[rows].astype(np.intp), axis=-1)
        if found is None:
            found = np.empty((total,) + outputs.shape[1:], np.float64)
        found[rows] = outputs
    return found if found is not None else np.empty((0, 0 if columns is None else
                                                       columns.shape[-1]))


def softmax_weights(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; ``-inf`` entries (channels not scored) weigh 0.

    Example:
        >>> import numpy as np
        >>> softmax_weights(np.array([0.0, 0.0, -np.inf])).tolist()
        [0.5, 0.5, 0.0]
    """
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def compute(inputs: CamInputs, max_channels: int | None = None) -> CamResult:
    """Score-CAM maps; ``weights`` are the softmax weights (0 for channels not scored)."""
    from ..cam import weighted_sum  # Keras' reductions: loaded when a map is computed

    scores = channel_scores(
        inputs.activations, inputs.docs, inputs.targets, inputs.score,
        data_format=inputs.data_format, batch_size=inputs.batch_size,
        max_channels=max_channels,
    )
    weights = softmax_weights(scores)
    return CamResult(weighted_sum(weights, per_target(inputs.activations)),
                     weights.astype(np.float32))


@dataclass(frozen=True)
class ScoreCAM(Method):
    """Score-CAM: see the module's docstring.

    Example:
        >>> ScoreCAM().name, ScoreCAM().title
        ('scorecam', 'Score-CAM')
    """

    name = "scorecam"
    title = "Score-CAM"
    description = (
        "Score-CAM: each activation map, upsampled and scaled to [0, 1], masks the input; the "
        "channels are weighted by the softmax of the target's score on their masked inputs (no "
        "gradients). Scaled to [0, 1]."
    )
    max_channels: int | None = option(
        None, "score just the N channels with the largest spatial spread (Faster Score-CAM; "
        "default: all)", positive_or_none)

    def compute(self, inputs: CamInputs) -> CamResult:
        """See :meth:`Method.compute`."""
        return compute(inputs, self.max_channels)
