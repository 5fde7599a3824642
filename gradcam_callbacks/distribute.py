"""Which process writes: in multi-process training only the chief logs."""

from __future__ import annotations

import json
import os


def is_chief() -> bool:
    """True in the process that should write summaries (process 0 / the chief task).

    Reads TensorFlow's ``TF_CONFIG`` (the chief task, or worker 0 when there is no chief),
    JAX's process index and PyTorch's distributed rank, when those frameworks are already
    in use; a single process is always the chief.

    Example:
        >>> is_chief()
        True
    """
    config = os.environ.get("TF_CONFIG")
    if config:
        task = json.loads(config).get("task", {})
        cluster = json.loads(config).get("cluster", {})
        kind, index = task.get("type"), int(task.get("index", 0))
        if kind == "chief":
            return True
        if kind == "worker":
            return "chief" not in cluster and index == 0
        if kind:
            return False
    import sys

    if "jax" in sys.modules:
        import jax

        if jax.process_index() != 0:
            return False
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return False
    return True
