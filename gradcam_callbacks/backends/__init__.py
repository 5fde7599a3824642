"""Backend dispatch: the only package that imports TensorFlow, JAX or PyTorch.

The contract every backend module meets is written once, as :class:`Backend`: ``build(spec,
on_trace)`` returns the Grad-CAM pass ``(docs, targets) -> (activations, grads, outputs,
targets)`` over numpy arrays, ``build_score(spec, on_trace)`` a score-only forward ``inputs
-> outputs`` (Score-CAM runs its masked inputs through it), and ``process_index_and_count()``
this process's place among the training processes. ``spec`` (a :class:`PassSpec`) names the
model, layer and output; the backend calls ``on_trace()`` each time it traces (compiles) the
pass. This module builds each pass once per (model, layer, output), wraps it in a
:class:`CompiledPass` (a lock and a trace count) and caches it; see
:func:`gradient_function` and :func:`score_function` for the shapes.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import keras
import numpy as np

from .common import RawOutputs, score_scale

# re-exported: model files are loaded in .loading, backends.load_model as before
from .loading import load_model as load_model

_MODULES = {
    "tensorflow": "gradcam_callbacks.backends.tf_backend",
    "jax": "gradcam_callbacks.backends.jax_backend",
    "torch": "gradcam_callbacks.backends.torch_backend",
}
# Keras 2 models (tf.keras, tf_keras) run on TensorFlow whatever KERAS_BACKEND says.
_KERAS2 = "gradcam_callbacks.backends.keras2_backend"



@runtime_checkable
class Backend(Protocol):
    """What a backend module (``tf_backend``, ``jax_backend``, ``torch_backend``) provides.

    Example:
        >>> module: Backend = backend_module()
        >>> isinstance(module, Backend)
        True
        >>> spec = PassSpec(weakref.ref(model), weakref.ref(layer), "last_conv", 0, 1.0)
        >>> run = module.build(spec, on_trace=lambda: None)
        >>> top = np.full((4, 1), -1, np.int32)  # each doc's top class
        >>> activations, grads, outputs, targets = run(docs, top)
        >>> activations.shape, grads.shape, outputs.shape, targets.shape
        ((4, 12, 12, 48), (4, 1, 12, 12, 48), (4, 10), (4, 1))
    """

    def build(
        self, spec: PassSpec, on_trace: Callable[[], None]
    ) -> Callable[[np.ndarray, np.ndarray], RawOutputs]:
        """The Grad-CAM pass for ``spec``, called as a :class:`CompiledPass` is; it calls
        ``on_trace()`` once per trace (PyTorch, eager: once, at build)."""
        ...

    def build_score(
        self, spec: PassSpec, on_trace: Callable[[], None]
    ) -> Callable[[np.ndarray], np.ndarray]:
        """The score-only forward for ``spec``: inputs ``(B, ...)`` to the selected output
        ``(B, classes)``, in inference mode, with no gradient."""
        ...

    def process_index_and_count(self) -> tuple[int, int]:
        """``(k, n)``: this process is process ``k`` of ``n`` training processes."""
        ...


def backend_module() -> Backend:
    """The running Keras backend's module, which satisfies :class:`Backend`.

    Example:
        >>> backend_module().process_index_and_count()
        (0, 1)
    """
    return importlib.import_module(_MODULES[backend_name()])  # type: ignore[return-value]


@dataclass
class CompiledPass:
    """One compiled pass for one (model, layer, output), cached, with a lock and counts: the
    Grad-CAM pass (:func:`gradient_function`) or the score-only forward
    (:func:`score_function`, called with inputs alone).

    Calling a Grad-CAM pass with ``docs (N, ...)`` and ``targets (N, K)`` (int32; ``-r`` =
    the doc's r-th highest-scoring class, so ``-1`` is its top class) returns numpy arrays
    ``activations (N, *A)``, ``grads (N, K, *A)`` (gradient of each target's score with
    respect to the activations), ``outputs (N, classes)`` (the selected model output) and the
    resolved ``targets (N, K)``.

    ``traces`` counts how often the backend traced (compiled) the pass; repeated calls with
    the same shapes do not add to it. PyTorch runs eagerly and counts its one build as its
    trace. A pass rebuilt from scratch is a new object with its own count, so to check that
    nothing was rebuilt read the process-wide :func:`compilations` instead. ``calls`` counts
    how often the pass ran (every call, on every backend, traced or not); the process-wide
    total is :func:`passes_run`.
    """

    run: Callable[..., Any] | None = None
    traces: int = 0
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_trace(self) -> None:
        """Called by the backend from inside the traced function body."""
        self.traces += 1
        _COUNTS["traces"] += 1

    def __call__(self, *arrays: np.ndarray) -> Any:
        assert self.run is not None, "CompiledPass used before the backend built it"
        with self.lock:
            self.calls += 1
            _CALLS["passes"] += 1
            return self.run(*arrays)


_COUNTS = {"builds": 0, "traces": 0}
_CALLS = {"passes": 0}


def compilations() -> dict[str, int]:
    """Process-wide counts of passes built (``builds``: one per backend ``build`` or
    ``build_score`` call, on every backend) and traced (``traces``: every trace of any pass;
    on PyTorch, one per build). A pass rebuilt per call or per epoch adds to ``builds`` on
    every backend, whatever the backend caches.

    Example:
        >>> from gradcam_callbacks import explain_predictions
        >>> _ = explain_predictions(model, x)
        >>> before = compilations()
        >>> _ = explain_predictions(model, x)  # the same pass again: nothing is rebuilt
        >>> compilations() == before
        True
    """
    return dict(_COUNTS)


def passes_run() -> int:
    """How many times any pass (Grad-CAM or score-only, any model) ran in this process: one
    per call of a :class:`CompiledPass`, on every backend. Unlike ``traces``, which an
    eager backend (PyTorch) counts once at build, it shows a pass that ran without a trace.

    Example:
        >>> before = passes_run()
        >>> explain_predictions(model, x)  # doctest: +SKIP
        >>> passes_run() > before  # doctest: +SKIP
        True
    """
    return _CALLS["passes"]


ScoreHead = tuple[Callable[[Any], Any], ...] | None
_cache: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], CompiledPass]] = (
    weakref.WeakKeyDictionary()
)
_cache_lock = threading.Lock()


def backend_name() -> str:
    """The running Keras backend's name, checked to be one this project supports."""
    name = keras.backend.backend()
    if name not in _MODULES:
        raise ValueError(
            f"Keras backend {name!r} is not supported; use one of {sorted(_MODULES)} "
            "(set KERAS_BACKEND before importing keras)"
        )
    return name


def gradient_function(
    model: keras.Model, layer: keras.layers.Layer, path: str, output_index: int,
    scores: ScoreHead = None, attention: tuple[keras.layers.Layer, ...] = (),
) -> CompiledPass:
    """The cached compiled pass for (model, layer, output), built on first use.

    With ``scores`` (a tuple of score functions, see :mod:`gradcam_callbacks.targets`) the
    pass differentiates those instead of class scores: its ``outputs`` are ``(N, F)``, column
    ``f`` the score function ``f`` on each doc, and ``targets`` index the functions. Each
    distinct tuple is its own compiled variant (equal ready-made scores share one).

    With ``attention`` (``MultiHeadAttention`` layers, see
    :func:`gradcam_callbacks.taps.attention_weights`) the same pass also returns their
    attention weights ``(N, L, heads, T, T)`` and the targets' gradients with respect to
    them ``(N, K, L, heads, T, T)``, as a fifth and sixth array."""
    return _compiled("build", model, layer, path, output_index, scores, attention)


def score_function(
    model: keras.Model, layer: keras.layers.Layer, path: str, output_index: int,
    scores: ScoreHead = None, attention: tuple[keras.layers.Layer, ...] = (),
) -> CompiledPass:
    """The cached compiled score-only forward for (model, output), built on first use:
    called with inputs ``(B, ...)`` it returns the selected output ``(B, classes)`` as numpy,
    with no gradient and no activation kept (``(B, F)`` with ``scores``, as in
    :func:`gradient_function`). ``layer`` only keys the cache.

    With ``attention`` (``MultiHeadAttention`` layers) it returns ``(outputs, weights)``:
    also their attention weights ``(B, L, heads, T, T)``, read on the same forward, still
    with no backward pass (attention rollout runs on this).

    Example:
        >>> score = score_function(model, layer, "last_conv", 0)
        >>> score(x[:4]).shape
        (4, 10)
    """
    return _compiled("build_score", model, layer, path, output_index, scores, attention)


def _compiled(
    builder: str, model: keras.Model, layer: keras.layers.Layer, path: str, output_index: int,
    scores: ScoreHead = None, attention: tuple[keras.layers.Layer, ...] = (),
) -> CompiledPass:
    key = (builder, id(layer), output_index, scores, tuple(id(a) for a in attention))
    # the callback's writer thread and the training thread may ask at once: one build each
    with _cache_lock:
        per_model = _cache.setdefault(model, {})
        cached = per_model.get(key)
        if cached is None:
            module = model_backend(model)
            cached = CompiledPass()
            _COUNTS["builds"] += 1
            cached.run = getattr(module, builder)(
                PassSpec(weakref.ref(model), weakref.ref(layer), path, output_index,
                         score_scale(model), scores, tuple(weakref.ref(a) for a in attention)),
                cached.count_trace,
            )
            per_model[key] = cached
    return cached


@dataclass(frozen=True)
class PassSpec:
    """What a backend needs to build a Grad-CAM pass (the specification, not the pass): the
    model, the intercepted layer and its path, the output explained, the score scale. Model
    and layer are weak references, so that the cache never keeps a model alive."""

    model_ref: weakref.ref[keras.Model]
    layer_ref: weakref.ref[keras.layers.Layer]
    path: str
    output_index: int
    score_scale: float
    scores: ScoreHead = None  # score functions (gradcam_callbacks.targets); None: classes
    # MultiHeadAttention layers whose attention weights the pass also returns, with gradients
    attention_refs: tuple[weakref.ref[keras.layers.Layer], ...] = ()

    @property
    def attention(self) -> list[keras.layers.Layer]:
        """The attention layers read in the pass (none: a plain Grad-CAM pass)."""
        found = [ref() for ref in self.attention_refs]
        if any(layer is None for layer in found):  # pragma: no cover
            raise RuntimeError("an attention layer of this pass no longer exists")
        return found  # type: ignore[return-value]

    @property
    def model(self) -> keras.Model:
        model = self.model_ref()
        if model is None:  # pragma: no cover - the cache entry dies with the model
            raise RuntimeError("the model of this Grad-CAM pass no longer exists")
        return model

    @property
    def layer(self) -> keras.layers.Layer:
        layer = self.layer_ref()
        if layer is None:  # pragma: no cover
            raise RuntimeError("the layer of this Grad-CAM pass no longer exists")
        return layer

    def select(self, outputs: Any) -> Any:
        """The chosen model output as a ``(N, classes)`` tensor (a ``(N,)`` output becomes
        ``(N, 1)``); with score functions, their scores ``(N, F)`` on it (any rank)."""
        return self.pick(keras.tree.flatten(outputs), keras.ops)

    def pick(self, flat: list[Any], ops: Any) -> Any:
        """:meth:`select` on the flattened outputs, with the model's ops namespace
        (``keras.ops``, or :func:`..keras_family.tensorflow_ops` for a Keras 2 model):
        ``expand_dims``, ``cast``, ``stack``."""
        selected = flat[self.output_index]
        if self.scores is not None:
            from ..targets import check_result

            columns = []
            for function in self.scores:
                column = function(selected)
                check_result(function, column, tuple(selected.shape))
                columns.append(ops.cast(column, selected.dtype))
            return ops.stack(columns, axis=-1)
        if len(selected.shape) == 1:
            return ops.expand_dims(selected, -1)
        if len(selected.shape) != 2:
            raise ValueError(
                f"output {self.output_index} of the model has shape {tuple(selected.shape)}; "
                "Grad-CAM explains class scores, an output of shape (batch, classes)"
            )
        return selected


def model_backend(model: Any) -> Backend:
    """The backend module that runs ``model``: Keras 2's (TensorFlow) for a Keras 2 model,
    else the running Keras backend's.

    Example:
        >>> model_backend(model) is backend_module()  # a Keras 3 model
        True
        >>> # needs tf_keras, installed in the Keras 2 environments only:
        >>> model_backend(tf_keras_model).__name__  # doctest: +SKIP
        'gradcam_callbacks.backends.keras2_backend'
    """
    from ..keras_family import is_keras2

    if is_keras2(model):
        return importlib.import_module(_KERAS2)  # type: ignore[return-value]
    return backend_module()


def symbolic_call(model: Any, function: Callable[[Any], Any],
                  shape: tuple[int | None, ...]) -> Any:
    """``function`` on a symbolic batch of ``model``'s output, of ``shape`` (float32; nothing
    is computed): a ``keras.KerasTensor`` for a Keras 3 model, a TensorFlow graph tensor
    (a traced ``tf.function``) for a Keras 2 one, so that a score function is checked on
    the kind of tensor it will get.

    Example:
        >>> symbolic_call(model, lambda y: y[:, 0], (3, 10)).shape
        (3,)
    """
    from ..keras_family import is_keras2

    if is_keras2(model):
        return importlib.import_module(_KERAS2).symbolic_call(function, shape)
    return function(keras.KerasTensor(shape))


def spatial_mean(grads: np.ndarray) -> np.ndarray:
    """``grads (..., h, w, C)`` averaged over the two spatial axes by ``keras.ops.mean`` (the
    running backend's reduction); Keras 2.15 (TensorFlow <= 2.15, whose ``keras`` is Keras 2
    and has no ``ops``) by TensorFlow's, the same reduction as Keras 3 on TensorFlow.

    Example:
        >>> spatial_mean(np.ones((1, 2, 2, 3), "float32")).shape
        (1, 3)
    """
    if hasattr(keras, "ops"):
        return np.asarray(keras.ops.convert_to_numpy(keras.ops.mean(grads, axis=(-3, -2))))
    return importlib.import_module(_KERAS2).spatial_mean(grads)


def process_index_and_count() -> tuple[int, int]:
    """``(k, n)``: this process is process ``k`` of ``n``, as the running backend's framework
    says; see :func:`gradcam_callbacks.watch.distribute.process_identity`."""
    return backend_module().process_index_and_count()
