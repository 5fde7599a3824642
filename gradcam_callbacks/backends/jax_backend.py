"""JAX: one ``jax.jit`` per (model, layer, output) over ``stateless_call``, with the model's
variable values passed as arguments (a closure would bake stale weights in), a zero
perturbation added to the intercepted activation to differentiate against, and the targets'
vector-Jacobian products batched with ``vmap``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..layers import intercept, single_activation
from . import Pass, RawOutputs


def build(
    spec: Pass, on_trace: Callable[[], None]
) -> Callable[[np.ndarray, np.ndarray], RawOutputs]:
    """Compile the Grad-CAM pass for ``spec``; see :class:`..backends.GradientFunction`."""

    # stateless_call hands its keyword arguments to the model's own call().
    accepts = inspect.signature(spec.model.call).parameters
    mode = {"training": False} if "training" in accepts or any(
        p.kind is p.VAR_KEYWORD for p in accepts.values()) else {}

    def forward(trainable: Any, non_trainable: Any, docs: Any, delta: Any) -> tuple[Any, Any]:
        def add(activation: Any) -> Any:
            return activation if delta is None else activation + delta

        with intercept(spec.layer, add) as captured:
            outputs, _ = spec.model.stateless_call(trainable, non_trainable, docs, **mode)
        return spec.select(outputs), single_activation(captured, spec.path)

    @jax.jit
    def run(trainable: Any, non_trainable: Any, docs: Any, targets: Any) -> tuple[Any, ...]:
        on_trace()
        shape = jax.eval_shape(
            lambda t, n, d: forward(t, n, d, None)[1], trainable, non_trainable, docs
        )
        scores, vjp, activations = jax.vjp(
            lambda delta: forward(trainable, non_trainable, docs, delta),
            jnp.zeros(shape.shape, shape.dtype),
            has_aux=True,
        )
        top = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        resolved = jnp.where(targets < 0, top[:, None], targets)
        cotangents = jax.nn.one_hot(resolved, scores.shape[-1], dtype=scores.dtype)
        grads = jax.vmap(lambda c: vjp(c * spec.score_scale)[0], in_axes=1, out_axes=1)(
            cotangents
        )
        return activations, grads, scores, resolved

    def call(docs: np.ndarray, targets: np.ndarray) -> RawOutputs:
        model = spec.model
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        activations, grads, scores, resolved = run(
            trainable, non_trainable, jnp.asarray(docs), jnp.asarray(targets, jnp.int32)
        )
        return (
            np.asarray(activations).astype(np.float32, copy=False),
            np.asarray(grads).astype(np.float32) / np.float32(spec.score_scale),
            np.asarray(scores),
            np.asarray(resolved),
        )

    return call
