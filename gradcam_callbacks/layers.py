"""Which layer Grad-CAM looks at.

A layer is found by the automatic rule (:func:`auto_layer`: walking back along the computation
from the explained output, the last spatial feature map larger than 1x1, descending into nested
models; for vision transformers the tokens entering an attention layer,
:func:`transformer_layer`), by name, by a ``"outer/inner"`` path (into nested models and into
the sub-layers a layer holds, such as the blocks keras_hub keeps in a Python list:
``"vit_backbone/vit_encoder/transformer_block_1/ln_1"``), by index or as an instance. A layer's
output is a map when it is spatial, ``(batch, h, w, channels)``, or when it holds tokens,
``(batch, tokens, channels)`` (where those lie on the image: :mod:`gradcam_callbacks.tokens`).
How a pass reaches the chosen layer's output: :mod:`gradcam_callbacks.taps`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras

from ._validation import is_int
from .keras_family import KerasGraph, graph_of

LayerSpec = keras.layers.Layer | str | int | None


@dataclass(frozen=True)
class LayerChoice:
    """A layer picked for Grad-CAM and the path that names it from the outer model.

    Example:
        >>> inputs = keras.Input((48, 48, 1))
        >>> outer = keras.Model(inputs, model(inputs))  # model nested in another
        >>> choice = resolve_layer(outer, "cluttered_digits_cnn/last_conv")
        >>> choice.path, choice.layer.name
        ('cluttered_digits_cnn/last_conv', 'last_conv')
    """

    layer: keras.Operation  # a Layer, or an operation of a Functional such as ``x + y``
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
    found = graph_of(model).image_data_format(model)
    for candidate in walk(model):
        fmt = getattr(candidate, "data_format", None)
        if fmt in ("channels_first", "channels_last"):
            found = fmt
        if candidate is layer:
            break
    return found


def resolve_layer(model: keras.Model, layer: LayerSpec, output_index: int = 0) -> LayerChoice:
    """Find the layer to explain at.

    Args:
        model: A built Keras model.
        layer: ``None`` (automatic, see :func:`auto_layer`), a name, a path such as
            ``"base/out_relu"`` into nested models, an index into ``model.layers`` (negative
            allowed), or a layer instance anywhere inside the model.
        output_index: Which of the model's (flattened) outputs is explained; the automatic
            choice walks back from it.

    Returns:
        The layer and its path.

    Raises:
        TypeError: ``layer`` is of another type.
        ValueError: the layer is not found, has no spatial output, or no suitable layer exists.

    Example:
        >>> resolve_layer(model, None).path
        'last_conv'
    """
    if layer is None:
        return auto_layer(model, output_index)
    rank = input_rank(model)
    if graph_of(layer).is_a(layer, "Layer"):
        path = _path_of(model, layer, "")
        if path is None:
            raise ValueError(
                f"layer must be a layer of model {model.name!r}; received layer "
                f"{layer.name!r}, which is not part of it"
            )
        choice = LayerChoice(layer, path)
    elif isinstance(layer, str):
        choice = _layer_by_path(model, layer)
    elif is_int(layer):
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
    """Raise a ValueError if a layer's output rank is known and is neither the input's rank
    (a spatial map) nor one less (tokens, ``(batch, tokens, channels)``)."""
    if rank is not None and wanted is not None and rank not in (wanted, wanted - 1):
        raise ValueError(
            f"layer {choice.path!r} has an output of rank {rank}; Grad-CAM needs a spatial "
            f"feature map of rank {wanted}, the rank of the model's input (for images: "
            f"batch, height, width, channels), or tokens of rank {wanted - 1} (batch, tokens, "
            "channels) on a patch grid"
        )


def symbolic_inputs(model: keras.Model) -> list[Any] | None:
    """The model's symbolic inputs, or ``None`` for a model without any (subclassed)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return list(inputs) if inputs else None


def _sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """A model's layers; a plain layer's own sub-layers (keras_hub keeps a transformer's
    blocks in a Python list inside one layer), in the order they were assigned."""
    found = getattr(layer, "layers", None)
    if found is None and callable(getattr(layer, "_flatten_layers", None)):
        found = layer._flatten_layers(include_self=False, recursive=False)
    return list(found or [])


def walk(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside ``model``, depth first, nested models' layers and layers' own
    sub-layers included."""
    for sub, _ in walk_paths(model):
        yield sub


def walk_paths(model: keras.layers.Layer, prefix: str = ""
               ) -> Iterator[tuple[keras.layers.Layer, str]]:
    """``(layer, path)`` of every layer inside ``model``, depth first; ``path`` names it
    from ``model`` as :func:`resolve_layer` reads it.

    Example:
        >>> [path for _, path in walk_paths(vit)][:3]
        ['images', 'vit_backbone', 'vit_backbone/images']
    """
    for sub in _sublayers(model):
        path = prefix + sub.name
        yield sub, path
        yield from walk_paths(sub, path + "/")


def patch_size(model: keras.layers.Layer) -> tuple[int, int] | None:
    """The strides of the model's patch embedding: its first 2D convolution whose kernel
    equals its strides, larger than 1 (ViT, DeiT, DINOv2, Swin all patch the image so);
    ``None`` if it has none.

    Example:
        >>> patch_size(vit), patch_size(model)  # a keras_hub ViT, a CNN
        ((4, 4), None)
    """
    for layer in walk(model):
        kernel, strides = getattr(layer, "kernel_size", None), getattr(layer, "strides", None)
        if (isinstance(kernel, (tuple, list)) and len(kernel) == 2 and strides is not None
                and tuple(kernel) == tuple(strides) and max(kernel) > 1):
            return int(strides[0]), int(strides[1])
    return None


def _attends(layer: Any) -> bool:
    """A layer that attends: a ``MultiHeadAttention``, or a layer named ``...Attention``
    that holds none (Swin's ``WindowAttention``; not wrappers such as DINOv2's)."""
    if graph_of(layer).is_a(layer, "MultiHeadAttention"):
        return True
    return type(layer).__name__.endswith("Attention") and not any(
        _attends(sub) for sub in _sublayers(layer))


def _is_norm(layer: Any) -> bool:
    return "Norm" in type(layer).__name__ and not graph_of(layer).is_a(layer, "Normalization")


# Which transformer block's attention input the automatic rule takes: the first
# (measured, docs/methods.md "Vision transformers").
TOKEN_BLOCK = 0


def transformer_layer(model: keras.layers.Layer) -> LayerChoice | None:
    """The automatic layer of a vision transformer: the normalised tokens the attention of
    block :data:`TOKEN_BLOCK` reads (keras_hub's ``ln_1`` / ``norm1``; in a Functional, the
    layer feeding the attention). ``None`` for a model without a patch embedding
    (:func:`patch_size`) or without attention.

    A transformer's last tokens are no choice: a classifier pooling the class token sends
    no gradient to the last block's patch tokens, and the patch-embedding convolution (the
    first layer) only projects pixels.

    Example:
        >>> transformer_layer(vit).path
        'vit_backbone/vit_encoder/transformer_block_1/ln_1'
    """
    if patch_size(model) is None:
        return None
    found: dict[int, LayerChoice] = {}
    for parent in [model, *walk(model)]:
        children = _sublayers(parent)
        for position, child in enumerate(children):
            # an attention layer, or a wrapper named so (DINOv2's holds the attention)
            if not (_attends(child) or type(child).__name__.endswith("Attention")):
                continue
            feeding = _feeding_layer(child, children[:position])
            path = None if feeding is None else _path_of(model, feeding, "")
            if path is not None:
                found.setdefault(id(feeding), LayerChoice(feeding, path))
    if not found:
        return None
    choices = list(found.values())
    return choices[min(TOKEN_BLOCK, len(choices) - 1)]


def _feeding_layer(attention: Any, before: list[Any]) -> Any | None:
    """The layer whose output the attention reads: in a graph, the maker of its query
    input; among a block's sub-layers, the normalisation assigned just before it."""
    graph = graph_of(attention)
    nodes = getattr(attention, "_inbound_nodes", None) or []
    if len(nodes) == 1:
        inputs = graph.node_inputs(nodes[0])
        made = graph.node_of(inputs[0]) if inputs else None
        if made is not None and not graph.is_a(made[0], "InputLayer"):
            return made[0]
    if before and _is_norm(before[-1]):
        return before[-1]
    return None


def auto_layer(model: keras.Model, output_index: int = 0) -> LayerChoice:
    """The automatic layer: the last spatial feature map larger than 1x1 before the output.

    Starting at the explained output, the computation is walked back towards the input
    (Functional models by their graph, Sequential models by their layer order), stepping
    into every nested Functional or Sequential model from its output, whatever that output's
    rank. The first operation met (so the last one computed) whose output

    - has the rank of the model's input (4 for images),
    - has spatial dims that are not all 1 (unknown dims count as larger than 1), and
    - comes after a layer that learns features, or is one: a layer holding a weight matrix
      or kernel, a weight of rank >= 2 (``Conv2D``, ``DepthwiseConv2D``, ``Dense``, ...).
      ``Normalization`` and weightless layers (``Rescaling``, ``Resizing``, ``CenterCrop``,
      augmentation) do not count, so a map that only transforms the raw input is never
      chosen,

    is the choice. A vision transformer (a patch embedding and attention layers) gets
    :func:`transformer_layer` instead: the tokens its first attention reads, never the patch-
    embedding convolution. On a plain CNN this is ELI5's choice, the last layer whose output has
    the input's rank. It differs where ``model.layers`` order is not the order of computation
    (ConvNeXt's residual ``add`` comes after the branch it closes, but is not a layer) and on
    1x1 heads (MobileNetV3's ``logits`` convolution): the map the global pooling reads is taken.
    Where the walk forks before finding a map (a layer with several inputs, such as two pooled
    branches concatenated), every branch is followed: branches that reach the same map agree;
    branches that reach different maps are reported in a ValueError listing them.

    Args:
        model: A built Functional or Sequential model (possibly with nested models).
        output_index: Which of the model's (flattened) outputs is explained.

    Returns:
        The layer (or Keras operation, such as ConvNeXt's ``add``) and its path from ``model``.

    Raises:
        ValueError: the model has no graph (subclassed), or no map or several maps qualify.

    Example:
        >>> auto_layer(model).path
        'last_conv'
    """
    transformer = transformer_layer(model)
    if transformer is not None:
        return transformer
    graph = graph_of(model)
    rank, outputs = input_rank(model), _graph_outputs(graph, model)
    if rank is None or outputs is None:
        raise ValueError(
            f"layer=None needs a model with a symbolic input to pick a layer automatically; "
            f"model {model.name!r} ({type(model).__name__}) has none. Pass layer= as a "
            "layer instance, name or index."
        )
    found: dict[int, LayerChoice] = {}
    seen: set[tuple[int, ...]] = set()
    stack: list[_Site] = [(outputs[output_index], ())]
    while stack:
        site = _settle(graph, stack.pop())
        if site is None or _site_key(site) in seen:
            continue
        seen.add(_site_key(site))
        if not _learned_before(graph, site):
            continue  # nothing before it learns features, so nothing before it qualifies
        choice = _spatial_map(graph, model, site, rank)
        if choice is None:
            stack.extend(_parents(graph, site))
        else:
            found.setdefault(id(choice.layer), choice)
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise ValueError(
            f"layer=None: walking back from output {output_index} of model {model.name!r}, no "
            f"layer has an output of rank {rank} (the input's rank) larger than 1x1 after a "
            "layer with learned weights, so no spatial feature map was found (preprocessing of "
            "the raw input, such as Rescaling, is never chosen). Pass layer= explicitly."
        )
    paths = ", ".join(repr(choice.path) for choice in found.values())
    raise ValueError(
        f"layer=None: output {output_index} of model {model.name!r} is reached from "
        f"{len(found)} different spatial feature maps, one per branch: {paths}. Pass layer= "
        "with the one to explain."
    )


# A point of the walk: a symbolic tensor and the nested models it lies in, outermost first,
# each as (nested model, the outer node that called it).
_Site = tuple[Any, tuple[tuple[Any, Any], ...]]


def _graph_outputs(graph: KerasGraph, model: Any) -> list[Any] | None:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return graph.flatten(outputs) if outputs else None


def _settle(graph: KerasGraph, site: _Site) -> _Site | None:
    """Move the site to the operation that really computes it: into a nested model from its
    output, out of a nested model from its input; ``None`` at the outer model's input."""
    tensor, frames = site
    while True:
        made = graph.node_of(tensor)
        if made is None:
            return None
        operation, node, index = made
        inner = _graph_outputs(graph, operation) if graph.is_a(operation, "Model") else None
        if inner is not None:
            tensor, frames = inner[index], (*frames, (operation, node))
        elif node.is_input:
            if not frames:
                return None
            nested, outer = frames[-1]
            inputs = symbolic_inputs(nested) or []
            position = next((i for i, t in enumerate(inputs) if t is tensor), 0)
            outer_inputs = graph.node_inputs(outer)
            if position >= len(outer_inputs):
                return None
            tensor, frames = outer_inputs[position], frames[:-1]
        else:
            return tensor, frames


def _site_key(site: _Site) -> tuple[int, ...]:
    tensor, frames = site
    return (id(tensor), *(id(node) for _, node in frames))


def _parents(graph: KerasGraph, site: _Site) -> list[_Site]:
    tensor, frames = site
    made = graph.node_of(tensor)
    return [] if made is None else [(t, frames) for t in graph.node_inputs(made[1])]


def _learns_features(graph: KerasGraph, operation: Any) -> bool:
    if graph.is_a(operation, "Normalization"):
        return False
    return any(len(weight.shape) >= 2 for weight in getattr(operation, "weights", None) or [])


def _learned_before(graph: KerasGraph, site: _Site) -> bool:
    """Whether the site's operation, or one before it, learns features."""
    stack, seen = [site], set()
    while stack:
        settled = _settle(graph, stack.pop())
        if settled is None or _site_key(settled) in seen:
            continue
        seen.add(_site_key(settled))
        made = graph.node_of(settled[0])
        if made is not None and _learns_features(graph, made[0]):
            return True
        stack.extend(_parents(graph, settled))
    return False


def _spatial_map(
    graph: KerasGraph, model: keras.Model, site: _Site, rank: int
) -> LayerChoice | None:
    """The site's operation if its (single) output is a spatial map larger than 1x1."""
    tensor, frames = site
    made = graph.node_of(tensor)
    shape = tuple(tensor.shape)
    if made is None or len(shape) != rank or len(graph.node_outputs(made[1])) != 1:
        return None
    operation = made[0]
    spatial = shape[2:] if data_format(model, operation) == "channels_first" else shape[1:-1]
    if all(size == 1 for size in spatial):
        return None
    return LayerChoice(operation, "/".join([*(m.name for m, _ in frames), operation.name]))


def _members(model: Any) -> list[Any]:
    """The layers of a model and its other Keras operations (``x + y`` in a Functional)."""
    layers = _sublayers(model)
    extra = [op for op in getattr(model, "operations", None) or []
             if not graph_of(op).is_a(op, "Layer")]
    return layers + extra


def _path_of(model: keras.layers.Layer, layer: keras.layers.Layer, prefix: str) -> str | None:
    for sub in _members(model):
        if sub is layer:
            return prefix + sub.name
        inner = _path_of(sub, layer, prefix + sub.name + "/")
        if inner is not None:
            return inner
    return None


def _layer_by_path(model: keras.Model, path: str) -> LayerChoice:
    current: keras.layers.Layer = model
    for depth, part in enumerate(path.split("/")):
        members = _members(current)
        names = [sub.name for sub in members]
        if part not in names:
            where = model.name if depth == 0 else "/".join(path.split("/")[:depth])
            shown = ", ".join(repr(n) for n in names[-8:])
            more = f" (last {min(len(names), 8)} of {len(names)})" if len(names) > 8 else ""
            raise ValueError(
                f"layer {path!r} not found: {where!r} has no layer named {part!r}; its layers "
                f"are {shown}{more}"
            )
        current = members[names.index(part)]
    return LayerChoice(current, path)
