"""The plan of a pass and the one engine entry, :meth:`Plan.run`: validated, reusable settings
for one model (which layer, which output, how tokens lie on the image) and the compiled pass
that serves a list of methods at once.

Everything that explains runs :meth:`Plan.run`: explain's functions make a plan per call;
the training callback, the command line and the faithfulness checks make one plan and run it
at every logged epoch or batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np

from .. import backends, layers, targets
from .. import tokens as token_maps
from ..methods import apply
from ..methods.base import CamInputs, Method
from ..methods.gradcam import GradCAM
from ..methods.hirescam import HiResCAM
from ..methods.rollout import Rollout
from ..targets import Slots
from .checks import OutputSpec, check_model, check_on_model, resolve_output
from .raw import RawExplanation, resolve_targets
from .raw import check_finite as check_finite_numbers

TargetsSpec = Sequence[Any] | np.ndarray | targets.ScoreFunction | None
# tokens (N, T, C) -> maps (N, h, w, C), numpy: how an exotic token layer lies on the image
ReshapeSpec = Callable[[np.ndarray], np.ndarray] | None


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

    def resolve(self, method: Method | None) -> Method:
        """The method that runs for ``method`` on this model: the value itself, never
        overridden; for ``None`` (the default everywhere) the one that localises on this kind
        of model (measured, docs/methods.md). This is the only place that decides:

        - Grad-CAM (ELI5's numbers) when the automatic layer is a spatial feature map:
          every CNN;
        - attention rollout on a vision transformer whose attention is global (a
          ``MultiHeadAttention``: keras_hub's ViT, DeiT, DINOv2) over prefix tokens (class,
          distillation, registers) and a patch grid, with the automatic layer (rollout reads
          no layer);
        - HiResCAM on the token layer otherwise: windowed attention (Swin), no prefix token,
          or a layer you gave.

        Example:
            >>> plan(vit).resolve(None).title, plan(model).resolve(None).title
            ('Attention rollout', 'Grad-CAM')
            >>> from gradcam_callbacks.methods import LayerCAM
            >>> plan(vit).resolve(LayerCAM()).title
            'LayerCAM'
        """
        if method is not None:
            if not isinstance(method, Method):
                raise TypeError(f"method must be a Method value or None here (names are read "
                                f"by gradcam_callbacks.methods.choose); received "
                                f"{type(method).__name__}: {method!r}")
            return method
        if layers.transformer_layer(self.model) is None:
            return GradCAM()
        layout = token_maps.attention_layout(self.model) if self.automatic_layer else None
        return Rollout() if layout is not None and layout.prefix > 0 else HiResCAM()

    def pass_function(self, chosen: Sequence[Method],
                      functions: tuple[Any, ...] | None = None) -> backends.CompiledPass:
        """The cached compiled pass that serves all of ``chosen`` at once: the gradient pass
        if any reads gradients, else the forward alone (rollout); either also reads the
        attention weights if any method does."""
        found = (self.model, self.layer.layer, self.layer.path, self.output_index, functions,
                 self.attention_layers(chosen))
        if any(m.needs_gradients for m in chosen):
            return backends.gradient_function(*found)
        return backends.score_function(*found)

    def token_maps(self, activations: np.ndarray, grads: np.ndarray, docs: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Token activations ``(N, T, C)`` and gradients ``(N, K, T, C)`` as maps ``(N, h, w,
        C)`` and ``(N, K, h, w, C)``: by ``reshape`` if given, else on the patch grid
        (:func:`gradcam_callbacks.tokens.token_layout`), the prefix tokens dropped."""
        count, slots = grads.shape[:2]
        if self.reshape is not None:
            maps = _reshaped(self.reshape, activations, self.layer.path)
            moved = _reshaped(self.reshape, grads.reshape(count * slots, *grads.shape[2:]),
                              self.layer.path)
            return maps, moved.reshape(count, slots, *moved.shape[1:])
        layout = self.token_layout(activations.shape[1], docs)
        return layout.maps(activations), layout.maps(grads)

    def token_layout(self, tokens: int, docs: np.ndarray) -> token_maps.TokenLayout:
        """Where ``tokens`` tokens lie on ``docs``' images; a ValueError if on no grid."""
        size = docs.shape[2:4] if self.data_format == "channels_first" else docs.shape[1:3]
        patch = layers.patch_size(self.model)
        layout = token_maps.token_layout(tokens, size, patch)
        if layout is None:
            found = ("no patch embedding (a convolution whose kernel equals its strides)"
                     if patch is None else f"patches of {patch[0]}x{patch[1]}")
            raise ValueError(
                f"layer {self.layer.path!r} gives {tokens} tokens, which lie on no patch grid "
                f"of the {size[0]}x{size[1]} input ({found}, any prefix tokens first); pass "
                "reshape= with a function from tokens (N, tokens, channels) to maps (N, h, w, "
                "channels)")
        return layout

    def targets(self, given: TargetsSpec, count: int, noun: str = "doc") -> Slots:
        """Validate ``given`` targets for ``count`` docs (``noun`` names them in errors):
        class indices (-1 = top class) or score functions, each function checked on the
        model's symbolic output first.

        Example:
            >>> plan(model).targets([3, [1, 2]], 2).indices.tolist()
            [[3, 3], [1, 2]]
        """
        if targets.has_score_functions(given):
            return targets.function_slots(given, count, functools.partial(
                check_on_model, model=self.model, output_shape=self.output_shape), noun)
        slots = targets.class_slots(given, count, self.classes, noun)
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
        self, docs: np.ndarray, slots: Slots, chosen: Sequence[Method | None] = (None,),
        batch_size: int | None = None, *, name: str = "doc", check_finite: bool = True,
    ) -> list[RawExplanation]:
        """The one engine entry: one compiled pass over validated docs and targets,
        ``batch_size`` docs at a time, then each method of ``chosen`` (values, or ``None``:
        :meth:`resolve`) on its numbers, one :class:`RawExplanation` each. The pass reads what
        the methods need together: gradients if any needs them (else the forward alone),
        attention weights if any needs them. Score-CAM adds its scoring forwards.

        ``check_finite=False`` returns non-finite numbers as they are, for a caller that
        reports them per doc itself (the callback draws such probes as "not finite").

        Raises:
            NonFiniteError: the model gave NaN or inf for some docs (their indices are
                named, as ``name(s) [i, ...]``), unless ``check_finite`` is false.

        Example:
            >>> from gradcam_callbacks.methods import LayerCAM
            >>> pass_plan = plan(model)
            >>> slots = pass_plan.targets(None, len(docs))
            >>> [raw.method.title for raw in pass_plan.run(docs, slots, [None, LayerCAM()])]
            ['Grad-CAM', 'LayerCAM']
        """
        chosen = [self.resolve(m) for m in chosen]
        gradients = any(m.needs_gradients for m in chosen)
        function = self.pass_function(chosen, slots.functions)
        indices = np.asarray(slots.indices)
        docs = np.asarray(docs, dtype=self.input_dtype)
        step = len(docs) if not batch_size else batch_size
        if gradients:
            parts = [function(docs[i:i + step], indices[i:i + step])
                     for i in range(0, len(docs), step)]
            activations, grads, outputs, resolved, *tapped = (
                np.concatenate(p) for p in zip(*parts))
            attention, attention_grads = tapped if tapped else (None, None)
        else:  # forward only: the outputs and attention weights, no activation, no gradient
            outputs, attention = (np.concatenate(p) for p in zip(*[
                function(docs[i:i + step]) for i in range(0, len(docs), step)]))
            resolved, attention_grads = resolve_targets(outputs, indices), None
            activations = np.zeros((len(docs), 0, 0, 0), np.float32)
            grads = np.zeros(indices.shape + (0, 0, 0), np.float32)
        layout = None if attention is None else self.token_layout(attention.shape[-1], docs)
        if gradients:
            layers.check_rank(self.layer, activations.ndim, docs.ndim)
            if activations.ndim == docs.ndim - 1:
                activations, grads = self.token_maps(activations, grads, docs)
            elif self.data_format == "channels_first":
                activations = np.moveaxis(activations, 1, -1)
                grads = np.moveaxis(grads, 2, -1)
        if self.classes is None:
            targets.check_target_range(indices, outputs.shape[-1])
        scores = np.take_along_axis(outputs, resolved.astype(np.intp), axis=-1)
        raw = RawExplanation(
            activations=activations, grads=grads, weights=np.empty(0), heatmaps=np.empty(0),
            targets=resolved, scores=scores, outputs=outputs, counts=slots.counts,
            layer=self.layer, data_format=self.data_format, functions=slots.functions,
            attention=attention, attention_grads=attention_grads, layout=layout,
            gradients=gradients,
        )
        # Score-CAM scores its masked inputs with the same score functions (F columns)
        score = functools.partial(self.score, functions=slots.functions)
        inputs = CamInputs(activations, grads, docs, resolved, self.data_format, score,
                           batch_size, attention, attention_grads, layout)
        with np.errstate(over="ignore", invalid="ignore"):
            maps = [apply(method, inputs) for method in chosen]
        if check_finite:
            check_finite_numbers(self.model, scores, activations, grads,
                                 [heatmaps for heatmaps, _ in maps], slots.counts, name)
        return [replace(raw, heatmaps=heatmaps, weights=weights, method=method)
                for method, (heatmaps, weights) in zip(chosen, maps)]

    def attention_layers(self, chosen: Sequence[Method]) -> tuple[keras.layers.Layer, ...]:
        """The ``MultiHeadAttention`` layers the pass reads for ``chosen``: all of the
        model's if one of them is an attention method (a ValueError if it has none), else
        none."""
        method = next((m for m in chosen if m.needs_attention), None)
        if method is None:
            return ()
        found = token_maps.attention_layers(self.model)
        if not found:
            raise ValueError(
                f"method={method.name!r} reads the attention weights of the model's "
                f"keras.layers.MultiHeadAttention layers (keras_hub's ViT, DeiT and DINOv2 use "
                f"them); model {self.model.name!r} has none (Swin's windowed attention and "
                "CNNs are explained by the gradient methods, e.g. method='hirescam')")
        return tuple(choice.layer for choice in found)

    def score(self, inputs: np.ndarray, functions: tuple[Any, ...] | None = None) -> np.ndarray:
        """The model's selected output on ``inputs`` (or the score functions' columns): one
        compiled score-only forward, built on first use."""
        return backends.score_function(self.model, self.layer.layer, self.layer.path,
                                       self.output_index, functions)(inputs)


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
    check_model(model)
    check_reshape(reshape)
    index, classes, shape = resolve_output(model, output)
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


