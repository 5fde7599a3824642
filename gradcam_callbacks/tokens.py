"""Where a transformer's tokens lie on the image.

A layer's ``(batch, tokens, channels)`` output is a map when its tokens are prefix tokens
(class, distillation, register tokens) followed by a patch grid: :class:`TokenLayout`, found
from the image size and the strides of the model's patch-embedding convolution
(:func:`gradcam_callbacks.layers.patch_size`), never assumed. Which layer a transformer is
explained at: :func:`gradcam_callbacks.layers.transformer_layer`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ._validation import is_int
from .keras_family import graph_of
from .layers import LayerChoice, data_format, input_shape, patch_size, walk_paths
from .taps import attention_weights


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
