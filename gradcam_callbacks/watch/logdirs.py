"""Run directories of :class:`~gradcam_callbacks.GradCamCallback`: a fresh default per
callback, and one fit per run directory.

One run, one history: two fits writing one run directory would put two models' maps at the
same tags and steps, which TensorBoard and ``gradcam-callbacks sheet`` then show as one
muddled run. So every fit *takes* a run directory of its own when training begins
(:func:`take_run_dir`): the callback's ``log_dir`` when it is free, else the first free of
``log_dir-2``, ``log_dir-3``, ... A directory is free when it holds no GradCamCallback event
file (``*.gradcam``) and no fit, in this process or another, holds it.

A fit holds its directory with an exclusive ``flock`` on the directory itself (POSIX; no file
is left behind). The kernel releases it when the holder closes it, and when the process ends
in any way, ``kill -9`` included, so a crashed process never blocks a directory. Within one
process the same lock applies (each hold opens the directory anew). Where ``fcntl`` is
missing (Windows), directories are kept apart within the process only. A directory that
cannot be opened or locked (not creatable, read-only) is used as it is if it holds no event
file: writing to it then fails, and warns, epoch by epoch, as it would without the lock.
"""

from __future__ import annotations

import datetime
import os
import threading
from dataclasses import dataclass, field

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_LOCK = threading.Lock()
_HELD: set[str] = set()
_DEFAULTS: set[str] = set()
DEFAULT_PARENT = os.path.join("logs", "gradcam")
EVENT_SUFFIX = ".gradcam"
"""The name ending of the event files GradCamCallback writes (see
:class:`~gradcam_callbacks.watch.tensorboard.EventWriter`)."""


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


def holds_events(path: str) -> bool:
    """Whether ``path`` holds a GradCamCallback event file (False if it cannot be read).

    Example:
        >>> holds_events("logs/nobody/writes/here")
        False
    """
    try:
        with os.scandir(path) as entries:
            return any("tfevents" in e.name and e.name.endswith(EVENT_SUFFIX) for e in entries)
    except OSError:
        return False


@dataclass
class RunDir:
    """A run directory held by one fit; :meth:`release` lets it go (twice is harmless).

    Attributes:
        path: The directory, as the callback names it (``log_dir`` or ``log_dir-N``).
        locked: Whether it is held by a ``flock`` (other processes see it as taken).

    Example:
        >>> run = take_run_dir(tempfile.mkdtemp())  # doctest: +SKIP
        >>> run.release()  # doctest: +SKIP
    """

    path: str
    locked: bool = False
    _fd: int | None = field(default=None, repr=False)
    _key: str = field(default="", repr=False)

    def release(self) -> None:
        """Let the directory go: unlock it and forget it in this process."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock
        with _LOCK:
            _HELD.discard(self._key)


def take_run_dir(log_dir: str) -> RunDir:
    """The run directory for a new fit: ``log_dir`` if free, else the first free of
    ``log_dir-2``, ``log_dir-3``, ...; created, and held until :meth:`RunDir.release` (or
    the end of the process).

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> first, second = take_run_dir(root + "/run"), take_run_dir(root + "/run")
        >>> os.path.basename(first.path), os.path.basename(second.path)
        ('run', 'run-2')
        >>> first.release(); second.release()
    """
    number = 1
    while True:
        candidate = log_dir if number == 1 else f"{log_dir.rstrip('/' + os.sep)}-{number}"
        run = _try_take(candidate)
        if run is not None:
            return run
        number += 1


def _try_take(path: str) -> RunDir | None:
    key = _key(path)
    with _LOCK:
        if key in _HELD:
            return None
        _HELD.add(key)  # reserved while the lock is tried
    fd = None
    try:
        os.makedirs(path, exist_ok=True)
        if fcntl is not None:
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it
        os.close(fd)  # type: ignore[arg-type]
        return _forget(key)
    except OSError:  # cannot create or lock it: use it unlocked, as writing would
        if fd is not None:
            os.close(fd)
        fd = None
    # locked (or unlockable) first, then checked: two processes never both find it free
    run = RunDir(path, locked=fd is not None, _fd=fd, _key=key)
    if holds_events(path):
        run.release()
        return None
    return run


def _forget(key: str) -> None:
    with _LOCK:
        _HELD.discard(key)
    return None
