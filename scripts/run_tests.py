"""Check the house, then run the whole test suite under every Keras backend, one pytest
process per backend.

First the checks that need no backend: ``ruff check .``, ``scripts/check_imports.py`` (no
import cycles, no framework imports outside ``backends/``) and ``mkdocs build --strict`` (the
API reference builds from the docstrings without a warning). Then pytest: Keras fixes its
backend at import, so each backend needs its own process. Tests marked ``backend_agnostic``
run once (under TensorFlow). Any failed check, any failure, and any run that collects no test
(pytest's exit code 5), makes this script fail.

Usage: python scripts/run_tests.py [extra pytest arguments]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

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


def main(argv: list[str]) -> int:
    results = []
    for name, command in CHECKS.items():
        print(f"=== {name}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command, cwd=ROOT)
        results.append((name, code, time.monotonic() - started))
    runs = [(backend, backend, [] if i == 0 else ["-m", "not backend_agnostic"],
             {**os.environ, **EXTRA_ENV.get(backend, {})})
            for i, backend in enumerate(BACKENDS)]
    defaults = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    runs.append(("jax (XLA defaults)", "jax", ["-m", "xla_defaults and not backend_agnostic"],
                 defaults))
    for label, backend, selection, env in runs:
        command = [sys.executable, "-m", "pytest", *selection, *argv]
        print(f"=== KERAS_BACKEND={backend}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command, env={**env, "KERAS_BACKEND": backend})
        results.append((label, code, time.monotonic() - started))
    print("=== summary")
    for backend, code, seconds in results:
        verdict = {0: "passed", 5: "FAILED: no tests ran"}.get(code, f"FAILED (exit {code})")
        print(f"{backend:>18}: {verdict} in {seconds:.0f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
