"""``explain_prediction(s)`` and ``show_prediction``: validate, run the one engine, build
:class:`~gradcam_callbacks.Explanation` objects.

Everything that explains runs :meth:`Plan.run`, the one engine entry: these functions,
:func:`explain_raw` and :func:`gradcam_backend` make a plan per call; the training callback
and the command line make one plan and run it at every logged epoch or batch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np
from PIL import Image

from . import backends, layers, methods
from . import targets as scores_module
from ._validation import (
    as_array,
    check_names,
    check_pictures,
    check_real_array,
    index_list,
    is_int,
    to_picture,
)
from .explanation import Explanation, TargetExplanation
from .keras_family import graph_of

TargetsSpec = Sequence[Any] | np.ndarray | scores_module.ScoreFunction | None
OutputSpec = int | str | None
# tokens (N, T, C) -> maps (N, h, w, C), numpy: how an exotic token layer lies on the image
ReshapeSpec = Callable[[np.ndarray], np.ndarray] | None


class NonFiniteError(ValueError):
    """The model produced NaN or infinite values for some inputs, so their Grad-CAM maps
    cannot be normalised to [0, 1].

    ``indices`` are the positions of the affected inputs in the batch passed, ``problems``
    says per input what was not finite (``"score"``, ``"activations"``, ``"gradients"``,
    ``"heatmap"``).

    Example:
        >>> try:
        ...     explain_predictions(diverged_model, docs[:3])
        ... except NonFiniteError as error:
        ...     print(error.indices)
        [0, 1, 2]
    """

    def __init__(self, message: str, indices: list[int], problems: dict[int, list[str]]):
        super().__init__(message)
        self.indices = indices
        self.problems = problems


@dataclass
class RawExplanation:
    """The engine's numbers for a batch, before they become :class:`Explanation` objects.

    Shapes, with N docs, K target slots and activations ``(h, w, C)`` (channels last):
    ``activations (N, h, w, C)``, ``grads (N, K, h, w, C)``, ``weights (N, K, C)``,
    ``heatmaps (N, K, h, w)``, ``targets (N, K)``, ``scores (N, K)``, ``outputs (N, classes)``.
    ``counts[n]`` is how many of doc n's K slots are real (the rest repeat its last target).
    With score functions (``functions``, see :mod:`gradcam_callbacks.targets`), ``outputs``
    is ``(N, F)``: each of the F distinct functions on each doc, and ``targets`` index them.
    ``heatmaps`` are ``method``'s; ``weights`` its channel weights (Grad-CAM, Grad-CAM++,
    XGrad-CAM, Score-CAM: the map is their weighted sum of the activation maps; Eigen-CAM:
    the first right singular vector, applied to the mean-centred activation maps), and NaN
    for HiResCAM and LayerCAM, whose weights vary over space (``grads``, ``ReLU(grads)``).
    """

    activations: np.ndarray
    grads: np.ndarray
    weights: np.ndarray
    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    outputs: np.ndarray
    counts: np.ndarray
    layer: layers.LayerChoice
    data_format: str
    method: methods.Method = methods.METHODS["gradcam"]
    functions: tuple[scores_module.ScoreFunction, ...] | None = None
    # attention methods (rollout): the attention weights (N, L, heads, T, T), their
    # gradients (N, K, L, heads, T, T) and where their tokens lie
    attention: np.ndarray | None = None
    attention_grads: np.ndarray | None = None
    layout: layers.TokenLayout | None = None
    # False for a forward-only pass (rollout): activations and grads are then empty
    gradients: bool = True

    def explained_targets(self) -> np.ndarray:
        """``(N, K)`` what each slot explained: class indices (int), or with score
        functions their descriptions (``repr``, an object array of str)."""
        if self.functions is None:
            return self.targets
        names = np.array([scores_module.describe(f) for f in self.functions], dtype=object)
        return names[self.targets]


class ScoreSlots(np.ndarray):
    """Validated score-function targets: an ``(N, K)`` int32 array of indices into
    ``functions``, the distinct score functions in order of first use. Slicing keeps
    ``functions``, so a slice of docs runs as the whole does.

    Example:
        >>> from gradcam_callbacks.targets import ClassScore
        >>> slots = ScoreSlots.of(np.zeros((2, 1), np.int32), (ClassScore(0),))
        >>> slots[1:].functions
        (ClassScore(class_index=0),)
    """

    functions: tuple[scores_module.ScoreFunction, ...] = ()

    @classmethod
    def of(cls, indices: np.ndarray,
           functions: tuple[scores_module.ScoreFunction, ...]) -> ScoreSlots:
        slots = np.asarray(indices, np.int32).view(cls)
        slots.functions = functions
        return slots

    def __array_finalize__(self, obj: Any) -> None:
        self.functions = getattr(obj, "functions", ())


@dataclass(frozen=True)
class Plan:
    """Validated, reusable settings of a Grad-CAM pass over one model."""

    model: keras.Model
    layer: layers.LayerChoice
    output_index: int
    classes: int | None
    data_format: str
    input_dtype: str
    output_shape: tuple[int | None, ...] | None = None
    reshape: ReshapeSpec = None
    automatic_layer: bool = True

    def resolve(self, method: str | methods.Method | None) -> methods.Method:
        """The method that runs for ``method`` on this model: itself when named; for
        ``None`` (the default) the automatic choice, :func:`gradcam_callbacks.methods.resolve`
        (Grad-CAM on a CNN, attention rollout on a ViT).

        Example:
            >>> plan(vit).resolve(None).title, plan(model).resolve(None).title
            ('Attention rollout', 'Grad-CAM')
        """
        return methods.resolve(method, self.model, self.automatic_layer)

    def pass_function(self, method: methods.Method,
                      functions: tuple[Any, ...] | None = None) -> backends.GradientFunction:
        """The cached compiled pass ``method`` runs on: the gradient pass, or for a method
        without gradients (rollout) the forward that reads the attention weights."""
        found = (self.model, self.layer.layer, self.layer.path, self.output_index, functions,
                 self.attention_layers(method))
        if method.needs_gradients:
            return backends.gradient_function(*found)
        return backends.score_function(*found)

    def token_maps(self, activations: np.ndarray, grads: np.ndarray, docs: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Token activations ``(N, T, C)`` and gradients ``(N, K, T, C)`` as maps ``(N, h, w,
        C)`` and ``(N, K, h, w, C)``: by ``reshape`` if given, else on the patch grid
        (:func:`gradcam_callbacks.layers.token_layout`), the prefix tokens dropped."""
        count, slots = grads.shape[:2]
        if self.reshape is not None:
            maps = _reshaped(self.reshape, activations, self.layer.path)
            moved = _reshaped(self.reshape, grads.reshape(count * slots, *grads.shape[2:]),
                              self.layer.path)
            return maps, moved.reshape(count, slots, *moved.shape[1:])
        layout = self.token_layout(activations.shape[1], docs)
        return layout.maps(activations), layout.maps(grads)

    def token_layout(self, tokens: int, docs: np.ndarray) -> layers.TokenLayout:
        """Where ``tokens`` tokens lie on ``docs``' images; a ValueError if on no grid."""
        size = docs.shape[2:4] if self.data_format == "channels_first" else docs.shape[1:3]
        patch = layers.patch_size(self.model)
        layout = layers.token_layout(tokens, size, patch)
        if layout is None:
            found = ("no patch embedding (a convolution whose kernel equals its strides)"
                     if patch is None else f"patches of {patch[0]}x{patch[1]}")
            raise ValueError(
                f"layer {self.layer.path!r} gives {tokens} tokens, which lie on no patch grid "
                f"of the {size[0]}x{size[1]} input ({found}, any prefix tokens first); pass "
                "reshape= with a function from tokens (N, tokens, channels) to maps (N, h, w, "
                "channels)")
        return layout

    def targets(self, targets: TargetsSpec, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``targets`` for ``count`` docs: ``(N, K)`` int32 (-1 = top class) and
        the number of real slots per doc; with score functions a :class:`ScoreSlots`,
        each function checked on the model's symbolic output first."""
        if _has_score_functions(targets):
            return _score_slots(targets, count, self)
        slots = _normalise_targets(targets, count, self.classes)
        if self.output_shape is not None and len(self.output_shape) not in (1, 2):
            raise ValueError(
                f"output {self.output_index} of model {self.model.name!r} has shape "
                f"{self.output_shape}; Grad-CAM explains class scores, an output of shape "
                "(batch, classes), unless targets are score functions (ClassScore, "
                "RegressionScore, SegmentationScore, MultiLabelScore or your own; see "
                "gradcam_callbacks.targets)"
            )
        return slots

    def run(
        self, docs: np.ndarray, targets: np.ndarray, counts: np.ndarray,
        batch_size: int | None = None, method: str | methods.Method | None = methods.DEFAULT,
        max_channels: int | None = None, *, name: str = "doc", check_finite: bool = True,
    ) -> RawExplanation:
        """Run the compiled pass over validated docs and targets, ``batch_size`` at a time,
        then ``method`` (a name in :data:`gradcam_callbacks.methods.METHODS`, or ``None``:
        :meth:`resolve`) on its numbers. A method without gradients (rollout) runs on the
        compiled forward alone.

        ``check_finite=False`` returns non-finite numbers as they are, for a caller that
        reports them per doc itself (the callback draws such probes as "not finite").

        Raises:
            NonFiniteError: the model gave NaN or inf for some docs (their indices are
                named, as ``name(s) [i, ...]``), unless ``check_finite`` is false.
        """
        chosen = methods.check_options(self.resolve(method), max_channels)
        assert chosen is not None
        functions = targets.functions if isinstance(targets, ScoreSlots) else None
        function = self.pass_function(chosen, functions)
        targets = np.asarray(targets)
        docs = np.asarray(docs, dtype=self.input_dtype)
        step = len(docs) if not batch_size else batch_size
        if chosen.needs_gradients:
            parts = [function(docs[i:i + step], targets[i:i + step])
                     for i in range(0, len(docs), step)]
            activations, grads, outputs, resolved, *tapped = (
                np.concatenate(p) for p in zip(*parts))
            attention, attention_grads = tapped if tapped else (None, None)
        else:  # forward only: the outputs and attention weights, no activation, no gradient
            outputs, attention = (np.concatenate(p) for p in zip(*[
                function(docs[i:i + step]) for i in range(0, len(docs), step)]))
            resolved, attention_grads = resolve_targets(outputs, targets), None
            activations = np.zeros((len(docs), 0, 0, 0), np.float32)
            grads = np.zeros(targets.shape + (0, 0, 0), np.float32)
        layout = None if attention is None else self.token_layout(attention.shape[-1], docs)
        if chosen.needs_gradients:
            layers.check_rank(self.layer, activations.ndim, docs.ndim)
            if activations.ndim == docs.ndim - 1:
                activations, grads = self.token_maps(activations, grads, docs)
            elif self.data_format == "channels_first":
                activations = np.moveaxis(activations, 1, -1)
                grads = np.moveaxis(grads, 2, -1)
        if self.classes is None:
            _check_target_range(targets, outputs.shape[-1])
        scores = np.take_along_axis(outputs, resolved.astype(np.intp), axis=-1)
        raw = RawExplanation(
            activations=activations, grads=grads, weights=np.empty(0), heatmaps=np.empty(0),
            targets=resolved, scores=scores, outputs=outputs, counts=counts, layer=self.layer,
            data_format=self.data_format, method=chosen, functions=functions,
            attention=attention, attention_grads=attention_grads, layout=layout,
            gradients=chosen.needs_gradients,
        )
        with np.errstate(over="ignore", invalid="ignore"):
            heatmaps, weights = self._method_maps(chosen, raw, docs, batch_size, max_channels)
        if check_finite:
            _check_finite(self.model, scores, activations, grads, heatmaps, counts, name)
        return replace(raw, heatmaps=heatmaps, weights=weights)

    def attention_layers(self, method: methods.Method) -> tuple[keras.layers.Layer, ...]:
        """The ``MultiHeadAttention`` layers the pass reads for ``method``: all of the
        model's for an attention method (a ValueError if it has none), else none."""
        if not method.needs_attention:
            return ()
        found = layers.attention_layers(self.model)
        if not found:
            raise ValueError(
                f"method={method.name!r} reads the attention weights of the model's "
                f"keras.layers.MultiHeadAttention layers (keras_hub's ViT, DeiT and DINOv2 use "
                f"them); model {self.model.name!r} has none (Swin's windowed attention and "
                "CNNs are explained by the gradient methods, e.g. method='hirescam')")
        return tuple(choice.layer for choice in found)

    def apply(
        self, raw: RawExplanation, docs: np.ndarray, method: str | methods.Method,
        batch_size: int | None = None, max_channels: int | None = None,
    ) -> RawExplanation:
        """``raw`` with the heatmaps and weights of another method, reusing its activations
        and gradients (so several methods cost one pass; Score-CAM adds its scoring passes).

        Example:
            >>> pass_plan = plan(model)
            >>> slots, counts = pass_plan.targets(None, len(docs))
            >>> raw = pass_plan.run(docs, slots, counts)
            >>> pass_plan.apply(raw, docs, "layercam").method.title
            'LayerCAM'
        """
        chosen = methods.check_options(self.resolve(method), max_channels)
        assert chosen is not None
        if (chosen.needs_attention and raw.attention is None) or (
                chosen.needs_gradients and not raw.gradients):
            # the pass read no attention (or no gradients, after rollout): run the one that
            # does, for the same targets
            slots = raw.targets if raw.functions is None else ScoreSlots.of(
                raw.targets, raw.functions)
            return self.run(docs, slots, raw.counts, batch_size, chosen, max_channels,
                            check_finite=False)
        heatmaps, weights = self._method_maps(chosen, raw, docs, batch_size, max_channels)
        return replace(raw, heatmaps=heatmaps, weights=weights, method=chosen)

    def _method_maps(
        self, method: methods.Method, raw: RawExplanation, docs: np.ndarray,
        batch_size: int | None, max_channels: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        # Score-CAM scores its masked inputs with the same score functions (F columns)
        score = self._score if raw.functions is None else functools.partial(
            self._score, functions=raw.functions)
        return methods.apply(method, methods.CamInputs(
            raw.activations, raw.grads, np.asarray(docs, dtype=self.input_dtype), raw.targets,
            self.data_format, score, batch_size, max_channels, raw.attention,
            raw.attention_grads, raw.layout,
        ))

    def _score(self, inputs: np.ndarray, functions: tuple[Any, ...] | None = None) -> np.ndarray:
        """The model's selected output on ``inputs`` (or the score functions' columns): one
        compiled score-only forward, built on first use."""
        return backends.score_function(self.model, self.layer.layer, self.layer.path,
                                       self.output_index, functions)(inputs)


def resolve_targets(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``targets (N, K)`` with each rank ``-r`` replaced by the doc's r-th highest-scoring
    class of ``outputs (N, classes)`` (ties: the lower index first), as the gradient passes
    resolve them, for a forward-only pass.

    Example:
        >>> resolve_targets(np.array([[0.1, 0.7, 0.2]]), np.array([[-1, -2, 0]])).tolist()
        [[1, 2, 0]]
    """
    ranked = np.argsort(-outputs, axis=-1, kind="stable")
    rank = np.clip(-targets - 1, 0, outputs.shape[-1] - 1)
    return np.where(targets < 0, np.take_along_axis(ranked, rank, axis=-1),
                    targets).astype(np.int32)


def _check_finite(model: keras.Model, scores: np.ndarray, activations: np.ndarray,
                  grads: np.ndarray, heatmaps: np.ndarray, counts: np.ndarray,
                  name: str = "doc") -> None:
    """Raise :class:`NonFiniteError` naming the docs whose numbers are not all finite."""
    count = len(scores)
    real = np.arange(scores.shape[1])[None, :] < np.asarray(counts)[:, None]  # (N, K)

    def bad(values: np.ndarray, per_slot: bool) -> np.ndarray:
        kept = 2 if per_slot else 1  # empty activations (a forward-only pass) are finite
        finite = np.isfinite(values).all(axis=tuple(range(kept, values.ndim)))
        return ~(finite | ~real).all(axis=1) if per_slot else ~finite

    checks = {"score": bad(scores[..., None], True), "activations": bad(activations, False),
              "gradients": bad(grads, True), "heatmap": bad(heatmaps, True)}
    flagged = np.zeros(count, bool)
    for found in checks.values():
        flagged |= found
    if not flagged.any():
        return
    indices = [int(n) for n in np.flatnonzero(flagged)]
    problems = {n: [what for what, found in checks.items() if found[n]] for n in indices}
    kinds = sorted({what for whats in problems.values() for what in whats},
                   key=list(checks).index)
    raise NonFiniteError(
        f"model {model.name!r} produced non-finite values (NaN or inf: {', '.join(kinds)}) "
        f"for {name}(s) {index_list(indices)} of {count}, so their Grad-CAM maps cannot be "
        f"scaled to [0, 1]: e.g. {name} {indices[0]}: {', '.join(problems[indices[0]])}. A "
        "diverged model (NaN weights) or inputs far outside the training range do this",
        indices, problems,
    )


def plan(model: keras.Model, layer: layers.LayerSpec = None, output: OutputSpec = None,
         reshape: ReshapeSpec = None) -> Plan:
    """Check the model, pick the layer and output once, for many calls. ``reshape`` (a
    function from token activations ``(N, T, C)`` to maps ``(N, h, w, C)``, numpy) overrides
    the patch grid found for a token layer.

    Example:
        >>> p = plan(model, layer=None)
        >>> p.layer.path
        'last_conv'
    """
    _check_model(model)
    check_reshape(reshape)
    index, classes, shape = _resolve_output(model, output)
    choice = layers.resolve_layer(model, layer, index)  # the automatic layer depends on it
    rank = layers.input_rank(model)
    dtype = model.inputs[0].dtype if rank is not None else "float32"
    dtype = getattr(dtype, "name", dtype)  # Keras 2: a tf.DType
    if not str(dtype).startswith(("float", "bfloat")):
        dtype = "float32"
    return Plan(model, choice, index, classes, layers.data_format(model, choice.layer), str(dtype),
                shape, reshape, automatic_layer=layer is None)


def check_reshape(reshape: Any) -> ReshapeSpec:
    """``reshape`` if it is ``None`` or callable; else a TypeError naming it.

    Example:
        >>> check_reshape(None) is None
        True
    """
    if reshape is not None and not callable(reshape):
        raise TypeError(f"reshape must be None or a function from tokens (N, tokens, channels) "
                        f"to maps (N, h, w, channels); received {type(reshape).__name__}: "
                        f"{reshape!r}")
    return reshape


def _reshaped(reshape: Callable[[np.ndarray], np.ndarray], tokens: np.ndarray,
              path: str) -> np.ndarray:
    """``reshape(tokens)``, checked to be maps ``(N, h, w, C)`` of the tokens' N and C."""
    maps = np.asarray(reshape(tokens))
    if maps.ndim != 4 or maps.shape[0] != tokens.shape[0] or maps.shape[-1] != tokens.shape[-1]:
        raise ValueError(
            f"reshape must turn layer {path!r}'s tokens {tokens.shape} into maps (N, h, w, C) "
            f"with the same N and C; it returned shape {maps.shape}")
    return maps


def explain_raw(
    model: keras.Model,
    docs: np.ndarray,
    targets: TargetsSpec = None,
    layer: layers.LayerSpec = None,
    output: OutputSpec = None,
    *,
    single: bool = False,
    batch_size: int | None = None,
    method: str | None = methods.DEFAULT,
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
    methods.check_options(method, max_channels)
    methods.check_positive("batch_size", batch_size)
    pass_plan = plan(model, layer, output, reshape)
    docs = check_docs(model, docs, single=single)
    slots, counts = pass_plan.targets(targets, len(docs))
    return pass_plan.run(docs, slots, counts, batch_size, method, max_channels)


def explain_predictions(
    model: keras.Model,
    docs: np.ndarray,
    images: Sequence[Image.Image | np.ndarray] | None = None,
    targets: TargetsSpec = None,
    layer: layers.LayerSpec = None,
    output: OutputSpec = None,
    *,
    batch_size: int | None = None,
    method: str | None = methods.DEFAULT,
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
            (:func:`gradcam_callbacks.methods.resolve`): Grad-CAM, ELI5's numbers, on every
            model whose automatic layer is a spatial feature map (CNNs); attention rollout
            on a vision transformer with global attention and a class token (keras_hub ViT,
            DeiT, DINOv2), where Grad-CAM does not localise; HiResCAM on the tokens
            otherwise (Swin). ``Explanation.method`` names the method used. Or a name,
            never overridden: ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``,
            ``"hirescam"``, ``"layercam"``, ``"eigencam"``, ``"scorecam"``, ``"rollout"``
            or ``"grad-rollout"`` (see docs/methods.md).
        max_channels: Score-CAM only: score just the channels with the largest spatial
            standard deviation, this many (default: all).
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
    methods.check_positive("batch_size", batch_size)
    methods.check_options(method, max_channels)
    pass_plan = plan(model, layer, output, reshape)
    docs = check_docs(model, docs)
    pictures = check_pictures(images, len(docs), "images", per="doc")
    slots, counts = pass_plan.targets(targets, len(docs))
    raw = pass_plan.run(docs, slots, counts, batch_size, method, max_channels)
    return explanations_from_raw(model, docs, raw, pictures)


def explain_prediction(
    model: keras.Model,
    doc: np.ndarray,
    image: Image.Image | np.ndarray | None = None,
    targets: Sequence[Any] | scores_module.ScoreFunction | None = None,
    layer: layers.LayerSpec = None,
    output: OutputSpec = None,
    *,
    method: str | None = methods.DEFAULT,
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
            :func:`explain_predictions`); or a method's name, never overridden.
        max_channels: Score-CAM only: how many channels to score (default: all).
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
    methods.check_options(method, max_channels)
    methods.check_positive("batch_size", batch_size)
    pass_plan = plan(model, layer, output, reshape)
    doc = check_docs(model, doc, single=True)
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
    slots, counts = pass_plan.targets(None if targets is None else [list(targets)], 1)
    raw = pass_plan.run(doc, slots, counts, batch_size, method, max_channels)
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
    paths = [choice.path for choice in layers.attention_layers(model)]
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


def check_docs(model: keras.Model, docs: Any, *, single: bool = False,
               name: str | None = None) -> np.ndarray:
    """Validate model inputs: an array of the model's rank and shape, finite, real; numpy
    arrays, backend tensors (TensorFlow, JAX, PyTorch) and nested lists are accepted and
    returned as numpy. ``name`` is the argument named in errors (default ``doc``/``docs``).

    Raises:
        TypeError: not an array or array-like, or not a real numeric dtype.
        ValueError: wrong rank, wrong shape, batch other than 1 (``single``), NaN or inf.

    Example:
        >>> check_docs(model, x[:2].tolist()).shape
        (2, 48, 48, 1)
    """
    name = name or ("doc" if single else "docs")
    docs = as_array(docs, name)
    if docs.dtype == bool or not (
        np.issubdtype(docs.dtype, np.integer) or np.issubdtype(docs.dtype, np.floating)
    ):
        raise TypeError(f"{name} must hold real numbers; received dtype {docs.dtype}")
    expected = layers.input_shape(model)
    if expected is None and docs.ndim != 4:
        raise ValueError(
            f"{name} must have rank 4, (batch, height, width, channels) or channels first; "
            f"received shape {docs.shape}"
        )
    if expected is not None:
        want = "(" + ", ".join(["N" if not single else "1"] + [
            "any" if d is None else str(d) for d in expected]) + ")"
        if docs.ndim != len(expected) + 1:
            raise ValueError(
                f"{name} must have rank {len(expected) + 1}, shape {want} for model "
                f"{model.name!r}; received shape {docs.shape}"
            )
        if any(d is not None and d != got for d, got in zip(expected, docs.shape[1:])):
            raise ValueError(
                f"{name} shape must match the model's input {want}; received shape {docs.shape}"
            )
    if single and docs.shape[0] != 1:
        raise ValueError(
            f"doc must be a batch of exactly one input, shape (1, ...); received shape "
            f"{docs.shape}. Use explain_predictions for several docs."
        )
    if len(docs) == 0:
        raise ValueError(f"{name} must hold at least one input; received shape {docs.shape}")
    return check_real_array(name, docs)


def _check_model(model: Any) -> None:
    if not graph_of(model).is_a(model, "Model"):
        raise TypeError(f"model must be a keras.Model; received {type(model).__name__} "
                        "(Keras 3 models and Keras 2 ones, tf.keras / tf_keras, are accepted)")
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built: call it on data, give it a keras.Input, or "
            "call model.build(input_shape) before explaining"
        )
    inputs = layers.symbolic_inputs(model)
    if inputs is not None and len(inputs) != 1:
        raise ValueError(
            f"model must have one input; model {model.name!r} has {len(inputs)} inputs"
        )
    if inputs is not None and len(inputs[0].shape) != 4:
        raise ValueError(
            "model must take images, an input of rank 4 (batch, height, width, channels); "
            f"model {model.name!r} has input shape {tuple(inputs[0].shape)}"
        )


def _resolve_output(
    model: keras.Model, output: OutputSpec
) -> tuple[int, int | None, tuple[int | None, ...] | None]:
    """``(index, classes, shape)`` of the explained output; ``classes`` is ``None`` when
    unknown (no symbolic outputs) or when the output is not ``(batch, classes)`` (only score
    functions explain those; :meth:`Plan.targets` says so)."""
    structure, flat = _symbolic_outputs(model)
    if output is None:
        index = 0
    elif is_int(output):
        index = int(output)
        if flat is not None and not -len(flat) <= index < len(flat):
            raise ValueError(
                f"output must be an index in [{-len(flat)}, {len(flat)}) for model "
                f"{model.name!r} with {len(flat)} output(s); received output={index}"
            )
        if flat is not None:
            index %= len(flat)
    elif isinstance(output, str):
        names = _output_names(model, structure, flat)
        if output not in names:
            raise ValueError(
                f"output must be one of the model's output names {sorted(names)}; "
                f"received output={output!r}"
            )
        index = names[output]
    else:
        raise TypeError(
            f"output must be None, an index (int) or an output name (str); received "
            f"{type(output).__name__}: {output!r}"
        )
    if flat is None:
        return index, None, None
    shape = tuple(flat[index].shape)
    if len(shape) not in (1, 2):
        return index, None, shape
    return index, (1 if len(shape) == 1 else shape[-1]), shape


def _symbolic_outputs(model: keras.Model) -> tuple[Any, list[Any] | None]:
    for attribute in ("output", "outputs"):
        try:
            structure = getattr(model, attribute)
        except (AttributeError, ValueError):
            continue
        if structure is not None:
            return structure, graph_of(model).flatten(structure)
    return None, None


def _output_names(model: keras.Model, structure: Any, flat: list[Any] | None) -> dict[str, int]:
    names: dict[str, int] = {}
    if flat is None:
        return names
    if isinstance(structure, dict):
        names.update({key: i for i, key in enumerate(sorted(structure))})
    listed = list(getattr(model, "output_names", None) or [])
    if len(listed) == len(flat):
        for i, name in enumerate(listed):
            names.setdefault(name, i)
    return names


def _normalise_targets(
    targets: TargetsSpec, count: int, classes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    if targets is None:
        return np.full((count, 1), -1, np.int32), np.ones(count, np.int32)
    if isinstance(targets, np.ndarray):
        targets = targets.tolist()
    if not isinstance(targets, (list, tuple)):
        raise TypeError(
            f"targets must be None, a list of {count} class indices or a list of {count} lists; "
            f"received {type(targets).__name__}: {targets!r}"
        )
    if len(targets) != count:
        raise ValueError(
            f"targets must have one entry per doc ({count}); received {len(targets)} entries"
        )
    rows = []
    for n, entry in enumerate(targets):
        row = list(entry) if isinstance(entry, (list, tuple, np.ndarray)) else [entry]
        if not row:
            raise ValueError(f"targets[{n}] must not be empty; received {entry!r}")
        for value in row:
            if not is_int(value):
                raise TypeError(
                    f"targets[{n}] must hold integer class indices; received "
                    f"{type(value).__name__}: {value!r}"
                )
            if value < 0:
                raise ValueError(
                    f"targets must be class indices in [0, classes); received {value} in "
                    f"targets[{n}]"
                )
        rows.append([int(v) for v in row])
    slots = max(len(r) for r in rows)
    array = np.array([r + r[-1:] * (slots - len(r)) for r in rows], np.int32)
    _check_target_range(array, classes)
    return array, np.array([len(r) for r in rows], np.int32)


def _has_score_functions(targets: Any) -> bool:
    """Whether ``targets`` holds a score function (then every entry is read as one)."""
    if callable(targets):
        return True
    if not isinstance(targets, (list, tuple)):
        return False
    return any(callable(entry) or (isinstance(entry, (list, tuple))
                                   and any(callable(v) for v in entry)) for entry in targets)


def _score_slots(targets: Any, count: int, pass_plan: Plan) -> tuple[ScoreSlots, np.ndarray]:
    """Score-function targets for ``count`` docs: one function for all, or one entry per
    doc (a function, a class index, read as :class:`ClassScore`, or a list of those)."""
    def one(value: Any, where: str) -> scores_module.ScoreFunction:
        if is_int(value) and value >= 0:
            return scores_module.ClassScore(int(value))
        _check_callable(value, where)
        return _split(value, 1)[0]

    if callable(targets):
        _check_callable(targets, "targets")
        rows = [[f] for f in _split(targets, count)]
    else:
        if len(targets) != count:
            raise ValueError(
                f"targets must be one score function for all docs or a list with one entry "
                f"per doc ({count}); received {len(targets)} entries")
        rows = []
        for n, entry in enumerate(targets):
            row = list(entry) if isinstance(entry, (list, tuple)) else [entry]
            if not row:
                raise ValueError(f"targets[{n}] must not be empty; received {entry!r}")
            rows.append([one(value, f"targets[{n}]") for value in row])
    functions: list[scores_module.ScoreFunction] = []
    indices = []
    for row in rows:
        found = []
        for function in row:
            position = next((i for i, known in enumerate(functions)
                             if known is function or known == function), None)
            if position is None:
                position = len(functions)
                functions.append(function)
                _check_score_function(function, pass_plan)
            found.append(position)
        indices.append(found)
    slots = max(len(r) for r in indices)
    array = np.array([r + r[-1:] * (slots - len(r)) for r in indices], np.int32)
    return (ScoreSlots.of(array, tuple(functions)),
            np.array([len(r) for r in indices], np.int32))


def _check_callable(value: Any, where: str) -> None:
    if not callable(value) or isinstance(value, type):  # a class is callable, but no score
        raise TypeError(
            f"{where} must be a score function (a callable: outputs -> one score per doc, "
            "such as ClassScore(k) or SegmentationScore(k)) or a class index; received "
            f"{type(value).__name__}: {value!r}")


def _split(function: Any, count: int) -> list[Any]:
    if isinstance(function, scores_module.Score):
        return function.split(count)
    return [function] * count


def _check_score_function(function: Any, pass_plan: Plan) -> None:
    """Run ``function`` on a symbolic batch of 3 of the model's output (no computation;
    a Keras 2 model's is a traced TensorFlow tensor): it must give 3 floating-point scores.
    Models without symbolic outputs are checked when the pass is traced
    (:meth:`backends.PassSpec.select`)."""
    if pass_plan.output_shape is None:
        return
    shape = (3,) + tuple(pass_plan.output_shape[1:])
    try:
        result = backends.symbolic_call(pass_plan.model, function, shape)
    except Exception as error:
        kind = TypeError if isinstance(error, TypeError) else ValueError
        message = str(error)
        if isinstance(function, scores_module.Score):  # its own message is clear
            message = f"targets: {message}, the model's output {pass_plan.output_shape}"
        elif not message.startswith("targets"):
            message = (f"targets: score function {scores_module.describe(function)} failed on "
                       f"the model's output (a symbolic batch of shape {shape}; write it with "
                       f"{_ops_hint(pass_plan.model)}): {type(error).__name__}: {error}")
        raise kind(message) from None
    scores_module.check_result(function, result, shape)


def _ops_hint(model: keras.Model) -> str:
    if graph_of(model).name == "Keras 3":
        return "keras.ops"
    return ("TensorFlow ops or tensor indexing: a Keras 2 model's output is a TensorFlow "
            "tensor, which keras.ops takes only under Keras 3 on TensorFlow")


def _check_target_range(targets: np.ndarray, classes: int | None) -> None:
    if classes is None:
        return
    # -1 marks "top class" internally; users cannot pass negative targets.
    bad = targets[targets >= classes]
    if bad.size:
        raise ValueError(
            f"targets must be class indices in [0, {classes}); received {int(bad.flat[0])}"
        )


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
