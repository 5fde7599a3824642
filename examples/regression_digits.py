"""Explain a regression head: where does a CNN look to say *where* the digit is?

``python examples/regression_digits.py [--epochs N] [--out regression.png]``

A small CNN reads a cluttered-digits image (`gradcam_callbacks.demo.datasets`, made offline)
and regresses one number, the digit's centre x as a share of the image's width. Grad-CAM
with ``RegressionScore()`` asks what pushes that number up. The digit is the only thing
that sets it, so a model that learned the task should look at the digit, not at the
distractors: the example reports the pointing game (the map's maximum inside the digit's
box) and the share of the map's mass inside the box against the box's share of the image,
for the trained model and for the same model untrained, and saves a picture.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import keras
import numpy as np
from digits_common import command_line, compare, load_data
from PIL import Image

from gradcam_callbacks import explain_predictions
from gradcam_callbacks.demo.datasets import ClutteredDigits
from gradcam_callbacks.image import captioned, format_as_image, side_by_side
from gradcam_callbacks.targets import RegressionScore
from gradcam_callbacks.watch.metrics import box_masses, boxes_to_masks, pointing_hits

#: The layer explained: the last convolution, before the position-keeping Flatten.
LAYER = "features"


@dataclass(frozen=True)
class Scores:
    """How well one model's maps sit on the digit (means over the test images)."""

    pointing: float  #: share of maps whose maximum lies in the digit's box
    mass: float  #: share of the map's mass inside the box
    box_share: float  #: the box's share of the image: the mass of a flat map
    error: float  #: mean absolute error of the predicted centre x, in image widths

    def __str__(self) -> str:
        return (f"pointing game {self.pointing:.2f}, mass in box {self.mass:.2f} vs box share "
                f"{self.box_share:.2f} (ratio {self.mass / self.box_share:.1f}), "
                f"centre-x error {self.error:.3f}")


def centre_x(data: ClutteredDigits) -> np.ndarray:
    """The regression target: each digit box's centre x over the image width, float32 (n, 1).

    Example:
        >>> xs = centre_x(load_data(2, 1)[0])
        >>> xs.shape, bool(((xs > 0) & (xs < 1)).all())
        ((2, 1), True)
    """
    width = data.x.shape[2]
    return ((data.boxes[:, [0]] + data.boxes[:, [2]]) / (2 * width)).astype(np.float32)


def build_regressor(input_shape: tuple[int, ...]) -> keras.Model:
    """Three 3x3 convolutions with two 2x2 max-pools, then Flatten and one linear unit.

    Flatten (not global pooling) keeps where each feature is, which the centre x needs.

    Example:
        >>> model = build_regressor((32, 32, 1))
        >>> tuple(model.get_layer(LAYER).output.shape), tuple(model.output.shape)
        ((None, 8, 8, 32), (None, 1))
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name=LAYER)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1, name="centre_x")(x)
    model = keras.Model(inputs, outputs, name="centre_x_regressor")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    return model


def train(train_set: ClutteredDigits, epochs: int, batch_size: int = 32,
          seed: int = 0) -> keras.Model:
    """Build (seeded) and fit a regressor of the digit's centre x.

    Example:
        >>> model = train(load_data(64, 1)[0], epochs=1)  # doctest: +SKIP
    """
    keras.utils.set_random_seed(seed)
    model = build_regressor(train_set.x.shape[1:])
    model.fit(train_set.x, centre_x(train_set), epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def score(model: keras.Model, test_set: ClutteredDigits) -> tuple[Scores, list]:
    """Explain each test image with ``RegressionScore()`` and measure the maps on the boxes;
    return the `Scores` and the explanations, one per test image.

    Example:
        >>> print(score(model, test_set)[0])  # doctest: +SKIP
        pointing game 0.95, ...
    """
    expls = explain_predictions(model, test_set.x, targets=RegressionScore(), layer=LAYER)
    heatmaps = np.stack([e.targets[0].heatmap for e in expls])
    size = test_set.x.shape[1:3]
    box_share = boxes_to_masks(test_set.boxes, size).mean(axis=(1, 2))
    predicted = np.asarray(model.predict(test_set.x, verbose=0))
    return Scores(
        pointing=float(pointing_hits(heatmaps, test_set.boxes, size).mean()),
        mass=float(box_masses(heatmaps, test_set.boxes, size).mean()),
        box_share=float(box_share.mean()),
        error=float(np.abs(predicted - centre_x(test_set)).mean()),
    ), expls


def picture(expls: list, test_set: ClutteredDigits, count: int = 6,
            scale: int = 4) -> Image.Image:
    """Each image above its map, enlarged, the true and predicted centre x written below.

    Example:
        >>> picture(expls, test_set).save("regression.png")  # doctest: +SKIP
    """
    truth = centre_x(test_set)[:, 0]
    panels = []
    for expl, x in zip(expls[:count], truth[:count], strict=False):
        size = (expl.image.width * scale, expl.image.height * scale)
        pair = side_by_side([expl.image.resize(size, 0), format_as_image(expl).resize(size, 0)],
                            gap=2)
        lines = [f"true x {x:.2f}", f"predicted {expl.targets[0].score:.2f}"]
        panels.append(captioned(pair, lines))
    return side_by_side(panels, gap=8)


def main(argv: list[str] | None = None) -> int:
    """Train, explain, print the scores of the trained and the untrained model, save a picture."""
    args = command_line(__doc__.splitlines()[0], argv, epochs=6, out="regression_digits.png")
    train_set, test_set = load_data(args.train, args.test, seed=args.seed)
    _, expls = compare(build_regressor, train, score, train_set, test_set, args.epochs,
                       args.seed)
    picture(expls, test_set).save(args.out)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
