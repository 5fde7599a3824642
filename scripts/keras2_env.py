"""The two Keras 2 environments the test suite also runs in (tests marked ``keras2``).

- ``tf_keras``: this interpreter's own environment plus ``tf-keras`` at the installed
  TensorFlow's version (2.21.x for TensorFlow 2.21), installed ``--no-deps`` (its dependency
  is ``tensorflow``, which would pull the full TensorFlow wheel next to ``tensorflow-cpu``).
  The tests run with ``TF_USE_LEGACY_KERAS=1``, as transformers' users run.
- ``tf 2.15``: a separate virtual environment, ``.cache/keras2-venv``, with
  ``tensorflow-cpu==2.15.1``, whose ``keras`` (and ``tf.keras``) is Keras 2.15; Keras 3
  cannot live there. The package is used from the source tree (``PYTHONPATH``), without its
  ``keras>=3`` dependency.

Each is installed at most once: the venv is reused while its requirements are unchanged
(they are recorded in it), and pip's cache (``~/.cache/pip``) serves the wheels.

Usage: python scripts/keras2_env.py [--tf215]   (installs both, or only the 2.15 environment;
prints the 2.15 environment's python)
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import venv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".cache", "keras2-venv")
TF215_REQUIREMENTS = [
    "tensorflow-cpu==2.15.1",
    "numpy<2",
    "pillow>=10",
    "matplotlib>=3.8",
    "scikit-learn>=1.3",
    "google-crc32c>=1.5",
    "pytest>=8",
    "pytest-timeout>=2.3",
]


def ensure_tf_keras() -> str:
    """``tf-keras`` matching this environment's TensorFlow, installed if missing; returns
    its version."""
    wanted = importlib.metadata.version(
        "tensorflow-cpu" if _installed("tensorflow-cpu") else "tensorflow")
    series = ".".join(wanted.split(".")[:2])
    if _installed("tf-keras") and importlib.metadata.version("tf-keras").startswith(series):
        return importlib.metadata.version("tf-keras")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           f"tf-keras=={series}.*"])
    importlib.invalidate_caches()
    return importlib.metadata.version("tf-keras")


def ensure_tf215() -> str:
    """The TensorFlow 2.15 environment, created or refreshed when its requirements changed;
    returns its python."""
    python = os.path.join(VENV, "bin", "python")
    record = os.path.join(VENV, "requirements.txt")
    wanted = "\n".join(TF215_REQUIREMENTS) + "\n"
    if os.path.exists(python) and os.path.exists(record):
        with open(record) as file:
            if file.read() == wanted:
                return python
    venv.create(VENV, with_pip=True, clear=True)
    subprocess.check_call([python, "-m", "pip", "install", "-q", "--no-compile",
                           *TF215_REQUIREMENTS])
    with open(record, "w") as file:
        file.write(wanted)
    return python


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    # --tf215: only the separate environment (run_tests.py installs it in the background)
    if "--tf215" not in sys.argv[1:]:
        print(f"tf-keras {ensure_tf_keras()}", flush=True)
    print(ensure_tf215())
