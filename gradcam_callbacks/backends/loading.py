"""Loading a model file with the Keras that wrote it: Keras 3 (``keras.saving``) or Keras 2
(``tf_keras`` / ``tf.keras``, through :mod:`.keras2_backend`, imported only when a Keras 2
is tried). The command line's ``explain`` loads MODEL with :func:`load_model`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import keras


def load_model(path: str) -> tuple[Any, str]:
    """Load a ``.keras`` / ``.h5`` model file with the Keras that wrote it, else with the
    other one installed; returns the model and which Keras loaded it (``"Keras 3.15.1"``,
    ``"Keras 2 (tf_keras 2.21.0)"``). ``tf_keras`` is imported only for a file Keras 3
    cannot load or that Keras 2 wrote.

    Raises:
        ValueError: no installed Keras could load it; says why for each one tried.

    Example:
        >>> model, used = load_model("model.keras")
        >>> used
        'Keras 3...'
        >>> # a Keras 2 file needs tf_keras, installed in the Keras 2 environments only:
        >>> model, used = load_model("model.h5")  # doctest: +SKIP
        >>> used  # doctest: +SKIP
        'Keras 2 (tf_keras 2.21.0)'
    """
    from ..keras_family import written_by_keras2

    attempts = [_load_keras3] if keras.__version__.startswith("3.") else []
    keras2 = _load_keras2 if keras2_installed() else None
    by_keras2 = written_by_keras2(path)
    if keras2 is not None:
        attempts.insert(0 if by_keras2 else len(attempts), keras2)
    failures = []
    for attempt in attempts:
        try:
            return attempt(path)
        except ValueError as error:
            failures.append(str(error))
    if keras2 is None and by_keras2:
        failures.append("the file was written by Keras 2, and no Keras 2 is installed (pip "
                        "install tf-keras, the version of the installed TensorFlow)")
    raise ValueError("; ".join(failures))


def keras2_installed() -> bool:
    """Whether a Keras 2 is importable: ``tf_keras``, or ``keras`` itself (TensorFlow <=
    2.15); imports neither.

    Example:
        >>> isinstance(keras2_installed(), bool)
        True
    """
    return not keras.__version__.startswith("3.") or (
        importlib.util.find_spec("tf_keras") is not None)


def _load_keras2(path: str) -> tuple[Any, str]:
    from .keras2_backend import load_model as keras2_load_model  # imports TensorFlow

    return keras2_load_model(path)


def _load_keras3(path: str) -> tuple[Any, str]:
    name = f"Keras {keras.__version__}"
    try:
        return keras.saving.load_model(path, compile=False), name
    except Exception as error:  # Keras raises many types for a file it cannot read
        raise ValueError(f"{name}: {type(error).__name__}: {error}") from None
