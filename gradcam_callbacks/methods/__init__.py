"""The CAM methods and their registry.

A method is a value (:class:`~.base.Method`): ``"scorecam"`` names
:class:`ScoreCAM`'s default, ``ScoreCAM(max_channels=64)`` configures it. Each lives in one
module here as a frozen dataclass whose fields are its options; adding one is that file plus
its line in :data:`METHODS` (or a call of :func:`register`). Names are read once, at the edge
(:func:`choose`, which explain, the callback and the command line call); the engine runs
values. Every map is then normalised ELI5's way (:func:`gradcam_callbacks.cam.normalise`).

Nothing here loads Keras until a map is computed, so the command line's ``--help`` lists the
methods and their options from this registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import CamInputs, CamResult, Method, Option, ScoreCallable, option, positive_or_none
from .eigencam import EigenCAM
from .grad_rollout import GradRollout
from .gradcam import GradCAM
from .gradcam_plus_plus import GradCAMPlusPlus
from .hirescam import HiResCAM
from .layercam import LayerCAM
from .rollout import Rollout
from .scorecam import ScoreCAM
from .xgradcam import XGradCAM

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM, ScoreCAM, Rollout,
    GradRollout)}
"""The registry: name -> method class, in the order the docs list them."""
MethodSpec = str | Method | type[Method] | Mapping[str, Any] | None
"""What ``method=`` takes: a name, a value, a class, a stored config, or ``None``."""
AUTO = None
"""``method=None``, the default everywhere (explain, callback, command line): chosen per
model by the engine (:meth:`gradcam_callbacks.engine.Plan.resolve`)."""
DEFAULT = AUTO

__all__ = ["AUTO", "METHODS", "CamInputs", "CamResult", "EigenCAM", "GradCAM",
           "GradCAMPlusPlus", "GradRollout", "HiResCAM", "LayerCAM", "Method", "MethodSpec",
           "Option", "Rollout", "ScoreCAM", "ScoreCallable", "XGradCAM", "apply", "choose",
           "get_method", "heatmaps", "option", "options", "positive_or_none", "register"]


def register(cls: type[Method]) -> type[Method]:
    """Add a method class to :data:`METHODS` under its ``name`` (usable as a decorator);
    explain, the callback and the command line then know it.

    Raises:
        TypeError: ``cls`` is not a :class:`Method` subclass.
        ValueError: its name is empty or taken by another class.

    Example:
        >>> register(GradCAM) is GradCAM  # already there: registering again is harmless
        True
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)) or cls is Method:
        raise TypeError(f"cls must be a subclass of gradcam_callbacks.methods.Method; received "
                        f"{cls!r}")
    if not cls.name or METHODS.get(cls.name, cls) is not cls:
        raise ValueError(f"cls.name must be a new, non-empty method name; received "
                         f"{cls.name!r} (taken: {sorted(METHODS)})")
    METHODS[cls.name] = cls
    return cls


def _expected() -> str:
    return (f"a method name (str), one of {sorted(METHODS)}, a method value such as "
            "ScoreCAM(max_channels=64), or None (automatic)")


def get_method(method: Any) -> Method:
    """The method value for ``method``: a registered name (its defaults), a
    :class:`Method` value (itself), a method class (its defaults) or a stored config (a dict
    with ``"name"`` and options, :meth:`Method.config`).

    Raises:
        TypeError: none of those.
        ValueError: no method has that name, or an option is invalid.

    Example:
        >>> get_method("layercam").title
        'LayerCAM'
        >>> get_method({"name": "scorecam", "max_channels": 8})
        ScoreCAM(max_channels=8)
    """
    if isinstance(method, Method):
        return method
    if isinstance(method, type) and issubclass(method, Method) and method is not Method:
        return method()
    if isinstance(method, Mapping) and isinstance(method.get("name"), str):
        settings = {k: v for k, v in method.items() if k != "name"}
        cls = get_method(method["name"]).__class__
        known = [o.name for o in cls.options()]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"method {cls.name!r} takes the options {known}; received "
                             f"{unknown} in method={dict(method)!r}")
        return cls(**settings)
    if not isinstance(method, str):
        raise TypeError(f"method must be {_expected()}; received {type(method).__name__}: "
                        f"{method!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}; received method={method!r}")
    return METHODS[method]()


def options() -> dict[str, list[type[Method]]]:
    """Every option name of the registered methods -> the method classes that take it.

    Example:
        >>> [cls.name for cls in options()["max_channels"]]
        ['scorecam']
    """
    found: dict[str, list[type[Method]]] = {}
    for cls in METHODS.values():
        for known in cls.options():
            found.setdefault(known.name, []).append(cls)
    return found


def choose(method: Any, *, many: bool = False, **settings: Any) -> list[Method | None]:
    """Read ``method`` once, at the edge: ``None`` (automatic, chosen per model by the
    engine), a name, a value, a class, a stored config or, with ``many``, a list of those
    (distinct names: a method's maps are tagged with its name). ``settings`` are options
    given beside ``method`` (``explain_prediction(..., max_channels=64)``, the command line's
    flags): each applies to the chosen methods that take it, and naming one that none of
    them takes is an error. Options left ``None`` are not given.

    Raises:
        TypeError, ValueError: a bad method or option, named.

    Example:
        >>> choose("scorecam", max_channels=64)
        [ScoreCAM(max_channels=64)]
        >>> choose(None), choose(["gradcam", "layercam"], many=True)[1].title
        ([None], 'LayerCAM')
    """
    if method is AUTO:
        chosen: list[Method | None] = [None]
    elif many and isinstance(method, Sequence) and not isinstance(method, str):
        if not method:
            raise ValueError(f"method must name at least one method: {_expected()}, or a "
                             "list of them; received an empty list")
        chosen = [get_method(m) for m in method]
        names = [m.name for m in chosen]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"method must name each method once; received method="
                             f"{list(method)!r} (repeated: {repeated})")
    elif many and not isinstance(method, (str, Method, type, Mapping)):
        raise TypeError(f"method must be {_expected()}, or a list of them; received "
                        f"{type(method).__name__}: {method!r}")
    else:
        chosen = [get_method(method)]
    for name, value in settings.items():
        if value is None:
            continue
        takers = [cls.name for cls in options().get(name, [])]
        hits = [m for m in chosen if m is not None and name in _option_names(m)]
        if not hits:
            given = [None if m is None else m.name for m in chosen]
            raise ValueError(
                f"{name} applies to method={' or '.join(repr(t) for t in takers) or 'none'} "
                f"only; received {name}={value!r} with method="
                f"{given[0] if len(given) == 1 else given!r}")
        chosen = [dataclasses.replace(m, **{name: value}) if m in hits else m for m in chosen]
    return chosen


def _option_names(method: Method) -> set[str]:
    return {o.name for o in method.options()}


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
    from ..cam import normalise  # Keras' epsilon: loaded when a map is computed

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
