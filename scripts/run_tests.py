"""Check the house, then run the whole test suite under every Keras backend, one pytest
process per backend.

First the checks that need no backend: ``ruff check .``, ``scripts/check_imports.py`` (no
import cycles, no framework imports outside ``backends/``) and ``mkdocs build --strict`` (the
API reference builds from the docstrings without a warning). Then pytest: Keras fixes its
backend at import, so each backend needs its own process. Tests marked ``backend_agnostic``
run once (under TensorFlow). Any failed check, any failure, and any run that collects no test
(pytest's exit code 5), makes this script fail.

Tests marked ``keras2`` run only in the two Keras 2 environments (``scripts/keras2_env.py``
installs them once): ``tf_keras`` here with ``TF_USE_LEGACY_KERAS=1``, and TensorFlow 2.15
(Keras 2.15 as ``keras``) in its own virtual environment. There they must run, not skip
(``GRADCAM_REQUIRE_KERAS2=1``).

Usage: python scripts/run_tests.py [extra pytest arguments]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import keras2_env

BACKENDS = ("tensorflow", "jax", "torch")
# XLA's optimisation passes cost seconds per compile of Keras' many small initialiser
# functions on the CPU; the tests' numbers do not depend on them. The numeric tests (marker
# ``xla_defaults``: ELI5 parity, the methods against their definitions and the stored
# reference) run once more under JAX with XLA's defaults, the setting users run.
EXTRA_ENV = {"jax": {"XLA_FLAGS": "--xla_backend_optimization_level=0"}}


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
CHECKS = {
    "ruff": [os.path.join(BIN, "ruff"), "check", "."],
    "import cycles": [sys.executable, os.path.join("scripts", "check_imports.py")],
    "docs": [os.path.join(BIN, "mkdocs"), "build", "--strict", "--quiet",
             "--site-dir", os.path.join(".cache", "site")],
}


def keras2_runs(results: list[tuple[str, int, float]]) -> list[tuple[Any, ...]]:
    """Install the Keras 2 environments (once; timed as a result of its own) and return
    their pytest runs."""
    print("=== keras2 environments: scripts/keras2_env.py", flush=True)
    started = time.monotonic()
    try:
        keras2_env.ensure_tf_keras()
        python = keras2_env.ensure_tf215()
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"could not install the Keras 2 environments: {error}", flush=True)
        results.append(("keras2 install", 1, time.monotonic() - started))
        return []
    results.append(("keras2 install", 0, time.monotonic() - started))
    required = {"GRADCAM_REQUIRE_KERAS2": "1"}
    source = {"PYTHONPATH": os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    return [
        ("tf_keras (TF_USE_LEGACY_KERAS=1)", "tensorflow", ["-m", "keras2"],
         {**os.environ, **required, "TF_USE_LEGACY_KERAS": "1"}, sys.executable),
        ("keras2 (tf 2.15)", "tensorflow", ["-m", "keras2"],
         {**os.environ, **required, **source}, python),
    ]


def main(argv: list[str]) -> int:
    results = []
    for name, command in CHECKS.items():
        print(f"=== {name}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command, cwd=ROOT)
        results.append((name, code, time.monotonic() - started))
    runs = [(backend, backend, ["-m", "not keras2" if i == 0 else
                                "not backend_agnostic and not keras2"],
             {**os.environ, **EXTRA_ENV.get(backend, {})}, sys.executable)
            for i, backend in enumerate(BACKENDS)]
    defaults = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    runs.append(("jax (XLA defaults)", "jax", ["-m", "xla_defaults and not backend_agnostic"],
                 defaults, sys.executable))
    runs += keras2_runs(results)
    for label, backend, selection, env, python in runs:
        command = [python, "-m", "pytest", *selection, *argv]
        print(f"=== KERAS_BACKEND={backend}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command, env={**env, "KERAS_BACKEND": backend})
        results.append((label, code, time.monotonic() - started))
    print("=== summary")
    for backend, code, seconds in results:
        verdict = {0: "passed", 5: "FAILED: no tests ran"}.get(code, f"FAILED (exit {code})")
        print(f"{backend:>32}: {verdict} in {seconds:.0f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
