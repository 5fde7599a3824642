"""Command-line speed and memory: 2,000 small images through ``gradcam-callbacks explain``.

Makes 2,000 PNGs of 32x32 RGB pixels and a small CNN (saved as ``.keras``; ``--model cifar``,
the default, is the usual CIFAR-10 tutorial CNN, ``--model tiny`` two convolutions only) in a
temporary folder, then, under each backend asked for:

- in process: ``explain_predictions(model, x, batch_size=32)`` on the decoded arrays, timed
  after one warm-up call (no decoding, no drawing, no PNG encoding): images per second;
- the CLI, ``python -m gradcam_callbacks explain model.keras images/ --out DIR --quiet``, each
  run in its own process, on the first 200 and on all 2,000 images: wall time and peak
  resident memory (``ru_maxrss`` of that process). The CLI's throughput is its steady rate,
  from its first line in ``results.jsonl`` to its last (see :func:`run_cli`): the fixed cost
  of a run (imports, loading the model, the first compile) does not grow with the number of
  images, and on a shared machine it varies by more than the whole per-image work.

Goals (issue #4): CLI throughput >= 70% of in-process; peak memory with 2,000 images within
10% of peak memory with 200. Each rate is the best of ``--repeats`` runs.

Usage: python benchmarks/bench_cli.py [--backends tensorflow] [--model cifar|tiny] [--repeats 2]
       [--images 2000]
Prints a markdown table (one row per backend).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
SMALL = 200


def make_data(folder: Path, count: int) -> None:
    """``count`` PNGs (blobs on noise) and a small untrained CNN, in ``folder``."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    images = folder / "images"
    images.mkdir()
    for i in range(count):
        pixels = rng.randint(0, 80, (SIZE, SIZE, 3)).astype(np.uint8)
        y, x = rng.randint(4, SIZE - 12, 2)
        pixels[y:y + 8, x:x + 8] = rng.randint(150, 256, 3)
        Image.fromarray(pixels).save(images / f"{i:05d}.png")
    small = folder / "small"
    small.mkdir()
    for path in sorted(images.iterdir())[:SMALL]:
        os.link(path, small / path.name)


MODELS = {
    # the canonical small CNN of CIFAR-10 tutorials: two conv blocks, GAP, dense
    "cifar": """
h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
h = keras.layers.MaxPooling2D()(h)
h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
h = keras.layers.Conv2D(64, 3, padding="same")(h)
""",
    # the worst case for the CLI: almost no compute per image besides reading and writing
    "tiny": """
h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
h = keras.layers.Conv2D(32, 3, strides=2, padding="same")(h)
""",
}

MODEL_SCRIPT = """
import sys, keras
keras.utils.set_random_seed(0)
inputs = keras.Input(({size}, {size}, 3))
h = keras.layers.Rescaling(1 / 255)(inputs)
{body}
h = keras.layers.ReLU(name="feat")(h)
h = keras.layers.GlobalAveragePooling2D()(h)
model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h), name="small_cnn")
model.save(sys.argv[1])
"""


def in_process(folder: Path, repeats: int) -> float:
    """Images per second of explain_predictions on the decoded arrays (run in a child)."""
    import keras
    import numpy as np
    from PIL import Image

    from gradcam_callbacks import explain_predictions

    model = keras.saving.load_model(folder / "model.keras", compile=False)
    paths = sorted((folder / "images").iterdir())
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths])
    explain_predictions(model, x[:64], batch_size=32)  # trace and compile
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        explain_predictions(model, x, batch_size=32)
        best = min(best, time.perf_counter() - started)
    return len(x) / best


def run_cli(folder: Path, inputs: str, backend: str) -> tuple[float, float, int]:
    """One ``explain`` run in its own process: its steady rate (images/s), wall seconds and
    peak RSS (KiB).

    The rate counts from the moment ``results.jsonl`` gets its first line (imports done,
    model loaded, first batch compiled and written) to its last write, so start-up time,
    which varies by seconds on a busy machine, does not drown the per-image cost.
    """
    out = Path(tempfile.mkdtemp(dir=folder))
    results = out / "results.jsonl"
    command = [sys.executable, "-m", "gradcam_callbacks", "explain", str(folder / "model.keras"),
               str(folder / inputs), "--out", str(out), "--quiet"]
    first_seen = first_lines = None
    with open(out.with_suffix(".log"), "w") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=log, env=_env(backend))
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if first_seen is None and results.exists() and results.stat().st_size:
                first_seen = time.time()
                first_lines = results.read_bytes().count(b"\n")
            time.sleep(0.005)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0 or first_seen is None:
        raise RuntimeError(f"{' '.join(command)} failed:\n"
                           + out.with_suffix(".log").read_text()[-3000:])
    total = results.read_bytes().count(b"\n")
    rate = (total - first_lines) / (results.stat().st_mtime - first_seen)
    return rate, seconds, usage.ru_maxrss


def _env(backend: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path,
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", choices=sorted(MODELS), default="cifar",
                        help="cifar: a CIFAR-10-style small CNN (default); tiny: two convs")
    parser.add_argument("--child", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(in_process(Path(args.child), args.repeats)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder, args.images)
        for backend in args.backends.split(","):
            script = MODEL_SCRIPT.format(size=SIZE, body=MODELS[args.model])
            subprocess.run([sys.executable, "-c", script, str(folder / "model.keras")],
                           env=_env(backend), check=True, capture_output=True)
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(folder), "--repeats",
                 str(args.repeats)], env=_env(backend), capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            baseline = json.loads(done.stdout.strip().splitlines()[-1])
            small, full = [], []
            for _ in range(args.repeats):  # interleaved, best of each
                small.append(run_cli(folder, "small", backend))
                full.append(run_cli(folder, "images", backend))
            rate = max(r for r, _, _ in full)
            t_small, t_full = min(t for _, t, _ in small), min(t for _, t, _ in full)
            rss_small, rss_full = max(m for *_, m in small), max(m for *_, m in full)
            rows.append((backend, baseline, rate, t_small, t_full, rss_small, rss_full))
            (folder / "model.keras").unlink()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.images} PNGs of {SIZE}x{SIZE}, model {args.model!r}, batch 32, best of "
          f"{args.repeats}")
    print()
    print(f"| backend | in-process (img/s) | CLI (img/s) | ratio (goal >= 0.70) "
          f"| CLI wall, {SMALL} / {args.images} images (s) "
          f"| peak RSS, {SMALL} / {args.images} images (MiB) | RSS growth (goal <= 10%) |")
    print("|---|---|---|---|---|---|---|")
    for backend, base, rate, t_small, t_full, rss_small, rss_full in rows:
        print(f"| {backend} | {base:.0f} | {rate:.0f} | {rate / base:.2f} "
              f"| {t_small:.1f} / {t_full:.1f} | {rss_small / 1024:.0f} / {rss_full / 1024:.0f} "
              f"| {100 * (rss_full / rss_small - 1):+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
