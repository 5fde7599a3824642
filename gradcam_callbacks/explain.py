"""The ELI5-compatible facade: ``explain_prediction(s)``, ``show_prediction`` and
``gradcam_backend`` read their arguments (methods once, at the edge:
:func:`gradcam_callbacks.methods.choose`), run the engine's one entry
(:meth:`gradcam_callbacks.engine.Plan.run`) and build :class:`~gradcam_callbacks.Explanation`
objects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from PIL import Image

from . import layers, methods, tokens
from . import targets as scores_module
from ._validation import check_names, check_pictures, to_picture
from .engine import (  # noqa: F401 - the engine's names, importable from here as before
    NonFiniteError,
    Plan,
    RawExplanation,
    ReshapeSpec,
    TargetsSpec,
    check_docs,
    plan,
)
from .engine.checks import OutputSpec
from .explanation import Explanation, TargetExplanation


def _run(model: keras.Model, docs: Any, targets: Any, layer: layers.LayerSpec,
         output: OutputSpec, method: Any, max_channels: Any, batch_size: Any,
         reshape: ReshapeSpec, single: bool, images: Any = None,
         ) -> tuple[np.ndarray, RawExplanation, list[Image.Image] | None]:
    """Read the arguments (every check before any computation), then one pass; returns the
    docs as numpy, the engine's numbers and the checked ``images``."""
    [chosen] = methods.choose(method, max_channels=max_channels)
    methods.positive_or_none("batch_size", batch_size)
    pass_plan = plan(model, layer, output, reshape)
    docs = check_docs(model, docs, single=single)
    pictures = check_pictures(images, len(docs), "images", per="doc")
    slots = pass_plan.targets(targets, len(docs))
    [raw] = pass_plan.run(docs, slots, [chosen], batch_size)
    return docs, raw, pictures


def explain_raw(
    model: keras.Model,
    docs: np.ndarray,
    targets: TargetsSpec = None,
    layer: layers.LayerSpec = None,
    output: OutputSpec = None,
    *,
    single: bool = False,
    batch_size: int | None = None,
    method: methods.MethodSpec = methods.DEFAULT,
    max_channels: int | None = None,
    reshape: ReshapeSpec = None,
) -> RawExplanation:
    """Validate everything, then run one compiled pass over ``docs`` and ``method`` on it.

    ``single=True`` enforces ELI5's batch of exactly one doc.

    Example:
        >>> raw = explain_raw(model, docs)
        >>> raw.heatmaps.shape
        (4, 1, 12, 12)
    """
    return _run(model, docs, targets, layer, output, method, max_channels, batch_size, reshape,
                single)[1]


def explain_predictions(
    model: keras.Model,
    docs: np.ndarray,
    images: Sequence[Image.Image | np.ndarray] | None = None,
    targets: TargetsSpec = None,
    layer: layers.LayerSpec = None,
    output: OutputSpec = None,
    *,
    batch_size: int | None = None,
    method: methods.MethodSpec = methods.DEFAULT,
    max_channels: int | None = None,
    reshape: ReshapeSpec = None,
) -> list[Explanation]:
    """Explain N images in one compiled forward and backward pass.

    Args:
        model: A built Keras model (Functional, Sequential, nested or, with ``layer`` given,
            subclassed) on any Keras 3 backend.
        docs: Inputs, shape ``(N,) + model.input_shape[1:]`` (``None`` dims take any size):
            a numpy array, a TensorFlow / JAX / PyTorch tensor or nested lists of numbers.
        images: Optional pictures to draw on, one per doc (Pillow images or uint8 arrays).
            By default each is derived from its doc like ``keras.utils.array_to_img``.
        targets: ``None`` (each doc's top class), a list of N class indices, or a list of N
            lists (several targets per doc). Or score functions (see
            :mod:`gradcam_callbacks.targets`): one for every doc (``RegressionScore()``,
            ``SegmentationScore(3)``), or a list with one per doc (or a list per doc); the
            output may then have any rank, and ``Explanation.targets[k].target`` holds the
            function's ``repr`` (a str) instead of a class index.
        layer: ``None`` (the last layer with a spatial output, inside nested models too), a
            name, a path ``"base/layer"``, an index, or a layer instance.
        output: For models with several outputs: an index or an output name (default 0).
        batch_size: Run at most this many docs per pass (default: all at once); Score-CAM
            also scores at most this many masked inputs per forward (default: 2 MiB of them).
        method: ``None`` (the default): **chosen per model**
            (:meth:`gradcam_callbacks.engine.Plan.resolve`): Grad-CAM, ELI5's numbers, on every
            model whose automatic layer is a spatial feature map (CNNs); attention rollout
            on a vision transformer with global attention and a class token (keras_hub ViT,
            DeiT, DINOv2), where Grad-CAM does not localise; HiResCAM on the tokens
            otherwise (Swin). ``Explanation.method`` names the method used. Or a method,
            never overridden: a name, ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``,
            ``"hirescam"``, ``"layercam"``, ``"eigencam"``, ``"scorecam"``, ``"rollout"``
            or ``"grad-rollout"`` (see docs/methods.md), or a configured value from
            :mod:`gradcam_callbacks.methods` such as ``ScoreCAM(max_channels=64)``.
        max_channels: Shorthand for ``method=ScoreCAM(max_channels=N)``: score just the N
            channels with the largest spatial standard deviation (default: all).
        reshape: For a token layer ``(N, tokens, channels)`` on no patch grid the model
            shows: a function from its tokens (numpy ``(N, T, C)``) to maps ``(N, h, w, C)``.
            By default the grid comes from the image size over the patch size and the
            prefix tokens (class, distillation, registers) are dropped.

    Returns:
        One :class:`Explanation` per doc.

    Raises:
        TypeError, ValueError: bad arguments, named, before anything is computed.
        NonFiniteError: (a ``ValueError``) the model produced NaN or inf for some docs,
            named by index; no heatmap is returned rather than one outside [0, 1].

    Example:
        >>> expls = explain_predictions(model, x_test[:16])
        >>> [e.targets[0].target for e in expls[:3]]
        [4, 8, 5]
    """
    docs, raw, pictures = _run(model, docs, targets, layer, output, method, max_channels,
                               batch_size, reshape, False, images)
    return explanations_from_raw(model, docs, raw, pictures)


def explain_prediction(
    model: keras.Model,
    doc: np.ndarray,
    image: Image.Image | np.ndarray | None = None,
    targets: Sequence[Any] | scores_module.ScoreFunction | None = None,
    layer: layers.LayerSpec = None,
    output: OutputSpec = None,
    *,
    method: methods.MethodSpec = methods.DEFAULT,
    max_channels: int | None = None,
    batch_size: int | None = None,
    reshape: ReshapeSpec = None,
) -> Explanation:
    """Explain one image with Grad-CAM, with the API and the numbers of ELI5's Keras support
    (or with another CAM method; on a vision transformer, by default, attention rollout).

    Args:
        model: A built Keras model.
        doc: One input with a batch axis of 1: ``(1,) + model.input_shape[1:]``; a numpy
            array, a TensorFlow / JAX / PyTorch tensor or nested lists of numbers.
        image: The picture to draw on (Pillow image or uint8 array); pass the original image
            when ``doc`` is preprocessed, else it is derived from ``doc`` by a min-max stretch.
        targets: ``None`` (the top class) or a list of class indices, one
            :class:`TargetExplanation` each; or a score function, or a list of them (see
            :mod:`gradcam_callbacks.targets` and :func:`explain_predictions`).
        layer: ``None`` (automatic), a name, a ``"base/layer"`` path, an index or a layer.
        output: For models with several outputs: an index or a name (default the first).
        method: ``None`` (default): chosen per model, Grad-CAM on a CNN (ELI5's numbers),
            attention rollout on a keras_hub ViT / DeiT / DINOv2, HiResCAM on Swin (see
            :func:`explain_predictions`); or a method's name or value, never overridden.
        max_channels: Shorthand for ``method=ScoreCAM(max_channels=N)`` (default: all).
        batch_size: Score-CAM only: at most this many masked inputs per forward (default:
            2 MiB of them).
        reshape: Token layers only: tokens ``(N, T, C)`` to maps ``(N, h, w, C)``, for a
            layout the model does not show (see :func:`explain_predictions`).

    Returns:
        An :class:`Explanation` whose ``targets[k].heatmap`` is a 2D array in [0, 1].

    Raises:
        NonFiniteError: (a ``ValueError``) the model's score, activations or gradients for
            ``doc`` are NaN or infinite (e.g. a diverged model), so no map in [0, 1] exists.

    Example:
        >>> expl = explain_prediction(model, x[:1], targets=[3])
        >>> expl.targets[0].target, expl.targets[0].heatmap.shape
        (3, (12, 12))
    """
    pictures = None if image is None else [to_picture(image, "image")]
    if callable(targets):
        targets = [targets]
    if targets is not None and (
        not isinstance(targets, (list, tuple, np.ndarray)) or np.ndim(targets) != 1
    ):
        raise TypeError(
            f"targets must be None or a list of class indices; received {targets!r} (a score "
            "function, or a list of them, is accepted too: see gradcam_callbacks.targets)"
        )
    doc, raw, _ = _run(model, doc, None if targets is None else [list(targets)], layer, output,
                       method, max_channels, batch_size, reshape, True)
    return explanations_from_raw(model, doc, raw, pictures)[0]


def show_prediction(model: keras.Model, doc: np.ndarray, **kwargs: Any) -> Image.Image:
    """Explain one image and return its overlay (Jupyter shows a returned Pillow image).

    With one target the picture is ELI5's overlay; with several, the input and one overlay
    per target in a row, each labelled with its class (its name with ``class_names``) and
    score (:func:`~gradcam_callbacks.image.explanation_strip`).

    ``resampling_filter``, ``colormap`` and ``alpha_limit`` go to
    :func:`~gradcam_callbacks.format_as_image`; ``image``, ``targets``, ``layer``,
    ``output``, ``method``, ``max_channels``, ``batch_size`` and ``reshape`` to
    :func:`explain_prediction`;
    ``class_names`` names the classes in the labels.

    Example:
        >>> show_prediction(model, x[:1], alpha_limit=0.5).size
        (48, 48)
        >>> show_prediction(model, x[:1], targets=[3, 5]).size
        (440, 180)
    """
    from .image import check_alpha_limit, explanation_strip, format_as_image, get_colormap

    format_names = ("resampling_filter", "colormap", "alpha_limit")
    explain_names = ("image", "targets", "layer", "output", "method", "max_channels",
                     "batch_size", "reshape")
    unknown = sorted(set(kwargs) - set(format_names) - set(explain_names) - {"class_names"})
    if unknown:
        raise TypeError(
            f"show_prediction() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(explain_names + format_names + ('class_names',))}"
        )
    check_alpha_limit(kwargs.get("alpha_limit"))
    get_colormap(kwargs.get("colormap", "viridis"))
    class_names = kwargs.get("class_names")
    if class_names is not None:
        class_names = check_names("class_names", class_names)
    expl = explain_prediction(model, doc, **{k: v for k, v in kwargs.items() if k in explain_names})
    style = {k: v for k, v in kwargs.items() if k in format_names}
    if len(expl.targets) > 1:
        return explanation_strip(expl, class_names, **style)
    return format_as_image(expl, **style)


def explanations_from_raw(
    model: keras.Model,
    docs: np.ndarray,
    raw: RawExplanation,
    images: list[Image.Image] | None,
) -> list[Explanation]:
    """Turn engine numbers into one :class:`Explanation` per doc."""
    labels = raw.explained_targets()
    result = []
    for n in range(len(docs)):
        picture = images[n] if images is not None else derive_image(docs[n], raw.data_format)
        result.append(Explanation(
            estimator=model.name,
            image=picture,
            targets=[
                TargetExplanation(
                    target=scores_module.as_target(labels[n, k]), score=float(raw.scores[n, k]),
                    heatmap=raw.heatmaps[n, k],
                )
                for k in range(int(raw.counts[n]))
            ],
            layer=read_by(model, raw.layer, raw.method),
            method=raw.method.title,
            description=raw.method.description,
        ))
    return result


def read_by(model: keras.Model, layer: layers.LayerChoice, method: methods.Method) -> str:
    """What ``method``'s maps are read from, as :attr:`Explanation.layer` names it: the
    layer's path, or for an attention method (which reads no layer's activations) the
    attention layers it multiplies through.

    Example:
        >>> first, last = read_by(vit, plan(vit).layer, methods.get_method("rollout")).split(" .. ")
        >>> first
        'vit_backbone/vit_encoder/transformer_block_1/mha'
        >>> last
        'transformer_block_2/mha (2 attention layers)'
    """
    if not method.needs_attention:
        return layer.path
    paths = [choice.path for choice in tokens.attention_layers(model)]
    if len(paths) == 1:
        return paths[0]
    head, last = paths[0], paths[-1]
    shared = head[:head.rfind("/", 0, len(os.path.commonprefix([head, last])) + 1) + 1]
    return f"{head} .. {last[len(shared):]} ({len(paths)} attention layers)"


def derive_image(doc: np.ndarray, data_format: str = "channels_last") -> Image.Image:
    """The picture ELI5 derives from a doc: ``keras.utils.array_to_img`` (min-max stretch).

    Example:
        >>> import numpy as np
        >>> derive_image(np.zeros((4, 5, 3), "float32")).size
        (5, 4)
    """
    return keras.utils.array_to_img(doc, data_format=data_format)


def gradcam_backend(
    model: keras.Model,
    doc: np.ndarray,
    targets: Sequence[int] | None,
    activation_layer: keras.layers.Layer | str | int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
    """The parts of a Grad-CAM explanation for one image, with ELI5's contract.

    Args:
        model: A built Keras model.
        doc: One input, shape ``(1, ...)`` matching the model's input.
        targets: ``None`` for the top class, or a list with one class index.
        activation_layer: The layer (instance, name, path or index) to explain at.

    Returns:
        ``(weights, activations, grads, predicted_idx, predicted_val)``: channel weights
        ``(C,)``, activation maps ``(h, w, C)``, gradients ``(h, w, C)``, the class index
        explained and the model's output for it.

    Example:
        >>> weights, acts, grads, idx, val = gradcam_backend(model, doc, None, "last_conv")
        >>> weights.shape, acts.shape, grads.shape, idx
        ((48,), (12, 12, 48), (12, 12, 48), 4)
    """
    if targets is not None and (not isinstance(targets, (list, tuple)) or len(targets) != 1):
        raise ValueError(
            f"targets must be None or a list with exactly one class index; received {targets!r}"
        )
    raw = explain_raw(model, doc, [targets] if targets is not None else None, activation_layer,
                      single=True, method="gradcam")
    return (raw.weights[0, 0], raw.activations[0], raw.grads[0, 0], int(raw.targets[0, 0]),
            float(raw.scores[0, 0]))
