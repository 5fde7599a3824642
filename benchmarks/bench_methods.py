"""CAM methods' speed: each gradient method vs Grad-CAM, and Score-CAM's time and memory.

keras.applications.MobileNetV2(weights=None), 224x224 inputs, in this process's Keras backend
(``KERAS_BACKEND``). Gradient methods: ``explain_predictions`` on 16 images, median of
interleaved repeats, and the ratio to Grad-CAM's time. Score-CAM: 4 images, ``max_channels``
128 (and with ``--all-channels`` all 1280), one timed call after a warm-up, with the process's
peak RSS (run ``--part scorecam`` alone for a peak that is Score-CAM's: the 16-image gradient
pass keeps every activation for its backward pass, gigabytes on MobileNetV2). Run by hand:

    KERAS_BACKEND=tensorflow python benchmarks/bench_methods.py [--repeats 5] [--part gradient]
    KERAS_BACKEND=tensorflow python benchmarks/bench_methods.py --part scorecam [--all-channels]

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam")


def _peak_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-channels", action="store_true",
                        help="also run Score-CAM on all 1280 channels (minutes on a CPU)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="Score-CAM's masked inputs per forward (default: 2 MiB of them)")
    parser.add_argument("--part", choices=("gradient", "scorecam", "both"), default="both")
    parser.add_argument("--max-channels", type=int, default=128)
    args = parser.parse_args()

    import keras
    import numpy as np

    import gradcam_callbacks as gc

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None)
    x = np.random.RandomState(0).rand(16, 224, 224, 3).astype("float32") * 2 - 1
    print(f"backend {keras.backend.backend()}, keras {keras.__version__}\n")
    if args.part in ("gradient", "both"):
        gradient_methods(gc, model, x, args.repeats)
    if args.part in ("scorecam", "both"):
        scorecam(gc, model, x, args)
    return 0


def gradient_methods(gc, model, x, repeats: int) -> None:
    """Median time of ``explain_predictions`` on 16 images per gradient method."""
    for method in GRADIENT_METHODS:  # warm up: trace and compile
        gc.explain_predictions(model, x, method=method)
    samples: dict[str, list[float]] = {m: [] for m in GRADIENT_METHODS}
    for _ in range(repeats):  # interleaved
        for method in GRADIENT_METHODS:
            samples[method].append(_seconds(lambda m=method: gc.explain_predictions(
                model, x, method=m)))
    base = statistics.median(samples["gradcam"])
    print("| method (16 x 224x224) | median ms | vs Grad-CAM |\n|---|---:|---:|")
    for method, values in samples.items():
        median = statistics.median(values)
        print(f"| {method} | {median * 1000:.0f} | {median / base:.2f}x |")


def scorecam(gc, model, x, args: argparse.Namespace) -> None:
    """One timed Score-CAM call on 4 images per channel budget, after a warm-up."""
    print(f"\n| Score-CAM (4 x 224x224, batch_size {args.batch_size}) | channels scored | "
          "seconds | peak RSS MiB |\n|---|---:|---:|---:|")
    budgets = [args.max_channels] + ([None] if args.all_channels else [])
    # warm-up on the same 4 images (the gradient pass's shape), two chunk shapes: TF then
    # traces a forward for any chunk, so the timed calls trace nothing
    for warm_up in (1, 2):
        gc.explain_predictions(model, x[:4], method="scorecam", max_channels=warm_up,
                               batch_size=args.batch_size)
    print(f"| (model built, score forward compiled) | - | - | {_peak_rss_mib():.0f} |")
    for budget in budgets:
        seconds = _seconds(lambda b=budget: gc.explain_predictions(
            model, x[:4], method="scorecam", max_channels=b, batch_size=args.batch_size))
        print(f"| max_channels={budget} | {4 * (budget or 1280)} | {seconds:.1f} | "
              f"{_peak_rss_mib():.0f} |")


if __name__ == "__main__":
    sys.exit(main())
