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
    code = ("import sys, gradcam_callbacks, gradcam_callbacks.tensorboard; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
