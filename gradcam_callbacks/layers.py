"""Which layer Grad-CAM looks at, and how its output is reached on any backend.

A layer is found by the automatic rule (the last layer whose output has the input's rank,
descending into nested models), by name, by a ``"outer/inner"`` path, by index or as an
instance. Its output is reached by :func:`intercept`, which routes the layer's ``call``
through a function for the duration of one traced call. That single mechanism works the same
for Functional, Sequential, nested and subclassed models, and never rebuilds a sub-model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

LayerSpec = keras.layers.Layer | str | int | None


@dataclass(frozen=True)
class LayerChoice:
    """A layer picked for Grad-CAM and the path that names it from the outer model.

    Example:
        >>> choice = resolve_layer(model, "mobilenetv2_1.00_224/out_relu")  # doctest: +SKIP
        >>> choice.path  # doctest: +SKIP
        'mobilenetv2_1.00_224/out_relu'
    """

    layer: keras.layers.Layer
    path: str


def input_rank(model: keras.Model) -> int | None:
    """The rank of the model's (single) input including the batch axis, if the model has a
    symbolic input; ``None`` for subclassed models."""
    inputs = symbolic_inputs(model)
    return None if inputs is None else len(inputs[0].shape)


def input_shape(model: keras.Model) -> tuple[int | None, ...] | None:
    """The model's input shape without the batch axis, or ``None`` if it is not known."""
    inputs = symbolic_inputs(model)
    return None if inputs is None else tuple(inputs[0].shape[1:])


def output_rank(layer: keras.layers.Layer) -> int | None:
    """The rank of the layer's symbolic output, or ``None`` if it has none (never called
    symbolically, or several outputs)."""
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return None
    shape = getattr(output, "shape", None)
    return None if shape is None else len(shape)


def data_format(model: keras.Model, layer: keras.layers.Layer) -> str:
    """``"channels_first"`` or ``"channels_last"``: the layer's own ``data_format`` if it has
    one, else that of the nearest spatial layer before it in the model, else Keras' global
    setting."""
    own = getattr(layer, "data_format", None)
    if own in ("channels_first", "channels_last"):
        return own
    found = keras.config.image_data_format()
    for candidate in walk(model):
        fmt = getattr(candidate, "data_format", None)
        if fmt in ("channels_first", "channels_last"):
            found = fmt
        if candidate is layer:
            break
    return found


def resolve_layer(model: keras.Model, layer: LayerSpec) -> LayerChoice:
    """Find the layer to explain at.

    Args:
        model: A built Keras model.
        layer: ``None`` (automatic), a name, a path such as ``"base/out_relu"`` into nested
            models, an index into ``model.layers`` (negative allowed), or a layer instance
            anywhere inside the model.

    Returns:
        The layer and its path.

    Raises:
        TypeError: ``layer`` is of another type.
        ValueError: the layer is not found, has no spatial output, or no suitable layer exists.

    Example:
        >>> resolve_layer(model, None).path  # doctest: +SKIP
        'mobilenetv2_1.00_224/out_relu'
    """
    rank = input_rank(model)
    if layer is None:
        if rank is None:
            raise ValueError(
                f"layer=None needs a model with a symbolic input to pick a layer automatically; "
                f"model {model.name!r} ({type(model).__name__}) has none. Pass layer= as a "
                "layer instance, name or index."
            )
        found = _auto_layer(model, rank, "")
        if found is None:
            raise ValueError(
                f"layer=None: no layer of model {model.name!r} has an output of rank {rank} "
                "(the input's rank), so no spatial feature map was found. Pass layer= explicitly."
            )
        return found
    if isinstance(layer, keras.layers.Layer):
        path = _path_of(model, layer, "")
        if path is None:
            raise ValueError(
                f"layer must be a layer of model {model.name!r}; received layer "
                f"{layer.name!r}, which is not part of it"
            )
        choice = LayerChoice(layer, path)
    elif isinstance(layer, str):
        choice = _layer_by_path(model, layer)
    elif isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        count = len(model.layers)
        if not -count <= int(layer) < count:
            raise ValueError(
                f"layer index must be in [{-count}, {count}) for model {model.name!r} with "
                f"{count} layers; received layer={int(layer)}"
            )
        found_layer = model.layers[int(layer)]
        choice = LayerChoice(found_layer, found_layer.name)
    else:
        raise TypeError(
            "layer must be None, a keras Layer, a name or path (str) or an index (int); "
            f"received {type(layer).__name__}: {layer!r}"
        )
    check_rank(choice, output_rank(choice.layer), rank)
    return choice


def check_rank(choice: LayerChoice, rank: int | None, wanted: int | None) -> None:
    """Raise a ValueError if a layer's output rank is known and is not the input's rank."""
    if rank is not None and wanted is not None and rank != wanted:
        raise ValueError(
            f"layer {choice.path!r} has an output of rank {rank}; Grad-CAM needs a spatial "
            f"feature map of rank {wanted}, the rank of the model's input (for images: "
            "batch, height, width, channels)"
        )


@contextlib.contextmanager
def intercept(
    layer: keras.layers.Layer, transform: Callable[[Any], Any]
) -> Iterator[list[Any]]:
    """Route ``layer``'s output through ``transform`` while the block runs.

    Yields the list of transformed outputs, one per call of the layer. The layer is restored
    on exit, also after an error. Backends use this to watch, perturb or detach the
    activation inside a traced call.

    Example:
        >>> with intercept(layer, lambda a: a) as outputs:  # doctest: +SKIP
        ...     model(x, training=False)
        >>> len(outputs)  # doctest: +SKIP
        1
    """
    had_own_call = "call" in vars(layer)
    original = layer.call
    outputs: list[Any] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        result = transform(original(*args, **kwargs))
        outputs.append(result)
        return result

    object.__setattr__(layer, "call", call)
    try:
        yield outputs
    finally:
        if had_own_call:
            object.__setattr__(layer, "call", original)
        else:
            object.__delattr__(layer, "call")


def single_activation(outputs: list[Any], path: str) -> Any:
    """The one activation :func:`intercept` captured; a ValueError if the layer ran zero or
    several times, or returned several tensors."""
    if len(outputs) != 1:
        how = "was not called" if not outputs else f"was called {len(outputs)} times"
        raise ValueError(
            f"layer {path!r} {how} when the model ran; Grad-CAM needs a layer that runs "
            "exactly once per forward pass"
        )
    activation = outputs[0]
    if isinstance(activation, (list, tuple, dict)):
        raise ValueError(
            f"layer {path!r} returns {len(activation)} tensors; Grad-CAM needs a layer with "
            "one output"
        )
    return activation


def symbolic_inputs(model: keras.Model) -> list[Any] | None:
    """The model's symbolic inputs, or ``None`` for a model without any (subclassed)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return list(inputs) if inputs else None


def _sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return list(getattr(layer, "layers", None) or [])


def walk(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside ``model``, depth first, nested models' layers included."""
    for sub in _sublayers(model):
        yield sub
        yield from walk(sub)


def _auto_layer(model: keras.layers.Layer, rank: int, prefix: str) -> LayerChoice | None:
    for candidate in reversed(_sublayers(model)):
        if output_rank(candidate) != rank:
            continue
        path = prefix + candidate.name
        if _sublayers(candidate):
            inner = _auto_layer(candidate, rank, path + "/")
            if inner is not None:
                return inner
        return LayerChoice(candidate, path)
    return None


def _path_of(model: keras.layers.Layer, layer: keras.layers.Layer, prefix: str) -> str | None:
    for sub in _sublayers(model):
        if sub is layer:
            return prefix + sub.name
        inner = _path_of(sub, layer, prefix + sub.name + "/")
        if inner is not None:
            return inner
    return None


def _layer_by_path(model: keras.Model, path: str) -> LayerChoice:
    current: keras.layers.Layer = model
    for depth, part in enumerate(path.split("/")):
        names = [sub.name for sub in _sublayers(current)]
        if part not in names:
            where = model.name if depth == 0 else "/".join(path.split("/")[:depth])
            shown = ", ".join(repr(n) for n in names[-8:])
            more = f" (last {min(len(names), 8)} of {len(names)})" if len(names) > 8 else ""
            raise ValueError(
                f"layer {path!r} not found: {where!r} has no layer named {part!r}; its layers "
                f"are {shown}{more}"
            )
        current = _sublayers(current)[names.index(part)]
    return LayerChoice(current, path)
