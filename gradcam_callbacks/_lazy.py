"""Public names imported on first use: a package lists where each name lives and gets its
module ``__getattr__`` and ``__dir__`` from :func:`lazy_names` (PEP 562), so importing the
package pays for nothing it does not use (``import gradcam_callbacks`` loads no Keras; the
demo's ``--help`` neither).

Example:
    >>> get, names = lazy_names("gradcam_callbacks", {"ClassScore": "targets"}, {})
    >>> get("ClassScore").__name__, "ClassScore" in names()
    ('ClassScore', True)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, exports: Mapping[str, str], namespace: dict[str, Any]
               ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: name -> the submodule (below the package)
    that defines it; a name found is kept in ``namespace`` (the package's globals), so it is
    imported once.
    """
    def get(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def names() -> list[str]:
        return sorted([*namespace, *exports])

    return get, names
