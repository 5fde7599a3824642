"""Griffe extension: turn the docstrings' Sphinx roles into autorefs cross-references.

The package's docstrings cross-reference with Sphinx roles (``:class:`Explanation```,
``:func:`~gradcam_callbacks.image.grid```, ``:mod:`.interrupt```, ``:meth:`Plan.run <...>```).
mkdocstrings does not read them, so this extension rewrites each one, when the package is
loaded, into an autorefs reference ``[`text`][full.path]``:

- ``~a.b.c`` shows ``c``; ``text <target>`` shows ``text``; otherwise the name as written.
- A name with leading dots is relative to the docstring's module, as in a relative import
  (``.x`` a sibling module of a plain module, a submodule of a package's ``__init__``).
- Any other name is looked up, in order, as a member of the documented object, of its class,
  of its module, of that module's parent packages, and as a full path.
- Aliases (names re-exported by ``gradcam_callbacks``) resolve to the object they point to, the
  path mkdocstrings registers when it renders that object.

- A name found nowhere else is looked up as the one object of the package whose path ends
  with it (``Plan.run`` in a module that does not import ``Plan``).
- An attribute with no docstring of its own (documented in its class's or module's
  ``Attributes:`` section) links to that class or module.

The docstrings' ``Example:`` sections (the house style) are read as Google-style ``Examples:``
sections, so that their ``>>>`` lines render as highlighted Python, not as Markdown text.

A name that is not found in the package logs a warning (``mkdocs build --strict`` then fails),
unless it names a module of Python's standard library (``signal.set_wakeup_fd``): that one is
printed as code, without a link. A name found in the package but rendered on no page is left
to autorefs, which warns about it (the strict build fails too).

Configured in mkdocs.yml::

    plugins:
      - mkdocstrings:
          handlers:
            python:
              options:
                extensions:
                  - docs/_ext/sphinx_roles.py:SphinxRoles
"""

from __future__ import annotations

import re
import sys
from typing import Any

import griffe

logger = griffe.get_logger("sphinx_roles")

ROLE = re.compile(r":(?:py:)?(class|func|mod|data|meth|attr|exc|obj|const):`([^`]+)`")
EXAMPLE = re.compile(r"^([ \t]*)Example:[ \t]*$", re.MULTILINE)
EXPLICIT = re.compile(r"^(.*?)\s*<([^<>]+)>$")


def _lookup(collection: Any, path: str) -> Any | None:
    """The griffe object at ``path`` (aliases followed), or None."""
    try:
        obj = collection.get_member(path)
    except Exception:  # noqa: BLE001 - griffe raises KeyError/AliasResolutionError/...
        return None
    if obj is None:
        return None
    if obj.is_alias:
        try:
            obj = obj.final_target
        except Exception:  # noqa: BLE001 - an alias to something outside the package
            return None
    return obj


def _module_of(obj: Any) -> Any:
    while not obj.is_module:
        obj = obj.parent
    return obj


def _candidates(obj: Any, name: str) -> list[str]:
    """Full paths ``name`` may mean, seen from the docstring of ``obj``, in lookup order."""
    module = _module_of(obj)
    if name.startswith("."):
        dots = len(name) - len(name.lstrip("."))
        base = module if module.is_package or module.is_init_module else module.parent
        for _ in range(dots - 1):
            base = base.parent if base is not None else None
        if base is None:
            return []
        return [f"{base.path}.{name[dots:]}"]
    paths = []
    scope = obj
    while scope is not None:
        paths.append(f"{scope.path}.{name}")
        scope = scope.parent
    paths.append(name)
    return paths


def _stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the package into autorefs links."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the docstrings of ``pkg`` and all its members, once the package is loaded."""
        self._paths: dict[str, list[Any]] = {}
        self._index(pkg, set())
        self._visit(pkg, loader.modules_collection, set())

    def _index(self, obj: Any, seen: set[str]) -> None:
        """Every object of the package by its path, for the unique-suffix lookup."""
        if obj.path in seen:
            return
        seen.add(obj.path)
        self._paths.setdefault(obj.path, []).append(obj)
        for member in obj.members.values():
            if not member.is_alias:
                self._index(member, seen)

    def _by_suffix(self, collection: Any, name: str) -> Any | None:
        """The one object of the package whose path ends with ``.name`` (None if 0 or 2+)."""
        hits = [path for path in self._paths if path.endswith("." + name)]
        return _lookup(collection, hits[0]) if len(hits) == 1 else None

    def _visit(self, obj: Any, collection: Any, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = ROLE.sub(
                lambda match: self._replace(obj, collection, match), obj.docstring.value
            )
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member, collection, seen)

    def _replace(self, obj: Any, collection: Any, match: re.Match[str]) -> str:
        role, body = match.group(1), match.group(2).strip()
        explicit = EXPLICIT.match(body)
        if explicit:
            text, target = explicit.group(1), explicit.group(2).strip()
        else:
            target = body
            text = None
        short = target.startswith("~")
        target = re.sub(r"\s+", "", target.lstrip("~"))
        if text is None:
            text = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
        if role in ("func", "meth") and not text.endswith(")"):
            text += "()"
        found = None
        for path in _candidates(obj, target):
            found = _lookup(collection, path)
            if found is not None:
                break
        if found is None and not target.startswith("."):
            found = self._by_suffix(collection, target)
        if found is not None:
            if found.is_attribute and found.docstring is None and found.parent is not None:
                found = found.parent  # documented in its parent's Attributes section
            return f"[`{text}`][{found.path}]"
        if _stdlib(target):
            return f"`{text}`"
        location = f"{obj.filepath}:{obj.docstring.lineno}" if obj.docstring else obj.path
        logger.warning("%s: :%s:`%s` names nothing in the package", location, role, body)
        return f"`{text}`"
