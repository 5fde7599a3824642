"""A small keras_hub ViT learns where a digit is, and the maps show it:
``python examples/vit_digit_patch.py [--epochs N] [--out DIR]``.

The task, from bundled data (scikit-learn's 8x8 digits): a 48x48 canvas holds one real digit
of four classes (0, 1, 4, 7) at a random spot of the 4-pixel grid, among three distractors:
digits whose pixels were shuffled (the same ink, no shape). The label is the real digit's
class, so the model must find it; the pointing game asks whether a map's peak lies on it
(chance: 4 of 144 patch cells, 0.03). A 3-block keras_hub ``ViTBackbone`` (4x4 patches,
width 64) behind its own classifier head learns it to about 0.99 in a few epochs on a CPU.

Run as a script it trains, watches four probes with ``GradCamCallback`` (a contact sheet
over epochs, per method), prints the pointing game of every method at candidate layers,
trained and untrained: the table of docs/methods.md ("Vision transformers"), and saves the
trained weights (``--save``, default ``tests/data/vit_digit_patch.npz``, about 0.4 MB):
tests/test_vit_trained.py loads them into :func:`build_model` and checks the pointing game
without training.
"""

from __future__ import annotations

import argparse
import os
import time

import keras
import numpy as np

CLASSES = (0, 1, 4, 7)
SIDE, CELL, DISTRACTORS = 48, 4, 3


def make_data(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x (N, 48, 48, 1) float32 in [0, 1], y (N,) int in [0, 4), boxes (N, 4))``: the real
    digit's box as ``(top, left, bottom, right)`` pixels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pools = [digits.images[digits.target == c] / 16.0 for c in CLASSES]
    every = digits.images / 16.0
    x = np.zeros((count, SIDE, SIDE, 1), np.float32)
    y = rng.integers(0, len(CLASSES), count)
    boxes = np.zeros((count, 4), np.int32)
    spots = (SIDE - 8) // CELL + 1
    for n in range(count):
        cells = rng.choice(spots * spots, DISTRACTORS + 1, replace=False)
        taken = np.zeros((spots, spots), bool)
        placed = 0
        for cell in cells:
            row, col = divmod(int(cell), spots)
            if taken[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].any():
                continue  # no overlap: 8x8 pieces two cells apart
            taken[row, col] = True
            top, left = row * CELL, col * CELL
            if placed == 0:
                piece = pools[y[n]][rng.integers(len(pools[y[n]]))]
                boxes[n] = (top, left, top + 8, left + 8)
            else:
                piece = rng.permutation(every[rng.integers(len(every))].ravel()).reshape(8, 8)
            x[n, top:top + 8, left:left + 8, 0] = piece
            placed += 1
    x += rng.normal(0, 0.05, x.shape).astype(np.float32)
    return np.clip(x, 0, 1), y.astype(np.int32), boxes


def build_model(seed: int = 0) -> tuple[keras.Model, keras.Model]:
    """``(classifier, trainable wrapper)``: keras_hub's ``ViTImageClassifier`` (3 blocks, 4x4
    patches, width 64, logits) and a functional model around it that trains with plain Keras
    (keras_hub's task models convert their inputs in ``fit`` through tf.data or grain)."""
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(SIDE, SIDE, 1), patch_size=CELL, num_layers=3, num_heads=4,
        hidden_dim=64, mlp_dim=128, name="vit_backbone")
    classifier = keras_hub.models.ViTImageClassifier(
        backbone=backbone, num_classes=len(CLASSES), name="vit_digits")
    inputs = keras.Input((SIDE, SIDE, 1))
    wrapper = keras.Model(inputs, classifier(inputs), name="trainable")
    wrapper.compile(keras.optimizers.Adam(1e-3),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    return classifier, wrapper


WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                       "data", "vit_digit_patch.npz")


def save_weights(classifier: keras.Model, path: str = WEIGHTS) -> None:
    """The classifier's weights, in ``classifier.weights`` order, as a compressed npz."""
    np.savez_compressed(path, *[keras.ops.convert_to_numpy(w) for w in classifier.weights])


def load_weights(classifier: keras.Model, path: str = WEIGHTS) -> keras.Model:
    """:func:`build_model`'s classifier with the weights :func:`save_weights` wrote."""
    with np.load(path) as stored:
        classifier.set_weights([stored[f"arr_{i}"] for i in range(len(stored.files))])
    return classifier


SIDE_BY_SIDE = ("rollout", "grad-rollout", "hirescam", "layercam", "gradcam")


def methods_figure(classifier: keras.Model, x: np.ndarray, boxes: np.ndarray, path: str,
                   scale: int = 3) -> None:
    """A PNG: a row per image, the input (the real digit boxed in red), then each method of
    :data:`SIDE_BY_SIDE` laid over it (at the automatic layer), titled."""
    from PIL import Image, ImageDraw

    import gradcam_callbacks as gc
    from gradcam_callbacks.image import label_font

    side, title = SIDE * scale, 14
    panels = [[] for _ in x]
    for n, doc in enumerate(x):
        picture = Image.fromarray((doc[..., 0] * 255).astype(np.uint8)).convert("RGB")
        panels[n].append(("input", picture.resize((side, side), Image.NEAREST)))
    for method in SIDE_BY_SIDE:
        for n, expl in enumerate(gc.explain_predictions(classifier, x, method=method)):
            panels[n].append((expl.method, gc.format_as_image(expl).convert("RGB").resize(
                (side, side), Image.NEAREST)))
    sheet = Image.new("RGB", (len(panels[0]) * side, len(x) * (side + title)), "white")
    draw, font = ImageDraw.Draw(sheet), label_font(11)
    for row, (items, (top, left, bottom, right)) in enumerate(zip(panels, boxes)):
        for col, (name, panel) in enumerate(items):
            x0, y0 = col * side, row * (side + title)
            sheet.paste(panel, (x0, y0 + title))
            draw.text((x0 + 2, y0 + 1), name, fill="black", font=font)
            draw.rectangle((x0 + left * scale, y0 + title + top * scale,
                            x0 + right * scale - 1, y0 + title + bottom * scale - 1),
                           outline="red")
    sheet.save(path, optimize=True)


def pointing_game(heatmaps: np.ndarray, boxes: np.ndarray) -> float:
    """The share of maps ``(N, h, w)`` whose peak cell lies in its box (pixels)."""
    hits = 0
    for heatmap, (top, left, bottom, right) in zip(heatmaps, boxes):
        row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        scale_r, scale_c = SIDE / heatmap.shape[0], SIDE / heatmap.shape[1]
        centre = ((row + 0.5) * scale_r, (col + 0.5) * scale_c)
        hits += top <= centre[0] < bottom and left <= centre[1] < right
    return hits / len(heatmaps)


def candidates(classifier: keras.Model) -> list[str]:
    """The token layers measured: each block's normed tokens (``ln_1``, what its attention
    reads) and output, and the encoder's final norm."""
    encoder = "vit_backbone/vit_encoder"
    blocks = [f"{encoder}/transformer_block_{i}" for i in (1, 2, 3)]
    return ([f"{b}/ln_1" for b in blocks] + blocks + [f"{encoder}/ln"])


def measure(classifier: keras.Model, x: np.ndarray, boxes: np.ndarray
            ) -> dict[tuple[str, str], float]:
    """Pointing game per (method, layer); the attention methods once (their own layers)."""
    import gradcam_callbacks as gc

    found = {}
    for method in ("gradcam", "hirescam", "layercam", "gradcam++"):
        for layer in candidates(classifier):
            try:
                maps = [e.targets[0].heatmap for e in gc.explain_predictions(
                    classifier, x, layer=layer, method=method, batch_size=100)]
            except ValueError as error:  # a block returns no single tensor
                print(f"  {method} @ {layer}: {error}")
                continue
            found[(method, layer)] = pointing_game(np.stack(maps), boxes)
    for method in ("rollout", "grad-rollout"):
        maps = [e.targets[0].heatmap for e in gc.explain_predictions(
            classifier, x, method=method, batch_size=100)]
        found[(method, "attention")] = pointing_game(np.stack(maps), boxes)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default=os.path.join("logs", "vit_digit_patch"))
    parser.add_argument("--save", default=WEIGHTS, help="where the trained weights go")
    parser.add_argument("--weights", help="load these weights (--save's file) instead of "
                        "training; then only --figure is drawn")
    parser.add_argument("--figure", help="also draw the methods side by side for four test "
                        "images into this PNG")
    parser.add_argument("--no-table", action="store_true",
                        help="skip the table (every method at every candidate layer)")
    args = parser.parse_args(argv)
    import gradcam_callbacks as gc

    x_test, y_test, boxes_test = make_data(300, seed=1)
    classifier, wrapper = build_model()
    if args.weights:
        load_weights(classifier, args.weights)
        if args.figure:
            methods_figure(classifier, x_test[:4], boxes_test[:4], args.figure)
        return 0
    x, y, boxes = make_data(6000, seed=0)
    untrained = {} if args.no_table else measure(classifier, x_test, boxes_test)
    cam = gc.GradCamCallback(x_test[:4], targets=None,
                             log_dir=args.out, method=["rollout", "hirescam", "layercam"],
                             probe_boxes=[tuple(int(v) for v in b[[1, 0, 3, 2]])
                                          for b in boxes_test[:4]])
    started = time.monotonic()
    history = wrapper.fit(x, y, epochs=args.epochs, batch_size=64, verbose=2,
                          validation_data=(x_test, y_test), callbacks=[cam])
    print(f"trained in {time.monotonic() - started:.0f} s; test accuracy "
          f"{history.history['val_accuracy'][-1]:.3f}")
    save_weights(classifier, args.save)
    print(f"saved the weights to {args.save} ({os.path.getsize(args.save)} bytes)")
    if args.figure:
        methods_figure(classifier, x_test[:4], boxes_test[:4], args.figure)
    if args.no_table:
        return 0
    trained = measure(classifier, x_test, boxes_test)
    print("| method | layer | pointing game, trained | untrained |")
    print("|---|---|---:|---:|")
    for key in trained:
        print(f"| {key[0]} | `{key[1]}` | {trained[key]:.2f} | {untrained[key]:.2f} |")
    print(f"contact sheets: gradcam-callbacks sheet {cam.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
