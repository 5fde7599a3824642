"""Engine speed: explain_predictions vs one compiled forward pass, and vs the peers.

16 images of 224x224 through keras.applications.MobileNetV2(weights=None), median of
repeated, interleaved runs in one process per backend. Under TensorFlow it also times
tf-keras-vis' Gradcam and 16 calls of eli5.explain_prediction (``pip install -e .[bench]``).

Usage: python benchmarks/bench_engine.py [--repeats 7] [--backends tensorflow,jax,torch]
Prints a markdown table (one row per backend).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

N_IMAGES = 16


def _median_ms(function, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(repeats: int) -> dict[str, float]:
    """Runs in a child process whose KERAS_BACKEND is set."""
    import keras
    import numpy as np

    import gradcam_callbacks as gc

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None)
    x = np.random.RandomState(0).rand(N_IMAGES, 224, 224, 3).astype("float32") * 2 - 1
    contenders = {
        "forward": lambda: model.predict_on_batch(x),
        "gradcam_callbacks": lambda: gc.explain_predictions(model, x),
    }
    if keras.backend.backend() == "tensorflow":
        import eli5
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.scores import CategoricalScore

        targets = [int(t) for t in model.predict_on_batch(x).argmax(-1)]
        visualizer = Gradcam(model, clone=True)
        contenders["tf-keras-vis"] = lambda: visualizer(
            CategoricalScore(targets), x, penultimate_layer="out_relu")
        contenders["eli5 (16 calls)"] = lambda: [
            eli5.explain_prediction(model, x[i:i + 1]) for i in range(N_IMAGES)]
    for function in contenders.values():  # warm up: trace and compile
        function()
        function()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):  # interleaved
        for name, function in contenders.items():
            samples[name].append(_median_ms(function, 1))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.repeats)))
        return 0
    rows = []
    for backend in args.backends.split(","):
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
            env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append((backend, json.loads(done.stdout.strip().splitlines()[-1])))
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{N_IMAGES} x 224x224, MobileNetV2(weights=None), median of {args.repeats}")
    print()
    print("| backend | forward pass (ms) | explain_predictions (ms) | ratio | tf-keras-vis (ms) "
          "| eli5, 16 calls (ms) | speed-up vs tf-keras-vis | speed-up vs eli5 |")
    print("|---|---|---|---|---|---|---|---|")
    for backend, r in rows:
        ours = r["gradcam_callbacks"]
        vis, eli = r.get("tf-keras-vis"), r.get("eli5 (16 calls)")
        print(f"| {backend} | {r['forward']:.0f} | {ours:.0f} | {ours / r['forward']:.2f}x | "
              f"{'-' if vis is None else f'{vis:.0f}'} | {'-' if eli is None else f'{eli:.0f}'} "
              f"| {'-' if vis is None else f'{vis / ours:.1f}x'} "
              f"| {'-' if eli is None else f'{eli / ours:.1f}x'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
