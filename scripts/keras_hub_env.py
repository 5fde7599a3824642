"""keras_hub for the vision-transformer tests (tests/test_transformers.py), installed without
a second TensorFlow.

``keras-hub`` depends on ``tensorflow-text``, which pulls the full ``tensorflow`` wheel next
to the ``tensorflow-cpu`` this environment has. So ``keras-hub`` is installed ``--no-deps``,
with the light dependencies it imports (``LIGHT_DEPENDENCIES``, pinned where keras-hub pins
them). Its models are built from configurations in the tests (presets download at run time).
Under JAX or PyTorch ``import keras_hub`` imports TensorFlow only where TensorFlow is
installed (it tries, and goes on without it).

Usage: python scripts/keras_hub_env.py   (installs it if missing; prints its version)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys

KERAS_HUB = "keras-hub==0.32.0"
LIGHT_DEPENDENCIES = ["absl-py", "rich", "regex", "packaging", "kagglehub<1",
                      "kagglesdk==0.1.28", "tokenizers", "sentencepiece"]


def ensure_keras_hub() -> str:
    """``keras-hub`` at :data:`KERAS_HUB`'s version, installed ``--no-deps`` (and its light
    dependencies) if missing; returns its version."""
    wanted = KERAS_HUB.split("==")[1]
    try:
        if importlib.metadata.version("keras-hub") == wanted:
            return wanted
    except importlib.metadata.PackageNotFoundError:
        pass
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *LIGHT_DEPENDENCIES])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", KERAS_HUB])
    importlib.invalidate_caches()
    return importlib.metadata.version("keras-hub")


if __name__ == "__main__":
    print(f"keras-hub {ensure_keras_hub()}")
