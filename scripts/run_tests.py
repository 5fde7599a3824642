"""Check the house, then run the whole test suite under every Keras backend, one pytest
process per backend.

First the checks that need no backend: ``ruff check .``, ``scripts/check_imports.py`` (no
import cycles, no framework imports outside ``backends/``) and ``mkdocs build --strict`` (the
API reference builds from the docstrings without a warning). Then pytest: Keras fixes its
backend at import, so each backend needs its own process. Tests marked ``backend_agnostic``
run once (under TensorFlow). Any failed check, any failure, and any run that collects no test
(pytest's exit code 5), makes this script fail.

CPUs differ: TensorFlow turns its oneDNN kernels on by default on some x86 CPUs (AVX512_VNNI,
AMX) and off on others, and the numbers move with them. So the TensorFlow suite runs with
oneDNN forced on (``TF_ENABLE_ONEDNN_OPTS=1`` turns it on on any x86 CPU), and the files that
touch numerics, the command line or the platform (``ONEDNN_OFF_FILES``) run again with it
forced off: every machine checks both worlds.

Tests marked ``keras2`` run only in the two Keras 2 environments (``scripts/keras2_env.py``
installs them once): ``tf_keras`` here with ``TF_USE_LEGACY_KERAS=1``, and TensorFlow 2.15
(Keras 2.15 as ``keras``) in its own virtual environment. There they must run, not skip
(``GRADCAM_REQUIRE_KERAS2=1``).

keras_hub (the vision-transformer tests) is installed first, ``--no-deps``
(``scripts/keras_hub_env.py``: its ``tensorflow-text`` dependency would pull a second
TensorFlow); under ``CI`` those tests fail rather than skip without it.

The runs go in two lanes side by side (two pytest processes at a time, taking runs from one
queue, longest first: the suite's time is mostly single-threaded Python, so two cores finish
it sooner); each run's output is printed whole when it ends. ``--serial`` runs one at a time.

Usage: python scripts/run_tests.py [--serial] [extra pytest arguments]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import keras2_env
import keras_hub_env

BACKENDS = ("tensorflow", "jax", "torch")
# XLA's optimisation passes cost seconds per compile of Keras' many small initialiser
# functions on the CPU; the tests' numbers do not depend on them. The numeric tests (marker
# ``xla_defaults``: ELI5 parity, the methods against their definitions and the stored
# reference) run once more under JAX with XLA's defaults, the setting users run.
EXTRA_ENV = {"jax": {"XLA_FLAGS": "--xla_backend_optimization_level=0"},
             "tensorflow": {"TF_ENABLE_ONEDNN_OPTS": "1"}}
# run again under TensorFlow with oneDNN off: the files whose subject is numbers (stored
# references, thresholds of trained models, non-finite handling), the command line's output
# and the platform (channels-first kernels)
ONEDNN_OFF_FILES = [
    "tests/test_eli5_parity.py", "tests/test_methods.py", "tests/test_targets.py",
    "tests/test_explain.py", "tests/test_probes.py", "tests/test_cam.py",
    "tests/test_pretrained.py", "tests/test_target_examples.py", "tests/test_cli_robust.py",
    "tests/test_shortcut.py",
]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
CHECKS = {
    "ruff": [os.path.join(BIN, "ruff"), "check", "."],
    "import cycles": [sys.executable, os.path.join("scripts", "check_imports.py")],
    # no --quiet: it drops the warnings below the log level that --strict counts, so a
    # quiet strict build passes with unresolved references
    "docs": [os.path.join(BIN, "mkdocs"), "build", "--strict",
             "--site-dir", os.path.join(".cache", "site")],
}


def start_keras2_install() -> subprocess.Popen | None:
    """Install ``tf-keras`` here (one small wheel, before any test imports), then start the
    TensorFlow 2.15 environment's install in the background, where its downloads overlap
    the Keras 3 runs; :func:`keras2_runs` waits for it."""
    print("=== keras2 environments: scripts/keras2_env.py", flush=True)
    try:
        keras2_env.ensure_tf_keras()
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"could not install tf-keras: {error}", flush=True)
        return None
    log = open(os.path.join(ROOT, ".cache", "keras2-install.log"), "w")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts", "keras2_env.py"), "--tf215"],
        stdout=log, stderr=subprocess.STDOUT)


def keras2_runs(install: subprocess.Popen | None, started: float,
                results: list[tuple[str, int, float]]) -> list[tuple[Any, ...]]:
    """Wait for the Keras 2 environments (their install is a result of its own, timed from
    its start) and return their pytest runs."""
    code = 1 if install is None else install.wait()
    results.append(("keras2 install (background)", code, time.monotonic() - started))
    if install is None:
        return []
    if code != 0:
        with open(os.path.join(ROOT, ".cache", "keras2-install.log")) as log:
            print(f"could not install the Keras 2 environments:\n{log.read()[-3000:]}",
                  flush=True)
        return []
    python = os.path.join(keras2_env.VENV, "bin", "python")
    required = {"GRADCAM_REQUIRE_KERAS2": "1"}
    source = {"PYTHONPATH": os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    # only the files that hold keras2 tests: the others need Keras 3 or the dev extras
    files = sorted(str(path) for path in Path(ROOT, "tests").glob("test_*.py")
                   if "mark.keras2" in path.read_text())
    return [
        ("tf_keras (TF_USE_LEGACY_KERAS=1)", "tensorflow", ["-m", "keras2", *files],
         {**os.environ, **required, "TF_USE_LEGACY_KERAS": "1"}, sys.executable),
        ("keras2 (tf 2.15)", "tensorflow", ["-m", "keras2", *files],
         {**os.environ, **required, **source}, python),
    ]


def run_pytest(label: str, backend: str, selection: list[str], env: dict[str, str],
               python: str, argv: list[str]) -> tuple[str, int, float]:
    """One pytest process; its output goes to a file, printed whole when it ends (two runs
    go side by side)."""
    # the slowest tests of each run, in the log: where the suite's time goes
    command = [python, "-m", "pytest", "--durations=15", *selection, *argv]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        code = subprocess.call(command, env={**env, "KERAS_BACKEND": backend}, cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
        log.seek(0)
        output = log.read()
    seconds = time.monotonic() - started
    with _PRINTING:
        print(f"=== {label}: KERAS_BACKEND={backend} {' '.join(command)}\n{output}"
              f"=== {label}: exit {code} in {seconds:.0f} s", flush=True)
    return label, code, seconds


_PRINTING = threading.Lock()


def run_check(name: str, command: list[str]) -> tuple[str, int, float]:
    with _PRINTING:
        print(f"=== {name}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        # mkdocs-material's end-of-life banner is not a warning of ours
        code = subprocess.call(command, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    return name, code, time.monotonic() - started


def main(argv: list[str]) -> int:
    serial = "--serial" in argv
    argv = [a for a in argv if a != "--serial"]
    results: list[tuple[str, int, float]] = []
    os.makedirs(os.path.join(ROOT, ".cache"), exist_ok=True)
    install_started = time.monotonic()
    install = start_keras2_install()
    print(f"=== keras_hub: scripts/keras_hub_env.py: keras-hub {keras_hub_env.ensure_keras_hub()}",
          flush=True)
    for name, command in CHECKS.items():
        results.append(run_check(name, command))
    runs = [(backend, backend, ["-m", "not keras2" if i == 0 else
                                "not backend_agnostic and not keras2"],
             {**os.environ, **EXTRA_ENV.get(backend, {})}, sys.executable)
            for i, backend in enumerate(BACKENDS)]
    runs[0] = ("tensorflow (oneDNN on)", *runs[0][1:])
    off = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    runs.append(("tensorflow (oneDNN off)", "tensorflow", ["-m", "not keras2",
                                                           *ONEDNN_OFF_FILES], off,
                 sys.executable))
    defaults = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    runs.append(("jax (XLA defaults)", "jax", ["-m", "xla_defaults and not backend_agnostic"],
                 defaults, sys.executable))

    # A shared queue, longest runs first (TensorFlow, JAX, torch, TensorFlow with oneDNN
    # off, ...): each lane takes the next run when its last one ends. The Keras 2 runs come
    # last; the lane that reaches them waits for their install and queues them.
    queue: list[Any] = [*runs, "keras2"]
    taking = threading.Lock()

    def lane() -> None:
        while True:
            with taking:
                if not queue:
                    return
                run = queue.pop(0)
            if run == "keras2":
                found = keras2_runs(install, install_started, results)
                with taking:
                    queue[:0] = found
                continue
            results.append(run_pytest(*run, argv))

    threads = [threading.Thread(target=lane) for _ in range(1 if serial else 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("=== summary")
    for label, code, seconds in results:
        verdict = {0: "passed", 5: "FAILED: no tests ran"}.get(code, f"FAILED (exit {code})")
        print(f"{label:>32}: {verdict} in {seconds:.0f} s")
    print(f"{'wall time':>32}: {time.monotonic() - install_started:.0f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
