"""What :class:`GradCamCallback` logs for one step: the images and scalars, drawn from the maps.

Pure drawing and arithmetic, no I/O of its own: :meth:`ProbeReport.write` sends everything to
a :class:`~gradcam_callbacks.watch.sinks.Sink`. Each probe's overlay is drawn once per step and
reused for the probe image, the grid and the probe's timeline. Probes whose map or score is
not finite (a diverging model) are drawn as the input beside a "not finite" panel, and get no
scores; the ``gradcam/nonfinite`` scalar counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..image import Colormap, captioned, grid, heatmap_overlay, side_by_side
from ..targets import as_target
from . import metrics, tags
from .sinks import Sink

__all__ = ["EpochMaps", "Measures", "ProbeReport", "Timeline", "measure",
           "measure_faithfulness"]

TIMELINE_COLUMNS = 12
"""A timeline shows at most this many steps, the first and the latest included."""
THUMBNAIL_SIZE = 96
"""Timeline cells are overlays shrunk to this shorter side (never enlarged)."""


@dataclass(frozen=True)
class EpochMaps:
    """Grad-CAM of every probe at one step, as computed on the training thread.

    Attributes:
        step: The TensorBoard step (see :mod:`gradcam_callbacks.watch.tags`).
        heatmaps: ``(N, h, w)`` maps.
        targets: ``(N,)`` explained class indices, or score functions' descriptions (str).
        scores: ``(N,)`` the targets' scores.
        previous: The maps of the previous logged step (``None`` at the first), for the
            change scalars; rows that were never finite are NaN.
        optimizer_steps: The optimizer's step count when the maps were taken (None if
            unknown): written as :data:`~gradcam_callbacks.watch.tags.OPTIMIZER_STEPS`; 0 at step
            -1 labels it ``untrained``, more ``before fit``.

    Example:
        >>> maps = EpochMaps(0, np.full((2, 1, 1), [[[1.0]], [[np.nan]]]), np.array([0, 1]),
        ...                  np.array([0.5, 0.5]))
        >>> maps.finite.tolist()
        [True, False]
    """

    step: int
    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    previous: np.ndarray | None = None
    optimizer_steps: int | None = None

    @property
    def label(self) -> str:
        """The step as captions and sheets name it (:func:`~.tags.step_label`)."""
        return tags.step_label(self.step, untrained=not self.optimizer_steps)

    @property
    def finite(self) -> np.ndarray:
        """Per probe: its map and score are finite (and so will be drawn and scored)."""
        flat = self.heatmaps.reshape(len(self.heatmaps), -1)
        return np.isfinite(flat).all(axis=1) & np.isfinite(self.scores)

    def carried(self) -> np.ndarray:
        """The maps the next step compares with: these, with each non-finite row replaced by
        the previous step's row (NaN if there is none)."""
        finite = self.finite
        if finite.all():
            return self.heatmaps
        keep = np.full_like(self.heatmaps, np.nan, dtype=np.float64) if self.previous is None \
            else self.previous.astype(np.float64)
        keep[finite] = self.heatmaps[finite]
        return keep


@dataclass(frozen=True)
class Measures:
    """The numbers of one step, per probe (probe index to value, finite probes only; None
    when not measured): the change since the previous step, the heatmap mass on the object
    and whether the peak is on it (with object masks), the mass on the artifact (with
    artifact masks), and per faithfulness metric (``GradCamCallback(faithfulness=...)``)
    its area per probe (:func:`measure_faithfulness`).

    Example:
        >>> Measures(changes={0: 0.5, 1: 0.0}).means()["gradcam_mean_change"]
        0.25
        >>> means = Measures(faithfulness={"insertion": {0: 0.75, 2: 0.25}}).means(
        ...     faithfulness=("insertion", "deletion"))
        >>> means["gradcam_faithfulness_insertion"], means["gradcam_faithfulness_deletion"]
        (0.5, nan)
    """

    changes: dict[int, float] | None = None
    masses: dict[int, float] | None = None
    hits: dict[int, float] | None = None
    artifact_masses: dict[int, float] | None = None
    faithfulness: dict[str, dict[int, float]] | None = None

    def means(self, objects: bool = False, artifacts: bool = False,
              faithfulness: Sequence[str] = ()) -> dict[str, float]:
        """Means over probes under their Keras ``logs`` keys (:data:`~.tags.LOG_MEAN_CHANGE`
        and the others): the change always, the object's with ``objects``, the artifact's
        with ``artifacts``, each metric named in ``faithfulness``
        (:func:`~gradcam_callbacks.watch.tags.log_faithfulness_key`); NaN where
        nothing was measured (no previous step, no finite probe, a failed measurement), so
        that the keys are the same at every epoch."""
        def mean(values: dict[int, float] | None) -> float:
            return float(np.mean(list(values.values()))) if values else float("nan")

        out = {tags.LOG_MEAN_CHANGE: mean(self.changes)}
        if objects:
            out[tags.LOG_POINTING_GAME] = mean(self.hits)
            out[tags.LOG_BOX_MASS] = mean(self.masses)
        if artifacts:
            out[tags.LOG_ARTIFACT_MASS] = mean(self.artifact_masses)
        for metric in faithfulness:
            out[tags.log_faithfulness_key(metric)] = mean((self.faithfulness or {}).get(metric))
        return out


def measure(maps: EpochMaps, masks: np.ndarray | None = None,
            artifact_masks: np.ndarray | None = None) -> Measures:
    """The :class:`Measures` of ``maps`` (cheap numpy, run on the training thread so that the
    means reach the epoch's ``logs``; the report's scalars reuse them).

    Example:
        >>> masks = np.zeros((1, 2, 2), bool); masks[0, 0, 0] = True
        >>> maps = EpochMaps(0, np.eye(2)[None], np.array([0]), np.array([0.5]))
        >>> measure(maps, masks).hits
        {0: 1.0}
    """
    finite = maps.finite
    ok = np.flatnonzero(finite)
    changes = masses = hits = artifact = None
    if maps.previous is not None and len(ok):
        both = ok[np.isfinite(maps.previous[ok].reshape(len(ok), -1)).all(axis=1)]
        if len(both):
            changes = _by_probe(both, metrics.heatmap_changes(maps.previous[both],
                                                              maps.heatmaps[both]))
    if masks is not None and len(ok):
        masses = _by_probe(ok, metrics.mask_masses(maps.heatmaps[ok], masks[ok]))
        hits = _by_probe(ok, metrics.mask_pointing_hits(maps.heatmaps[ok], masks[ok]))
    if artifact_masks is not None and len(ok):
        artifact = _by_probe(ok, metrics.mask_masses(maps.heatmaps[ok], artifact_masks[ok]))
    return Measures(changes, masses, hits, artifact)


def measure_faithfulness(
    maps: EpochMaps, score: Callable[[np.ndarray], dict[str, np.ndarray]],
) -> dict[str, dict[int, float]]:
    """The faithfulness part of :class:`Measures`: ``score(indices)`` computes each metric's
    value for the probes ``indices`` (those whose map and score are finite, in order; e.g.
    :func:`gradcam_callbacks.faithfulness.probe_faithfulness` on them, on the training
    thread); the values come back per probe index, non-finite ones left out. No finite
    probe: ``{}``, and ``score`` is not called.

    Example:
        >>> maps = EpochMaps(0, np.full((2, 1, 1), [[[1.0]], [[np.nan]]]), np.array([0, 1]),
        ...                  np.array([0.5, 0.5]))
        >>> measure_faithfulness(maps, lambda rows: {"insertion": rows * 0.0 + 0.7})
        {'insertion': {0: 0.7}}
    """
    ok = np.flatnonzero(maps.finite)
    if not len(ok):
        return {}
    found = score(ok)
    return {name: {int(i): float(v) for i, v in zip(ok, np.asarray(values, np.float64))
                   if np.isfinite(v)} for name, values in found.items()}


def _by_probe(indices: np.ndarray, values: np.ndarray) -> dict[int, float]:
    return {int(i): float(v) for i, v in zip(indices, values)}


@dataclass
class Timeline:
    """One probe's cells over the logged steps, thinned evenly to stay readable.

    Keeps every ``stride``-th logged step, counted from the first, plus the latest; when more
    than ``columns`` would be kept, the stride doubles. So the first step is always kept, the
    latest too, and a cell once dropped is never needed again: each is drawn once.

    Example:
        >>> line = Timeline(columns=4)
        >>> for step in range(-1, 9):
        ...     line.add(step, Image.new("RGB", (4, 4)))
        >>> [step for step, _, _ in line.kept]
        [-1, 3, 7, 8]
    """

    columns: int = TIMELINE_COLUMNS
    kept: list[tuple[int, Image.Image, str]] = field(default_factory=list)
    _ordinals: list[int] = field(default_factory=list)
    _stride: int = 1
    _count: int = 0

    def add(self, step: int, cell: Image.Image, label: str | None = None) -> None:
        """Append the cell of a new logged step, labelled ``label`` (default
        :func:`~gradcam_callbacks.watch.tags.step_label`)."""
        if self._ordinals and self._ordinals[-1] % self._stride:  # the old latest goes
            self.kept.pop()
            self._ordinals.pop()
        self.kept.append((step, cell, tags.step_label(step) if label is None else label))
        self._ordinals.append(self._count)
        self._count += 1
        while len(self.kept) > self.columns:
            self._stride *= 2
            last = len(self.kept) - 1
            pairs = [(o, k) for i, (o, k) in enumerate(zip(self._ordinals, self.kept))
                     if o % self._stride == 0 or i == last]
            self._ordinals = [o for o, _ in pairs]
            self.kept = [k for _, k in pairs]

    def image(self) -> Image.Image:
        """The kept cells in one row, labelled with their epochs."""
        return grid([[cell for _, cell, _ in self.kept]],
                    column_labels=[label for _, _, label in self.kept])


class ProbeReport:
    """Draws and scores the probes at each logged step and writes the result to a sink.

    Holds the drawing settings and the probes' timelines; one report serves one fit, its
    steps written in order on one thread.

    Args:
        pictures: One picture per probe, to draw on.
        colormap: The overlays' colormap (a callable from :func:`~gradcam_callbacks.image.
            get_colormap`).
        alpha_limit: The overlays' maximum opacity.
        display_size: Pictures with a shorter side below this are enlarged by a whole factor.
        boxes: ``(N, 4)`` object boxes drawn on the pictures, or None.
        masks: ``(N, H, W)`` object masks for the localisation scalars, or None.
        class_names: Names for the captions, or None.
        layer_path: The explained layer, named in the descriptions.
        method: The tag section (:func:`gradcam_callbacks.watch.tags.section`): None for the first
            (or only) CAM method, whose tags are the plain ``gradcam/...``; a method's name
            for each further one.
        title: The method's name in captions and descriptions (``Method.title``).
        artifact_masks: ``(N, H, W)`` masks of a known spurious cue in each probe, for the
            ``artifact_mass`` scalars, or None.

    Example:
        >>> report = ProbeReport([Image.new("RGB", (8, 8))], "viridis", 0.6, 16)
        >>> import tempfile
        >>> from gradcam_callbacks.watch.tensorboard import EventWriter, read_events
        >>> sink = EventWriter(tempfile.mkdtemp())
        >>> report.write(EpochMaps(0, np.ones((1, 2, 2)), np.array([1]), np.array([0.9])),
        ...              sink)
        >>> sink.close()
        >>> for tag in sorted({r.tag for r in read_events(sink.log_dir)}):
        ...     print(tag)
        gradcam/grid
        gradcam/nonfinite
        gradcam/probe_00
        gradcam/probe_00/score
        gradcam/timeline/probe_00
    """

    def __init__(self, pictures: Sequence[Image.Image], colormap: Colormap,
                 alpha_limit: float | None, display_size: int,
                 boxes: np.ndarray | None = None, masks: np.ndarray | None = None,
                 class_names: Sequence[str] | None = None, layer_path: str = "",
                 method: str | None = None, title: str = "Grad-CAM",
                 artifact_masks: np.ndarray | None = None) -> None:
        self.pictures = list(pictures)
        self.method, self.title = method, title
        self.layer_path = layer_path
        self.colormap, self.alpha_limit = colormap, alpha_limit
        self.display_size = display_size
        self.boxes, self.masks, self.class_names = boxes, masks, class_names
        self.artifact_masks = artifact_masks
        self.timelines = [Timeline() for _ in self.pictures]
        self._shown = [self._enlarged(i) for i in range(len(self.pictures))]

    def write(self, maps: EpochMaps, sink: Sink, measures: Measures | None = None) -> None:
        """Draw step ``maps.step`` and send its images and scalars to ``sink``, then flush.
        ``measures``: the step's :func:`measure` if already taken (else taken here)."""
        step, finite = maps.step, maps.finite
        if measures is None:
            measures = measure(maps, self.masks, self.artifact_masks)
        changes, masses, hits = measures.changes, measures.masses, measures.hits
        artifact = measures.artifact_masses
        faithful = measures.faithfulness or {}
        panels = []
        for i, shown in enumerate(self._shown):
            target, score = as_target(maps.targets[i]), float(maps.scores[i])
            heading = (f"{maps.label} (step {step}): target {target}"
                       f"{self._class_name(target)}")
            tag, method, title = tags.probe_tag(i, self.method), self.method, self.title
            if finite[i]:
                overlay = heatmap_overlay(shown, maps.heatmaps[i], colormap=self.colormap,
                                          alpha_limit=self.alpha_limit)
                caption = [f"{heading}, score {score:.3f}"]
                if masses is not None and hits is not None:
                    caption.append(f"mass on object {masses[i]:.2f}, "
                                   f"peak {'on' if hits[i] else 'off'} it")
                if artifact is not None:
                    caption.append(f"mass on artifact {artifact[i]:.2f}")
                sink.add_scalar(tags.probe_scalar_tag(i, "score", method), score, step)
                if changes is not None and i in changes:
                    sink.add_scalar(tags.probe_scalar_tag(i, "change", method),
                                    float(changes[i]), step)
                if masses is not None and hits is not None:
                    sink.add_scalar(tags.probe_scalar_tag(i, "box_mass", method),
                                    float(masses[i]),
                                    step)
                    sink.add_scalar(tags.probe_scalar_tag(i, "pointing_hit", method),
                                    float(hits[i]),
                                    step)
                if artifact is not None:
                    sink.add_scalar(tags.probe_scalar_tag(i, "artifact_mass", method),
                                    artifact[i], step)
                for metric, values in faithful.items():
                    if i in values:
                        sink.add_scalar(tags.faithfulness_tag(metric, i), values[i], step)
            else:
                overlay = _not_finite_panel(shown.size)
                caption = [f"{heading}: {title} not finite (score {score:.3g})",
                           "the model may be diverging; no overlay drawn"]
            panels.append(overlay)
            sink.add_image(tag, captioned(side_by_side([shown, overlay]), caption), step,
                           description=f"Probe {i}: the input (left) and its {title} overlay "
                           "(right); the caption names the epoch (step = 0-based epoch, as "
                           "Keras' TensorBoard; step -1 is the model before the fit's first "
                           "epoch: untrained, or before fit if trained before), the explained "
                           f"target and its score. Layer: `{self.layer_path}`")
            self.timelines[i].add(step, _thumbnail(overlay), maps.label)
            sink.add_image(tags.timeline_tag(i, method), self.timelines[i].image(), step,
                           description=f"Probe {i}'s {title} overlay at every logged epoch so "
                           f"far, thinned evenly to at most {TIMELINE_COLUMNS} columns (the "
                           "first and the latest always shown): the latest step holds the whole "
                           "history, so it needs no --samples_per_plugin")
        columns = int(np.ceil(np.sqrt(len(panels))))
        sink.add_image(tags.section_tag("grid", self.method), grid([panels[r:r + columns]
                                        for r in range(0, len(panels), columns)]), step,
                       description=f"The {self.title} overlays of all {len(panels)} probes, "
                       "left to right and top to bottom by probe index. Layer: "
                       f"`{self.layer_path}`")
        if maps.optimizer_steps is not None and self.method is None:
            sink.add_scalar(tags.OPTIMIZER_STEPS, float(maps.optimizer_steps), step,
                            description="The optimizer's step count when this step's maps "
                            "were taken (0 before any training)")
        sink.add_scalar(tags.section_tag("nonfinite", self.method),
                        float((~finite).sum()), step,
                        description=f"Probes whose {self.title} map or score was NaN or "
                        "infinite")
        if changes:
            sink.add_scalar(tags.section_tag("mean_change", self.method),
                            float(np.mean(list(changes.values()))), step)
        if masses and hits:
            sink.add_scalar(tags.section_tag("mean_box_mass", self.method),
                            float(np.mean(list(masses.values()))), step)
            sink.add_scalar(tags.section_tag("pointing_game", self.method),
                            float(np.mean(list(hits.values()))), step)
        if artifact:
            sink.add_scalar(tags.section_tag("mean_artifact_mass", self.method),
                            float(np.mean(list(artifact.values()))), step,
                            description="Mean over probes of the heatmap mass on the "
                            "artifact (artifact_boxes / artifact_masks)")
        for metric, values in faithful.items():
            if values:
                sink.add_scalar(tags.faithfulness_tag(metric), float(np.mean(list(
                    values.values()))), step, description=_FAITHFULNESS_DESCRIPTIONS.get(
                        metric, metric) + f"; {self.title}'s maps, mean over the probes whose "
                    "map is finite (see gradcam_callbacks.faithfulness)")
        sink.flush()

    def _enlarged(self, index: int) -> Image.Image:
        """The picture as shown: enlarged to ``display_size``, with its box drawn."""
        picture = self.pictures[index]
        factor = max(1, int(np.ceil(self.display_size / max(1, min(picture.size)))))
        shown = picture.convert("RGB").resize((picture.width * factor, picture.height * factor),
                                              Image.NEAREST)
        if self.boxes is not None:
            x0, y0, x1, y1 = (int(v) * factor for v in self.boxes[index])
            ImageDraw.Draw(shown).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 0, 0))
        return shown

    def _class_name(self, target: int | str) -> str:
        if self.class_names is None or isinstance(target, str) or not (
                0 <= target < len(self.class_names)):
            return ""
        return f" ({self.class_names[target]})"


_FAITHFULNESS_DESCRIPTIONS = {
    "insertion": "Insertion area (higher is more faithful): the target's score as the pixels "
    "the map ranks highest are revealed from the baseline",
    "deletion": "Deletion area (lower is more faithful): the target's score as the pixels the "
    "map ranks highest are replaced by the baseline",
    "road": "ROAD (higher is more faithful): half the score with the least relevant pixels "
    "removed minus with the most relevant removed",
}


def _not_finite_panel(size: tuple[int, int]) -> Image.Image:
    panel = Image.new("RGB", size, (128, 128, 128))
    ImageDraw.Draw(panel).text((4, size[1] // 2 - 6), "not finite", fill=(255, 255, 255))
    return panel


def _thumbnail(image: Image.Image) -> Image.Image:
    shorter = min(image.size)
    if shorter <= THUMBNAIL_SIZE:
        return image
    return image.resize((image.width * THUMBNAIL_SIZE // shorter,
                         image.height * THUMBNAIL_SIZE // shorter), Image.BILINEAR)
