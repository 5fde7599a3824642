"""Module paths that moved when the package took its subpackages (issue #24): importing an
old path still works, returns the very module at its new path, and warns once with a
``DeprecationWarning`` naming the new path.

Nothing here runs unless an old path is imported: :data:`MOVED` is consulted by a finder
that answers for these names only.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     import gradcam_callbacks.metrics as old
    >>> import gradcam_callbacks.watch.metrics as new
    >>> old is new
    True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

PACKAGE = __name__.rpartition(".")[0]

#: old module path (below the package) -> new one
MOVED = {
    **{name: f"watch.{name}" for name in (
        "alarm", "callback", "distribute", "logdirs", "metrics", "probes", "report", "sheet",
        "sinks", "tags", "tensorboard")},
    "datasets": "demo.datasets",
    "demo_settings": "demo.settings",
}


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module at its new path."""

    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        # stacklevel 2: warnings skips importlib's own frames, so this names the import line
        warnings.warn(f"{self.old} moved to {self.new}; import it from there (the old path "
                      "will be removed in a later release)", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new path is already executed."""


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths in :data:`MOVED`, and nothing else."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix = PACKAGE + "."
        if not fullname.startswith(prefix) or fullname[len(prefix):] not in MOVED:
            return None
        new = prefix + MOVED[fullname[len(prefix):]]
        return importlib.util.spec_from_loader(fullname, _Alias(fullname, new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (idempotent)."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
