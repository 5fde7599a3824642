"""The demo itself (:mod:`gradcam_callbacks.demo` describes it): the data, the small CNN and
its shipped weights, training with :class:`~gradcam_callbacks.GradCamCallback` watching,
and ``main``, which ``gradcam-callbacks demo`` runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from ..watch.tags import SAMPLES_PER_PLUGIN
from .datasets import ClutteredDigits, make_cluttered_digits
from .settings import (
    BATCH_SIZE,
    CANVAS_SIZE,
    CLUTTER,
    DIGIT_SIZE,
    EPOCHS,
    GRADCAM_LAYER,
    LABEL_SMOOTHING,
    LEARNING_RATE,
    MARKER_REACH,
    NOISE,
    NUM_TEST,
    NUM_TRAIN,
    SHORTCUT_PATIENCE,
    parse_args,
)
from .shortcut import (
    format_shortcut_row,
    marker_regions,
    shortcut_rows,
    shortcut_scores,
)

_DATA = Path(__file__).resolve().parent / "data"


def load_data(
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_TEST,
    seed: int = 0,
    marker: float | None = None,
) -> tuple[ClutteredDigits, ClutteredDigits]:
    """Make the example's train and test sets; test digits are unseen in training.

    Args:
        num_train: Number of training images.
        num_test: Number of test images.
        seed: Seed of both sets.
        marker: ``None`` for no marker (the clean demo), or the share of training images
            whose marker gives the label away (see `make_cluttered_digits`); the test
            images then get a marker at a random spot (``marker=0.0``).

    Returns:
        ``(train, test)``, two `ClutteredDigits`.

    Example:
        >>> train_set, test_set = load_data(num_train=32, num_test=8)
        >>> train_set.x.shape, test_set.x.shape
        ((32, 48, 48, 1), (8, 48, 48, 1))
    """
    settings = {
        "canvas_size": CANVAS_SIZE,
        "digit_size": DIGIT_SIZE,
        "clutter": CLUTTER,
        "noise": NOISE,
        "seed": seed,
    }
    test_marker = None if marker is None else 0.0
    train_set = make_cluttered_digits(num_train, split="train", marker=marker, **settings)
    test_set = make_cluttered_digits(num_test, split="test", marker=test_marker, **settings)
    return train_set, test_set


@keras.saving.register_keras_serializable(package="cluttered_digits")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with label smoothing, for integer labels.

    Keras' ``SparseCategoricalCrossentropy`` has no ``label_smoothing``. Smoothing keeps
    the softmax from saturating, which keeps the gradients Grad-CAM uses informative.

    Args:
        label_smoothing: Share of each label's probability spread over all classes.
        name: Name of the loss.

    Example:
        >>> import numpy as np
        >>> loss = SmoothedSparseCrossentropy(0.1)
        >>> round(float(loss(np.array([0]), np.array([[0.9, 0.1]]))), 4)
        0.2152
    """

    def __init__(self, label_smoothing: float = LABEL_SMOOTHING, name: str = "smoothed_xent"):
        super().__init__(name=name)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        num_classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        return keras.losses.categorical_crossentropy(
            keras.ops.one_hot(labels, num_classes),
            y_pred,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self) -> dict:
        return {"label_smoothing": self.label_smoothing, "name": self.name}


def build_model(input_shape: Sequence[int], num_classes: int = 10) -> keras.Model:
    """Build and compile a small Functional CNN whose last conv layer suits Grad-CAM.

    Three 3x3 conv blocks (conv, batch norm, ReLU) with two 2x2 max-pools take a 48x48
    image to 12x12; a last 3x3 conv with ReLU (named ``GRADCAM_LAYER``, the model's last
    rank-4 layer) sees 26x26 pixels per cell, a whole 16 px digit. Global average
    pooling, a Dense layer (``"logits"``) and a softmax (``"probabilities"``) follow, so
    each class's evidence is a sum over places and stays where the digit is.

    Args:
        input_shape: ``(height, width, channels)`` of the images.
        num_classes: Number of classes.

    Returns:
        A `keras.Model` compiled with Adam, `SmoothedSparseCrossentropy` and accuracy,
        taking integer labels.

    Example:
        >>> model = build_model((48, 48, 1))
        >>> tuple(model.get_layer(GRADCAM_LAYER).output.shape)
        (None, 12, 12, 48)
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for block, filters in enumerate((16, 32, 48)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        # A fast-moving average: with few steps, the default 0.99 lags the weights.
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
        if block < 2:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name=GRADCAM_LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # Logits and softmax are separate layers so that either score can be explained.
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", name="probabilities")(logits)
    model = keras.Model(inputs, outputs, name="cluttered_digits_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=SmoothedSparseCrossentropy(LABEL_SMOOTHING),
        metrics=["accuracy"],
    )
    return model


def pretrained() -> keras.Model:
    """The demo's CNN, already trained: a meaningful model to explain in a second, offline.

    The weights ship inside the package (``gradcam_callbacks/demo/data/demo_cnn.weights.npz``,
    about 150 kB; ``scripts/train_demo_model.py`` regenerates them with the demo's defaults)
    and load on any backend. What the model scored on the 1000 held-out test images when it
    was trained is in ``pretrained_record()``. The model takes ``(n, 48, 48, 1)`` float images
    in [0, 1] such as `make_cluttered_digits` makes, and outputs probabilities of the 10 digits.

    Returns:
        A compiled `keras.Model` (see `build_model`) with the trained weights.

    Example:
        >>> from gradcam_callbacks import explain_prediction
        >>> _, test_set = load_data(num_train=1, num_test=4)
        >>> expl = explain_prediction(pretrained(), test_set.x[:1])
        >>> expl.layer, expl.targets[0].heatmap.shape
        ('last_conv', (12, 12))
    """
    with np.load(_DATA / "demo_cnn.weights.npz") as stored:
        weights = [stored[name] for name in sorted(stored.files)]
    model = build_model((CANVAS_SIZE, CANVAS_SIZE, 1))
    model.set_weights(weights)
    return model


def pretrained_record() -> dict[str, float | int | str]:
    """What `pretrained`'s model scored when it was trained (test accuracy, pointing game,
    mean box mass on 1000 held-out images) and how (Keras version, backend, epochs, date).

    Example:
        >>> pretrained_record()["test_images"]
        1000
    """
    import json

    return json.loads((_DATA / "demo_cnn.json").read_text())


def cosine_learning_rate(epoch: int, epochs: int, learning_rate: float) -> float:
    """The learning rate of ``epoch``: cosine decay from ``learning_rate`` to 2% of it.

    Example:
        >>> [round(cosine_learning_rate(e, 3, 1.0), 2) for e in range(3)]
        [1.0, 0.51, 0.02]
    """
    progress = epoch / max(epochs - 1, 1)
    return learning_rate * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(
    model: keras.Model,
    data: ClutteredDigits,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    *,
    learning_rate: float = LEARNING_RATE,
    validation_data: ClutteredDigits | None = None,
    verbose: int | str = "auto",
) -> keras.callbacks.History:
    """Fit a compiled model on cluttered digits, the learning rate decaying per epoch.

    Args:
        model: A compiled classifier taking integer labels, such as `build_model` returns.
        data: Training images and labels.
        epochs: Number of passes over ``data``.
        batch_size: Images per gradient step.
        callbacks: More Keras callbacks for ``fit``, such as a ``GradCamCallback``.
        learning_rate: Learning rate of the first epoch; it decays as
            `cosine_learning_rate` says.
        validation_data: Images and labels evaluated after each epoch, if given.
        verbose: Passed to ``model.fit``.

    Returns:
        The ``History`` that ``model.fit`` returns.

    Example:
        >>> train_set, _ = load_data(num_train=32, num_test=8)
        >>> history = train(build_model((48, 48, 1)), train_set, epochs=1, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'learning_rate', 'loss']
    """
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: cosine_learning_rate(epoch, epochs, learning_rate)
    )
    validation = None if validation_data is None else (validation_data.x, validation_data.y)
    return model.fit(
        data.x,
        data.y,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[schedule, *(callbacks or [])],
        validation_data=validation,
        shuffle=True,
        verbose=verbose,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status.

    With ``--shortcut`` the training images carry a marker that gives the label away
    (`SHORTCUT_RATE` of them) while the test images and probes carry it at random spots. The
    `GradCamCallback` explains the predicted class, gets the probes' grown markers as
    ``artifact_boxes`` and a `ShortcutAlarm` (`SHORTCUT_PATIENCE` logged epochs), so each
    epoch's logs hold where the maps sit (``gradcam_pointing_game``, ``gradcam_box_mass``,
    ``gradcam_artifact_mass``) beside the test accuracy (``val_accuracy``). The run prints them
    per epoch (`shortcut_rows`), whether the alarm fired, and the training and test accuracy
    with where Grad-CAM looks on all test images (`shortcut_scores`).

    Example:
        >>> # each trains on 4000 images, minutes (tests/test_demo.py, test_shortcut.py: smaller)
        >>> main(["--epochs", "1", "--log-dir", "/tmp/demo"])  # doctest: +SKIP
        0
        >>> main(["--shortcut", "--log-dir", "/tmp/shortcut"])  # doctest: +SKIP
        0
    """
    import time

    from ..explain import explain_predictions
    from ..watch.alarm import ShortcutAlarm
    from ..watch.callback import GradCamCallback
    from ..watch.metrics import box_masses, pointing_game
    from ..watch.sheet import contact_sheet, save_atomically

    args = parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    marker = args.shortcut_rate if args.shortcut else None
    train_set, test_set = load_data(num_train=args.train_size, num_test=args.test_size,
                                    seed=args.seed, marker=marker)
    model = build_model(train_set.x.shape[1:])
    probes = slice(0, args.probes)
    # with markers: the mass on them goes to the logs (gradcam_artifact_mass), and the alarm
    # warns when it passes the mass on the digits for SHORTCUT_PATIENCE epochs in a row
    alarm = ShortcutAlarm(patience=SHORTCUT_PATIENCE) if args.shortcut else None
    cam = GradCamCallback(
        (test_set.x[probes], test_set.y[probes]), targets=None if args.shortcut else "true",
        class_names=[str(d) for d in range(10)], layer=GRADCAM_LAYER,
        probe_boxes=test_set.boxes[probes], log_dir=os.path.join(args.log_dir, "gradcam"),
        artifact_boxes=marker_regions(test_set)[probes] if args.shortcut else None,
        alarm=alarm,
    )
    if args.shortcut:
        print(f"Shortcut: in {args.shortcut_rate:.0%} of the training images the marker's "
              "spot gives the label away; in the test images it is random. Grad-CAM "
              f"explains the predicted class of {len(cam.probe_x)} test probes; each epoch's "
              "logs get where it looks (gradcam_pointing_game, gradcam_box_mass: the digit; "
              "gradcam_artifact_mass: the marker) and the test accuracy (val_accuracy), and "
              "a ShortcutAlarm warns when the marker holds more of the maps than the digit "
              f"for {SHORTCUT_PATIENCE} epochs in a row.", flush=True)
    print(f"Keras {keras.__version__} on {keras.backend.backend()}: training on "
          f"{len(train_set)} cluttered digits for {args.epochs} epochs...", flush=True)
    started = time.monotonic()
    history = train(model, train_set, epochs=args.epochs, callbacks=[cam], verbose=2,
                    validation_data=test_set if args.shortcut else None)
    seconds = time.monotonic() - started
    sheet_path = os.path.join(args.log_dir, "contact_sheet.png")
    # cam.run_dir: log_dir/gradcam, or gradcam-2, ... when an earlier run holds that name
    run_dir = cam.run_dir or os.path.join(args.log_dir, "gradcam")
    save_atomically(contact_sheet(run_dir), Path(sheet_path), format="PNG")
    print(f"trained in {seconds:.0f} s")
    if args.shortcut:
        print(f"Per epoch, from the logs (test: {len(test_set)} held-out images; digit and "
              f"marker: Grad-CAM of the predicted class on the {len(cam.probe_x)} probes; "
              "untrained: from the callback's TensorBoard scalars):")
        for row in shortcut_rows(history.history, run_dir):
            print(format_shortcut_row(row))
        _, train_accuracy = model.evaluate(train_set.x, train_set.y, verbose=0)
        scores = shortcut_scores(model, test_set)
        print(f"training accuracy: {train_accuracy:.3f} on {len(train_set)} training images "
              f"(marker at the label's spot in {args.shortcut_rate:.0%})")
        print(f"test accuracy: {scores['accuracy']:.3f} on {len(test_set)} held-out images "
              "(marker at random)")
        assert alarm is not None
        print(f"shortcut alarm (more Grad-CAM mass on the marker than on the digit on the "
              f"{len(cam.probe_x)} probes, {SHORTCUT_PATIENCE} epochs in a row): " + (
                  "did not fire" if alarm.fired_at is None
                  else f"fired after epoch {alarm.fired_at + 1}"))
        print(f"Grad-CAM of the predicted class on all {len(test_set)} test images: peak on the "
              f"digit {scores['pointing_game']:.3f}, on the marker {scores['marker_pointing']:.3f}"
              f"; mass on the digit {scores['digit_mass']:.2f}, on the marker "
              f"{scores['marker_mass']:.2f} (the marker and its {MARKER_REACH} px surround "
              f"cover {scores['marker_area']:.3f} of the image)")
    else:
        _, accuracy = model.evaluate(test_set.x, test_set.y, verbose=0)
        expls = explain_predictions(model, test_set.x, targets=[int(t) for t in test_set.y],
                                    layer=GRADCAM_LAYER, batch_size=250)
        heatmaps = np.stack([e.targets[0].heatmap for e in expls])
        size = test_set.x.shape[1:3]
        pointing = pointing_game(heatmaps, test_set.boxes, size)
        mass = float(box_masses(heatmaps, test_set.boxes, size).mean())
        print(f"test accuracy: {accuracy:.3f} on {len(test_set)} held-out images")
        print(f"pointing game: {pointing:.3f} (Grad-CAM peak inside the digit's box; "
              "goal >= 0.90)")
        boxes = test_set.boxes
        box_share = float(np.mean((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
        box_share /= size[0] * size[1]
        print(f"mean heatmap mass inside the box: {mass:.2f} (the box covers {box_share:.2f} "
              "of the image)")
    print(f"contact sheet: {sheet_path}")
    print(f"watch it: tensorboard --logdir {args.log_dir} --samples_per_plugin "
          f"{SAMPLES_PER_PLUGIN}  (every epoch of every probe; with TensorBoard's defaults "
          "the gradcam/timeline/probe_NN images show each probe's whole history)")
    return 0
