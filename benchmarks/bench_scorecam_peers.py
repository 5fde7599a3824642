"""Score-CAM against tf-keras-vis' ``Scorecam``: time and peak memory, same model, same process.

keras.applications.MobileNetV2(weights=None) at ``--size`` (default 224), ``--images`` random
images (default 4), layer ``out_relu``, each image's top class. Both tools get the very same
Keras 3 model object (tf-keras-vis 0.8.7 runs Keras 3 models under TensorFlow 2.16+, as
``bench_engine.py``'s Grad-CAM comparison does), so the weights are the same by construction.
``--channels N`` is our ``max_channels=N`` and tf-keras-vis' ``max_N=N``; ``--channels 0``
scores every channel (1280) in both. Both run with their default chunking (ours: 2 MiB of
masked inputs per forward; tf-keras-vis: ``model.predict(batch_size=32)`` over all masked
inputs, built at once). Runs are interleaved ABBA (ours, theirs, theirs, ours, ...) after two
small warm-up calls of each (which trace every compiled forward).

Masked inputs scored: ours N per image; tf-keras-vis takes the union over the images of each
image's top-N channels and scores that union on every image, so it may score more.

Memory: a psutil sampler thread reads the process's RSS every 5 ms during each call; the
table gives the peak minus the RSS just before the call (tracemalloc does not see
TensorFlow's allocations). TensorFlow keeps some memory between calls, so a tool's first run
can read higher than its later ones.

    KERAS_BACKEND=tensorflow python benchmarks/bench_scorecam_peers.py [--channels 128]
        [--size 224] [--images 4] [--repeats 2]

Needs ``pip install -e .[bench]`` (tf-keras-vis, psutil). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

LAYER = "out_relu"


class PeakRss:
    """Peak RSS rise (bytes) over the ``with`` block, sampled by a thread every 5 ms.

    Example:
        >>> with PeakRss() as peak:  # doctest: +SKIP
        ...     work()
        >>> peak.rise_mib  # doctest: +SKIP
        412.0
    """

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.base = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def rise_mib(self) -> float:
        return (self.peak - self.base) / 2 ** 20


def measure(function: Callable[[], Any]) -> tuple[float, float]:
    """``(seconds, peak RSS rise in MiB)`` of one call."""
    with PeakRss() as peak:
        started = time.perf_counter()
        function()
        seconds = time.perf_counter() - started
    return seconds, peak.rise_mib


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def their_channel_count(activations, channels: int | None) -> int:
    """How many channels tf-keras-vis scores per image: the union over the images of each
    image's ``channels`` channels of largest spatial standard deviation."""
    import numpy as np

    count = activations.shape[-1]
    if not channels or channels >= count:
        return count
    spread = activations.std(axis=(1, 2))
    top = np.argsort(-spread, axis=-1)[:, :channels]
    return len(np.unique(top))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=128, help="0: all channels")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each tool (ABBA)")
    args = parser.parse_args()

    import keras
    import numpy as np
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    import gradcam_callbacks as gc

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("tf-keras-vis needs KERAS_BACKEND=tensorflow")
    keras.config.disable_interactive_logging()  # tf-keras-vis' predict progress bars
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(args.size, args.size, 3))
    x = np.random.RandomState(0).rand(args.images, args.size, args.size, 3).astype("float32")
    x = x * 2 - 1
    targets = [int(t) for t in model.predict_on_batch(x).argmax(-1)]
    channels = args.channels or None
    visualizer = Scorecam(model)

    def ours(budget: int | None = channels) -> Any:
        return gc.explain_predictions(model, x, targets=targets, layer=LAYER, method="scorecam",
                                      max_channels=budget)

    def theirs(budget: int | None = channels) -> Any:
        return visualizer(CategoricalScore(targets), x, penultimate_layer=LAYER, max_N=budget)

    activations = keras.Model(model.inputs, model.get_layer(LAYER).output).predict_on_batch(x)
    scored = {"gradcam_callbacks": args.images * min(channels or 10 ** 9, activations.shape[-1]),
              "tf-keras-vis": args.images * their_channel_count(activations, channels)}
    print(f"keras {keras.__version__}, MobileNetV2(weights=None) {args.size}x{args.size}, "
          f"{args.images} images, channels {channels or 'all'}; {load()}", flush=True)
    for function in (ours, theirs):  # two shapes each, so that TF's relaxed traces are built
        function(1)
        function(2)
    contenders = {"gradcam_callbacks": ours, "tf-keras-vis": theirs}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    order = list(contenders)
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            seconds, rise = measure(contenders[name])
            runs[name].append((seconds, rise))
            print(f"  run {repeat}: {name} {seconds:.1f} s, peak RSS +{rise:.0f} MiB; {load()}",
                  flush=True)
    print("\n| tool | masked inputs scored | median s | runs (s) | peak RSS rise MiB |\n"
          "|---|---:|---:|---|---:|")
    medians = {}
    for name, values in runs.items():
        medians[name] = statistics.median(s for s, _ in values)
        print(f"| {name} | {scored[name]} | {medians[name]:.1f} | "
              f"{', '.join(f'{s:.1f}' for s, _ in values)} | {max(r for _, r in values):.0f} |")
    print(f"\nspeed-up: {medians['tf-keras-vis'] / medians['gradcam_callbacks']:.2f}x; {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
