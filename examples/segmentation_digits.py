"""Explain a segmenter: which pixels made the model paint the digit with its class?

``python examples/segmentation_digits.py [--epochs N] [--out segmentation.png]``

A small fully-convolutional network labels every pixel of a cluttered-digits image
(`gradcam_callbacks.demo.datasets`, made offline) with one of 11 classes: 0 for background,
``1 + d`` for the strokes of digit ``d``. Eleven classes rather than two (digit or not)
because then painting a pixel "3" takes recognising the digit, and the distractors, made
of strokes and of fragments of other digits, must not be painted "3": the map for the
digit's class is the segmenter's evidence for that digit, not just for "something bright".

Grad-CAM with ``SegmentationScore(1 + d, mask)`` explains the sum of the class's logits
over the digit's strokes (``make_cluttered_digits(masks=True)``), at the network's
bottleneck. The example reports the share of each map's mass inside the stroke mask
against the mask's share of the image (the mass a flat map would have there), for the
trained model and for the same model untrained, and saves a picture.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import digits_common
import keras
import numpy as np
from PIL import Image

from gradcam_callbacks import explain_predictions
from gradcam_callbacks.demo.datasets import ClutteredDigits
from gradcam_callbacks.image import captioned, format_as_image, grid, side_by_side
from gradcam_callbacks.targets import SegmentationScore
from gradcam_callbacks.watch.metrics import mask_masses, mask_pointing_hits

#: The layer explained: the bottleneck, where the digit is recognised (a quarter of the size).
LAYER = "bottleneck"
#: Output classes: background, then the ten digits.
CLASSES = 11
#: Loss weight of a stroke pixel against a background pixel's 1.
STROKE_WEIGHT = 10.0


@dataclass(frozen=True)
class Scores:
    """How well one segmenter's maps sit on the digit (means over the test images)."""

    mass: float  #: share of the map's mass on the digit's strokes
    mask_share: float  #: the strokes' share of the image: the mass of a flat map
    pointing: float  #: share of maps whose maximum lies on the strokes
    accuracy: float  #: share of stroke pixels painted with the digit's class

    def __str__(self) -> str:
        return (f"mass on strokes {self.mass:.3f} vs stroke share {self.mask_share:.3f} "
                f"(ratio {self.mass / self.mask_share:.1f}), pointing {self.pointing:.2f}, "
                f"stroke pixels painted with the digit's class {self.accuracy:.2f}")


def pixel_labels(data: ClutteredDigits) -> np.ndarray:
    """The segmenter's target: int64 ``(n, H, W)``, 0 off the strokes, ``1 + digit`` on them.

    Example:
        >>> data = load_data(2, 1)[0]
        >>> sorted(set(np.unique(pixel_labels(data)[0]).tolist()))  == [0, 1 + int(data.y[0])]
        True
    """
    return np.where(data.masks, data.y[:, None, None] + 1, 0).astype(np.int64)


def load_data(num_train: int, num_test: int, canvas_size: int = 32, digit_size: int = 12,
              seed: int = 0) -> tuple[ClutteredDigits, ClutteredDigits]:
    """Train and test cluttered digits with stroke masks (test digits unseen in training).

    Example:
        >>> train_set, test_set = load_data(8, 4)
        >>> train_set.masks.shape, test_set.x.shape
        ((8, 32, 32), (4, 32, 32, 1))
    """
    return digits_common.load_data(num_train, num_test, canvas_size, digit_size, seed,
                                   masks=True)


def build_segmenter(input_shape: tuple[int, ...]) -> keras.Model:
    """A small encoder-decoder: two pooled 3x3 blocks, a bottleneck, two upsampled blocks
    (the first joined by a skip connection), and a 1x1 convolution to 11 logits per pixel.

    Example:
        >>> model = build_segmenter((32, 32, 1))
        >>> tuple(model.get_layer(LAYER).output.shape), tuple(model.output.shape)
        ((None, 8, 8, 48), (None, 32, 32, 11))
    """
    inputs = keras.Input(shape=input_shape, name="image")
    full = _block(inputs, 16)
    x = keras.layers.MaxPooling2D(2)(full)
    x = _block(x, 32)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name=LAYER)(x)
    x = keras.layers.UpSampling2D(2)(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.UpSampling2D(2)(x)
    x = keras.layers.Concatenate()([x, full])
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(CLASSES, 1, name="logits")(x)
    model = keras.Model(inputs, outputs, name="digit_segmenter")
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    return keras.layers.ReLU()(x)


def train(train_set: ClutteredDigits, epochs: int, batch_size: int = 16,
          seed: int = 0) -> keras.Model:
    """Build (seeded) and fit a segmenter on the training set's pixel labels.

    Example:
        >>> model = train(load_data(64, 1)[0], epochs=1)  # doctest: +SKIP
    """
    keras.utils.set_random_seed(seed)
    model = build_segmenter(train_set.x.shape[1:])
    # Strokes cover a tenth of the image: weigh them up, or painting all background wins.
    weights = np.where(train_set.masks, STROKE_WEIGHT, 1.0).astype(np.float32)
    model.fit(train_set.x, pixel_labels(train_set), sample_weight=weights, epochs=epochs,
              batch_size=batch_size, verbose=0)
    return model


def score(model: keras.Model, test_set: ClutteredDigits) -> tuple[Scores, list]:
    """Explain each test image's digit class over its strokes; measure the maps on them.

    Returns:
        The `Scores` and the explanations (one per test image).

    Example:
        >>> scores, expls = score(model, test_set)  # doctest: +SKIP
    """
    targets = [SegmentationScore(int(d) + 1, mask) for d, mask in
               zip(test_set.y, test_set.masks, strict=True)]
    expls = explain_predictions(model, test_set.x, targets=targets, layer=LAYER)
    heatmaps = np.stack([e.targets[0].heatmap for e in expls])
    painted = np.asarray(model.predict(test_set.x, verbose=0)).argmax(axis=-1)
    on_strokes = painted[test_set.masks] == pixel_labels(test_set)[test_set.masks]
    return Scores(
        mass=float(mask_masses(heatmaps, test_set.masks).mean()),
        mask_share=float(test_set.masks.mean()),
        pointing=float(mask_pointing_hits(heatmaps, test_set.masks).mean()),
        accuracy=float(on_strokes.mean()),
    ), expls


def picture(expls: list, model: keras.Model, test_set: ClutteredDigits, count: int = 6,
            scale: int = 4) -> Image.Image:
    """Per image: the input, the map for its digit's class, and what the model painted
    (the digit's class in white, other digit classes in grey), enlarged and captioned;
    three images a row.

    Example:
        >>> picture(expls, model, test_set).save("segmentation.png")  # doctest: +SKIP
    """
    painted = np.asarray(model.predict(test_set.x[:count], verbose=0)).argmax(axis=-1)
    panels = []
    for k, expl in enumerate(expls[:count]):
        digit = int(test_set.y[k])
        paint = np.where(painted[k] == digit + 1, 255, np.where(painted[k] > 0, 110, 0))
        size = (expl.image.width * scale, expl.image.height * scale)
        row = [expl.image, format_as_image(expl), Image.fromarray(paint.astype(np.uint8))]
        triple = side_by_side([im.resize(size, 0) for im in row], gap=2)
        panels.append(captioned(triple, [f"digit {digit}: input, map of its class ({digit + 1}), "
                                         "painted"]))
    return grid([panels[i:i + 3] for i in range(0, len(panels), 3)], gap=8)


def main(argv: list[str] | None = None) -> int:
    """Train, explain, print the scores of the trained and the untrained model, save a picture."""
    args = digits_common.command_line(__doc__.splitlines()[0], argv, epochs=8,
                                      out="segmentation_digits.png")
    train_set, test_set = load_data(args.train, args.test, seed=args.seed)
    model, expls = digits_common.compare(build_segmenter, train, score, train_set, test_set,
                                         args.epochs, args.seed)
    picture(expls, model, test_set).save(args.out)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
