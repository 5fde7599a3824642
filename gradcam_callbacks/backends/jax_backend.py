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

from ..taps import tapped
from . import PassSpec
from .common import RawOutputs, TensorOps, forward_outputs, raw_outputs, target_seeds

_OPS = TensorOps(
    descending=lambda scores: jnp.argsort(-scores, axis=-1, stable=True).astype(jnp.int32),
    take=lambda ranked, rank: jnp.take_along_axis(ranked, rank, axis=-1),
    where=jnp.where, clip=jnp.clip, classes=lambda scores: scores.shape[-1],
    one_hot=lambda indices, depth, like: jax.nn.one_hot(indices, depth, dtype=like.dtype))


def build(
    spec: PassSpec, on_trace: Callable[[], None]
) -> Callable[[np.ndarray, np.ndarray], RawOutputs]:
    """Compile the Grad-CAM pass for ``spec``; see :class:`..backends.CompiledPass`."""

    mode = _inference_mode(spec)

    def forward(trainable: Any, non_trainable: Any, docs: Any, deltas: Any) -> tuple[Any, Any]:
        # one zero perturbation per tap: the activation, then each attention layer's weights
        def add(index: int) -> Callable[[Any], Any]:
            return lambda tensor: tensor if deltas is None else tensor + deltas[index]

        with tapped(spec.layer, spec.path, spec.attention, add) as found:
            outputs, _ = spec.model.stateless_call(trainable, non_trainable, docs, **mode)
        return spec.select(outputs), found()

    @jax.jit
    def run(trainable: Any, non_trainable: Any, docs: Any, targets: Any) -> tuple[Any, ...]:
        on_trace()
        shapes = jax.eval_shape(
            lambda t, n, d: forward(t, n, d, None)[1], trainable, non_trainable, docs
        )
        scores, vjp, taps = jax.vjp(
            lambda deltas: forward(trainable, non_trainable, docs, deltas),
            [jnp.zeros(shape.shape, shape.dtype) for shape in shapes],
            has_aux=True,
        )
        resolved, seeds = target_seeds(_OPS, scores, targets, spec.score_scale)
        grads = jax.vmap(lambda seed: vjp(seed)[0], in_axes=1, out_axes=1)(seeds)
        return taps, grads, scores, resolved

    def call(docs: np.ndarray, targets: np.ndarray) -> RawOutputs:
        taps, grads, scores, resolved = run(
            *_variable_values(spec), jnp.asarray(docs), jnp.asarray(targets, jnp.int32)
        )
        return raw_outputs(taps, grads, np.asarray(scores), resolved, spec.score_scale)

    return call


def build_score(spec: PassSpec, on_trace: Callable[[], None]) -> Callable[[np.ndarray], Any]:
    """Compile the score-only forward for ``spec`` (one ``jax.jit`` over ``stateless_call``);
    see :func:`..backends.score_function`."""
    mode = _inference_mode(spec)

    @jax.jit
    def run(trainable: Any, non_trainable: Any, inputs: Any) -> Any:
        on_trace()
        # attention weights only if asked (rollout)
        with tapped(None, "", spec.attention, lambda _: lambda a: a) as found:
            outputs, _ = spec.model.stateless_call(trainable, non_trainable, inputs, **mode)
        return spec.select(outputs), found()

    def call(inputs: np.ndarray) -> Any:
        outputs, weights = run(*_variable_values(spec), jnp.asarray(inputs))
        return forward_outputs(np.asarray(outputs), weights)

    return call


def _inference_mode(spec: PassSpec) -> dict[str, bool]:
    # stateless_call hands its keyword arguments to the model's own call().
    accepts = inspect.signature(spec.model.call).parameters
    return {"training": False} if "training" in accepts or any(
        p.kind is p.VAR_KEYWORD for p in accepts.values()) else {}


def _variable_values(spec: PassSpec) -> tuple[list[jax.Array], list[jax.Array]]:
    model = spec.model
    return ([process_local(v) for v in model.trainable_variables],
            [process_local(v) for v in model.non_trainable_variables])


def process_index_and_count() -> tuple[int, int]:
    """``(k, n)`` from ``jax.process_index()`` and ``jax.process_count()`` (``(0, 1)`` unless
    ``jax.distributed.initialize`` ran)."""
    return jax.process_index(), jax.process_count()


def process_local(variable: Any) -> jax.Array:
    """A variable's value held by this process alone, so that the Grad-CAM pass runs on this
    process's devices only and never joins the other processes' collectives.

    In multi-process training (``jax.distributed``) a replicated variable spans every
    process's devices; its local copy is the same numbers. A variable sharded across
    processes has no whole local copy: gathering it would need the other processes, which
    skip Grad-CAM, so this raises rather than hang or break their training step.

    Example:
        >>> process_local(model.weights[0]).is_fully_addressable
        True
    """
    value = variable.value
    if not isinstance(value, jax.Array) or value.is_fully_addressable:
        return value
    if value.is_fully_replicated:
        return value.addressable_data(0)
    raise ValueError(
        f"variable {variable.path!r} is sharded across processes ({value.sharding}); "
        "Grad-CAM runs on process 0 alone and needs every variable whole there: replicate "
        "it (e.g. keras.distribution.DataParallel) or shard it over this process's devices only"
    )
