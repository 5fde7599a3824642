"""Parsing of the environment that says "I am process k of n", importing no framework.

Its own module so that the backends (which ask their framework) and
:mod:`gradcam_callbacks.watch.distribute` (which asks the backends) both use it without importing
each other in a cycle. :mod:`gradcam_callbacks.watch.distribute` re-exports the public functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._validation import is_int

# TF_CONFIG task types in the order their processes are counted: the chief (if any) is
# process 0, else worker 0; parameter servers and evaluators never come first.
_TF_TASK_ORDER = ("chief", "worker")

def tf_config_identity(config: str | None) -> tuple[int, int]:
    """``(k, n)`` from TensorFlow's ``TF_CONFIG`` JSON; ``None`` or ``""`` is ``(0, 1)``.

    Processes are counted chief first, then workers, then other task types (``ps``,
    ``evaluator``, ...) by name, so process 0 is the chief task, or worker 0 when the cluster
    has no chief. A task of another type missing from the cluster (an evaluator often is)
    counts after all listed tasks.

    Args:
        config: The value of ``TF_CONFIG``.

    Returns:
        ``(k, n)``.

    Raises:
        ValueError: not JSON or not an object; a cluster of several tasks but no ``task``;
            a chief or worker task missing from its cluster; an index that is no integer.

    Example:
        >>> tf_config_identity('{"cluster": {"worker": ["a:1", "b:2"]},'
        ...                    ' "task": {"type": "worker", "index": 1}}')
        (1, 2)
    """
    if not config:
        return 0, 1
    try:
        parsed = json.loads(config)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG must be JSON; received {config!r} ({error})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object; received {config!r}")
    cluster = parsed.get("cluster") or {}
    task = parsed.get("task") or {}
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(
            f"TF_CONFIG 'cluster' and 'task' must be JSON objects; received {config!r}"
        )
    kinds = [k for k in _TF_TASK_ORDER if k in cluster] + sorted(
        k for k in cluster if k not in _TF_TASK_ORDER)
    order = [(kind, i) for kind in kinds for i in _indices(cluster[kind], kind)]
    if not task.get("type"):
        if len(order) > 1:
            raise ValueError(
                f"TF_CONFIG describes a cluster of {len(order)} tasks but names no task of "
                f"this process ('task': {{'type': ..., 'index': ...}}); received {config!r}"
            )
        return 0, 1
    kind, index = str(task["type"]), _integer(task.get("index", 0), "TF_CONFIG task index")
    if (kind, index) in order:
        return order.index((kind, index)), len(order)
    if order and kind in _TF_TASK_ORDER:
        raise ValueError(
            f"TF_CONFIG task {kind}:{index} is not in its cluster {cluster}; received {config!r}"
        )
    return len(order), len(order) + 1


def launcher_env_identity(environ: Mapping[str, str]) -> tuple[int, int]:
    """``(k, n)`` from the ``RANK`` and ``WORLD_SIZE`` variables that ``torchrun`` (and
    ``torch.distributed``'s ``env://`` initialisation) use; neither set is ``(0, 1)``.

    Args:
        environ: The environment, e.g. ``os.environ``.

    Returns:
        ``(k, n)``.

    Raises:
        ValueError: only one of the two is set, or they are not integers with
            ``0 <= RANK < WORLD_SIZE``.

    Example:
        >>> launcher_env_identity({"RANK": "1", "WORLD_SIZE": "4"})
        (1, 4)
    """
    rank, size = environ.get("RANK"), environ.get("WORLD_SIZE")
    if rank is None and size is None:
        return 0, 1
    if rank is None or size is None:
        raise ValueError(
            "RANK and WORLD_SIZE must be set together (as torchrun sets them); received "
            f"RANK={rank!r}, WORLD_SIZE={size!r}"
        )
    return checked_identity(_integer(rank, "RANK"), _integer(size, "WORLD_SIZE"),
                            "RANK/WORLD_SIZE")


def _indices(value: Any, kind: str) -> list[int]:
    if isinstance(value, dict):  # a sparse cluster spec maps task indices to addresses
        return sorted(_integer(k, f"TF_CONFIG {kind} index") for k in value)
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"TF_CONFIG cluster entry {kind!r} must be a list of addresses; received {value!r}"
        )
    return list(range(len(value)))


def _integer(value: Any, name: str) -> int:
    """An int from an int or the text of one (environment variables, JSON)."""
    if is_int(value):
        return int(value)
    try:
        if isinstance(value, str):
            return int(value.strip())
    except ValueError:
        pass
    raise ValueError(f"{name} must be an integer; received {value!r}")


def checked_identity(index: int, count: int, source: str) -> tuple[int, int]:
    """``(index, count)`` as ints, if ``0 <= index < count``; else a ValueError naming
    ``source``.

    Example:
        >>> checked_identity(1, 2, "RANK/WORLD_SIZE")
        (1, 2)
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"process index must be in [0, count) with count >= 1; {source} says process "
            f"{index} of {count}"
        )
    return int(index), int(count)
