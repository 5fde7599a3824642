"""CAM methods' quality on the shipped demo model: localisation and faithfulness, with a random
map and an edge map as the floor every method must clear.

``gradcam_callbacks.demo.pretrained()`` (trained on cluttered digits), its held-out test images
(``load_data(num_train=1, num_test=N)``), target = each image's true digit, layer
``last_conv`` (12x12). Per method (one engine pass; each further method reuses it, Score-CAM
adds its scoring passes) and two baselines that know nothing of the model, a uniform random
12x12 map and the Sobel edge magnitude of the input (48x48):

- pointing game and mean box mass (:mod:`gradcam_callbacks.watch.metrics`, the digit's box);
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
    parser.add_argument("--xplique", action="store_true",
                        help="instead: Grad-CAM's mean insertion and deletion (black, 10 steps) "
                        "here and by Xplique 2.0.2 (pip install --no-deps xplique==2.0.2 "
                        "deprecated opencv-python-headless), TensorFlow only")
    parser.add_argument("--sanity", action="store_true",
                        help="instead: the cascading-randomisation sanity check of every "
                        "method, mean Spearman correlation per randomised layer")
    args = parser.parse_args()

    import keras
    import numpy as np

    from gradcam_callbacks import demo, faithfulness
    from gradcam_callbacks.explain import plan
    from gradcam_callbacks.methods import METHODS
    from gradcam_callbacks.watch import metrics

    model = demo.pretrained()
    _, test_set = demo.load_data(num_train=1, num_test=args.num_test)
    x, labels, boxes = test_set.x, test_set.y, test_set.boxes
    targets = [int(t) for t in labels]
    size = x.shape[1:3]
    settings = plan(model, "last_conv")
    slots = settings.targets([[t] for t in targets], len(x))
    accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == labels))
    [raw] = settings.run(x, slots)
    # rollout reads a transformer's attention; this is a CNN (bench_transformers has them)
    cnn_methods = [name for name, cls in METHODS.items() if not cls.needs_attention]
    if args.xplique:
        return compare_with_xplique(model, x, targets, raw.heatmaps[:, 0])
    if args.sanity:
        check = faithfulness.sanity_check(model, x, targets, methods=cnn_methods,
                                          layer="last_conv", batch_size=args.batch_size)
        print("| randomised down to | " + " | ".join(cnn_methods) + " |")
        print("|---|" + "---:|" * len(cnn_methods))
        means = {name: check.mean(name) for name in cnn_methods}
        for step, layer in enumerate(check.layers):
            print(f"| `{layer}` | " + " | ".join(f"{means[n][step]:.2f}" for n in cnn_methods)
                  + " |")
        return 0
    rows = args.rows or [*cnn_methods, "random", "sobel"]
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
            method = METHODS[name]()
            [found_raw] = settings.run(x, slots, [method], args.batch_size)
            maps, title = found_raw.heatmaps[:, 0], f"{method.title} (`{name}`)"
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


def compare_with_xplique(model, x, targets, maps) -> int:
    """Print the mean areas of :mod:`gradcam_callbacks.faithfulness` and of Xplique 2.0.2's
    ``Deletion`` / ``Insertion`` (imported without its package ``__init__``, which needs
    tensorflow-probability and tf_keras) on the same maps, resized to the images."""
    import importlib.util
    import pathlib
    import sys
    import types

    import numpy as np

    from gradcam_callbacks import faithfulness
    from gradcam_callbacks.watch.metrics import resize_heatmaps

    root = pathlib.Path(importlib.util.find_spec("xplique").origin).parent
    for name, path in (("xplique", root), ("xplique.metrics", root / "metrics")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    from xplique.metrics import fidelity

    one_hot = np.eye(10, dtype="float32")[targets]
    resized = resize_heatmaps(maps, x.shape[1:3])
    ties = np.mean([resized[n].size - len(np.unique(resized[n])) for n in range(len(x))])
    print(f"{len(x)} images; on average {ties:.0f} of {resized[0].size} pixels tie with "
          "another pixel of their map\n")
    print("| metric | gradcam_callbacks | Xplique 2.0.2 | difference | Xplique, stable "
          "argsort | difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ours in (("Insertion", faithfulness.insertion),
                       ("Deletion", faithfulness.deletion)):
        mine = float(ours(model, x, maps, targets).mean())
        found = []
        for stable in (False, True):
            # Xplique ranks by np.argsort (numpy's default sort: unstable, so its order
            # within ties is the CPU's); with stable=True it gets a stable argsort
            fidelity.np = _numpy_with_stable_argsort() if stable else np
            metric = getattr(fidelity, name)(model, x, one_hot, batch_size=256)
            reference = float(metric.evaluate(resized))
            found += [f"{reference:.6f}", f"{abs(mine - reference):.1e}"]
        print(f"| {name.lower()} | {mine:.6f} | {' | '.join(found)} |")
    return 0


def _numpy_with_stable_argsort():
    import types

    import numpy as np

    shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    shim.argsort = lambda a, axis=-1: np.argsort(a, axis=axis, kind="stable")
    return shim


if __name__ == "__main__":
    raise SystemExit(main())
