"""Which Keras a model belongs to, and how its graph is read: Keras 3 (``keras``) or Keras 2
(``tf.keras`` on TensorFlow <= 2.15, ``tf_keras`` on TensorFlow >= 2.16).

The model object tells: a class of Keras 2 lives in ``tf_keras.*`` or in Keras 2's
``keras.src.engine`` / ``keras.engine`` / ``tensorflow.python.keras`` packages, which Keras 3
does not have. There is no global switch, and this module imports neither TensorFlow nor
``tf_keras`` (a Keras 3 user pays nothing): a Keras 2 object's own modules are already loaded,
and are read from ``sys.modules``. The graph differences are few: a tensor's history names its
``layer`` (Keras 3: ``operation``), a node's inputs are ``keras_inputs`` (Keras 3:
``input_tensors``, flat) and its ``outputs`` may be nested; its tensors are TensorFlow's,
which ``keras.ops`` does not always take (:func:`tensor_ops`). The compiled pass and loading of
Keras 2 models live in :mod:`gradcam_callbacks.backends.keras2_backend`.
"""

from __future__ import annotations

import functools
import json
import sys
import types
import zipfile
from typing import Any

import keras

KERAS2_PACKAGES = ("tf_keras.", "keras.src.engine.", "keras.engine.", "tensorflow.python.keras.")


def is_keras2(obj: Any) -> bool:
    """Whether ``obj`` (a model, layer or callback) is of Keras 2 (``tf.keras`` <= 2.15, or
    ``tf_keras``).

    Example:
        >>> import keras
        >>> is_keras2(keras.layers.Dense(2))  # Keras 3
        False
    """
    return any(cls.__module__.startswith(KERAS2_PACKAGES) for cls in type(obj).__mro__)


def flatten(structure: Any) -> list[Any]:
    """A nested structure of tensors as a flat list, dict values in sorted key order (as
    ``tf.nest`` and ``keras.tree`` order them)."""
    if isinstance(structure, dict):
        return [leaf for key in sorted(structure) for leaf in flatten(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in flatten(item)]
    return [structure]


class Keras3Graph:
    """Keras 3: class checks against ``keras``, tensors' ``_keras_history.operation``,
    nodes' flat ``input_tensors``."""

    name = "Keras 3"
    _maker = "operation"  # the field of a tensor's ``_keras_history`` naming what made it
    _inputs = "input_tensors"  # a node's symbolic inputs, flat

    @staticmethod
    def is_a(obj: Any, class_name: str) -> bool:
        """``isinstance(obj, keras.<class_name>)``: ``Model``, or a ``keras.layers`` name."""
        cls = keras.Model if class_name == "Model" else getattr(keras.layers, class_name)
        return isinstance(obj, cls)

    @staticmethod
    def flatten(structure: Any) -> list[Any]:
        return keras.tree.flatten(structure)

    @classmethod
    def node_of(cls, tensor: Any) -> tuple[Any, Any, int] | None:
        """The operation (layer) that made a symbolic tensor, its node, and the tensor's
        index among the node's outputs; ``None`` for a tensor without history."""
        history = getattr(tensor, "_keras_history", None)
        maker = getattr(history, cls._maker, None)
        if maker is None:
            return None
        return maker, maker._inbound_nodes[history.node_index], history.tensor_index

    @classmethod
    def node_inputs(cls, node: Any) -> list[Any]:
        return list(getattr(node, cls._inputs))

    @classmethod
    def node_outputs(cls, node: Any) -> list[Any]:
        return cls.flatten(node.output_tensors)

    @staticmethod
    def image_data_format(obj: Any) -> str:
        return keras.config.image_data_format()


class Keras2Graph(Keras3Graph):
    """Keras 2: class checks by name along the class's Keras 2 bases, tensors'
    ``_keras_history.layer``, nodes' ``keras_inputs``; nested structures flattened here."""

    name = "Keras 2"
    _maker = "layer"
    _inputs = "keras_inputs"

    @staticmethod
    def is_a(obj: Any, class_name: str) -> bool:
        """Whether a Keras 2 class named ``class_name`` (``Model``, ``Layer``,
        ``Normalization``...) is among ``obj``'s classes."""
        return any(cls.__name__ == class_name and cls.__module__.startswith(KERAS2_PACKAGES)
                   for cls in type(obj).__mro__)

    flatten = staticmethod(flatten)

    @staticmethod
    def image_data_format(obj: Any) -> str:
        """The global setting of the Keras 2 that ``obj`` belongs to (already imported)."""
        package = sys.modules.get(type(obj).__module__.split(".")[0])
        reader = getattr(getattr(package, "backend", None), "image_data_format", None)
        return reader() if callable(reader) else "channels_last"


KerasGraph = type[Keras3Graph] | type[Keras2Graph]


def graph_of(obj: Any) -> KerasGraph:
    """The graph reader for ``obj``'s Keras.

    Example:
        >>> import keras
        >>> graph_of(keras.layers.Dense(2)).name
        'Keras 3'
    """
    return Keras2Graph if is_keras2(obj) else Keras3Graph


def tensor_ops(tensor: Any) -> Any:
    """The ops namespace for a model output tensor (what a score function receives):
    ``keras.ops``, unless the tensor is TensorFlow's (a Keras 2 model's) and ``keras.ops``
    cannot take it (Keras 2.15 has no ``keras.ops``; Keras 3 on JAX or PyTorch cannot run
    on a TensorFlow tensor): then :func:`tensorflow_ops`. The one place where the ready-made
    scores (:mod:`gradcam_callbacks.targets`) pick their ops.

    Example:
        >>> import keras
        >>> tensor_ops(keras.KerasTensor((2, 3))) is keras.ops
        True
    """
    tensorflow = type(tensor).__module__.startswith("tensorflow")
    if hasattr(keras, "ops") and not (tensorflow and keras.backend.backend() != "tensorflow"):
        return keras.ops
    return tensorflow_ops()


@functools.cache
def tensorflow_ops() -> types.SimpleNamespace:
    """TensorFlow's ops under the ``keras.ops`` names that the engine's Keras 2 pass and the
    ready-made scores use (``argmax``, ``cast``, ``convert_to_tensor``, ``equal``,
    ``expand_dims``, ``stack``, ``stop_gradient``, ``sum``). TensorFlow is read from
    ``sys.modules`` (a Keras 2 model or a TensorFlow tensor loaded it), never imported here.

    Example:
        >>> tensorflow_ops().sum
        <function reduce_sum at ...>
    """
    tf = sys.modules["tensorflow"]
    return types.SimpleNamespace(
        argmax=tf.argmax, cast=tf.cast, convert_to_tensor=tf.convert_to_tensor, equal=tf.equal,
        expand_dims=tf.expand_dims, stack=tf.stack, stop_gradient=tf.stop_gradient,
        sum=tf.reduce_sum)


def written_by_keras2(path: str) -> bool:
    """Whether a ``.keras`` or ``.h5`` model file says Keras 2 wrote it (its
    ``keras_version``: ``metadata.json`` in a ``.keras`` archive, a root attribute of an
    HDF5 file); ``False`` when it says nothing readable.

    Example:
        >>> written_by_keras2("no-such-file.keras")
        False
    """
    version = ""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                version = json.loads(archive.read("metadata.json")).get("keras_version", "")
        else:
            import h5py

            with h5py.File(path, "r") as file:
                version = file.attrs.get("keras_version", "")
    except (OSError, KeyError, ValueError):
        return False
    version = version.decode() if isinstance(version, bytes) else str(version)
    return version.startswith("2.")


class Keras2CallbackHooks:
    """What Keras 2's ``CallbackList`` (``tf.keras``, ``tf_keras``) asks of a callback and a
    Keras 3 callback lacks: whether it overrides any batch hook. Mixed into a Keras 3
    callback, it lets Keras 2's ``model.fit`` run it; Keras 3 never asks.

    Example:
        >>> import keras
        >>> class Watch(Keras2CallbackHooks, keras.callbacks.Callback):
        ...     def on_epoch_end(self, epoch, logs=None): pass
        >>> Watch()._implements_train_batch_hooks()
        False
    """

    def _implements_train_batch_hooks(self) -> bool:
        return _overrides(self, "on_batch_begin", "on_batch_end", "on_train_batch_begin",
                          "on_train_batch_end")

    def _implements_test_batch_hooks(self) -> bool:
        return _overrides(self, "on_test_batch_begin", "on_test_batch_end")

    def _implements_predict_batch_hooks(self) -> bool:
        return _overrides(self, "on_predict_batch_begin", "on_predict_batch_end")


def _overrides(callback: Any, *hooks: str) -> bool:
    base = keras.callbacks.Callback
    return any(getattr(type(callback), hook) is not getattr(base, hook) for hook in hooks)
