"""What the engine checks of a model and its inputs before any pass: the model itself
(:func:`check_model`), which output is explained (:func:`resolve_output`) and the docs
(:func:`check_docs`). Errors name the argument, what was expected and what was received.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from .. import backends, layers, targets
from .._validation import as_array, check_real_array, is_int
from ..keras_family import graph_of

OutputSpec = int | str | None


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


def check_model(model: Any) -> None:
    """A TypeError/ValueError unless ``model`` is a built Keras model with one image input.

    Example:
        >>> check_model(model) is None
        True
    """
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


def resolve_output(
    model: keras.Model, output: OutputSpec
) -> tuple[int, int | None, tuple[int | None, ...] | None]:
    """``(index, classes, shape)`` of the explained output; ``classes`` is ``None`` when
    unknown (no symbolic outputs) or when the output is not ``(batch, classes)`` (only score
    functions explain those; :meth:`~gradcam_callbacks.engine.Plan.targets` says so).

    Example:
        >>> resolve_output(model, None)
        (0, 10, (None, 10))
    """
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


def check_on_model(function: Any, model: keras.Model,
                   output_shape: tuple[int | None, ...] | None) -> None:
    """Run ``function`` on a symbolic batch of 3 of the model's output (no computation;
    a Keras 2 model's is a traced TensorFlow tensor): it must give 3 floating-point scores.
    Models without symbolic outputs are checked when the pass is traced
    (:meth:`gradcam_callbacks.backends.PassSpec.select`).

    Example:
        >>> check_on_model(targets.RegressionScore(), model, (None, 1)) is None
        True
    """
    if output_shape is None:
        return
    shape = (3,) + tuple(output_shape[1:])
    try:
        result = backends.symbolic_call(model, function, shape)
    except Exception as error:
        kind = TypeError if isinstance(error, TypeError) else ValueError
        message = str(error)
        if isinstance(function, targets.Score):  # its own message is clear
            message = f"targets: {message}, the model's output {output_shape}"
        elif not message.startswith("targets"):
            message = (f"targets: score function {targets.describe(function)} failed on "
                       f"the model's output (a symbolic batch of shape {shape}; write it with "
                       f"{_ops_hint(model)}): {type(error).__name__}: {error}")
        raise kind(message) from None
    targets.check_result(function, result, shape)


def _ops_hint(model: keras.Model) -> str:
    if graph_of(model).name == "Keras 3":
        return "keras.ops"
    return ("TensorFlow ops or tensor indexing: a Keras 2 model's output is a TensorFlow "
            "tensor, which keras.ops takes only under Keras 3 on TensorFlow")
