"""Score-CAM (Wang et al. 2020), with Faster Score-CAM's channel budget.

For each channel ``k``: ``M_k`` = the bilinear upsampling of ``A_k`` to the input size
(``align_corners=True``, as torch's ``UpsamplingBilinear2d``), scaled to [0, 1] by
``(M - min) / (max - min + 1e-8)``; ``s_k`` = the target's score of the model on
``input * M_k``; ``w = softmax_k(s)``; ``map = sum_k w_k A_k``. With ``max_channels=N`` only
the N channels with the largest spatial standard deviation of ``A`` are scored; the softmax
runs over them and the other channels weigh 0.

Masked inputs are built ``batch_size`` at a time (never all C copies of the batch at once)
and each chunk is one call of the engine's compiled score-only forward.
"""

from __future__ import annotations

import numpy as np

from ..cam import weighted_sum
from .base import CamInputs, CamResult, Method, ScoreCallable, per_target

DEFAULT_BATCH_SIZE = 32  # masked inputs per forward: 19 MB of 224x224x3 float32


def interpolation_matrix(size_out: int, size_in: int) -> np.ndarray:
    """``(size_out, size_in)`` linear interpolation weights with ``align_corners=True``:
    output ``i`` samples the input at ``i * (size_in - 1) / (size_out - 1)``.

    Example:
        >>> interpolation_matrix(3, 2).tolist()
        [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    source = np.arange(size_out) * scale
    lower = np.minimum(np.floor(source).astype(int), size_in - 1)
    upper = np.minimum(lower + 1, size_in - 1)
    fraction = source - lower
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), lower), 1 - fraction)
    np.add.at(matrix, (np.arange(size_out), upper), fraction)
    return matrix


def channel_masks(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(B, h, w)`` activation maps -> ``(B, height, width)`` masks in [0, 1]: bilinear
    upsampling (``align_corners=True``), then min-max scaling with ``+1e-8``.

    Example:
        >>> import numpy as np
        >>> channel_masks(np.array([[[0.0, 2.0]]]), 1, 3).round(3).tolist()
        [[[0.0, 0.5, 1.0]]]
    """
    rows = interpolation_matrix(height, maps.shape[-2])
    cols = interpolation_matrix(width, maps.shape[-1])
    masks = np.einsum("Hh,bhw,Ww->bHW", rows, np.asarray(maps, np.float64), cols)
    low = masks.min(axis=(-2, -1), keepdims=True)
    high = masks.max(axis=(-2, -1), keepdims=True)
    return (masks - low) / (high - low + 1e-8)


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
    *, data_format: str = "channels_last", batch_size: int = DEFAULT_BATCH_SIZE,
    max_channels: int | None = None,
) -> np.ndarray:
    """``(N, K, C)`` scores ``s_k`` of each target on each masked doc; ``-inf`` for the
    channels left out by ``max_channels``.

    ``score`` takes a ``(B, ...)`` batch of inputs and returns ``(B, classes)``; it is called
    once per chunk of ``batch_size`` masked inputs (the last chunk is zero-padded to the same
    size, so that a compiled forward sees one shape).
    """
    channels_first = data_format == "channels_first"
    height, width = docs.shape[2:4] if channels_first else docs.shape[1:3]
    kept = kept_channels(activations, max_channels)
    doc_index = np.repeat(np.arange(len(docs)), kept.shape[1])
    channel_index = kept.reshape(-1)
    scores = np.full(targets.shape + activations.shape[-1:], -np.inf)
    total = len(doc_index)
    for start in range(0, total, batch_size):
        n = doc_index[start:start + batch_size]
        c = channel_index[start:start + batch_size]
        masks = channel_masks(activations[n, :, :, c], height, width).astype(docs.dtype)
        masks = masks[:, None] if channels_first else masks[..., None]
        masked = docs[n] * masks
        if total > batch_size and len(n) < batch_size:
            masked = np.concatenate(
                [masked, np.zeros((batch_size - len(n),) + masked.shape[1:], masked.dtype)])
        outputs = np.asarray(score(masked))[:len(n)]
        scores[n, :, c] = np.take_along_axis(outputs, targets[n].astype(np.intp), axis=-1)
    return scores


def softmax_weights(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; ``-inf`` entries (channels not scored) weigh 0.

    Example:
        >>> import numpy as np
        >>> softmax_weights(np.array([0.0, 0.0, -np.inf])).tolist()
        [0.5, 0.5, 0.0]
    """
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def compute(inputs: CamInputs) -> CamResult:
    """Score-CAM maps; ``weights`` are the softmax weights (0 for channels not scored)."""
    scores = channel_scores(
        inputs.activations, inputs.docs, inputs.targets, inputs.score,
        data_format=inputs.data_format, batch_size=inputs.batch_size or DEFAULT_BATCH_SIZE,
        max_channels=inputs.max_channels,
    )
    weights = softmax_weights(scores)
    return CamResult(weighted_sum(weights, per_target(inputs.activations)),
                     weights.astype(np.float32))


METHOD = Method(
    "scorecam", "Score-CAM",
    "Score-CAM: each activation map, upsampled and scaled to [0, 1], masks the input; the "
    "channels are weighted by the softmax of the target's score on their masked inputs (no "
    "gradients). Scaled to [0, 1].",
    compute,
)
