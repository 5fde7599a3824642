"""``explain``'s streaming pipeline: a reader thread, the explainer (the main thread) and a
writer thread, batch by batch, so memory stays flat and every input ends as a PNG or as an
error line.

- The reader reads the next batch while this one is explained.
- The explainer runs one :meth:`Plan.run <gradcam_callbacks.engine.Plan.run>` per batch
  and input shape, for every ``--method`` at once (one pass serves them all). ``--top K``
  asks the engine for each doc's K best classes in the same pass (targets ``-1 .. -K``). A
  batch the model cannot take (or whose pass raises) is retried one input at a time, so one
  bad input fails alone; outputs, scores or maps that are not finite fail that input.
- The writer draws with :func:`~gradcam_callbacks.image.explanation_strip` (or the overlays
  alone), writes each PNG atomically and appends its JSON line, flushed. An output it cannot
  write (a folder in the way) fails that input; a full disk or an unwritable results file
  stops the run.

Both threads are daemons and check a stop flag between inputs: after Ctrl-C the writer
finishes the input it is on and the run returns at once, whatever the reader is doing.
"""

from __future__ import annotations

import errno
import json
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from ..methods.base import Method
from .images import Geometry, preprocess, read_image
from .inputs import Job
from .parse import DEFAULT_METHOD, OUTPUT_SUFFIX, PROG, InputError, one_line
from .progress import Progress

#: A top score at least this high (on a probability output) counts as saturated.
SATURATED = 0.999
#: Write errors that stop the run instead of failing one input.
_FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_POLL = 0.1  # seconds between checks of the stop flag while waiting
_DONE = object()


@dataclass
class ExplainOptions:
    """Everything ``explain`` decided before reading the first image.

    Example:
        >>> from gradcam_callbacks.engine import plan
        >>> from gradcam_callbacks.image import get_colormap
        >>> options = ExplainOptions(
        ...     model=model, plan=plan(model), geometry=Geometry(1, 48, 48, False),
        ...     targets=None, top=None, class_names=None, preprocess="unit",
        ...     colormap=get_colormap("jet"), alpha_limit=None, side_by_side=False,
        ...     max_pixels=Image.MAX_IMAGE_PIXELS)
        >>> options.method_names
        ['gradcam']
    """

    model: Any
    plan: Any
    geometry: Geometry
    targets: list[int] | None
    top: int | None
    class_names: list[str] | None
    preprocess: str
    colormap: Any
    alpha_limit: float | None
    side_by_side: bool
    max_pixels: int
    # --method values, in order; None (--method omitted): chosen for the model by plan.resolve
    methods: list[Method | None] = field(default_factory=lambda: [DEFAULT_METHOD])
    score: Any = None  # a score function (--regression, --segmentation-class)
    faithfulness: bool = False  # --faithfulness: deletion and insertion areas per map

    def __post_init__(self) -> None:
        # the methods that run: the automatic choice made once, for this model
        self.methods = [self.plan.resolve(method) for method in self.methods]

    @property
    def method_names(self) -> list[str]:
        """The names of the methods that run, in order: output file names and
        ``results.jsonl`` use them."""
        return [method.name for method in self.methods]


@dataclass
class Explained:
    """One input's explanation (the first method's) and what looks wrong with it
    (``notes``); ``others`` holds the further methods' explanations, in order.

    Example:
        >>> Explained(explanation=None, notes=["heatmap all zero"]).notes
        ['heatmap all zero']
    """

    explanation: Any
    notes: list[str] = field(default_factory=list)
    others: list[Any] = field(default_factory=list)
    faithfulness: dict[str, dict[str, float]] | None = None  # method -> metric -> area


Outcome = Explained | str  # a str says why the input failed
Loaded = tuple[list[Outcome | None], dict[int, tuple[np.ndarray, Image.Image]]]


@dataclass
class Tally:
    """What the writer did: inputs explained, failed, and explained with a suspicious map
    or score."""

    explained: int = 0
    failed: int = 0
    suspicious: int = 0


class Interrupted(Exception):
    """Raised by :meth:`Pipeline.run` after Ctrl-C, once the writer has stopped."""


class Pipeline:
    """Stream ``jobs`` through read, explain and write; see the module docstring.

    Example:
        >>> from gradcam_callbacks.cli.inputs import collect_inputs
        >>> jobs = collect_inputs([Path("photos")], Path("out"))
        >>> with open("results.jsonl", "w") as results:
        ...     progress = Progress(len(jobs), enabled=False)
        ...     Pipeline(jobs, options, Path("out"), results, progress, 32).run()
        >>> sorted(p.relative_to("out").as_posix() for p in Path("out").rglob("*.png"))
        ['cats/a.gradcam.png', 'dogs/b.gradcam.png']
    """

    def __init__(self, jobs: Sequence[Job], options: ExplainOptions, out_dir: Path,
                 results: TextIO, progress: Progress, batch_size: int) -> None:
        self.options, self.out_dir, self.results, self.progress = (options, out_dir, results,
                                                                   progress)
        self.batches = [jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)]
        self.tally = Tally()
        self._stop = threading.Event()
        self._read: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._written: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._errors: list[BaseException] = []
        self._folders: set[Path] = set()

    def run(self) -> None:
        """Run to the end.

        Raises:
            Interrupted: Ctrl-C; what was written stays.
            OSError: Writing failed for good (disk full, results file); what was written
                stays.
        """
        self._thread(self._reader, "gradcam-reader")
        writer = self._thread(self._writer, "gradcam-writer")
        try:
            while True:
                item = self._take(self._read)
                if item is _DONE:
                    break
                batch, loaded = item
                self._hand_to_writer((batch, explain_batch(loaded, self.options)))
            self._hand_to_writer(_DONE)
            while writer.is_alive():
                writer.join(_POLL)
            self._raise_errors()
        except KeyboardInterrupt:
            self._stop.set()
            writer.join(0.5)  # the input being written is finished, the rest dropped
            raise Interrupted from None
        finally:
            self._stop.set()

    # -- threads ---------------------------------------------------------------------------
    def _thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except BaseException as error:  # handed to the main thread
                self._errors.append(error)
                self._stop.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    def _raise_errors(self) -> None:
        if self._errors:
            raise self._errors[0]

    def _take(self, source: queue.Queue[Any]) -> Any:
        """The next item, waiting in short steps so that Ctrl-C and errors are seen."""
        while True:
            self._raise_errors()
            try:
                return source.get(timeout=_POLL)
            except queue.Empty:
                continue

    def _hand_to_writer(self, item: Any) -> None:
        """Queue ``item`` for the writer (the main thread), waiting in short steps."""
        while True:
            self._raise_errors()
            try:
                return self._written.put(item, timeout=_POLL)
            except queue.Full:
                continue

    def _give(self, item: Any) -> bool:
        """Queue a read batch for the explainer (the reader); False when the run stops."""
        while not self._stop.is_set():
            try:
                self._read.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _reader(self) -> None:
        for batch in self.batches:
            if self._stop.is_set() or not self._give((batch, self._load(batch))):
                return
        self._give(_DONE)

    def _load(self, batch: Sequence[Job]) -> Loaded:
        """``(outcomes, loaded)``: ``outcomes[i]`` says why job i failed (or None), and
        ``loaded[i]`` holds its ``(doc, picture)``."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        loaded: dict[int, tuple[np.ndarray, Image.Image]] = {}
        for i, job in enumerate(batch):
            if job.problem:
                outcomes[i] = job.problem
                continue
            try:
                loaded[i] = read_image(job.source, self.options.geometry,
                                       self.options.max_pixels)
            except InputError as error:
                outcomes[i] = str(error)
        return outcomes, loaded

    def _writer(self) -> None:
        while True:
            try:
                item = self._written.get(timeout=_POLL)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _DONE:
                return
            for job, outcome in zip(*item):
                if self._stop.is_set():
                    return
                self._record(job, outcome)

    def _record(self, job: Job, outcome: Outcome) -> None:
        record = self._write_one(job, outcome)
        self.results.write(json.dumps(record) + "\n")
        self.results.flush()
        failed = "error" in record
        if failed:
            self.tally.failed += 1
            self.progress.message(f"{PROG} explain: skipped {str(job.source)!r}: "
                                  f"{record['error']}")
        else:
            self.tally.explained += 1
            self.tally.suspicious += bool(record["warnings"])
        self.progress.advance(failed)

    # -- drawing and writing -----------------------------------------------------------------
    def _write_one(self, job: Job, outcome: Outcome) -> dict[str, Any]:
        """Write one overlay PNG (atomically) and return its JSON record."""
        from ..watch.sheet import save_atomically

        if isinstance(outcome, str) or job.output is None:
            return {"file": str(job.source), "error": str(outcome)}
        expl, options = outcome.explanation, self.options
        outputs = {}
        for index, (name, each) in enumerate(zip(options.method_names,
                                                 [expl, *outcome.others])):
            output = method_output(job.output, name, index)
            try:
                picture = draw(each, options)
            except Exception as error:  # one input fails, the run goes on
                return {"file": str(job.source), "error": f"cannot draw: {one_line(error)}"}
            path = self.out_dir / output
            try:
                if path.parent not in self._folders:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._folders.add(path.parent)
                save_atomically(picture, path, format="PNG")
            except OSError as error:
                if error.errno in _FATAL_WRITE_ERRORS:
                    raise
                return {"file": str(job.source),
                        "error": f"cannot write its output {str(path)!r}: "
                                 f"{error.strerror or one_line(error)}"}
            outputs[name] = output.as_posix()
        targets = [{"target": t.target,
                    "class_name": class_name(options.class_names, t.target),
                    "score": t.score} for t in expl.targets]
        heatmap = expl.targets[0].heatmap
        return {
            "file": str(job.source), "output": job.output.as_posix(), **targets[0],
            "targets": targets, "method": options.method_names[0], "outputs": outputs,
            "layer": expl.layer,
            "heatmap_size": [int(heatmap.shape[0]), int(heatmap.shape[1])],
            "image_size": [expl.image.height, expl.image.width],
            "warnings": outcome.notes,
            **({} if outcome.faithfulness is None else {"faithfulness": outcome.faithfulness}),
        }


def draw(expl: Any, options: ExplainOptions) -> Image.Image:
    """The PNG of one explanation: the input and its overlays (``--side-by-side``), or the
    overlays alone, in one row. A picture of several panels names each panel's class (with
    ``--class-names``) and score below it; a single overlay is drawn bare, at the image's size.

    Example:
        >>> draw(explanation, options).mode
        'RGB'
    """
    from ..image import explanation_strip, format_as_image

    style = {"colormap": options.colormap, "alpha_limit": options.alpha_limit}
    if not options.side_by_side and len(expl.targets) == 1:
        return format_as_image(expl, **style).convert("RGB")
    return explanation_strip(expl, options.class_names, include_image=options.side_by_side,
                             **style)


def method_output(output: Path, method: str, index: int) -> Path:
    """The PNG of the ``index``-th ``--method``: ``output`` itself for the first, with
    ``.<method>`` before its suffix for each further one.

    Example:
        >>> method_output(Path("a/cat.gradcam.png"), "layercam", 1).as_posix()
        'a/cat.layercam.gradcam.png'
    """
    if index == 0:
        return output
    return output.with_name(f"{output.name[:-len(OUTPUT_SUFFIX)]}.{method}{OUTPUT_SUFFIX}")


def class_name(names: list[str] | None, target: int | str) -> str | None:
    """The name of class ``target``, if names were given (none for a score function's
    description).

    Example:
        >>> class_name(["cat", "dog"], 1), class_name(None, 1)
        ('dog', None)
    """
    if names is None or isinstance(target, str) or not 0 <= target < len(names):
        return None
    return names[target]


# -- explaining ------------------------------------------------------------------------------
def explain_batch(loaded: Loaded, options: ExplainOptions) -> list[Outcome]:
    """Explain one read batch: for each job, its :class:`Explained` or why it failed.

    Docs of one shape go through :meth:`Plan.run` together (one compiled pass per shape);
    when that pass raises, they are retried one by one.

    Example:
        >>> doc, picture = read_image(Path("photos/cats/a.jpg"), options.geometry,
        ...                           options.max_pixels)
        >>> outcomes = explain_batch(([None], {0: (doc, picture)}), options)
        >>> outcomes[0].explanation.layer, outcomes[0].notes
        ('last_conv', [])
    """
    outcomes, docs = loaded
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (doc, _) in docs.items():
        groups.setdefault(doc.shape, []).append(i)
    for members in groups.values():
        try:
            results = explain_docs([docs[i] for i in members], options)
        except Exception as error:  # the backends raise their own types
            if len(members) == 1:
                results = [_reason(error, docs[members[0]][0], options)]
            else:  # one bad input must not fail the others: one at a time
                results = [_explain_alone(docs[i], options) for i in members]
        for i, result in zip(members, results):
            outcomes[i] = result
    return outcomes  # type: ignore[return-value]


def _explain_alone(item: tuple[np.ndarray, Image.Image], options: ExplainOptions) -> Outcome:
    try:
        return explain_docs([item], options)[0]
    except Exception as error:  # as above
        return _reason(error, item[0], options)


def _reason(error: Exception, doc: np.ndarray, options: ExplainOptions) -> str:
    message = one_line(error)
    if "finite" in message:
        return f"model {options.model.name!r} gave a non-finite result: {message}"
    height, width = doc.shape[1:] if options.geometry.channels_first else doc.shape[:2]
    return f"does not fit model {options.model.name!r} at {height}x{width} pixels: {message}"


def explain_docs(items: list[tuple[np.ndarray, Image.Image]],
                 options: ExplainOptions) -> list[Outcome]:
    """One Grad-CAM pass over docs of one shape: an :class:`Explained` per doc, or why it
    failed when its output, scores or maps are not finite.

    Example:
        >>> doc, picture = read_image(Path("photos/cats/a.jpg"), options.geometry,
        ...                           options.max_pixels)
        >>> outcome = explain_docs([(doc, picture)], options)[0]
        >>> outcome.explanation.targets[0].target  # the predicted digit
        4
    """
    from ..engine import check_docs
    from ..explain import explanations_from_raw
    from ..targets import Slots

    pass_plan = options.plan
    docs = preprocess(np.stack([doc for doc, _ in items]), options.preprocess,
                      options.geometry.channels_first)
    check_docs(options.model, docs)
    count = len(docs)
    if options.score is not None:
        slots = pass_plan.targets(options.score, count, "image")
    elif options.top is not None:  # ranks -1..-K: the engine picks each doc's K best classes
        slots = Slots(np.tile(-np.arange(1, options.top + 1, dtype=np.int32), (count, 1)),
                      np.full(count, options.top, np.int32))
    else:
        slots = pass_plan.targets([options.targets] * count if options.targets else None,
                                  count, "image")
    raws = pass_plan.run(docs, slots, options.methods)
    raw = raws[0]
    pictures = [picture for _, picture in items]
    explanations = [explanations_from_raw(options.model, docs, each, pictures)
                    for each in raws]
    areas = faithfulness_areas(docs, raws, options) if options.faithfulness else None
    outcomes: list[Outcome] = []
    for n, expl in enumerate(explanations[0]):
        finite = (np.isfinite(raw.outputs[n]).all() and np.isfinite(raw.scores[n]).all()
                  and all(np.isfinite(each.heatmaps[n]).all() for each in raws))
        if not finite:
            outcomes.append(f"model {options.model.name!r} gave a non-finite result (NaN or "
                            "infinity in its output, scores or heatmap)")
            continue
        notes = []
        for index, (name, each) in enumerate(zip(options.method_names, explanations)):
            if not each[n].targets[0].heatmap.any():
                notes.append("heatmap is all zero" if index == 0
                             else f"{name} heatmap is all zero")
        top = float(np.max(raw.outputs[n]))
        if options.score is None and SATURATED <= top <= 1.0 + 1e-6:
            notes.append(f"top score {top:.4f} is saturated")
        if isinstance(areas, str):
            notes.append(areas)
        outcomes.append(Explained(expl, notes, [each[n] for each in explanations[1:]],
                                  None if areas is None or isinstance(areas, str)
                                  else areas[n]))
    return outcomes


def faithfulness_areas(docs: np.ndarray, raws: Sequence[Any], options: ExplainOptions
                       ) -> list[dict[str, dict[str, float]]] | str:
    """``--faithfulness``: per doc, ``{method: {"deletion": area, "insertion": area}}`` of
    the first target's map (:func:`gradcam_callbacks.faithfulness.probe_faithfulness`,
    baseline 0, 10 steps), or, when that fails, why (a warning; the maps are still written).

    Example:
        >>> faithfulness_areas(docs, [raw], options)[0]  # doctest: +SKIP
        {'gradcam': {'deletion': 0.11, 'insertion': 0.67}}
    """
    from ..faithfulness import probe_faithfulness

    pass_plan = options.plan
    targets = options.score if options.score is not None else [
        int(t) for t in raws[0].targets[:, 0]]
    try:
        found = {name: probe_faithfulness(
            options.model, docs, np.nan_to_num(raw.heatmaps[:, 0]), targets,
            names=("deletion", "insertion"), output=pass_plan.output_index)
            for name, raw in zip(options.method_names, raws)}
    except Exception as error:  # a metric must not cost the input its map
        return f"faithfulness not computed: {one_line(error)}"
    return [{name: {metric: float(values[n]) for metric, values in areas.items()}
             for name, areas in found.items()} for n in range(len(docs))]
