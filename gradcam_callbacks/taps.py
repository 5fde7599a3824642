"""How a layer's output is reached on any backend, inside one traced call.

:func:`intercept` routes a layer's ``call`` through a function for the duration of one traced
call. That single mechanism works the same for Functional, Sequential, nested and subclassed
models and for sub-layers that are no graph nodes, and never rebuilds a sub-model.
:func:`attention_weights` does the same for the weights a ``MultiHeadAttention`` forms, and
:func:`tapped` gathers a pass's taps (the layer's output, each attention layer's weights).
Which layer: :mod:`gradcam_callbacks.layers`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras


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
        >>> from gradcam_callbacks.tokens import attention_layers
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
        >>> from gradcam_callbacks.tokens import attention_layers
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
