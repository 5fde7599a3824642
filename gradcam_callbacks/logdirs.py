"""Run directories of :class:`~gradcam_callbacks.GradCamCallback`: a fresh default per
callback, and one writer per directory in a process.

Two callbacks writing the same run directory would interleave identical tags and steps,
which TensorBoard and ``gradcam-callbacks sheet`` then show as one muddled run. So a callback
*claims* its directory when training begins and releases it when training ends; a second
callback that tries to claim a directory held by a live callback is refused with a
``ValueError`` before its first epoch. A fit that ended with an exception never reaches
``on_train_end``: its claim lasts until the same callback starts training again (it may
re-claim its own directory) or the callback is garbage collected (claims are weak
references).
"""

from __future__ import annotations

import datetime
import os
import threading
import weakref
from typing import Any

_LOCK = threading.Lock()
_CLAIMS: dict[str, weakref.ref[Any]] = {}
_DEFAULTS: set[str] = set()
DEFAULT_PARENT = os.path.join("logs", "gradcam")


def default_log_dir(parent: str = DEFAULT_PARENT) -> str:
    """A new run directory under ``parent`` named by the local time, as Keras users name
    runs: ``logs/gradcam/20261130-103342``; ``-2``, ``-3``, ... are appended when that name
    was already given out in this process or exists on disk.

    Example:
        >>> default_log_dir().startswith(os.path.join("logs", "gradcam", ""))
        True
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with _LOCK:
        candidate, number = os.path.join(parent, stamp), 1
        while candidate in _DEFAULTS or os.path.exists(candidate):
            number += 1
            candidate = os.path.join(parent, f"{stamp}-{number}")
        _DEFAULTS.add(candidate)
    return candidate


def _key(log_dir: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(log_dir)))


def claim(owner: Any, log_dir: str) -> None:
    """Make ``owner`` the one writer of ``log_dir`` in this process.

    Raises:
        ValueError: another live object holds ``log_dir`` (or the same directory by another
            path).

    Example:
        >>> class Writer:  # a GradCamCallback, say
        ...     pass
        >>> callback, other = Writer(), Writer()
        >>> claim(callback, "logs/run1/gradcam")
        >>> claim(other, "logs/run1/gradcam")
        Traceback (most recent call last):
        ...
        ValueError: log_dir must be a run directory no other GradCamCallback is writing; ...
        >>> release(callback)
    """
    key = _key(log_dir)
    with _LOCK:
        held = _CLAIMS.get(key)
        holder = held() if held is not None else None
        if holder is not None and holder is not owner:
            raise ValueError(
                f"log_dir must be a run directory no other GradCamCallback is writing; "
                f"received log_dir={log_dir!r}, which {type(holder).__name__} at "
                f"{id(holder):#x} in this process is writing (its training has not ended). "
                "Give each callback its own log_dir (the default, logs/gradcam/<time>, is "
                "new per callback); a callback whose fit raised keeps its directory until it "
                "trains again or is deleted"
            )
        for other, ref in list(_CLAIMS.items()):  # one directory per owner
            if ref() is owner or ref() is None:
                del _CLAIMS[other]
        _CLAIMS[key] = weakref.ref(owner)


def release(owner: Any) -> None:
    """Release whatever directory ``owner`` holds (nothing if it holds none).

    Example:
        >>> class Writer:  # a GradCamCallback, say
        ...     pass
        >>> callback = Writer()
        >>> claim(callback, "logs/run2/gradcam")
        >>> release(callback)
        >>> holder("logs/run2/gradcam") is None
        True
    """
    with _LOCK:
        for key, ref in list(_CLAIMS.items()):
            if ref() is owner or ref() is None:
                del _CLAIMS[key]


def holder(log_dir: str) -> Any:
    """The live object that holds ``log_dir``, or None.

    Example:
        >>> holder("logs/nobody/writes/here") is None
        True
    """
    with _LOCK:
        held = _CLAIMS.get(_key(log_dir))
    return held() if held is not None else None
