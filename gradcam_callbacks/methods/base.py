"""What a CAM method is: a configured value (:class:`Method`) with a name, a title, a
description, its options and one function from the engine's numbers (:class:`CamInputs`) to
unnormalised maps (:class:`CamResult`).

The engine normalises every map the same way afterwards (:func:`gradcam_callbacks.cam.normalise`).
This module imports nothing from the engine, so that methods never depend on it, and
nothing from Keras, so that the command line learns the methods' options without loading it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

# (inputs (B, ...) of the model's input shape) -> the selected output's scores, numpy:
# (B, classes), or (B, F) for F score functions.
ScoreCallable = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CamInputs:
    """The engine's numbers for N docs and K target slots, activations channels last.

    Attributes:
        activations: ``(N, h, w, C)``, the layer's activation maps.
        grads: ``(N, K, h, w, C)``, the gradient of each target's score with respect to them.
        docs: ``(N, ...)``, the model inputs.
        targets: ``(N, K)`` int, the resolved class index of each slot.
        data_format: ``"channels_last"`` or ``"channels_first"``, the layout of ``docs``.
        score: The model's compiled, batched, score-only forward (Score-CAM uses it).
        batch_size: How many inputs :attr:`score` may take at once (``None``: the
            method's default).
        attention: ``(N, L, heads, T, T)``, the attention weights of the model's L attention
            layers (``None`` unless the method :attr:`~Method.needs_attention`).
        attention_grads: ``(N, K, L, heads, T, T)``, each target's gradient with respect
            to them.
        layout: Where the attention's T tokens lie: prefix tokens, then an ``h x w`` grid
            (a :class:`gradcam_callbacks.tokens.TokenLayout`).
    """

    activations: np.ndarray
    grads: np.ndarray
    docs: np.ndarray
    targets: np.ndarray
    data_format: str
    score: ScoreCallable
    batch_size: int | None
    attention: np.ndarray | None = None
    attention_grads: np.ndarray | None = None
    layout: Any = None


@dataclass(frozen=True)
class CamResult:
    """A method's output before normalisation.

    Attributes:
        maps: ``(N, K, h, w)`` float64 localisation maps, before ReLU and scaling.
        weights: ``(N, K, C)`` channel weights such that ``maps`` is their weighted sum of
            the activation maps (Eigen-CAM: of the mean-centred ones); NaN for methods whose
            weights vary over space (HiResCAM, LayerCAM), which have no channel weights.
    """

    maps: np.ndarray
    weights: np.ndarray


def positive_or_none(name: str, value: Any) -> int | None:
    """``value`` as an int if it is a positive integer, ``None`` if it is ``None``; else a
    ValueError naming ``name``: the check of a method's count options.

    Example:
        >>> positive_or_none("max_channels", 8), positive_or_none("max_channels", None)
        (8, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None; received {value!r}")
    return int(value)


def option(default: Any, help: str, check: Callable[[str, Any], Any], *,
           metavar: str = "N", cli_type: Callable[[str], Any] = int) -> Any:
    """Declare a method's option: a dataclass field with its default, the sentence that
    explains it (the command line's ``--help`` and the docs show it), ``check(name, value)``
    that validates and returns the value (a TypeError/ValueError naming it otherwise), and how
    the command line reads it (``metavar``, ``cli_type``).

    Example:
        >>> @dataclass(frozen=True)
        ... class Sharpened(Method):
        ...     name = "sharpened"
        ...     power: int | None = option(None, "raise the map to this power", positive_or_none)
        >>> Sharpened(power=2).power
        2
    """
    return field(default=default, metadata={"help": help, "check": check, "metavar": metavar,
                                            "cli_type": cli_type})


@dataclass(frozen=True)
class Option:
    """One option of a method, as :meth:`Method.options` lists it.

    Example:
        >>> from gradcam_callbacks.methods import ScoreCAM
        >>> ScoreCAM.options()[0].flag
        '--max-channels'
    """

    name: str
    default: Any
    help: str
    check: Callable[[str, Any], Any]
    metavar: str
    cli_type: Callable[[str], Any]

    @property
    def flag(self) -> str:
        """The command line's flag: the name with dashes."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Method:
    """A CAM method, configured: a value whose fields are its options.

    A method is a frozen dataclass subclass that names itself (``name``, what users pass as
    ``method=``; ``title``, what people read and ``Explanation.method`` stores;
    ``description``, one paragraph on what the map shows), says what the pass must read
    (``needs_gradients``: False runs the compiled forward alone; ``needs_attention``: the
    pass also taps every ``MultiHeadAttention`` layer) and maps the engine's numbers to
    unnormalised maps in :meth:`compute`. Its options are fields declared with
    :func:`option`: validated when the value is made, shown by the command line as flags.

    Example:
        >>> from gradcam_callbacks.methods import ScoreCAM, get_method
        >>> ScoreCAM(max_channels=64)
        ScoreCAM(max_channels=64)
        >>> get_method("gradcam++").title
        'Grad-CAM++'
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_attention: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for found in self.options():
            object.__setattr__(self, found.name, found.check(found.name, getattr(self, found.name)))

    def compute(self, inputs: CamInputs) -> CamResult:
        """``CamInputs -> CamResult``: the method's maps before normalisation."""
        raise NotImplementedError(f"{type(self).__name__} defines no compute")

    @classmethod
    def options(cls) -> tuple[Option, ...]:
        """The method's options, in declaration order.

        Example:
            >>> from gradcam_callbacks.methods import GradCAM, ScoreCAM
            >>> [o.name for o in ScoreCAM.options()], GradCAM.options()
            (['max_channels'], ())
        """
        return tuple(Option(f.name, f.default, f.metadata["help"], f.metadata["check"],
                            f.metadata["metavar"], f.metadata["cli_type"])
                     for f in fields(cls))

    def settings(self) -> dict[str, Any]:
        """The options that differ from their defaults.

        Example:
            >>> from gradcam_callbacks.methods import ScoreCAM
            >>> ScoreCAM(max_channels=8).settings(), ScoreCAM().settings()
            ({'max_channels': 8}, {})
        """
        return {o.name: getattr(self, o.name) for o in self.options()
                if getattr(self, o.name) != o.default}

    def config(self) -> str | dict[str, Any]:
        """How ``get_config`` stores the method: its name, or with options set a dict
        (which :func:`gradcam_callbacks.methods.get_method` reads back).

        Example:
            >>> from gradcam_callbacks.methods import ScoreCAM
            >>> ScoreCAM().config(), ScoreCAM(max_channels=8).config()
            ('scorecam', {'name': 'scorecam', 'max_channels': 8})
        """
        settings = self.settings()
        return {"name": self.name, **settings} if settings else self.name


def method_class(class_name: str, name: str, title: str, description: str,
                 compute: Callable[[CamInputs], CamResult], *, needs_attention: bool = False,
                 needs_gradients: bool = True) -> type[Method]:
    """A :class:`Method` class without options, in one statement: its name, title,
    description and ``compute(inputs) -> CamResult``. A method with options is a dataclass
    subclass of :class:`Method` written out (:class:`~gradcam_callbacks.methods.ScoreCAM`,
    tests/toy_method.py).

    Example:
        >>> Plain = method_class("Plain", "plain", "Plain", "The activations' channel sum.",
        ...                      lambda inputs: CamResult(inputs.activations.sum(-1)[:, None],
        ...                                               no_channel_weights(inputs.grads)))
        >>> Plain().title, Plain().options()
        ('Plain', ())
    """
    body = {"name": name, "title": title, "description": description,
            "needs_attention": needs_attention, "needs_gradients": needs_gradients,
            "compute": lambda self, inputs: compute(inputs),
            "__doc__": f"{title} (``method={name!r}``): {description}\n\n    Example:\n"
                       f"        >>> {class_name}().title\n        {title!r}\n    ",
            # the module that called: where the class lives, as namedtuple does
            "__module__": sys._getframe(1).f_globals.get("__name__", __name__),
            "__qualname__": class_name}
    return dataclass(frozen=True)(type(class_name, (Method,), body))


def no_channel_weights(grads: np.ndarray) -> np.ndarray:
    """The ``(N, K, C)`` NaN weights of a method without channel weights."""
    return np.full(grads.shape[:2] + grads.shape[-1:], np.nan, dtype=np.float32)


def per_target(activations: np.ndarray) -> np.ndarray:
    """``(N, h, w, C) -> (N, 1, h, w, C)``, to broadcast against ``(N, K, ...)`` gradients."""
    return activations[:, None]


def channel_weighted(
    weights: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Callable[[CamInputs], CamResult]:
    """The ``compute`` of a method whose map is ``sum_c w_c A_c`` with
    ``w = weights(activations (N, 1, h, w, C), grads (N, K, h, w, C)) -> (N, K, C)``."""

    def compute(inputs: CamInputs) -> CamResult:
        found = weights(per_target(inputs.activations), inputs.grads)
        maps = np.einsum("nkc,nhwc->nkhw", found, inputs.activations.astype(np.float64))
        return CamResult(maps, found.astype(np.float32))

    compute.__doc__ = f"Maps of ``sum_c w_c A_c`` with ``w`` from ``{weights.__name__}``."
    return compute


def elementwise(
    maps: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Callable[[CamInputs], CamResult]:
    """The ``compute`` of a method whose weights vary over space:
    ``maps(activations (N, 1, h, w, C), grads (N, K, h, w, C)) -> (N, K, h, w)``; its
    ``weights`` are NaN."""

    def compute(inputs: CamInputs) -> CamResult:
        return CamResult(maps(per_target(inputs.activations), inputs.grads),
                         no_channel_weights(inputs.grads))

    compute.__doc__ = f"Maps of ``{maps.__name__}``; no channel weights (NaN)."
    return compute
