"""The Grad-CAM arithmetic, with ELI5's numbers: numpy, plus the two reductions ELI5 leaves
to the Keras backend (the gradients' spatial mean, Keras' epsilon), so that the results match
ELI5's bit for bit.

The backends deliver activations and gradients; this module turns them into channel weights
and normalised localisation maps, and the method files (:mod:`gradcam_callbacks.methods`) build
on it. It imports nothing that orchestrates (the engine reaches it through the methods).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ._validation import check_real_array
from .backends import spatial_mean


def channel_weights(grads: np.ndarray) -> np.ndarray:
    """Average gradients over the two spatial axes: ``(..., h, w, C) -> (..., C)``, float32.

    The mean is taken by the running Keras backend
    (:func:`~gradcam_callbacks.backends.spatial_mean`), the same reduction ELI5 uses under
    TensorFlow, so its weights agree to the last bit.

    Example:
        >>> import numpy as np
        >>> channel_weights(np.ones((7, 7, 4), dtype="float32")).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    grads = np.asarray(grads, dtype=np.float32)
    return np.asarray(spatial_mean(grads), dtype=np.float32)


def gradcam_maps(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """Batched Grad-CAM: ``weights (..., C)`` and ``activations (..., h, w, C) -> (..., h, w)``.

    Leading axes broadcast against each other. Per map, the result equals
    :func:`gradcam` to the last bit: the weighted channels are summed one channel at a time
    into a float64 map, as ELI5 does, then ReLU and division by ``max + keras epsilon``.

    Example:
        >>> import numpy as np
        >>> a = np.stack([np.eye(2), np.ones((2, 2))], axis=-1).astype("float32")
        >>> gradcam_maps(np.array([[1.0, 0.0], [0.0, -1.0]], "float32"), a[None]).shape
        (2, 2, 2)
    """
    weights = np.asarray(weights)
    activations = np.asarray(activations)
    if weights.shape[-1] != activations.shape[-1]:
        raise ValueError(
            "weights and activations must have the same number of channels (last axis); "
            f"received weights.shape={weights.shape}, activations.shape={activations.shape}"
        )
    return normalise(weighted_sum(weights, activations))


def weighted_sum(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """``sum_c weights[..., c] * activations[..., c]`` as a float64 ``(..., h, w)`` map,
    summed one channel at a time as ELI5 does (so Grad-CAM keeps ELI5's bits).

    Example:
        >>> import numpy as np
        >>> weighted_sum(np.array([2.0, 1.0]), np.ones((1, 2, 2))).tolist()
        [[3.0, 3.0]]
    """
    out_shape = np.broadcast_shapes(weights.shape[:-1], activations.shape[:-3])
    lmap = np.zeros(out_shape + activations.shape[-3:-1], dtype=np.float64)
    weights_hw = weights[..., None, None, :]
    for channel in range(activations.shape[-1]):
        lmap += weights_hw[..., channel] * activations[..., channel]
    return lmap


def normalise(lmap: np.ndarray) -> np.ndarray:
    """ELI5's normalisation of ``(..., h, w)`` maps: ReLU, then divide each map by its
    ``max + 1e-7`` (Keras' epsilon). Every CAM method's map ends here.

    Example:
        >>> import numpy as np
        >>> normalise(np.array([[-1.0, 2.0]])).round(3).tolist()
        [[0.0, 1.0]]
    """
    lmap = np.maximum(lmap, 0)
    peak = lmap.max(axis=(-2, -1), keepdims=True)
    return lmap / (peak + keras.backend.epsilon())  # Keras 2.15 has no keras.config


def gradcam(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """Grad-CAM localisation map from channel weights and one image's activation maps.

    ``L = ReLU(sum_c weights[c] * activations[..., c])``, divided by ``max(L) + 1e-7``
    (Keras' epsilon). There is no min subtraction: an all-zero or all-negative map stays all
    zeros, never NaN.

    Args:
        weights: Channel weights, shape ``(C,)`` (see :func:`gradcam_backend`).
        activations: The layer's activation maps for one image, shape ``(h, w, C)``.

    Returns:
        A float64 array of shape ``(h, w)`` with values in [0, 1].

    Raises:
        ValueError: NaN or infinite weights or activations, or a weighted sum that
            overflows (no map in [0, 1] exists then).

    Example:
        >>> import numpy as np
        >>> acts = np.zeros((2, 2, 1), dtype="float32"); acts[0, 1, 0] = 2.0
        >>> gradcam(np.array([0.5], dtype="float32"), acts).round(3).tolist()
        [[0.0, 1.0], [0.0, 0.0]]
    """
    weights = _as_float_array(weights, "weights", ndim=1)
    activations = _as_float_array(activations, "activations", ndim=3)
    with np.errstate(over="ignore", invalid="ignore"):
        result = gradcam_maps(weights, activations)
    if not np.isfinite(result).all():
        raise ValueError(
            "weights and activations must give a finite map; received values whose weighted "
            f"sum overflows (largest |weight| {np.abs(weights).max()}, largest |activation| "
            f"{np.abs(activations).max()})"
        )
    return result


def _as_float_array(value: Any, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else None
    if array is None or not np.issubdtype(array.dtype, np.number) or array.ndim != ndim:
        got = (f"an array of shape {array.shape} and dtype {array.dtype}" if array is not None
               else type(value).__name__)
        raise TypeError(f"{name} must be a real numeric array of rank {ndim}; received {got}")
    return check_real_array(name, array)
