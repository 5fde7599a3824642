"""TensorFlow: one ``tf.function`` per (model, layer, output), a tape that watches the
intercepted activation only, and one vector-Jacobian product per target slot."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from ..taps import tapped
from . import PassSpec
from .common import RawOutputs, TensorOps, forward_outputs, raw_outputs, target_seeds

# top_k keeps equal scores in index order: ties rank the lower index first
_OPS = TensorOps(
    descending=lambda scores: tf.math.top_k(scores, k=tf.shape(scores)[-1]).indices,
    take=lambda ranked, rank: tf.gather(ranked, rank, batch_dims=1),
    where=tf.where, clip=tf.clip_by_value, classes=lambda scores: tf.shape(scores)[-1],
    one_hot=lambda indices, depth, like: tf.one_hot(indices, depth, dtype=like.dtype))


def build(
    spec: PassSpec, on_trace: Callable[[], None]
) -> Callable[[np.ndarray, np.ndarray], RawOutputs]:
    """Compile the Grad-CAM pass for ``spec``; see :class:`..backends.CompiledPass`."""

    @tf.function(reduce_retracing=True)
    def run(docs: tf.Tensor, targets: tf.Tensor, slots: int) -> tuple[tf.Tensor, ...]:
        on_trace()
        with tf.GradientTape(persistent=slots > 1, watch_accessed_variables=False) as tape:

            def watch(activation: tf.Tensor) -> tf.Tensor:
                tape.watch(activation)
                return activation

            with tapped(spec.layer, spec.path, spec.attention, lambda _: watch) as found:
                outputs = spec.model(docs, training=False)
            taps = found()
            scores = spec.select(outputs)
        resolved, seeds = target_seeds(_OPS, scores, targets, spec.score_scale)
        grads = [
            tape.gradient(scores, taps, output_gradients=seeds[:, slot],
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
            for slot in range(slots)
        ]
        # per tap, the slots' gradients stacked on axis 1
        return taps, [tf.stack(g, axis=1) for g in zip(*grads)], scores, resolved

    def call(docs: np.ndarray, targets: np.ndarray) -> RawOutputs:
        with _user_errors():
            taps, grads, scores, resolved = run(
                tf.convert_to_tensor(docs), tf.convert_to_tensor(targets, tf.int32),
                targets.shape[1])
        return raw_outputs([t.numpy() for t in taps], [g.numpy() for g in grads],
                           scores.numpy(), resolved.numpy(), spec.score_scale)

    return call


def build_score(spec: PassSpec, on_trace: Callable[[], None]) -> Callable[[np.ndarray], Any]:
    """Compile the score-only forward for ``spec``; see :func:`..backends.score_function`."""

    @tf.function(reduce_retracing=True)
    def run(inputs: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        on_trace()
        # attention weights only if asked (rollout)
        with tapped(None, "", spec.attention, lambda _: tf.identity) as found:
            outputs = spec.select(spec.model(inputs, training=False))
        return outputs, found()

    def call(inputs: np.ndarray) -> Any:
        with _user_errors():
            outputs, weights = run(tf.convert_to_tensor(inputs))
        return forward_outputs(outputs.numpy(), [w.numpy() for w in weights])

    return call


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Errors raised while tracing (a score function's result checked at run time) as the
    other backends give them: one line, without TensorFlow's "in user code:" trace."""
    try:
        yield
    except (ValueError, TypeError) as error:
        text = str(error)
        name = type(error).__name__
        start = text.rfind(f"\n    {name}: ")
        if "in user code:" not in text or start < 0:
            raise
        raise type(error)(text[start + len(name) + 7:].strip()) from None


def process_index_and_count() -> tuple[int, int]:
    """``(k, n)`` from ``TF_CONFIG``, which ``MultiWorkerMirroredStrategy`` reads too."""
    import os

    from .._process_env import tf_config_identity

    return tf_config_identity(os.environ.get("TF_CONFIG"))
