"""The package's public surface."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import gradcam_callbacks

pytestmark = pytest.mark.backend_agnostic


def test_every_public_name_resolves_and_has_a_docstring_with_an_example():
    for name in gradcam_callbacks.__all__:
        value = getattr(gradcam_callbacks, name)
        assert value.__doc__ and "Example" in value.__doc__, name
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        gradcam_callbacks.no_such_name  # noqa: B018


def test_version_matches_the_package_metadata():
    root = os.path.dirname(os.path.dirname(__file__))
    with open(os.path.join(root, "pyproject.toml")) as f:
        assert f'version = "{gradcam_callbacks.__version__}"' in f.read()


def test_importing_the_package_imports_no_framework():
    code = ("import sys, gradcam_callbacks, gradcam_callbacks.watch.tensorboard; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"


MOVED_CHECK = """
import importlib, json, sys, warnings
from gradcam_callbacks import _moved
found = {}
for old, new in sorted(_moved.MOVED.items()):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(f"import gradcam_callbacks.{old}")  # an import statement, as users write it
        module = sys.modules["gradcam_callbacks." + old]
    found[old] = {
        "same": module is importlib.import_module("gradcam_callbacks." + new),
        "warnings": [(w.category.__name__, str(w.message), w.filename) for w in caught
                     if "moved to" in str(w.message)],
    }
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from gradcam_callbacks.callback import GradCamCallback  # an old path, as users wrote it
found["from-import"] = GradCamCallback.__module__
found["again"] = len(caught)  # imported already: no second warning
print(json.dumps(found))
"""


def test_moved_module_paths_still_import_the_same_module_and_warn_once():
    done = subprocess.run([sys.executable, "-c", MOVED_CHECK], capture_output=True, text=True,
                          timeout=300, check=True)
    found = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    from gradcam_callbacks import _moved

    assert _moved.MOVED["callback"] == "watch.callback"
    for old, new in _moved.MOVED.items():
        assert found[old]["same"], old
        [(category, message, filename)] = found[old]["warnings"]
        assert category == "DeprecationWarning"
        assert f"gradcam_callbacks.{old} moved to gradcam_callbacks.{new}" in message
        assert filename == "<string>", filename  # the line that imported it, not importlib's
    assert found["from-import"] == "gradcam_callbacks.watch.callback"
    assert found["again"] == 0
