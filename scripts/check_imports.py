"""Fail if the package's modules import each other in a cycle, if an import runs back up the
house (a lower layer of :data:`LAYERS` importing a higher one; docs/architecture.md draws
them), or if a module outside ``gradcam_callbacks/backends/`` imports a backend framework
(tensorflow, jax, torch).

A subpackage (``backends``, ``cli``...) is one unit. Every import counts, at module level,
inside a function or under ``if TYPE_CHECKING:`` (a type hint is a dependency too). Prints the
cycles and offending imports found.

Usage: python scripts/check_imports.py [package folder]   (default: gradcam_callbacks)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FRAMEWORKS = ("tensorflow", "jax", "jaxlib", "torch", "tf_keras")
#: The house, top to bottom: a unit (a subpackage or a top-level module, named below the
#: package) may import its own layer and the layers under it, never one above. The package's
#: ``__init__`` (lazy public names) and ``_moved`` (old module paths) stand outside (main).
LAYERS = (
    ("cli", "__main__"),
    ("demo",),
    ("watch",),
    ("explain",),
    ("faithfulness",),
    ("engine",),
    ("methods",),
    ("cam",),
    ("backends",),
    ("targets",),
    ("layers", "tokens", "taps"),
    ("pixels", "resample"),
    ("explanation",),
    ("image",),
    ("keras_family", "_process_env", "_validation", "_lazy"),
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, is_package: bool) -> list[tuple[str, int]]:
    """Absolute names of the modules ``path`` imports, with line numbers."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, node.lineno))
            # "from . import x" / "from .pkg import mod" may name submodules
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).resolve().parents[1] / "gradcam_callbacks")
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    problems = []
    for name, path in modules.items():
        edges = set()
        for target, line in imports_of(path, name, path.name == "__init__.py"):
            top = target.split(".")[0]
            if top in FRAMEWORKS and ".backends" not in name:
                problems.append(f"{path}:{line}: imports {target} outside backends/")
            if target in modules and target != name:
                edges.add(target)
        graph[name] = edges
    # A subpackage counts as one unit (its __init__ may load its modules with importlib, which
    # no parse sees): cycles are looked for between the package's top-level modules and units.
    # The package's __init__ (its lazy public names, importing every layer) and _moved stand
    # outside the house: "from .. import methods" names the package without depending on it.
    facade = {root.name, f"{root.name}._moved"}
    units: dict[str, set[str]] = {}
    for name, targets in graph.items():
        if _unit(name) not in facade:
            units.setdefault(_unit(name), set()).update(
                _unit(t) for t in targets if _unit(t) not in facade)
    for name, targets in units.items():
        targets.discard(name)
    cycles = _cycles(units)
    problems += [" -> ".join([*cycle, cycle[0]]) + ": import cycle" for cycle in cycles]
    upward = _upward(units, root.name)
    problems += upward
    for problem in problems:
        print(problem)
    print(f"check_imports: {len(modules)} modules, {len(cycles)} cycles, {len(upward)} imports "
          f"running back up, {len(problems) - len(cycles) - len(upward)} framework imports "
          "outside backends/")
    return 1 if problems else 0


def _upward(units: dict[str, set[str]], package: str) -> list[str]:
    """The imports from a lower layer to a higher one, and the units placed in no layer."""
    level = {unit: i for i, names in enumerate(LAYERS) for unit in names}
    found = []
    for source, targets in sorted(units.items()):
        short = source[len(package) + 1:]
        if short not in level:
            found.append(f"{source}: in no layer of scripts/check_imports.py's LAYERS")
            continue
        for target in sorted(targets):
            other = target[len(package) + 1:]
            if level.get(other, len(LAYERS)) < level[short]:
                found.append(f"{source} -> {target}: runs back up the house "
                             f"(layer {level[short]} imports layer {level[other]})")
    return found


def _unit(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
