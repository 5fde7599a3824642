"""Keras 2 models (``tf.keras`` on TensorFlow <= 2.15, ``tf_keras`` on TensorFlow >= 2.16):
the compiled pass, loading model files, and Keras 2's name for itself.

A Keras 2 model runs on TensorFlow whatever ``KERAS_BACKEND`` says, so its pass is
:mod:`.tf_backend`'s, with the model's outputs read by ``tf.nest`` (Keras 2 has no
``keras.tree``). Imported only for a Keras 2 model (:func:`..backends.model_backend`) or file:
a Keras 3 user never imports ``tf_keras``. How a Keras 2 graph is read (no framework needed)
is in :mod:`gradcam_callbacks.keras_family`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..keras_family import tensorflow_ops
from . import PassSpec, RawOutputs, tf_backend


@dataclasses.dataclass(frozen=True)
class Keras2PassSpec(PassSpec):
    """A :class:`PassSpec` whose outputs are Keras 2's: flattened by ``tf.nest``."""

    def select(self, outputs: Any) -> Any:
        return self.pick(tf.nest.flatten(outputs), tensorflow_ops())


def symbolic_call(function: Callable[[Any], Any], shape: tuple[int | None, ...]) -> Any:
    """``function``'s result on a float32 graph tensor of ``shape``: traced in a
    ``tf.function``, never run. The result (a graph tensor, or whatever it returned) is
    only read for its shape and dtype.

    Example:
        >>> symbolic_call(lambda y: y[:, 0], (3, 4)).shape
        TensorShape([3])
    """
    results = []

    def trace(outputs: tf.Tensor) -> tf.Tensor:
        results.append(function(outputs))
        return tf.zeros(())

    tf.function(trace, autograph=False).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    return results[0]


def _keras2_spec(spec: PassSpec) -> Keras2PassSpec:
    return Keras2PassSpec(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)})


def build(
    spec: PassSpec, on_trace: Callable[[], None]
) -> Callable[[np.ndarray, np.ndarray], RawOutputs]:
    """TensorFlow's Grad-CAM pass (:func:`.tf_backend.build`) for a Keras 2 model."""
    return tf_backend.build(_keras2_spec(spec), on_trace)


def build_score(spec: PassSpec, on_trace: Callable[[], None]) -> Callable[[np.ndarray], np.ndarray]:
    """TensorFlow's score-only forward (:func:`.tf_backend.build_score`) for a Keras 2 model."""
    return tf_backend.build_score(_keras2_spec(spec), on_trace)


def process_index_and_count() -> tuple[int, int]:
    """``(k, n)`` from ``TF_CONFIG``, as for TensorFlow."""
    return tf_backend.process_index_and_count()


def spatial_mean(grads: np.ndarray) -> np.ndarray:
    """TensorFlow's mean over the two spatial axes (Keras 2.15's ``keras`` has no ``ops``)."""
    return tf.reduce_mean(tf.convert_to_tensor(grads), axis=(-3, -2)).numpy()


def keras2() -> tuple[Any, str]:
    """The installed Keras 2 and its name: ``tf_keras`` where it is installed, else
    ``keras`` itself when it is Keras 2 (TensorFlow <= 2.15, where ``tf.keras`` is it).

    Raises:
        ValueError: no Keras 2 is installed.

    Example:
        >>> # needs tf_keras, installed in the Keras 2 environments only:
        >>> keras2()[1]  # doctest: +SKIP
        'Keras 2 (tf_keras 2.21.0)'
    """
    if keras.__version__.startswith("2."):
        return keras, f"Keras 2 (tf.keras {keras.__version__})"
    try:
        module = importlib.import_module("tf_keras")
    except ImportError:
        raise ValueError("Keras 2: not installed (pip install tf-keras matching TensorFlow "
                         f"{tf.__version__})") from None
    return module, f"Keras 2 (tf_keras {module.__version__})"


def load_model(path: str) -> tuple[Any, str]:
    """Load a model file with Keras 2; returns the model and :func:`keras2`'s name.

    Raises:
        ValueError: Keras 2 is not installed or cannot read the file; the message starts
            with the Keras 2 tried.

    Example:
        >>> # needs tf_keras and a Keras 2 file (the Keras 2 environments only):
        >>> model, used = load_model("model.h5")  # doctest: +SKIP
    """
    module, name = keras2()
    try:
        return module.models.load_model(path, compile=False), name
    except Exception as error:  # Keras raises many types for a file it cannot read
        raise ValueError(f"{name}: {type(error).__name__}: {error}") from None
