"""CAM methods' localisation quality: the pointing game of every method on the shipped demo model.

``gradcam_callbacks.demo.pretrained()`` (trained on cluttered digits), its 1000 held-out test
images (``load_data(num_train=1, num_test=1000)``), target = each image's true digit, layer
``last_conv`` (12x12). A hit is a map whose maximum falls in the digit's box
(:func:`gradcam_callbacks.watch.metrics.pointing_game`, no tolerance); the mean share of map mass in
the box is printed too. Each method runs through the engine's one entry
(:meth:`gradcam_callbacks.engine.Plan.run`); its seconds are its time minus one timed gradient
pass, and Score-CAM adds its batched scoring passes. Run by hand:

    KERAS_BACKEND=tensorflow python benchmarks/quality_methods.py [--num-test 1000]

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256,
                        help="Score-CAM's masked inputs per forward")
    args = parser.parse_args()

    import keras
    import numpy as np

    from gradcam_callbacks import demo
    from gradcam_callbacks.explain import plan
    from gradcam_callbacks.methods import METHODS
    from gradcam_callbacks.watch import metrics

    model = demo.pretrained()
    _, test_set = demo.load_data(num_train=1, num_test=args.num_test)
    x, labels, boxes = test_set.x, test_set.y, test_set.boxes
    size = x.shape[1:3]
    settings = plan(model, "last_conv")
    slots = settings.targets([[int(t)] for t in labels], len(x))
    accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == labels))
    settings.run(x, slots)  # builds the compiled pass
    started = time.perf_counter()
    settings.run(x, slots)
    pass_seconds = time.perf_counter() - started
    print(f"{keras.backend.backend()}, {len(x)} test images, model accuracy {accuracy:.3f}, "
          f"one gradient pass {pass_seconds:.1f} s\n")
    print("| method | pointing game | mean mass in box | seconds (after the pass) |")
    print("|---|---|---|---|")
    for name, cls in METHODS.items():
        if cls.needs_attention:  # rollout reads a transformer's attention: bench_transformers
            continue
        method = cls()
        started = time.perf_counter()
        [raw] = settings.run(x, slots, [method], args.batch_size)
        maps = raw.heatmaps[:, 0]
        seconds = time.perf_counter() - started - pass_seconds
        hits = metrics.pointing_game(maps, boxes, size)
        mass = float(np.mean(metrics.box_masses(maps, boxes, size)))
        print(f"| {method.title} (`{name}`) | {hits:.3f} | {mass:.3f} | {seconds:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
