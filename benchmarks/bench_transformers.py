"""Vision transformers: the token methods and attention rollout against a compiled forward.

A keras_hub ``ViTImageClassifier`` (224x224x3, 16x16 patches: 14x14 + class token, 4 blocks,
width 192, 3 heads; random weights) in this process's Keras backend (``KERAS_BACKEND``): the
median time of ``explain_predictions`` on 8 images per method (its automatic layer), and of
the same model's compiled forward on them (``score``: the engine's compiled, score-only
forward, what Score-CAM and faithfulness run), over interleaved repeats after a warm-up.
The ratio says what an explanation costs over a prediction. ``rollout`` runs on the forward
alone (it reads the attention weights there); the gradient methods add a backward pass. The
same is timed on a CNN (``MobileNetV2(weights=None)``, 224x224, Grad-CAM and HiResCAM at its
automatic layer), so the token methods' ratio reads next to the CNN methods' one. Run by hand:

    KERAS_BACKEND=jax python benchmarks/bench_transformers.py [--repeats 5]

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

METHODS = (None, "gradcam", "hirescam", "layercam", "rollout", "grad-rollout")
CNN_METHODS = ("gradcam", "hirescam")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    import keras
    import keras_hub
    import numpy as np

    import gradcam_callbacks as gc
    from gradcam_callbacks import backends
    from gradcam_callbacks.explain import plan

    keras.utils.set_random_seed(0)
    model = keras_hub.models.ViTImageClassifier(
        backbone=keras_hub.models.ViTBackbone(
            image_shape=(224, 224, 3), patch_size=16, num_layers=4, num_heads=3,
            hidden_dim=192, mlp_dim=768),
        num_classes=10)
    x = np.random.default_rng(0).random((args.images, 224, 224, 3)).astype("float32")
    chosen = plan(model).layer
    forward = backends.score_function(model, chosen.layer, chosen.path, 0)
    runs = {"forward (compiled)": lambda: forward(x)}
    for method in METHODS:
        name = f"default ({plan(model).resolve(None).name})" if method is None else method
        runs[name] = lambda method=method: gc.explain_predictions(model, x, method=method)
    cnn = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    cnn_layer = plan(cnn).layer
    cnn_forward = backends.score_function(cnn, cnn_layer.layer, cnn_layer.path, 0)
    runs["CNN forward (compiled)"] = lambda: cnn_forward(x)
    for method in CNN_METHODS:
        runs[f"CNN {method}"] = lambda method=method: gc.explain_predictions(cnn, x,
                                                                            method=method)
    for run in runs.values():  # warm-up: compile every pass once
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    import os

    base = statistics.median(times["forward (compiled)"])
    cnn_base = statistics.median(times["CNN forward (compiled)"])
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, {args.images} images "
          f"224x224, layer {chosen.path}; load average {os.getloadavg()}")
    print("| run | median s | vs forward |")
    print("|---|---:|---:|")
    for name, found in times.items():
        median = statistics.median(found)
        ratio = median / (cnn_base if name.startswith("CNN") else base)
        print(f"| {name} | {median:.3f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
