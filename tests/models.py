"""Small Keras models for the tests, with weights drawn by numpy so that every backend gets
the same numbers."""

from __future__ import annotations

import keras
import numpy as np


def set_numpy_weights(model: keras.Model, seed: int = 0, scale: float = 0.3) -> keras.Model:
    """Give every weight a value from a numpy RNG (same on every backend)."""
    rng = np.random.RandomState(seed)
    model.set_weights([
        (rng.standard_normal(w.shape) * scale).astype(w.dtype) if w.ndim > 1
        else (rng.standard_normal(w.shape) * 0.05).astype(w.dtype)
        for w in model.get_weights()
    ])
    return model


def small_cnn(input_shape=(16, 16, 3), classes=5, activation="softmax", seed=0,
              name="small_cnn") -> keras.Model:
    """Conv -> ReLU (the Grad-CAM layer, named "feat") -> GAP -> Dense."""
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.Conv2D(12, 3, strides=2, padding="same", name="conv2")(h)
    h = keras.layers.ReLU(name="feat")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(classes, activation=activation, name="head")(h)
    return set_numpy_weights(keras.Model(inputs, outputs, name=name), seed)


def small_sequential(input_shape=(16, 16, 3), classes=5, how="input", seed=0):
    """The same stack as a Sequential, declared with keras.Input, built, or built by fit."""
    stack = [
        keras.layers.Conv2D(8, 3, padding="same", name="conv1"),
        keras.layers.ReLU(name="relu1"),
        keras.layers.Conv2D(12, 3, strides=2, padding="same", name="conv2"),
        keras.layers.ReLU(name="feat"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(classes, activation="softmax", name="head"),
    ]
    if how == "input":
        model = keras.Sequential([keras.Input(input_shape), *stack])
    else:
        model = keras.Sequential(stack)
        if how == "build":
            model.build((None, *input_shape))
        elif how == "fit":
            model.compile("sgd", "sparse_categorical_crossentropy")
            x = np.random.RandomState(1).rand(4, *input_shape).astype("float32")
            model.fit(x, np.arange(4) % classes, epochs=1, batch_size=4, verbose=0)
    return set_numpy_weights(model, seed)


def nested_model(input_shape=(16, 16, 3), classes=4, seed=0) -> keras.Model:
    """A 'transfer-learning' model: a base Functional model used as a layer, then a head."""
    base_in = keras.Input(input_shape)
    h = keras.layers.Conv2D(8, 3, padding="same", name="b_conv1")(base_in)
    h = keras.layers.ReLU(name="b_relu1")(h)
    h = keras.layers.Conv2D(12, 3, strides=2, padding="same", name="b_conv2")(h)
    h = keras.layers.ReLU(name="out_relu")(h)
    base = keras.Model(base_in, h, name="base_net")
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1.0, name="pre")(inputs)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return set_numpy_weights(keras.Model(inputs, outputs, name="transfer"), seed)


def images(n=3, shape=(16, 16, 3), seed=0) -> np.ndarray:
    """Deterministic float32 inputs in [0, 1)."""
    return np.random.RandomState(seed).rand(n, *shape).astype("float32")
