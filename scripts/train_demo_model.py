"""Regenerate the trained demo model shipped in the package (``gradcam_callbacks/demo/data/``).

Trains the cluttered-digits CNN of :mod:`gradcam_callbacks.demo` with the demo's defaults
(4000 images, 6 epochs, seed 0), then stores its weights (``demo_cnn.weights.npz``, a list of
arrays in ``model.get_weights()`` order: backend-neutral) and what it scored on the 1000 held-out
test images (``demo_cnn.json``). :func:`gradcam_callbacks.demo.pretrained` rebuilds the model
from these files on any backend, with no training and no download.

Usage: KERAS_BACKEND=tensorflow python scripts/train_demo_model.py
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

from gradcam_callbacks import explain_predictions
from gradcam_callbacks.demo import (
    EPOCHS,
    GRADCAM_LAYER,
    NUM_TRAIN,
    build_model,
    load_data,
    train,
)
from gradcam_callbacks.watch.metrics import box_masses, pointing_game

DATA = Path(__file__).resolve().parents[1] / "gradcam_callbacks" / "demo" / "data"


def main() -> int:
    keras.utils.set_random_seed(0)
    train_set, test_set = load_data(num_train=NUM_TRAIN, seed=0)
    model = build_model(train_set.x.shape[1:])
    started = time.monotonic()
    train(model, train_set, epochs=EPOCHS, verbose=2)
    seconds = time.monotonic() - started
    _, accuracy = model.evaluate(test_set.x, test_set.y, verbose=0)
    expls = explain_predictions(model, test_set.x, targets=[int(t) for t in test_set.y],
                                layer=GRADCAM_LAYER, batch_size=250)
    heatmaps = np.stack([e.targets[0].heatmap for e in expls])
    size = test_set.x.shape[1:3]
    record = {
        "test_accuracy": round(float(accuracy), 4),
        "pointing_game": round(float(pointing_game(heatmaps, test_set.boxes, size)), 4),
        "mean_box_mass": round(float(box_masses(heatmaps, test_set.boxes, size).mean()), 4),
        "test_images": len(test_set),
        "train_images": len(train_set),
        "epochs": EPOCHS,
        "seed": 0,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "trained_seconds": round(seconds, 1),
        "date": datetime.date.today().isoformat(),
    }
    DATA.mkdir(exist_ok=True)
    weights = model.get_weights()
    np.savez_compressed(DATA / "demo_cnn.weights.npz",
                        **{f"w{i:03d}": w for i, w in enumerate(weights)})
    (DATA / "demo_cnn.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
