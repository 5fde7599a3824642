"""Which layer Grad-CAM looks at, and how its output is reached on any backend.

A layer is found by the automatic rule (:func:`auto_layer`: walking back along the computation
from the explained output, the last spatial feature map larger than 1x1, descending into nested
models; for vision transformers the tokens entering an attention layer), by name, by a
``"outer/inner"`` path (into nested models and into the sub-layers a layer holds, such as the
blocks keras_hub keeps in a Python list: ``"vit_backbone/vit_encoder/transformer_block_1/ln_1"``),
by index or as an instance. Its output is reached by :func:`intercept`, which routes the
layer's ``call`` through a function for the duration of one traced call. That single mechanism
works the same for Functional, Sequential, nested and subclassed models and for sub-layers
that are no graph nodes, and never rebuilds a sub-model.

A layer's output is a map when it is spatial, ``(batch, h, w, channels)``, or when it holds
tokens, ``(batch, tokens, channels)``, that are prefix tokens (class, distillation, register
tokens) followed by a patch grid: :class:`TokenLayout`, found from the image size and the
strides of the model's patch-embedding convolution (:func:`patch_size`), never assumed.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

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


@contextlib.contextmanager
def intercept(
    layer: keras.layers.Layer, transform: Callable[[Any], Any], method: str = "call"
) -> Iterator[list[Any]]:
    """Route ``layer``'s output through ``transform`` while the block runs.

    Yields the list of transformed outputs, one per call of the layer. The layer is restored
    on exit, also after an error. Backends use this to watch, perturb or detach the
    activation inside a traced call. ``method`` names the method routed (default ``call``;
    :func:`attention_weights` routes ``MultiHeadAttention._masked_softmax``).

    Example:
        >>> with intercept(layer, lambda a: a) as outputs:
        ...     _ = model(x, training=False)
        >>> len(outputs), tuple(outputs[0].shape)
        (1, (16, 12, 12, 48))
    """
    outputs: list[Any] = []
    with _routed(layer, method, lambda original: _transformed(original, transform, outputs)):
        yield outputs


def _transformed(original: Callable[..., Any], transform: Callable[[Any], Any],
                 outputs: list[Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        result = transform(original(*args, **kwargs))
        outputs.append(result)
        return result

    return call


@contextlib.contextmanager
def _routed(layer: Any, method: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
            ) -> Iterator[None]:
    """Replace ``layer.<method>`` by ``wrap(original)`` for the block; restored on exit."""
    had_own = method in vars(layer)
    original = getattr(layer, method)
    object.__setattr__(layer, method, wrap(original))
    try:
        yield
    finally:
        if had_own:
            object.__setattr__(layer, method, original)
        else:
            object.__delattr__(layer, method)


@contextlib.contextmanager
def attention_weights(
    layer: keras.layers.Layer, transform: Callable[[Any], Any]
) -> Iterator[list[Any]]:
    """Route the attention weights ``(batch, heads, queries, keys)`` of a
    ``keras.layers.MultiHeadAttention`` (keras_hub's attention layers are, or hold, one)
    through ``transform`` while the block runs, and yield them, one per call.

    The layer is made to take its explicit softmax path (as with
    ``return_attention_scores=True``; the fused ``dot_product_attention`` never forms the
    weights), returning what its caller asked for; so its output is the same up to float
    rounding, and the weights lie on the computation: a gradient with respect to them is the
    score's.

    Example:
        >>> import numpy as np
        >>> mha = attention_layers(vit)[0].layer
        >>> with attention_weights(mha, lambda a: a) as weights:
        ...     _ = vit(np.zeros((2, 16, 16, 3), "float32"), training=False)
        >>> tuple(weights[0].shape)  # (batch, heads, tokens, tokens)
        (2, 2, 17, 17)
    """
    def explicit(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            asked = kwargs.pop("return_attention_scores", False)
            output, scores = original(*args, return_attention_scores=True, **kwargs)
            return (output, scores) if asked else output

        return call

    flash = vars(layer).get("_flash_attention")
    with contextlib.ExitStack() as stack:
        if flash:  # flash attention forms no weights; off for the block
            object.__setattr__(layer, "_flash_attention", False)
            stack.callback(object.__setattr__, layer, "_flash_attention", flash)
        stack.enter_context(_routed(layer, "call", explicit))
        yield stack.enter_context(intercept(layer, transform, "_masked_softmax"))


@contextlib.contextmanager
def tapped(
    layer: keras.layers.Layer | None, path: str, attention: Sequence[keras.layers.Layer],
    transform: Callable[[int], Callable[[Any], Any]],
) -> Iterator[Callable[[], list[Any]]]:
    """The taps of one pass: ``layer``'s output (:func:`intercept`; ``None`` for none) and
    each attention layer's weights (:func:`attention_weights`), tap ``i`` routed through
    ``transform(i)`` (the layer's first); yields a function that, after the model ran,
    returns them in that order, each checked to be one tensor (:func:`single_activation`).

    Example:
        >>> import numpy as np
        >>> with tapped(None, "", [attention_layers(vit)[0].layer], lambda i: lambda a: a) as taps:
        ...     _ = vit(np.zeros((2, 16, 16, 3), "float32"), training=False)
        >>> [tuple(t.shape) for t in taps()]
        [(2, 2, 17, 17)]
    """
    with contextlib.ExitStack() as stack:
        named = [] if layer is None else [(stack.enter_context(
            intercept(layer, transform(0))), path)]
        first = len(named)
        named += [(stack.enter_context(attention_weights(a, transform(first + i))), a.name)
                  for i, a in enumerate(attention)]
        yield lambda: [single_activation(found, name) for found, name in named]


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


@dataclass(frozen=True)
class TokenLayout:
    """How a ``(batch, tokens, channels)`` output lies on the image: ``prefix`` tokens
    (class, distillation, register tokens) first, then a ``height x width`` patch grid in
    row-major order.

    Example:
        >>> import numpy as np
        >>> layout = TokenLayout(prefix=1, height=2, width=3)
        >>> layout.maps(np.zeros((4, 7, 16))).shape
        (4, 2, 3, 16)
    """

    prefix: int
    height: int
    width: int

    def maps(self, tokens: np.ndarray) -> np.ndarray:
        """``(..., tokens, C) -> (..., height, width, C)``: the prefix tokens dropped."""
        tokens = np.asarray(tokens)
        grid = tokens[..., self.prefix:, :]
        return grid.reshape(*tokens.shape[:-2], self.height, self.width, tokens.shape[-1])


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


def token_layout(tokens: int, image_size: tuple[int, int],
                 patch: tuple[int, int] | None) -> TokenLayout | None:
    """The :class:`TokenLayout` of ``tokens`` tokens of an ``image_size`` (height, width)
    image patched by ``patch``: the patch grid (image size over patch size) after fewer
    prefix tokens than grid cells, or, with no prefix, a stage's grid halved by patch
    merging (Swin); ``None`` if none fits (then ``reshape=`` says how).

    Example:
        >>> token_layout(69, (32, 32), (4, 4))  # DINOv2: class + 4 registers + 8x8
        TokenLayout(prefix=5, height=8, width=8)
        >>> token_layout(16, (32, 32), (4, 4))  # Swin's second stage: 4x4
        TokenLayout(prefix=0, height=4, width=4)
    """
    if patch is None:
        return None
    height, width = image_size[0] // patch[0], image_size[1] // patch[1]
    if 0 <= tokens - height * width < height * width:
        return TokenLayout(tokens - height * width, height, width)
    while height * width > 1 and tokens < height * width:
        height, width = -(-height // 2), -(-width // 2)
        if tokens == height * width and tokens > 1:
            return TokenLayout(0, height, width)
    return None


def attention_layers(model: keras.layers.Layer) -> list[LayerChoice]:
    """Every ``keras.layers.MultiHeadAttention`` inside ``model`` (keras_hub's ViT, DeiT and
    DINOv2 attend with one), in the order the model holds them (block by block).

    Example:
        >>> [a.path for a in attention_layers(vit)][:1]
        ['vit_backbone/vit_encoder/transformer_block_1/mha']
    """
    return [LayerChoice(layer, path) for layer, path in walk_paths(model)
            if graph_of(layer).is_a(layer, "MultiHeadAttention")]


_ATTENTION_LAYOUTS: weakref.WeakKeyDictionary[Any, TokenLayout | None] = (
    weakref.WeakKeyDictionary())


def attention_layout(model: keras.Model) -> TokenLayout | None:
    """Where the tokens of the model's first ``MultiHeadAttention`` lie at the model's own
    input size: prefix tokens, then the patch grid (:func:`token_layout`). ``None`` without
    such an attention, without a fixed input size or a patch embedding, or when its tokens
    lie on no grid. Found once per model from the layer's built query shape, else from a
    symbolic call (nothing is computed), and cached.

    Example:
        >>> attention_layout(vit)  # a keras_hub ViT: class token + 4x4 patches
        TokenLayout(prefix=1, height=4, width=4)
    """
    if model in _ATTENTION_LAYOUTS:
        return _ATTENTION_LAYOUTS[model]
    found = attention_layers(model)
    shape = input_shape(model)
    patch = patch_size(model)
    layout = None
    if found and shape is not None and patch is not None and all(
            d is not None for d in shape):
        tokens = _attended_tokens(model, found[0].layer, tuple(shape))
        size = shape[1:3] if data_format(model, found[0].layer) == "channels_first" \
            else shape[:2]
        layout = None if tokens is None else token_layout(tokens, size, patch)
    _ATTENTION_LAYOUTS[model] = layout
    return layout


def _attended_tokens(model: keras.Model, attention: Any, shape: tuple[int, ...]) -> int | None:
    """How many tokens ``attention`` attends over when ``model`` sees one input of ``shape``."""
    built = (getattr(attention, "_build_shapes_dict", None) or {}).get("query_shape")
    if built is not None and len(built) == 3 and is_int(built[1]):
        return int(built[1])
    try:
        with attention_weights(attention, lambda weights: weights) as weights:
            model.compute_output_spec(keras.KerasTensor((1,) + shape))
    except Exception:  # noqa: BLE001 - a model that cannot run symbolically: unknown
        return None
    return int(weights[0].shape[-1]) if len(weights) == 1 else None


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
