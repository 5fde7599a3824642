"""PyTorch: eager autograd, with the intercepted activation detached and made a leaf so
that the backward pass covers only the layers after it and leaves no gradient on the
model's parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import torch

from ..taps import tapped
from . import PassSpec
from .common import RawOutputs, TensorOps, forward_outputs, raw_outputs, target_seeds

_OPS = TensorOps(
    descending=lambda scores: torch.argsort(scores.detach(), dim=-1, descending=True,
                                            stable=True),
    take=lambda ranked, rank: torch.gather(ranked, 1, rank),
    where=torch.where, clip=torch.clamp, classes=lambda scores: scores.shape[-1],
    one_hot=lambda indices, depth, like: torch.nn.functional.one_hot(indices, depth)
    .to(like.dtype))


def build(
    spec: PassSpec, on_trace: Callable[[], None]
) -> Callable[[np.ndarray, np.ndarray], RawOutputs]:
    """Build the Grad-CAM pass for ``spec``; see :class:`..backends.CompiledPass`."""
    on_trace()

    def leaf(activation: torch.Tensor) -> torch.Tensor:
        return activation.detach().requires_grad_(True)

    def call(docs: np.ndarray, targets: np.ndarray) -> RawOutputs:
        # With attention layers read too, a detached leaf would cut the gradient of the
        # attention before it: every tap gets a zero leaf added instead.
        offsets: dict[int, torch.Tensor] = {}  # id(tapped tensor) -> its zero leaf

        def offset(tensor: torch.Tensor) -> torch.Tensor:
            zero = torch.zeros_like(tensor, requires_grad=True)
            tapped = tensor + zero
            offsets[id(tapped)] = zero
            return tapped

        tap = offset if spec.attention else leaf
        with torch.enable_grad():
            with tapped(spec.layer, spec.path, spec.attention, lambda _: tap) as found:
                outputs = spec.model(keras.ops.convert_to_tensor(docs), training=False)
            taps = found()
            sources = [offsets[id(t)] for t in taps] if spec.attention else taps
            scores = spec.select(outputs)
            requested = torch.as_tensor(targets, dtype=torch.long, device=scores.device)
            resolved, seeds = target_seeds(_OPS, scores, requested, spec.score_scale)
            slots = resolved.shape[1]
            grads = [] if not scores.requires_grad else [  # else: output ignores the layer
                torch.autograd.grad(scores, sources, grad_outputs=seeds[:, slot],
                                    retain_graph=slot < slots - 1, allow_unused=True)
                for slot in range(slots)
            ]
        zeros = [[torch.zeros_like(t) for t in taps]] * (slots - len(grads))
        per_tap = zip(*[[torch.zeros_like(t) if g is None else g for g, t in zip(found, taps)]
                        for found in grads + zeros])
        return raw_outputs(
            [t.detach().float().cpu().numpy() for t in taps],
            [torch.stack(g, dim=1).float().cpu().numpy() for g in per_tap],
            scores.detach().cpu().numpy(), resolved.cpu().numpy(), spec.score_scale)

    return call


def build_score(spec: PassSpec, on_trace: Callable[[], None]) -> Callable[[np.ndarray], Any]:
    """The score-only forward for ``spec`` (eager, no autograd); see
    :func:`..backends.score_function`."""
    on_trace()

    def call(inputs: np.ndarray) -> Any:
        # attention weights only if asked (rollout)
        with torch.no_grad(), tapped(None, "", spec.attention, lambda _: lambda a: a) as found:
            outputs = spec.model(keras.ops.convert_to_tensor(inputs), training=False)
        return forward_outputs(spec.select(outputs).cpu().numpy(),
                               [w.float().cpu().numpy() for w in found()])

    return call


def process_index_and_count() -> tuple[int, int]:
    """``(k, n)``: the rank and world size of the default ``torch.distributed`` process group,
    or before it is initialised torchrun's ``RANK`` and ``WORLD_SIZE``."""
    import os

    from .._process_env import launcher_env_identity

    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank(), distributed.get_world_size()
    return launcher_env_identity(os.environ)
