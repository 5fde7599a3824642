"""Eigen-CAM (Muhammad & Yeasin 2020): the projection of the mean-centred ``(h*w, C)``
activations on their first right singular vector. No gradients, so every target of a doc
gets the same map.

The singular vector's sign is arbitrary (pytorch-grad-cam leaves it so). Here it is chosen
so that the map correlates positively with the channel-mean activation ``mean_c A_c``: the
map is bright where the layer is, on average, most active.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from .base import CamInputs, CamResult, method_class


def eigencam_projection(activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(weights (..., C), maps (..., h, w))`` from activations ``(..., h, w, C)``.

    ``weights`` is the sign-fixed first right singular vector ``v`` of the mean-centred
    activations ``X``; ``maps`` is ``X v``.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((2, 2, 2)); a[0, 0] = [3.0, 1.0]
        >>> v, m = eigencam_projection(a)
        >>> bool(m[0, 0] > 0 and (m[0, 0] > m).sum() == 3)
        True
    """
    activations = np.asarray(activations, np.float64)
    *lead, h, w, channels = activations.shape
    flat = activations.reshape(*lead, h * w, channels)
    centred = flat - flat.mean(axis=-2, keepdims=True)
    # The top eigenvector of the smaller Gram matrix gives the first singular pair, without
    # a full SVD of (h*w, C): (49 x 49) instead of (49 x 1280) for MobileNetV2's last layer.
    with _one_blas_thread():
        if h * w <= channels:
            _, eigenvectors = np.linalg.eigh(np.einsum("...pc,...qc->...pq", centred, centred))
            vector = np.einsum("...pc,...p->...c", centred, eigenvectors[..., -1])
            vector /= np.maximum(np.linalg.norm(vector, axis=-1, keepdims=True), 1e-300)
        else:
            gram = np.einsum("...pc,...pd->...cd", centred, centred)
            vector = np.linalg.eigh(gram)[1][..., -1]
    projection = np.einsum("...pc,...c->...p", centred, vector)
    channel_mean = flat.mean(axis=-1)
    agreement = np.einsum(
        "...p,...p->...", projection, channel_mean - channel_mean.mean(axis=-1, keepdims=True))
    # Tie (no correlation): make the largest component of v positive, for determinism.
    largest = np.take_along_axis(vector, np.abs(vector).argmax(-1)[..., None], -1)[..., 0]
    sign = np.where(agreement != 0, np.sign(agreement), np.where(largest < 0, -1.0, 1.0))
    return vector * sign[..., None], (projection * sign[..., None]).reshape(*lead, h, w)


def _one_blas_thread() -> Any:
    # Small eigenproblems: BLAS threads only contend (10x slower on a busy machine).
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, "blas")


def compute(inputs: CamInputs) -> CamResult:
    """Eigen-CAM maps, the same for every target slot of a doc."""
    vector, maps = eigencam_projection(inputs.activations)
    slots = inputs.targets.shape[1]
    return CamResult(
        np.repeat(maps[:, None], slots, axis=1),
        np.repeat(vector[:, None], slots, axis=1).astype(np.float32),
    )


EigenCAM = method_class(
    "EigenCAM", "eigencam", "Eigen-CAM",
    "Eigen-CAM: the layer's activations projected on their first principal component (no "
    "gradients, the same map for every target), signed to agree with the mean activation: "
    "what the layer responds to most, whatever the class. Scaled to [0, 1].",
    compute)
