"""Is the map true to the model? Faithfulness and sanity metrics for heatmaps.

Pointing game and box mass (:mod:`gradcam_callbacks.watch.metrics`) say whether a map agrees with
a person's box; these say whether it agrees with the model:

- :func:`deletion` / :func:`insertion` (Petsiuk et al. 2018, as Xplique 2.0's ``Deletion`` /
  ``Insertion``): the target's score as the pixels the map ranks highest are replaced by a
  baseline (deletion: a low area is good) or revealed from it (insertion: a high area is
  good), one area per image.
- :func:`road` (Rong et al. 2022, Remove And Debias): the score with a percentage of the
  pixels removed, most or least relevant first, filled in by noisy linear imputation so
  that the removal itself leaks no shape.
- :func:`sanity_check` (Adebayo et al. 2018): cascading model randomisation from the top
  layer down; a map that stays rank-correlated with the trained model's map when the
  weights it should depend on are random is not explaining the model.

A map ``(h, w)`` is laid over its image ``(H, W)`` as the overlays are: bilinear resizing
with pixel centres aligned (:func:`gradcam_callbacks.resample.resize_heatmaps`). Pixels are
ranked by the resized map, highest first; ties go in a fixed order, the later pixel in
row-major order first (Xplique's order: its ascending sort, reversed). A pixel's channels
are perturbed together.

Every perturbed input runs through the model's compiled score-only forward, a chunk at a
time (:func:`gradcam_callbacks.methods.scorecam.chunked_scores`, Score-CAM's path): one
forward per chunk of at most ``batch_size`` inputs (default: 2 MiB of them), never one
predict per image and step.

Example:
    >>> from gradcam_callbacks import explain_predictions
    >>> expls = explain_predictions(model, x)  # doctest: +SKIP
    >>> maps = np.stack([e.targets[0].heatmap for e in expls])  # doctest: +SKIP
    >>> insertion(model, x, maps, [e.targets[0].target for e in expls]).mean()  # doctest: +SKIP
    0.65
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np

from . import engine, layers
from . import methods as cam_methods
from .methods.scorecam import chunked_scores
from .pixels import Baseline, baseline_images, impute, spearman_rows
from .pixels import sobel_maps as sobel_maps  # its documented path: faithfulness.sobel_maps
from .resample import resize_heatmaps
from .targets import Slots

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "Road",
    "SanityCheck",
    "causal_curves",
    "deletion",
    "insertion",
    "probe_faithfulness",
    "road",
    "sanity_check",
]

METRICS = ("insertion", "deletion", "road")
"""The names :func:`probe_faithfulness` (and ``GradCamCallback(faithfulness=[...])``) take."""
DEFAULT_METRICS = ("insertion", "deletion")
"""What :func:`probe_faithfulness` and ``GradCamCallback(faithfulness=True)`` measure: one
chunked run of compiled forwards for both."""
ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclass(frozen=True)
class _Setup:
    """Validated inputs shared by the metrics: images, the rank of every pixel per image
    (0 = most relevant), the target columns and the compiled score."""

    images: np.ndarray  # (N, ...) the model's input dtype
    ranks: np.ndarray  # (N, H * W) int
    columns: np.ndarray  # (N, 1) int: the column of the score's output to read
    score: Callable[[np.ndarray], np.ndarray]
    channels_first: bool

    @property
    def pixels(self) -> int:
        return self.ranks.shape[1]

    def spatial(self, flags: np.ndarray) -> np.ndarray:
        """``(B, H * W)`` per-pixel values -> broadcastable against ``(B, ...)`` inputs."""
        height, width = self.size
        shaped = flags.reshape(len(flags), height, width)
        return shaped[:, None] if self.channels_first else shaped[..., None]

    @property
    def size(self) -> tuple[int, int]:
        shape = self.images.shape
        return (shape[2], shape[3]) if self.channels_first else (shape[1], shape[2])


def _setup(model: keras.Model, images: Any, heatmaps: Any, targets: Any,
           batch_size: int | None, output: Any) -> _Setup:
    cam_methods.positive_or_none("batch_size", batch_size)
    pass_plan = engine.plan(model, None, output)
    docs = engine.check_docs(model, images, name="images")
    docs = np.asarray(docs, dtype=pass_plan.input_dtype)
    channels_first = pass_plan.data_format == "channels_first"
    size = docs.shape[2:4] if channels_first else docs.shape[1:3]
    maps = np.asarray(heatmaps)
    if maps.ndim != 3:
        raise ValueError(
            f"heatmaps must be a stack (n, height, width), one map per image; received "
            f"shape {maps.shape}")
    if len(maps) != len(docs):
        raise ValueError(
            f"heatmaps must hold one map per image ({len(docs)}); received {len(maps)}")
    flat = resize_heatmaps(maps, size).reshape(len(docs), -1)
    # most relevant first; ties: the later pixel first (Xplique's ascending order, reversed)
    order = np.argsort(flat, axis=1, kind="stable")[:, ::-1]
    ranks = np.empty(order.shape, np.int32)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1], dtype=np.int32)[None], axis=1)
    slots = pass_plan.targets(targets, len(docs), "image")
    if slots.indices.shape[1] != 1:
        raise ValueError(
            f"targets must name one target per image (the one its heatmap explains); "
            f"received {slots.indices.shape[1]} for some image")
    score = functools.partial(pass_plan.score, functions=slots.functions)
    columns = np.asarray(slots.indices, np.int64)
    if (columns < 0).any():  # None: each image's top class, read off one forward
        outputs = chunked_scores(len(docs), lambda rows, out: _copy(docs, rows, out),
                                 docs.shape[1:], docs.dtype, score, None, batch_size)
        columns = np.where(columns < 0, outputs.argmax(axis=-1)[:, None], columns)
    return _Setup(docs, ranks, columns, score, channels_first)


def _copy(docs: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    out[:len(rows)] = docs[rows]


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive integer; received steps={steps!r}")
    return int(steps)


def causal_curves(
    model: keras.Model, images: Any, heatmaps: Any, targets: Any = None, *,
    mode: str = "deletion", steps: int = 10, baseline: Baseline = 0.0,
    batch_size: int | None = None, output: Any = None,
) -> np.ndarray:
    """``(N, steps + 1)`` the target's score (the model's own output: a softmax head's
    probability) as ``np.linspace(0, H * W, steps + 1)`` pixels (truncated to integers)
    are replaced by the baseline, most relevant first (``mode="deletion"``), or revealed
    from the baseline (``mode="insertion"``). :func:`deletion` and :func:`insertion` are
    the areas under these curves.

    Args:
        model: A built Keras model taking images.
        images: ``(N,) + input shape``, as for :func:`gradcam_callbacks.explain_predictions`.
        heatmaps: ``(N, h, w)``, one map per image at any resolution (resized to the image).
        targets: ``None`` (each image's top class), N class indices or score functions
            (:mod:`gradcam_callbacks.targets`), one per image.
        mode: ``"deletion"`` or ``"insertion"``.
        steps: Number of steps from no pixel to all pixels.
        baseline: See :func:`baseline_images`.
        batch_size: Perturbed inputs per compiled forward (default: 2 MiB of them).
        output: For models with several outputs: an index or an output name.

    Example:
        >>> causal_curves(model, x[:2], maps[:2], [3, 5], steps=4).shape  # doctest: +SKIP
        (2, 5)
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion'; received mode={mode!r}")
    steps = _check_steps(steps)
    setup = _setup(model, images, heatmaps, targets, batch_size, output)
    return _curves(setup, (mode,), steps, baseline, batch_size)[mode]


def _curves(setup: _Setup, modes: Sequence[str], steps: int, baseline: Baseline,
            batch_size: int | None) -> dict[str, np.ndarray]:
    """``{mode: (N, steps + 1)}``: every mode's perturbed inputs in one chunked run."""
    data_format = "channels_first" if setup.channels_first else "channels_last"
    base = baseline_images(setup.images, baseline, data_format)
    counts = np.linspace(0, setup.pixels, steps + 1).astype(np.int64)
    per_image = steps + 1
    per_mode = len(setup.images) * per_image

    def fill(rows: np.ndarray, out: np.ndarray) -> None:
        m, rest = np.divmod(rows, per_mode)
        n, k = np.divmod(rest, per_image)
        flipped = setup.spatial(setup.ranks[n] < counts[k][:, None])
        deleting = np.array([modes[i] == "deletion" for i in m]).reshape(
            (-1,) + (1,) * (setup.images.ndim - 1))
        # deletion: the flipped pixels take the baseline; insertion: only they keep the image
        out[:len(rows)] = np.where(flipped == deleting, base[n], setup.images[n])

    scores = chunked_scores(len(modes) * per_mode, fill, setup.images.shape[1:],
                            setup.images.dtype, setup.score,
                            np.tile(np.repeat(setup.columns, per_image, axis=0), (len(modes), 1)),
                            batch_size)
    return {mode: scores[i * per_mode:(i + 1) * per_mode].reshape(len(setup.images), per_image)
            for i, mode in enumerate(modes)}


def curve_area(curves: np.ndarray) -> np.ndarray:
    """Area under ``(N, S + 1)`` curves over evenly spaced steps, by the trapezoid rule on
    ``[0, 1]``: the mean of ``(s_k + s_{k+1}) / 2``.

    Example:
        >>> import numpy as np
        >>> curve_area(np.array([[10.0, 9.0, 7.0, 4.0, 0.0]])).tolist()
        [6.25]
    """
    curves = np.asarray(curves, np.float64)
    return ((curves[:, :-1] + curves[:, 1:]) * 0.5).mean(axis=1)


def deletion(
    model: keras.Model, images: Any, heatmaps: Any, targets: Any = None, *,
    steps: int = 10, baseline: Baseline = 0.0, batch_size: int | None = None,
    output: Any = None,
) -> np.ndarray:
    """Deletion area per image (lower is more faithful): the target's score as the most
    relevant pixels by the map are replaced by ``baseline``, at ``steps + 1`` evenly spaced
    pixel counts from none to all, area by the trapezoid rule. The mean over images equals
    Xplique 2.0's ``Deletion(model, images, one_hot_targets, steps=steps,
    baseline_mode=baseline)`` on the same maps resized to the images. Arguments as in
    :func:`causal_curves`.

    Example:
        >>> deletion(model, x, maps, targets=y.tolist(), baseline="blur")  # doctest: +SKIP
        array([0.12, 0.08, ...])
    """
    return curve_area(causal_curves(model, images, heatmaps, targets, mode="deletion",
                                    steps=steps, baseline=baseline, batch_size=batch_size,
                                    output=output))


def insertion(
    model: keras.Model, images: Any, heatmaps: Any, targets: Any = None, *,
    steps: int = 10, baseline: Baseline = 0.0, batch_size: int | None = None,
    output: Any = None,
) -> np.ndarray:
    """Insertion area per image (higher is more faithful): the target's score as the most
    relevant pixels by the map are revealed from ``baseline``; otherwise as :func:`deletion`
    (Xplique 2.0's ``Insertion``).

    Example:
        >>> insertion(model, x, maps, targets=y.tolist()).mean()  # doctest: +SKIP
        0.65
    """
    return curve_area(causal_curves(model, images, heatmaps, targets, mode="insertion",
                                    steps=steps, baseline=baseline, batch_size=batch_size,
                                    output=output))


@dataclass(frozen=True)
class Road:
    """ROAD scores (Rong et al. 2022).

    Attributes:
        percentages: ``(P,)`` the percentages of pixels removed.
        most_relevant_first: ``(N, P)`` the target's score with that share of the pixels,
            the most relevant by the map, imputed (MoRF: low is faithful).
        least_relevant_first: ``(N, P)`` the same removing the least relevant first
            (LeRF: high is faithful).
    """

    percentages: np.ndarray
    most_relevant_first: np.ndarray
    least_relevant_first: np.ndarray

    @property
    def combined(self) -> np.ndarray:
        """``(N,)`` the mean over percentages of ``(LeRF - MoRF) / 2`` (pytorch-grad-cam's
        ``ROADCombined``): higher is more faithful, 0 is no better than chance."""
        return ((self.least_relevant_first - self.most_relevant_first) / 2).mean(axis=1)


def road(
    model: keras.Model, images: Any, heatmaps: Any, targets: Any = None, *,
    percentages: Sequence[float] = ROAD_PERCENTAGES, noise: float = 0.01, seed: int = 0,
    batch_size: int | None = None, output: Any = None,
) -> Road:
    """ROAD (Remove And Debias, Rong et al. 2022): for each percentage ``p``, the target's
    score once ``int(p / 100 * H * W)`` pixels are removed, the most relevant first (MoRF)
    and the least relevant first (LeRF), each removed pixel filled in by noisy linear
    imputation: the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal; removed
    neighbours are unknowns of the same sparse linear system, solved per image and
    channel), plus Gaussian noise of standard deviation ``noise`` (drawn per input from
    ``seed``, whatever the chunking). Arguments as in :func:`causal_curves`.

    Raises:
        ValueError: a percentage outside ``[0, 100)`` or a negative ``noise``.

    Example:
        >>> result = road(model, x, maps, y.tolist(), percentages=(20, 50, 80))  # doctest: +SKIP
        >>> result.combined.mean()  # doctest: +SKIP
        0.21
    """
    shares = np.asarray(percentages, np.float64).reshape(-1)
    if shares.size == 0 or not np.isfinite(shares).all() or (shares < 0).any() or (
            shares >= 100).any():
        raise ValueError(
            f"percentages must be numbers in [0, 100); received percentages={percentages!r}")
    if not isinstance(noise, numbers.Real) or isinstance(noise, bool) or noise < 0:
        raise ValueError(f"noise must be a number >= 0; received noise={noise!r}")
    setup = _setup(model, images, heatmaps, targets, batch_size, output)
    counts = (shares / 100 * setup.pixels).astype(np.int64)
    per_image = 2 * len(shares)  # MoRF at each percentage, then LeRF at each
    height, width = setup.size

    def fill(rows: np.ndarray, out: np.ndarray) -> None:
        n, j = np.divmod(rows, per_image)
        least, p = np.divmod(j, len(shares))
        ranks = setup.ranks[n]
        ranks = np.where(least[:, None] == 1, setup.pixels - 1 - ranks, ranks)
        removed = (ranks < counts[p][:, None]).reshape(len(rows), height, width)
        pictures = setup.images[n]
        if setup.channels_first:
            pictures = np.moveaxis(pictures, 1, -1)
        filled = impute(pictures, removed, noise, [(seed, int(r)) for r in rows])
        if setup.channels_first:
            filled = np.moveaxis(filled, -1, 1)
        out[:len(rows)] = filled

    scores = chunked_scores(len(setup.images) * per_image, fill, setup.images.shape[1:],
                            setup.images.dtype, setup.score,
                            np.repeat(setup.columns, per_image, axis=0), batch_size)
    scores = scores.reshape(len(setup.images), 2, len(shares))
    return Road(shares, scores[:, 0], scores[:, 1])


@dataclass(frozen=True)
class SanityCheck:
    """Cascading model randomisation (Adebayo et al. 2018).

    Attributes:
        layers: The layers randomised, top (output side) first; step ``l`` has
            ``layers[:l + 1]`` randomised at once.
        correlations: For each method name, ``(L, N)``: the Spearman rank correlation of
            image ``n``'s map on the trained model with its map at step ``l`` (NaN where
            either map is constant, e.g. all zero). Near 1: the map ignores those weights.
    """

    layers: tuple[str, ...]
    correlations: dict[str, np.ndarray]

    def mean(self, method: str) -> np.ndarray:
        """``(L,)`` the mean correlation over images at each step (NaNs left out)."""
        with np.errstate(invalid="ignore"):
            values = self.correlations[method]
            kept = np.isfinite(values)
            return np.where(kept, values, 0).sum(axis=1) / np.maximum(kept.sum(axis=1), 1)


def sanity_check(
    model: keras.Model, images: Any, targets: Any = None, *,
    methods: Sequence[Any] = (cam_methods.DEFAULT,), layer: Any = None, output: Any = None,
    seed: int = 0, batch_size: int | None = None,
) -> SanityCheck:
    """Cascading model randomisation: from the top layer down, the weights of one more
    layer are redrawn at each step (each trainable weight from a normal of its own mean and
    standard deviation; a constant weight stays), the maps of every method in ``methods``
    recomputed for the same targets (those the trained model's maps explain) and compared
    with the trained model's by Spearman rank correlation, per image. The model's weights
    are restored on return, even on error; one compiled pass serves every step.

    Args:
        model: The model, as for :func:`gradcam_callbacks.explain_predictions`.
        images: Its inputs, as for :func:`gradcam_callbacks.explain_predictions`.
        targets: One target per image (class indices, score functions or ``None``).
        layer: The layer to explain at, as for :func:`gradcam_callbacks.explain_predictions`.
        output: The output, as for :func:`gradcam_callbacks.explain_predictions`.
        batch_size: Inputs per forward, as for :func:`gradcam_callbacks.explain_predictions`.
        methods: CAM methods: names (:data:`gradcam_callbacks.methods.METHODS`), values
            (``ScoreCAM(max_channels=64)``) or ``None`` (the model's automatic method).
        seed: Seed of the random weights.

    Example:
        >>> check = sanity_check(model, x[:32], methods=("gradcam", "scorecam"))  # doctest: +SKIP
        >>> check.layers[0], check.mean("gradcam")[0]  # doctest: +SKIP
        ('predictions', 0.04)
    """
    cam_methods.positive_or_none("batch_size", batch_size)
    if isinstance(methods, (str, cam_methods.Method)):
        methods = (methods,)
    if not isinstance(methods, (list, tuple)) or not methods:
        raise ValueError(f"methods must be a non-empty list of CAM methods; received "
                         f"{methods!r}")
    chosen = [cam_methods.choose(m)[0] for m in methods]
    pass_plan = engine.plan(model, layer, output)
    chosen = [pass_plan.resolve(m) for m in chosen]  # None: the model's automatic method
    docs = engine.check_docs(model, images, name="images")
    slots = pass_plan.targets(targets, len(docs), "image")
    if slots.indices.shape[1] != 1:
        raise ValueError(f"targets must name one target per image; received "
                         f"{slots.indices.shape[1]}")

    def maps(pass_slots: Slots) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raws = pass_plan.run(docs, pass_slots, chosen, batch_size, check_finite=False)
        return raws[0].targets, {raw.method.name: raw.heatmaps[:, 0].reshape(len(docs), -1)
                                 for raw in raws}

    resolved, trained = maps(slots)
    if slots.functions is None:  # the randomised models explain the same class
        slots = replace(slots, indices=np.asarray(resolved, np.int32))
    stack = [found for found in layers.walk(model)
             if found.trainable_weights and next(layers.walk(found), None) is None]
    stack.reverse()
    rng = np.random.default_rng(seed)
    saved = model.get_weights()
    correlations: dict[str, list[np.ndarray]] = {m.name: [] for m in chosen}
    try:
        for found in stack:
            for weight in found.trainable_weights:
                value = np.array(weight.numpy())
                spread = float(np.std(value))
                if spread > 0:
                    weight.assign(rng.normal(float(np.mean(value)), spread, value.shape)
                                  .astype(value.dtype))
            _, randomised = maps(slots)
            for name, values in randomised.items():
                correlations[name].append(spearman_rows(trained[name], values))
    finally:
        model.set_weights(saved)
    return SanityCheck(tuple(found.name for found in stack),
                       {name: np.stack(rows) if rows else np.empty((0, len(docs)))
                        for name, rows in correlations.items()})


def probe_faithfulness(
    model: keras.Model, images: Any, heatmaps: Any, targets: Any = None, *,
    names: Sequence[str] = DEFAULT_METRICS, steps: int = 10,
    baseline: Baseline = 0.0, batch_size: int | None = None, output: Any = None,
) -> dict[str, np.ndarray]:
    """Per-image scores for a training callback or a report: ``{name: (N,) array}`` for
    each of ``names`` (``"insertion"``, ``"deletion"``, ``"road"``, the last
    :attr:`Road.combined`). Insertion and deletion share one validation and one chunked
    run of their ``2 * N * (steps + 1)`` perturbed inputs (one compiled forward per chunk).
    Every heatmap must be finite: leave out probes whose map is not.

    ``GradCamCallback(faithfulness=...)`` calls it on the training thread at each logged
    epoch with the probes whose map and score are finite, their maps and the targets they
    explain, and logs each array's mean and its per-probe values.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> scores = probe_faithfulness(model, probes, maps, targets)  # doctest: +SKIP
        >>> {k: float(v.mean()) for k, v in scores.items()}  # doctest: +SKIP
        {'insertion': 0.65, 'deletion': 0.13}
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"names must be among {list(METRICS)}; received {list(names)!r}")
    steps = _check_steps(steps)
    setup = _setup(model, images, heatmaps, targets, batch_size, output)
    modes = [name for name in names if name != "road"]
    curves = _curves(setup, modes, steps, baseline, batch_size) if modes else {}
    found = {name: curve_area(curve) for name, curve in curves.items()}
    if "road" in names:
        found["road"] = road(model, images, heatmaps, targets, batch_size=batch_size,
                             output=output).combined
    found = {name: found[name] for name in names}
    return found
