"""GradCamCallback's cost: time per logged epoch vs the epoch's training time, and resident
memory over many logged epochs, on the demo model with 16 probes.

The time counted is what the callback takes on the training thread at an epoch end: the
Grad-CAM pass, plus any wait for the background writer to finish the previous epoch
(back-pressure). Drawing and PNG encoding overlap the next epoch's training on another
thread; on a machine with spare cores that costs the training thread nothing, on a busy one
it competes for CPU, which the epoch time shows. Before printing, the benchmark counts the
images in the event files: every logged epoch must have written all of them.

``--faithfulness``: the callback also scores the maps' insertion and deletion at every logged
epoch (``GradCamCallback(faithfulness=True)``); that part of the time is measured on its own,
with the compiled forwards it ran (:func:`gradcam_callbacks.backends.passes_run`) and the
perturbed inputs they scored, and the event files must hold its scalars at every logged epoch.

Usage: KERAS_BACKEND=jax python benchmarks/bench_callback.py [--epochs 4] [--logs 200]
[--faithfulness]
Prints the load average and a markdown table row.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import keras

from gradcam_callbacks import GradCamCallback, backends, demo
from gradcam_callbacks.faithfulness import DEFAULT_METRICS
from gradcam_callbacks.watch import tags
from gradcam_callbacks.watch.tensorboard import read_events


def rss_mb() -> float:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Timed(GradCamCallback):
    """The real callback, with the time of each logged step recorded."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds: list[float] = []
        self.faithful_seconds: list[float] = []
        self.faithful_passes: list[int] = []

    def _log(self, step: int) -> None:
        started = time.perf_counter()
        super()._log(step)
        self.seconds.append(time.perf_counter() - started)

    def _faithfulness(self, *args, **kwargs):
        started, passes = time.perf_counter(), backends.passes_run()
        found = super()._faithfulness(*args, **kwargs)
        self.faithful_seconds.append(time.perf_counter() - started)
        self.faithful_passes.append(backends.passes_run() - passes)
        return found


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(time.perf_counter() - self.started)

    def on_train_begin(self, logs=None):
        self.durations: list[float] = []


def count_images(log_dir: str, expected: int) -> None:
    """Fail unless the event files hold exactly ``expected`` images: no number without them."""
    found = sum(1 for record in read_events(log_dir) if record.kind == "image")
    if found != expected:
        raise SystemExit(f"expected {expected} images in {log_dir}, found {found}: "
                         "the callback did not write what it timed")


def count_faithfulness(log_dir: str, steps: int) -> None:
    """Fail unless every logged step has the mean of each default faithfulness metric."""
    for metric in DEFAULT_METRICS:
        found = sum(1 for r in read_events(log_dir) if r.tag == tags.faithfulness_tag(metric))
        if found != steps:
            raise SystemExit(f"expected {steps} {metric} means in {log_dir}, found {found}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--logs", type=int, default=200)
    parser.add_argument("--faithfulness", action="store_true",
                        help="GradCamCallback(faithfulness=True): insertion and deletion too")
    args = parser.parse_args()
    print(f"Load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    keras.utils.set_random_seed(0)
    train_set, test_set = demo.load_data()
    model = demo.build_model(train_set.x.shape[1:])
    with tempfile.TemporaryDirectory() as root:
        log_dir = os.path.join(root, "gradcam")  # and gradcam-2 for the second "fit"
        cam = Timed((test_set.x[:16], test_set.y[:16]), targets="true",
                    probe_boxes=test_set.boxes[:16], log_dir=log_dir, log_initial=False,
                    faithfulness=args.faithfulness)
        timer = EpochTimer()  # listed first: its epoch end comes before the callback's
        demo.train(model, train_set, epochs=args.epochs, callbacks=[timer, cam], verbose=0)
        epoch = statistics.median(timer.durations[1:])  # the first epoch compiles
        logged = statistics.median(cam.seconds[1:])
        images_per_step = 2 * 16 + 1  # probe image and timeline per probe, and the grid
        count_images(log_dir, args.epochs * images_per_step)
        if args.faithfulness:
            count_faithfulness(log_dir, args.epochs)
            faithful = statistics.median(cam.faithful_seconds[1:])  # the first compiles
            passes = sorted(set(cam.faithful_passes))
        # Memory: many more logged epochs on the trained model, no training in between.
        cam._start_fit()  # as a second fit would: a run directory of its own
        cam._log(args.epochs + 1)
        cam.flush()
        before = rss_mb()
        for step in range(args.logs):
            cam._log(args.epochs + 2 + step)
        cam.flush()
        after = rss_mb()
        cam.on_train_end()
        # a run directory per fit: these steps went to a second one (log_dir-2)
        count_images(cam.run_dir, (1 + args.logs) * images_per_step)
    print(f"Load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores; demo model, 16 probes, "
          f"{len(train_set)} training images per epoch")
    if not args.faithfulness:
        print("| backend | epoch (s) | callback per logged epoch (ms) | share | "
              f"RSS growth over {args.logs} logged epochs (MB) |")
        print("|---|---|---|---|---|")
        print(f"| {keras.backend.backend()} | {epoch:.1f} | {logged * 1000:.0f} | "
              f"{logged / epoch:.1%} | {after - before:+.1f} |")
        return
    inputs = len(DEFAULT_METRICS) * 16 * 11  # 2 metrics x 16 probes x (10 steps + 1)
    print("| backend | epoch (s) | callback per logged epoch (ms) | of which faithfulness (ms) "
          "| faithfulness share | callback share | compiled forwards per logged epoch "
          f"(perturbed inputs) | RSS growth over {args.logs} logged epochs (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {keras.backend.backend()} | {epoch:.1f} | {logged * 1000:.0f} | "
          f"{faithful * 1000:.0f} | {faithful / epoch:.1%} | {logged / epoch:.1%} | "
          f"{'/'.join(map(str, passes))} ({inputs}) | {after - before:+.1f} |")


if __name__ == "__main__":
    main()
