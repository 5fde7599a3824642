"""The CAM methods and their registry: the engine, the callback and the command line know
methods only through :data:`METHODS` and :func:`get_method`.

A method is one module here with a ``METHOD`` (:class:`~.base.Method`) whose ``compute``
maps the engine's :class:`~.base.CamInputs` to unnormalised maps; adding a method is one
file and one line in :data:`METHODS`. Every map is then normalised ELI5's way
(:func:`gradcam_callbacks.cam.normalise`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import is_int
from ..cam import normalise
from . import (
    eigencam,
    grad_rollout,
    gradcam,
    gradcam_plus_plus,
    hirescam,
    layercam,
    rollout,
    scorecam,
    xgradcam,
)
from .base import CamInputs, CamResult, Method, ScoreCallable

METHODS: dict[str, Method] = {
    module.METHOD.name: module.METHOD
    for module in (gradcam, gradcam_plus_plus, xgradcam, hirescam, layercam, eigencam, scorecam,
                   rollout, grad_rollout)
}
#: ``method=None``, the default everywhere (explain, callback, command line): chosen per
#: model by :func:`resolve`.
AUTO = None
DEFAULT = AUTO
# Methods that take the options of the same name; the others refuse them.
_OPTIONS = {"max_channels": ("scorecam",)}

__all__ = ["AUTO", "METHODS", "CamInputs", "CamResult", "Method", "ScoreCallable", "apply",
           "check_options", "get_method", "heatmaps", "resolve"]


def get_method(method: Any) -> Method:
    """The registered method called ``method``.

    Raises:
        TypeError: ``method`` is not a string.
        ValueError: no method has that name.

    Example:
        >>> get_method("layercam").title
        'LayerCAM'
    """
    if isinstance(method, Method):
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a method name (str), one of {sorted(METHODS)}, or None "
            f"(automatic); received "
            f"{type(method).__name__}: {method!r}"
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}; received method={method!r}")
    return METHODS[method]


def resolve(method: Any, model: Any, automatic_layer: bool = True) -> Method:
    """The method that runs on ``model``: ``method`` itself when named, never overridden;
    for ``None`` (:data:`AUTO`, the default) the one that localises on that kind of model
    (measured, docs/methods.md):

    - Grad-CAM (ELI5's numbers) when the model's automatic layer is a spatial feature map:
      every CNN;
    - attention rollout on a vision transformer whose attention is global (a
      ``MultiHeadAttention``: keras_hub's ViT, DeiT, DINOv2) over prefix tokens (class,
      distillation, registers) and a patch grid, with the automatic layer (rollout reads no
      layer);
    - HiResCAM on the token layer otherwise: windowed attention (Swin), no prefix token, or a
      layer you gave.

    This is the only place that decides; explain, the callback and the command line call it
    through :meth:`gradcam_callbacks.explain.Plan.resolve`, where the model is known.

    Raises:
        TypeError, ValueError: ``method`` is neither ``None`` nor a method's name.

    Example:
        >>> resolve(None, model).name, resolve(None, vit).name, resolve("layercam", vit).name
        ('gradcam', 'rollout', 'layercam')
    """
    if method is not AUTO:
        return get_method(method)
    from .. import layers  # the engine's model facts; methods themselves never need them

    if layers.transformer_layer(model) is None:
        return METHODS["gradcam"]
    layout = layers.attention_layout(model) if automatic_layer else None
    if layout is not None and layout.prefix > 0:
        return METHODS["rollout"]
    return METHODS["hirescam"]


def check_positive(name: str, value: Any) -> int | None:
    """``value`` as an int if it is a positive integer, ``None`` if it is ``None``; else a
    ValueError naming ``name``.

    Example:
        >>> check_positive("batch_size", 8)
        8
    """
    if value is None:
        return None
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None; received {value!r}")
    return int(value)


def check_options(method: Any, max_channels: Any = None) -> Method | None:
    """Validate ``method`` and its options together; returns the method, or ``None`` for
    the automatic choice (:func:`resolve`, made once the model is known).

    Example:
        >>> check_options("scorecam", max_channels=64).name
        'scorecam'
        >>> check_options(None) is None
        True
    """
    chosen = None if method is AUTO else get_method(method)
    check_positive("max_channels", max_channels)
    if max_channels is not None and (chosen is None
                                     or chosen.name not in _OPTIONS["max_channels"]):
        raise ValueError(
            f"max_channels applies to method='scorecam' only; received max_channels="
            f"{max_channels!r} with method={None if chosen is None else chosen.name!r}"
        )
    return chosen


def apply(method: Method | str, inputs: CamInputs) -> tuple[np.ndarray, np.ndarray]:
    """``(heatmaps (N, K, h, w) in [0, 1], weights (N, K, C))`` of ``method`` on ``inputs``.

    Example:
        >>> import numpy as np
        >>> inputs = CamInputs(np.ones((1, 2, 2, 3)), np.ones((1, 1, 2, 2, 3)),
        ...                    np.ones((1, 4, 4, 3)), np.zeros((1, 1), int), "channels_last",
        ...                    score=lambda x: x.mean(axis=(1, 2)), batch_size=4)
        >>> apply("layercam", inputs)[0].shape
        (1, 1, 2, 2)
    """
    result = get_method(method).compute(inputs)
    return normalise(result.maps), result.weights


def heatmaps(method: Method | str, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Normalised maps ``(N, K, h, w)`` of a method that needs only activations
    ``(N, h, w, C)`` and gradients ``(N, K, h, w, C)`` (every method but Score-CAM).

    Example:
        >>> import numpy as np
        >>> round(float(heatmaps("hirescam", np.ones((1, 2, 2, 3)),
        ...                      np.ones((1, 1, 2, 2, 3))).max()), 3)
        1.0
    """
    grads = np.asarray(grads)

    def no_scores(_: np.ndarray) -> np.ndarray:
        raise ValueError(f"method {get_method(method).name!r} needs the model's scores; "
                         "use explain_predictions")

    inputs = CamInputs(np.asarray(activations), grads, np.zeros((len(grads), 1, 1, 1)),
                       np.zeros(grads.shape[:2], np.int32), "channels_last", no_scores, 1)
    return apply(method, inputs)[0]
