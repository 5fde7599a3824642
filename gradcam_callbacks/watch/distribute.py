"""Which process writes: in multi-process training only process 0 (the chief) logs.

Each framework says "I am process k of n" its own way; the running Keras backend's module in
:mod:`gradcam_callbacks.backends` asks its framework (TensorFlow: ``TF_CONFIG``; JAX:
``jax.process_index()``; PyTorch: ``torch.distributed``'s rank, or torchrun's ``RANK`` and
``WORLD_SIZE`` before it is initialised). The environment parsing lives in
:mod:`gradcam_callbacks._process_env`, as plain functions that import no framework
(re-exported here).
"""

from __future__ import annotations

from .. import backends
from .._process_env import checked_identity, launcher_env_identity, tf_config_identity

__all__ = ["is_chief", "launcher_env_identity", "process_identity", "tf_config_identity"]


def process_identity() -> tuple[int, int]:
    """This process's index ``k`` and the number of processes ``n``, as ``(k, n)``.

    Asks the framework of the running Keras backend; a single process is ``(0, 1)``.

    Returns:
        ``(k, n)`` with ``0 <= k < n``.

    Raises:
        ValueError: the framework's environment (``TF_CONFIG``, ``RANK``/``WORLD_SIZE``)
            is malformed.

    Example:
        >>> process_identity()
        (0, 1)
    """
    index, count = backends.process_index_and_count()
    return checked_identity(index, count, "the framework")


def is_chief() -> bool:
    """True in the process that should compute Grad-CAM and write summaries: process 0.

    Example:
        >>> is_chief()
        True
    """
    return process_identity()[0] == 0
