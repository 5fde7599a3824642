"""ELI5 0.16's results on fixed models and inputs, the reference every backend must match.

Run under TensorFlow with eli5 installed to (re)write ``data/eli5_reference.npz``:
``KERAS_BACKEND=tensorflow python tests/eli5_reference.py``. It was written by ELI5 0.16.0
itself (not by this package), on TensorFlow 2.21 / Keras 3.15.

A stored number is exact only on the machine that wrote it. Live ELI5 against this file,
measured: heatmaps differ by up to 8.3e-7 (oneDNN on) and 9.3e-7 (oneDNN off) on an Intel
Xeon with AVX512_VNNI/AMX (2026-12-05), 9.3e-7 on an AMD EPYC with AVX512_VNNI (issue #20);
scores by up to 3.0e-8; overlays and targets equal. So the stored reference is held at
``STORED_ATOL`` (10x the largest spread seen); bit-for-bit claims are made only between two
live computations in one process (ours against ELI5 live).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from models import images, small_cnn  # noqa: E402

PATH = os.path.join(os.path.dirname(__file__), "data", "eli5_reference.npz")
# live ELI5 against the stored file: the measured spread across CPUs and oneDNN settings
# is 9.3e-7 (see the module docstring)
STORED_ATOL = 1e-5
CASES = [  # (model seed, input seed, targets)
    (0, 0, None), (0, 1, [2]), (1, 2, None), (1, 3, [0]), (2, 4, [4]),
]


def case_inputs():
    """The models and docs of each case."""
    for model_seed, input_seed, targets in CASES:
        yield small_cnn(seed=model_seed, name=f"ref_cnn_{model_seed}"), images(
            1, seed=input_seed), targets


def collect(explain, format_as_image) -> dict[str, np.ndarray]:
    """Heatmaps, targets, scores and overlays of every case with the given pair of
    functions (ELI5's or ours: they share the signatures)."""
    from PIL import Image

    heatmaps, targets, scores, overlays = [], [], [], []
    for model, doc, target in case_inputs():
        expl = explain(model, doc, targets=target)
        heatmaps.append(expl.targets[0].heatmap)
        targets.append(expl.targets[0].target)
        scores.append(expl.targets[0].score)
        picture = Image.fromarray((images(1, shape=(48, 48, 3))[0] * 255).astype("uint8"))
        overlays.append(np.asarray(format_as_image(
            explain(model, doc, targets=target, image=picture))))
    return {"heatmaps": np.stack(heatmaps), "targets": np.array(targets),
            "scores": np.array(scores), "overlays": np.stack(overlays)}


def compute_with_eli5() -> dict[str, np.ndarray]:
    """ELI5's results for every case."""
    import eli5

    return collect(eli5.explain_prediction, eli5.format_as_image)


if __name__ == "__main__":
    result = compute_with_eli5()
    np.savez_compressed(PATH, **result)
    print(f"wrote {PATH}: heatmaps {result['heatmaps'].shape}, targets {result['targets']}")
