"""What every backend's pass does alike, written once and framework-free (numpy only):
which class a target ``-r`` names (the doc's r-th highest-scoring class), the one-hot seed of
each target slot's vector-Jacobian product, multiplied by the score scale, and the numpy
results as a pass returns them (float32, the scale divided out again).

A backend module brings its framework's few tensor operations as a :class:`TensorOps` and
runs :func:`target_seeds` inside its traced (or eager) pass; it hands its results, made numpy,
to :func:`raw_outputs` (the Grad-CAM pass) or :func:`forward_outputs` (the score-only
forward). :func:`score_scale` chooses the scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# (activations, grads, outputs, targets), and with attention layers in the pass
# (attention weights, their grads) too: see backends.gradient_function
RawOutputs = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class TensorOps:
    """One framework's tensor operations that :func:`target_seeds` runs on, on that
    framework's tensors (in a ``tf.function`` or ``jax.jit`` trace, or eagerly).

    ``descending(scores)``: ``(N, C)`` -> each row's class indices ``(N, C)``, highest score
    first, ties lower index first. ``take(ranked, rank)``: ``ranked[n, rank[n, k]]``
    (``take_along_axis`` on the last axis). ``where``, ``clip``: elementwise, as numpy's.
    ``classes(scores)``: ``C``. ``one_hot(indices, depth, like)``: ``(N, K)`` ->
    ``(N, K, depth)`` in ``like``'s dtype.

    tf_backend, jax_backend and torch_backend each hold their own; :data:`NUMPY_OPS` is
    numpy's.

    Example:
        >>> NUMPY_OPS.descending(np.array([[0.2, 0.5, 0.2]]))
        array([[1, 0, 2]])
    """

    descending: Callable[[Any], Any]
    take: Callable[[Any, Any], Any]
    where: Callable[[Any, Any, Any], Any]
    clip: Callable[[Any, Any, Any], Any]
    classes: Callable[[Any], Any]
    one_hot: Callable[[Any, Any, Any], Any]


NUMPY_OPS = TensorOps(
    descending=lambda scores: np.argsort(-scores, axis=-1, kind="stable"),
    take=lambda ranked, rank: np.take_along_axis(ranked, rank, axis=-1),
    where=np.where, clip=np.clip, classes=lambda scores: scores.shape[-1],
    one_hot=lambda indices, depth, like: np.eye(depth, dtype=like.dtype)[indices])
"""numpy's :class:`TensorOps`: :func:`target_seeds` on numpy arrays, as the examples run it."""


def target_seeds(ops: TensorOps, scores: Any, targets: Any, scale: float) -> tuple[Any, Any]:
    """The resolved targets ``(N, K)`` and each slot's seed ``(N, K, C)`` for the
    vector-Jacobian product of ``scores (N, C)``: ``scale`` at the target's class, 0
    elsewhere. A target ``-r`` resolves to the doc's r-th highest-scoring class (ties: the
    lower index first; beyond the last class, the last); ``r >= 0`` is the class ``r``.

    Example (on numpy arrays; a backend runs it on its tensors with its own ops):
        >>> scores = np.array([[0.1, 0.7, 0.2]], np.float32)
        >>> resolved, seeds = target_seeds(NUMPY_OPS, scores, np.array([[-1, -2, 0, -9]]), 2.0)
        >>> resolved
        array([[1, 2, 0, 0]])
        >>> seeds[0, 0]
        array([0., 2., 0.], dtype=float32)
    """
    classes = ops.classes(scores)
    rank = ops.clip(-targets - 1, 0, classes - 1)
    resolved = ops.where(targets < 0, ops.take(ops.descending(scores), rank), targets)
    return resolved, ops.one_hot(resolved, classes, scores) * scale


def raw_outputs(taps: list[np.ndarray], grads: list[np.ndarray], scores: np.ndarray,
                resolved: np.ndarray, scale: float) -> RawOutputs:
    """A backend's numpy results as a Grad-CAM pass returns them: the intercepted activation
    ``taps[0]`` and its gradients ``grads[0] (N, K, ...)`` (float32, divided by the ``scale``
    that :func:`target_seeds` multiplied the seeds by), the outputs and targets (int32), then,
    when attention layers were read, their weights stacked ``(N, L, heads, T, T)`` and
    gradients ``(N, K, L, heads, T, T)``.

    Example:
        >>> a, g = np.zeros((2, 3)), np.full((2, 1, 3), 8.0)
        >>> w, gw = np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 1, 4, 4))
        >>> found = raw_outputs([a, w, w], [g, gw, gw], a, np.zeros((2, 1)), 4.0)
        >>> found[1][0, 0], found[3].dtype
        (array([2., 2., 2.], dtype=float32), dtype('int32'))
        >>> [r.shape for r in found][4:]
        [(2, 2, 1, 4, 4), (2, 1, 2, 1, 4, 4)]
    """
    taps = [np.asarray(t).astype(np.float32, copy=False) for t in taps]
    grads = [np.asarray(g).astype(np.float32) / np.float32(scale) for g in grads]
    found = (taps[0], grads[0], scores, np.asarray(resolved).astype(np.int32, copy=False))
    if len(taps) == 1:
        return found
    return (*found, stacked_attention(taps[1:]), np.stack(grads[1:], axis=2))


def forward_outputs(scores: np.ndarray, weights: list[np.ndarray]) -> Any:
    """A score-only forward's numpy results: the outputs, or with attention layers read,
    ``(outputs, weights (B, L, heads, T, T))`` (float32).

    Example:
        >>> w = np.zeros((2, 1, 4, 4))
        >>> forward_outputs(np.zeros((2, 3)), [w, w])[1].shape
        (2, 2, 1, 4, 4)
    """
    if not weights:
        return scores
    return scores, stacked_attention([np.asarray(w).astype(np.float32, copy=False)
                                      for w in weights])


def stacked_attention(weights: list[np.ndarray]) -> np.ndarray:
    """The L attention layers' weights ``(B, heads, T, T)`` stacked ``(B, L, heads, T, T)``;
    a ValueError if their shapes differ.

    Example:
        >>> stacked_attention([np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 3, 3))])
        Traceback (most recent call last):
        ...
        ValueError: the attention layers' weights differ in shape [(2, 1, 3, 3), (2, 1, 4, 4)]; ...
    """
    shapes = {tuple(w.shape) for w in weights}
    if len(shapes) > 1:
        raise ValueError(f"the attention layers' weights differ in shape {sorted(shapes)}; "
                         "attention rollout needs every layer over the same tokens")
    return np.stack(weights, axis=1)


def score_scale(model: Any) -> float:
    """Factor applied to the target score before differentiating, and divided out after.

    Under float16 compute (``mixed_float16``) the gradient of a softmax probability with
    respect to a feature map underflows to zero; scaling the score first keeps it
    representable, as loss scaling does in training.

    Example:
        >>> score_scale(model)  # float32 compute
        1.0
    """
    from ..layers import walk

    for layer in [model, *walk(model)]:
        policy = getattr(layer, "dtype_policy", None)
        if getattr(policy, "compute_dtype", None) == "float16":
            return 1024.0
    return 1.0
