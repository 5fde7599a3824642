"""Worker-side helpers shared by the scripts in tests/distributed/: arguments, the data, a
recorder of what the callback computed, and the result files the parent test reads.

Import this only after the script has set up its devices (environment variables,
logical devices): it imports Keras.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from models import images

import gradcam_callbacks as gc
from gradcam_callbacks.watch.distribute import is_chief, process_identity

PROBES = 3
EPOCHS = 2
# Once its results are written, a worker has this long to meet its peers at the closing
# barrier, tear its group down and exit (see bound_the_exit).
EXIT_S = 90.0
X = images(32, seed=21)
Y = (np.arange(32) * 7) % 5


def arguments(*names: str) -> argparse.Namespace:
    """``--out DIR`` (given by the harness) and the script's own positional arguments."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    for name in names:
        parser.add_argument(name)
    return parser.parse_args()


class Recorder:
    """A ``GradCamCallback`` whose every Grad-CAM computation is recorded, with the weights it
    was computed from, so the parent can recompute it on one device."""

    def __init__(self, log_dir: Path,
                 weights: Callable[[keras.Model], list[np.ndarray]] | None = None) -> None:
        self.callback = gc.GradCamCallback(X[:PROBES], log_dir=log_dir)
        self.heatmaps: list[np.ndarray] = []
        self.weights: list[list[np.ndarray]] = []
        self._snapshot = weights or (lambda model: [np.asarray(w) for w in model.get_weights()])
        explain = self.callback.explain_probes

        def recording() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            result = explain()
            self.heatmaps.append(result[0])
            self.weights.append(self._snapshot(self.callback.model))
            return result

        self.callback.explain_probes = recording  # type: ignore[method-assign]

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """``heatmaps_<j>`` and ``weights_<j>_<i>`` for the j-th computation."""
        stored = {}
        for j, (heatmaps, weights) in enumerate(zip(self.heatmaps, self.weights)):
            stored[f"{prefix}heatmaps_{j}"] = heatmaps
            stored.update({f"{prefix}weights_{j}_{i}": w for i, w in enumerate(weights)})
        return stored


def identity() -> dict[str, Any]:
    """What the library says about this process, and whether TensorFlow got imported."""
    return {"identity": list(process_identity()), "chief": is_chief(),
            "tensorflow_imported": "tensorflow" in sys.modules}


def heatmaps(explanations: list[gc.Explanation]) -> np.ndarray:
    """``(N, h, w)``: the first target's heatmap of each explanation."""
    return np.stack([e.targets[0].heatmap for e in explanations])


def write_result(out: Path, result: dict[str, Any], **arrays: np.ndarray) -> None:
    """Write ``result.json`` and ``arrays.npz`` for the parent test."""
    np.savez(out / "arrays.npz", **arrays)
    (out / "result.json").write_text(json.dumps(result, default=str))


def bound_the_exit(seconds: float = EXIT_S) -> None:
    """From now on this process must end within ``seconds``: if it has not (stuck at the
    closing barrier, in the group's teardown, or in interpreter shutdown), ``faulthandler``
    writes every thread's Python stack to stderr and ends it with exit status 1, so the
    parent reports where it hung instead of waiting for its own limit. Call it after
    :func:`write_result`: the results are safe, and only the ending is left."""
    faulthandler.dump_traceback_later(seconds, exit=True)


def gradcam_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The callback's own warnings among ``caught``."""
    return [str(w.message) for w in caught if "GradCamCallback" in str(w.message)]
