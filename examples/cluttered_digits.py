"""Cluttered digits: a small CNN that learns to find a digit among distractors.

The data come from `gradcam_callbacks.datasets.make_cluttered_digits` (built from
scikit-learn's bundled digits, nothing is downloaded). The model ends in one 8x8 conv
feature map, global average pooling and a softmax, so its last conv layer is where
Grad-CAM looks, and an 8x8 map on a 64x64 image is fine enough to point at a digit.

Run ``python examples/cluttered_digits.py`` from the repository root (with the package
installed) on any Keras backend; it trains for about a minute on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from gradcam_callbacks.datasets import ClutteredDigits, make_cluttered_digits

#: Data settings of the example: a 64x64 canvas, 24 px digits, four distractors.
CANVAS_SIZE = 64
DIGIT_SIZE = 24
CLUTTER = 4
NOISE = 0.1
NUM_TRAIN = 6000
NUM_TEST = 1000
EPOCHS = 8
BATCH_SIZE = 64
#: Name of the model's last conv layer, the layer to explain with Grad-CAM.
GRADCAM_LAYER = "last_conv"


def load_data(
    num_train: int = NUM_TRAIN, num_test: int = NUM_TEST, seed: int = 0
) -> tuple[ClutteredDigits, ClutteredDigits]:
    """Make the example's train and test sets; test digits are unseen in training.

    Args:
        num_train: Number of training images.
        num_test: Number of test images.
        seed: Seed of both sets.

    Returns:
        ``(train, test)``, two `ClutteredDigits`.

    Example:
        >>> train, test = load_data(num_train=32, num_test=8)
        >>> train.x.shape, test.x.shape
        ((32, 64, 64, 1), (8, 64, 64, 1))
    """
    settings = {
        "canvas_size": CANVAS_SIZE,
        "digit_size": DIGIT_SIZE,
        "clutter": CLUTTER,
        "noise": NOISE,
        "seed": seed,
    }
    train = make_cluttered_digits(num_train, split="train", **settings)
    test = make_cluttered_digits(num_test, split="test", **settings)
    return train, test


def build_model(
    input_shape: Sequence[int], num_classes: int = 10, learning_rate: float = 3e-3
) -> keras.Model:
    """Build and compile a small Functional CNN whose last conv layer suits Grad-CAM.

    Three conv/max-pool blocks take a 64x64 image to 8x8; a last 3x3 conv (named
    ``GRADCAM_LAYER``, the model's last rank-4 layer) sees about 40x40 pixels per cell,
    enough for a whole digit. Global average pooling, a Dense layer (``"logits"``) and a
    softmax (``"probabilities"``) follow, so class evidence stays where the digit is.

    Args:
        input_shape: ``(height, width, channels)`` of the images.
        num_classes: Number of classes.
        learning_rate: Adam's learning rate.

    Returns:
        A `keras.Model` compiled with sparse categorical cross-entropy and accuracy.

    Example:
        >>> model = build_model((64, 64, 1))
        >>> model.get_layer(GRADCAM_LAYER).output.shape
        (None, 8, 8, 64)
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name=GRADCAM_LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # Logits and softmax are separate layers so an explainer can use either score.
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", name="probabilities")(logits)
    model = keras.Model(inputs, outputs, name="cluttered_digits_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(
    model: keras.Model,
    data: ClutteredDigits,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    *,
    validation_data: ClutteredDigits | None = None,
    verbose: int | str = "auto",
) -> keras.callbacks.History:
    """Fit a compiled model on cluttered digits.

    Args:
        model: A compiled classifier, such as `build_model` returns.
        data: Training images and labels.
        epochs: Number of passes over ``data``.
        batch_size: Images per gradient step.
        callbacks: Keras callbacks for ``fit``, such as a ``GradCamCallback``.
        validation_data: Images and labels evaluated after each epoch, if given.
        verbose: Passed to ``model.fit``.

    Returns:
        The ``History`` that ``model.fit`` returns.

    Example:
        >>> train_set, test_set = load_data(num_train=64, num_test=16)
        >>> history = train(build_model((64, 64, 1)), train_set, epochs=1, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss']
    """
    validation = None if validation_data is None else (validation_data.x, validation_data.y)
    return model.fit(
        data.x,
        data.y,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=list(callbacks or []),
        validation_data=validation,
        shuffle=True,
        verbose=verbose,
    )


def main() -> None:
    """Train the example model and print its test accuracy."""
    keras.utils.set_random_seed(0)
    train_set, test_set = load_data()
    model = build_model(train_set.x.shape[1:])
    train(model, train_set)
    _, accuracy = model.evaluate(test_set.x, test_set.y, verbose=0)
    print(f"test accuracy: {accuracy:.3f}")


if __name__ == "__main__":
    main()
