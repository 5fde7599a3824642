"""CAM methods' quality on the shipped demo model: localisation and faithfulness, with a random
map and an edge map as the floor every method must clear.

``gradcam_callbacks.demo.pretrained()`` (trained on cluttered digits), its held-out test images
(``load_data(num_train=1, num_test=N)``), target = each image's true digit, layer
``last_conv`` (12x12). Per method (one engine pass; each further method reuses it, Score-CAM
adds its scoring passes) and two baselines that know nothing of the model, a uniform random
12x12 map and the Sobel edge magnitude of the input (48x48):

- pointing game and mean box mass (:mod:`gradcam_callbacks.metrics`, the digit's box);
- insertion from a black image (higher is better), deletion towards black and towards the
  blurred image (lower is better), 10 steps (:mod:`gradcam_callbacks.faithfulness`);
- ROAD combined, the mean over 10 %, ..., 90 % removed of (LeRF - MoRF) / 2 (higher is better).

Run by hand:

    KERAS_BACKEND=tensorflow python benchmarks/quality_faithfulness.py [--num-test 1000]

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256,
                        help="perturbed (and Score-CAM's masked) inputs per forward")
    parser.add_argument("--rows", nargs="*", default=None,
                        help="method names, 'random' and 'sobel' (default: all)")
    args = parser.parse_args()

    import keras
    import numpy as np

    from gradcam_callbacks import demo, faithfulness, metrics
    from gradcam_callbacks.explain import plan
    from gradcam_callbacks.methods import METHODS

    model = demo.pretrained()
    _, test_set = demo.load_data(num_train=1, num_test=args.num_test)
    x, labels, boxes = test_set.x, test_set.y, test_set.boxes
    targets = [int(t) for t in labels]
    size = x.shape[1:3]
    settings = plan(model, "last_conv")
    slots, counts = settings.targets([[t] for t in targets], len(x))
    accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == labels))
    raw = settings.run(x, slots, counts)
    rows = args.rows or [*METHODS, "random", "sobel"]
    print(f"{keras.backend.backend()}, {len(x)} test images, model accuracy {accuracy:.3f}\n")
    print("| map | pointing game | mass in box | insertion (black) ↑ | deletion (black) ↓ "
          "| deletion (blur) ↓ | ROAD ↑ | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in rows:
        started = time.perf_counter()
        if name == "random":
            maps, title = np.random.RandomState(0).rand(len(x), 12, 12), "random map (12x12)"
        elif name == "sobel":
            maps, title = faithfulness.sobel_maps(x), "Sobel edges of the input (48x48)"
        else:
            maps = settings.apply(raw, x, name, batch_size=args.batch_size).heatmaps[:, 0]
            title = f"{METHODS[name].title} (`{name}`)"
        common = {"batch_size": args.batch_size}
        found = {
            "pointing": metrics.pointing_game(maps, boxes, size),
            "mass": float(np.mean(metrics.box_masses(maps, boxes, size))),
            "insertion": faithfulness.insertion(model, x, maps, targets, **common).mean(),
            "deletion": faithfulness.deletion(model, x, maps, targets, **common).mean(),
            "blur": faithfulness.deletion(model, x, maps, targets, baseline="blur",
                                          **common).mean(),
            "road": faithfulness.road(model, x, maps, targets, **common).combined.mean(),
        }
        seconds = time.perf_counter() - started
        print(f"| {title} | {found['pointing']:.3f} | {found['mass']:.3f} | "
              f"{found['insertion']:.3f} | {found['deletion']:.3f} | {found['blur']:.3f} | "
              f"{found['road']:.3f} | {seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
