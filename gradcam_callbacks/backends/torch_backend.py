"""PyTorch: eager autograd, with the intercepted activation detached and made a leaf so
that the backward pass covers only the layers after it and leaves no gradient on the
model's parameters."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import torch

from ..layers import intercept, single_activation
from . import PassSpec, RawOutputs


def build(
    spec: PassSpec, on_trace: Callable[[], None]
) -> Callable[[np.ndarray, np.ndarray], RawOutputs]:
    """Build the Grad-CAM pass for ``spec``; see :class:`..backends.GradientFunction`."""
    on_trace()

    def leaf(activation: torch.Tensor) -> torch.Tensor:
        return activation.detach().requires_grad_(True)

    def call(docs: np.ndarray, targets: np.ndarray) -> RawOutputs:
        with torch.enable_grad():
            with intercept(spec.layer, leaf) as captured:
                outputs = spec.model(keras.ops.convert_to_tensor(docs), training=False)
            activations = single_activation(captured, spec.path)
            scores = spec.select(outputs)
            requested = torch.as_tensor(targets, dtype=torch.long, device=scores.device)
            # -r asks for the doc's r-th highest-scoring class (ties: the lower index first)
            ranked = torch.argsort(scores.detach(), dim=-1, descending=True, stable=True)
            rank = (-requested - 1).clamp(0, scores.shape[-1] - 1)
            resolved = torch.where(requested < 0, torch.gather(ranked, 1, rank), requested)
            slots = resolved.shape[1]
            grads = [] if not scores.requires_grad else [  # else: output ignores the layer
                torch.autograd.grad(
                    scores,
                    activations,
                    grad_outputs=torch.nn.functional.one_hot(resolved[:, slot], scores.shape[-1])
                    .to(scores.dtype) * spec.score_scale,
                    retain_graph=slot < slots - 1,
                    allow_unused=True,
                )[0]
                for slot in range(slots)
            ]
        grads = [torch.zeros_like(activations) if g is None else g for g in grads]
        grads += [torch.zeros_like(activations)] * (slots - len(grads))
        return (
            activations.detach().float().cpu().numpy(),
            torch.stack(grads, dim=1).float().cpu().numpy() / np.float32(spec.score_scale),
            scores.detach().cpu().numpy(),
            resolved.cpu().numpy().astype(np.int32),
        )

    return call


def build_score(spec: PassSpec, on_trace: Callable[[], None]) -> Callable[[np.ndarray], np.ndarray]:
    """The score-only forward for ``spec`` (eager, no autograd); see
    :func:`..backends.score_function`."""
    on_trace()

    def call(inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            outputs = spec.model(keras.ops.convert_to_tensor(inputs), training=False)
            return spec.select(outputs).cpu().numpy()

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
