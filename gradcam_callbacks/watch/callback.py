"""``GradCamCallback``: Grad-CAM on fixed probe images at epoch ends, to TensorBoard."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from PIL import Image

from .. import methods
from .._validation import check_bool, check_int, is_int
from ..engine import Plan, ReshapeSpec, check_docs, check_reshape, plan
from ..explain import derive_image, read_by
from ..faithfulness import probe_faithfulness
from ..image import Colormap, check_alpha_limit, get_colormap
from ..keras_family import Keras2CallbackHooks
from ..layers import LayerSpec
from ..targets import ScoreFunction, Slots, describe
from .alarm import ShortcutAlarm
from .callback_args import (
    Regions,
    check_alarm,
    check_faithfulness,
    check_log_dir,
    check_sinks,
)
from .callback_epochs import EpochLog
from .callback_run import GOES_ON, FitRun, warn
from .probes import (
    check_against_model,
    check_class_names,
    check_targets,
    labels,
    pictures,
    take_probes,
    warn_integer_probes,
)
from .report import EpochMaps, ProbeReport, measure_faithfulness
from .sinks import Sink, TensorBoardSink

__all__ = ["GradCamCallback", "check_faithfulness", "check_sinks"]


TargetsOption = str | Sequence[Any] | np.ndarray | ScoreFunction | None


class GradCamCallback(Keras2CallbackHooks, keras.callbacks.Callback):
    """Watch where the model looks while it trains: Grad-CAM on fixed probe images, written
    to TensorBoard at epoch ends.

    For each probe and logged epoch it writes an image ``gradcam/probe_00`` (the input and
    its overlay side by side, described with target, class name and score), a timeline
    ``gradcam/timeline/probe_00`` (the probe's overlays at every logged epoch so far, thinned
    evenly to at most 12 labelled columns, first and latest kept) and one grid of all probes
    (``gradcam/grid``), plus scalars per probe: the target's score, the heatmap's change since
    the last logged epoch (1 - cosine similarity) and, with ``probe_boxes`` or
    ``probe_masks``, the share of heatmap mass on the object and the pointing game, with
    their means over probes; ``gradcam/nonfinite`` counts probes whose map or score was NaN
    or infinite. Tag names are in :mod:`gradcam_callbacks.watch.tags`.

    ``method`` picks the CAM method, or several: one image per method
    per probe. The first method keeps the plain tags above; each further method writes the
    same images and scalars under ``gradcam/<method>/`` (``gradcam/gradcam++/probe_00``,
    ``gradcam/gradcam++/grid``, ``gradcam/gradcam++/probe_00/score``, ...). All methods
    share one pass over the probes per logged epoch (the activations and gradients are
    taken once; Score-CAM adds its batched scoring passes). Captions and descriptions name
    the method.

    Steps are those of ``keras.callbacks.TensorBoard``: the maps after epoch ``e`` (0-based)
    are at step ``e``, the step of that epoch's ``epoch_loss``, so one slider position is one
    model state. The untrained model's maps (``log_initial``) are at step -1. With
    ``freq``, epochs with ``epoch % freq == 0`` are logged, as with ``histogram_freq``, and
    the last epoch of a fit always is, whichever callback stops the fit and wherever it
    stands in the list (a stop set after this callback's ``on_epoch_end`` is logged in
    ``on_train_end``). Step ``e`` shows the model after epoch ``e``: with
    ``EarlyStopping(restore_best_weights=True)`` the last step shows the last epoch's weights,
    not the restored ones. Step -1 is captioned ``untrained`` when the optimizer had taken no
    step, else ``before fit``.

    TensorBoard keeps only 10 steps per image tag unless told otherwise; the timeline's
    latest image shows the whole history in any TensorBoard. To browse every step of
    every probe tag, start it as (checked with TensorBoard 2.21, which serves every step
    up to N; ``images=0`` served none)::

        tensorboard --logdir logs --samples_per_plugin images=1000

    **Keras logs.** After each epoch the callback adds its means over probes (the first
    method's) to the epoch's ``logs``, so that ``History``, ``CSVLogger``, ``EarlyStopping``,
    ``ModelCheckpoint`` and ``ReduceLROnPlateau`` can use them: ``gradcam_mean_change``
    always, ``gradcam_pointing_game`` and ``gradcam_box_mass`` with ``probe_boxes`` or
    ``probe_masks``, ``gradcam_artifact_mass`` with ``artifact_boxes`` or ``artifact_masks``
    (keys in :mod:`gradcam_callbacks.watch.tags`). They are computed on the training thread from
    the maps already taken (a few numpy operations). A value that could not be measured is
    NaN (no previous map for the change, every probe non-finite, a failed pass), so every
    epoch carries the same keys. Epochs that are not logged (``freq > 1``) carry the last
    logged epoch's values: ``CSVLogger`` fixes its columns at the first epoch and
    ``EarlyStopping`` warns and skips an epoch whose key is missing, so missing keys would
    break both; a repeated value is never an improvement, so ``ModelCheckpoint(save_best_only
    =True)`` saves nothing for it and ``EarlyStopping``'s ``patience`` keeps counting epochs.
    Keras calls callbacks in list order with one ``logs`` dict: put ``GradCamCallback``
    first, before the callbacks that read these keys. Listed after them, they see the epoch
    without the keys (``EarlyStopping`` warns "conditioned on metric `gradcam_...` which is
    not available" and never stops; ``ModelCheckpoint`` warns and saves nothing), while
    ``History`` (which Keras adds last) still records them.

    **Faithfulness.** With ``faithfulness=True`` every logged epoch (step -1 included) also
    measures whether the model uses what the first method's maps show: insertion (higher is
    more faithful) and deletion (lower is more faithful) areas of each probe's map
    (:func:`~gradcam_callbacks.faithfulness.probe_faithfulness`), written as
    ``gradcam/faithfulness/insertion`` and ``gradcam/faithfulness/deletion`` (means over
    probes) and ``gradcam/probe_00/faithfulness/insertion`` (per probe), and added to the
    logs as ``gradcam_faithfulness_insertion`` and ``gradcam_faithfulness_deletion``, which
    behave as the keys above (carried by epochs that are not logged, NaN when not measured).
    They take forwards of the model, so they run on the training thread before the epoch
    end returns: one chunked run of ``2 * probes * 11`` perturbed inputs through the
    compiled score-only forward.

    Event files are written with the ``tensorboard`` package alone (no TensorFlow import),
    so the callback works the same on the TensorFlow, JAX and PyTorch backends, and can
    share a parent log directory with ``keras.callbacks.TensorBoard``. It never changes
    training: inference mode, no random draws, no state changes. Grad-CAM runs on the
    training thread (it needs the current weights); drawing and PNG encoding run on a
    background thread while the next epoch trains, one logged epoch at a time, so a killed
    process loses at most the epoch being written. ``on_train_end`` waits for it; after a fit
    that raised (Ctrl-C, another callback's error), the interpreter's exit waits for it (at
    most :data:`~gradcam_callbacks.watch.sinks.EXIT_WAIT_S`, 30 s, in all), and so do the
    callback's next fit and its deletion.

    Nothing it does at an epoch end can end the fit: a failure to compute, draw or write
    (log directory removed, read-only, disk full, a broken model) becomes one warning naming
    the step and the cause, and the next logged epoch tries again. Non-finite maps or scores
    (a diverging model) are logged as such, with a warning, never drawn as overlays. One
    instance can serve several fits, of different models: each ``fit`` starts afresh, in a
    run directory of its own (``run_dir``, below).

    Args:
        probes: The model inputs to watch: an array ``(N, ...)`` (numpy, a TensorFlow / JAX /
            PyTorch tensor, or nested lists), an ``(x, y)`` tuple, or a ``tf.data.Dataset`` /
            ``keras.utils.PyDataset`` / iterable of batches (``x`` or ``(x, y[, weights])``),
            from which the first ``max_probes`` examples are taken. Elements of rank 3 (an
            unbatched dataset, a list of images) are read as single examples. Probes are fed
            to the model as given: uint8 probes for a float model without a ``Rescaling``
            layer get a ``UserWarning`` (pass them scaled as in training, and the originals
            as ``images``).
        images: Pictures to draw on, one per probe (Pillow images or uint8 arrays), when
            the inputs are preprocessed; by default each input is min-max stretched.
        targets: ``None`` (each probe's predicted class, re-decided every logged epoch),
            ``"true"`` (the labels from ``y``: sparse whole non-negative indices or one-hot
            rows, finite), a list of class indices, or a score function (one for every
            probe, e.g. ``SegmentationScore(3)``) or a list of them, one per probe (see
            :mod:`gradcam_callbacks.targets`; captions then name the function's ``repr``).
        class_names: Names of the classes, for captions: one per class of the model (checked
            when training begins). Any iterable of str; it is read once.
        layer: The layer to explain at (see :func:`~gradcam_callbacks.explain_prediction`).
        output: For models with several outputs: index or name (default the first).
        log_dir: The run directory for the event files. Default: a new directory per
            callback, ``logs/gradcam/<YYYYmmdd-HHMMSS>`` (local time when the callback is
            made). One run, one history: each fit writes a directory of its own, ``log_dir``
            if it is free, else the first free of ``log_dir-2``, ``log_dir-3``, ... (see
            :mod:`gradcam_callbacks.watch.logdirs`): free means holding no GradCamCallback event
            file and held by no fit, in this process or another (an ``flock``, released by
            the kernel even on ``kill -9``). A callback's first fit that cannot use
            ``log_dir`` warns; the attribute ``run_dir`` names the directory of the current
            (or last) fit.
        freq: Log after every ``freq``-th epoch (when ``epoch % freq == 0``, 0-based, as
            Keras' ``histogram_freq``), and after the last epoch of the fit.
        log_initial: Also log the model's maps before the first epoch, at step -1 (one
            before the first epoch's step; ``initial_epoch - 1`` when resuming).
        max_probes: At most this many probes are used.
        probe_boxes: ``(N, 4)`` object boxes ``(x0, y0, x1, y1)`` in image pixels
            (``x1``/``y1`` exclusive, non-empty, inside the picture), for localisation
            scalars.
        probe_masks: ``(N, H, W)`` boolean object masks in image pixels (each the size of
            its picture, each with a True pixel), instead of boxes.
        artifact_boxes: ``(N, 4)`` boxes of a known spurious cue in each probe (a watermark,
            a ruler, a marker), in image pixels as ``probe_boxes``: the heatmap mass on it is
            written as ``gradcam/probe_00/artifact_mass`` and ``gradcam/mean_artifact_mass``
            and added to the logs as ``gradcam_artifact_mass``. Every probe needs one.
        artifact_masks: ``(N, H, W)`` boolean masks of the cue, instead of boxes.
        colormap: Matplotlib colormap (or name) of the overlays.
        alpha_limit: Maximum opacity of the overlays, in [0, 1].
        display_size: Pictures smaller than this (shorter side, pixels) are enlarged by a
            whole factor in the images, for legibility.
        method: ``None`` (the default): **chosen per model** when the fit begins
            (:meth:`gradcam_callbacks.engine.Plan.resolve`): Grad-CAM on a CNN (ELI5's
            numbers), attention rollout on a vision transformer with a class token (keras_hub
            ViT, DeiT, DINOv2), HiResCAM on Swin; titles, captions and tags name the method
            used. Or a method, never overridden: a name (see
            :data:`gradcam_callbacks.methods.METHODS`: ``"gradcam"``, ``"gradcam++"``,
            ``"xgradcam"``, ``"hirescam"``, ``"layercam"``, ``"eigencam"``, ``"scorecam"``,
            ``"rollout"``, ``"grad-rollout"``) or a configured value
            (``ScoreCAM(max_channels=64)``), or a list of distinct ones, all from one pass.
        max_channels: Shorthand for the option of the same name of the methods that take it
            (Score-CAM: ``method=ScoreCAM(max_channels=N)``).
        sink: Where the images and scalars go: a sink or a list (see
            :mod:`gradcam_callbacks.watch.sinks`): ``TensorBoardSink(log_dir)`` (the default, the
            same as ``log_dir``), ``MLflowSink()``, ``WandbSink()``, or any object with
            ``add_image``, ``add_scalar``, ``flush`` and ``close``. Each step is drawn once
            for all of them; a list without a ``TensorBoardSink`` writes no event files
            (``run_dir`` stays None).
        alarm: A :class:`~gradcam_callbacks.watch.alarm.ShortcutAlarm`: after each logged epoch
            (step -1 excluded) it is handed the epoch's means (the ``logs`` values above)
            and warns with a ``ShortcutWarning`` (and with ``stop=True`` ends the fit) when
            its condition held for ``patience`` logged epochs in a row; the default
            condition (more mass on the artifact than on the object) needs
            ``artifact_boxes`` and ``probe_boxes`` (or masks).
        batch_size: Run at most this many probes per pass; Score-CAM also scores at most
            this many masked inputs per forward (default: all probes in one pass, and
            Score-CAM's chunks of 2 MiB of masked inputs), to bound memory or match a
            device's best batch; so do the faithfulness metrics' perturbed inputs.
        faithfulness: Also score the first method's maps for faithfulness to the model at
            each logged epoch (:mod:`gradcam_callbacks.faithfulness`): ``True`` for
            insertion and deletion, or a list of names from ``"insertion"``,
            ``"deletion"`` and ``"road"`` (ROAD adds a sparse solve per perturbed input on
            the CPU: far slower). The settings are
            :func:`~gradcam_callbacks.faithfulness.probe_faithfulness`'s defaults, as
            ``gradcam-callbacks explain --faithfulness``: 10 steps, baseline 0 (black for
            inputs scaled to [0, 1]), each probe's explained target. Where the background
            is already 0 (the demo's digits) deletion barely separates good maps from bad
            ones: read insertion there (docs/methods.md). Probes whose map or score is not
            finite are left out; with none left, the means are not written and the logs
            hold NaN. A failure becomes a warning (NaN in the logs); training goes on.
        reshape: Token layers only: tokens ``(N, T, C)`` to maps ``(N, h, w, C)``, for a
            layout the model does not show (see
            :func:`~gradcam_callbacks.explain_predictions`).

    Example:
        >>> cam = GradCamCallback((x_val[:8], y_val[:8]), targets="true", probe_boxes=boxes[:8],
        ...                       log_dir="logs/run1/gradcam")
        >>> history = model.fit(x, y, epochs=1, verbose=0, callbacks=[cam])
        >>> from gradcam_callbacks.watch.tensorboard import read_events
        >>> sorted({r.step for r in read_events("logs/run1/gradcam") if r.tag == "gradcam/grid"})
        [-1, 0]
        >>> both = GradCamCallback(x_val[:8], method=["gradcam", "layercam"])
        >>> corner = [[0, 0, 8, 8]] * 8  # where a spurious cue would sit: the top left
        >>> watch = GradCamCallback(x_val[:8], probe_boxes=boxes[:8], artifact_boxes=corner,
        ...                         log_dir="logs/watched/gradcam")
        >>> stop = keras.callbacks.EarlyStopping(monitor="gradcam_artifact_mass", mode="min")
        >>> history = model.fit(x, y, epochs=1, verbose=0, callbacks=[watch, stop])
        >>> "gradcam_artifact_mass" in history.history
        True
        >>> faithful = GradCamCallback(x_val[:8], faithfulness=True,
        ...                            log_dir="logs/faithful/gradcam")
        >>> history = model.fit(x, y, epochs=1, verbose=0, callbacks=[faithful])
        >>> sorted(key for key in history.history if "faithfulness" in key)
        ['gradcam_faithfulness_deletion', 'gradcam_faithfulness_insertion']
    """

    def __init__(
        self,
        probes: Any,
        images: Sequence[Image.Image | np.ndarray] | np.ndarray | None = None,
        targets: TargetsOption = None,
        class_names: Sequence[str] | None = None,
        layer: LayerSpec = None,
        output: int | str | None = None,
        log_dir: str | os.PathLike | None = None,
        freq: int = 1,
        log_initial: bool = True,
        max_probes: int = 16,
        probe_boxes: np.ndarray | Sequence[Sequence[int]] | None = None,
        probe_masks: np.ndarray | None = None,
        artifact_boxes: np.ndarray | Sequence[Sequence[int]] | None = None,
        artifact_masks: np.ndarray | None = None,
        colormap: Colormap = "viridis",
        alpha_limit: float | None = 0.65,
        display_size: int = 128,
        method: methods.MethodSpec | Sequence[methods.MethodSpec] = methods.DEFAULT,
        max_channels: int | None = None,
        batch_size: int | None = None,
        alarm: ShortcutAlarm | None = None,
        sink: Sink | TensorBoardSink | Sequence[Sink | TensorBoardSink] | None = None,
        faithfulness: bool | str | Sequence[str] = False,
        reshape: ReshapeSpec = None,
    ) -> None:
        super().__init__()
        self.reshape = check_reshape(reshape)
        # the methods asked for ([None]: automatic), resolved for the model in on_train_begin
        self._requested = methods.choose(method, many=True, max_channels=max_channels)
        self.methods: list[methods.Method] = [m for m in self._requested if m is not None]
        self.faithfulness = check_faithfulness(faithfulness)
        self.max_channels = max_channels
        self.batch_size = check_int("batch_size", batch_size, minimum=1, none_ok=True)
        self.freq = check_int("freq", freq, minimum=1)
        self.max_probes = check_int("max_probes", max_probes, minimum=1)
        self.display_size = check_int("display_size", display_size, minimum=1)
        self.log_initial = check_bool("log_initial", log_initial)
        self.sinks, tensorboard = check_sinks(sink)
        # the event files: by default, or when a TensorBoardSink is among the sinks
        self.tensorboard = tensorboard is not None
        self.log_dir = check_log_dir(log_dir, tensorboard)
        self.layer, self.output = layer, output
        self.colormap = get_colormap(colormap)
        self.alpha_limit = check_alpha_limit(alpha_limit)
        self.probe_x, self.probe_y = take_probes(probes, self.max_probes)
        count = len(self.probe_x)
        self.pictures = pictures(images, count)
        self.targets = check_targets(targets, self.probe_y, count)
        self.class_names = check_class_names(class_names)
        self._regions = Regions.check(count, probe_boxes, probe_masks, artifact_boxes,
                                      artifact_masks)
        self.probe_boxes = self._regions.probe_boxes
        self.artifact_boxes = self._regions.artifact_boxes
        # sizes are certain only with given pictures; on_train_begin checks them again
        self.probe_masks, self.artifact_masks = self._regions.masks(self.pictures)
        self.alarm = check_alarm(alarm, self._regions)
        self._plan: Plan | None = None
        # the probes' validated target slots, made once per fit: a score function's check
        # (a symbolic call, a trace for Keras 2) stays out of the epoch ends
        self._slots: Slots | None = None
        self._fit = FitRun()  # the run directory and the writer of each fit
        self.run_dir: str | None = None
        self._reports: list[ProbeReport] = []
        # the fit's logged epochs: the means added to every epoch's Keras logs, and more
        self._epochs = EpochLog()

    # -- Keras hooks -------------------------------------------------------------------------
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Check the probes against the model and build the Grad-CAM pass, before epoch 1."""
        model = self.model
        self._slots = None
        self._plan = plan(model, self.layer, self.output, self.reshape)
        self.methods = [self._plan.resolve(m) for m in self._requested]
        check_docs(model, self.probe_x, name="probes")
        check_against_model(model, self._plan.classes, self.class_names, self.probe_y,
                            self.targets)
        self._slots = self._plan.targets(self._requested_targets(), len(self.probe_x), "probe")
        warn_integer_probes(model, self.probe_x, self._plan.input_dtype)
        if self.pictures is None:
            self.pictures = [derive_image(x, self._plan.data_format) for x in self.probe_x]
        self.probe_masks, self.artifact_masks = self._regions.masks(self.pictures)
        self._plan.pass_function(self.methods, self._slots.functions)
        self._start_fit()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.log_initial and not self._epochs.initial_logged:
            self._epochs.initial_logged = True
            self._log(epoch - 1)  # the model before this epoch: -1 for a fresh fit

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epochs.ended = epoch
        last = epoch == (self.params or {}).get("epochs", 0) - 1 or bool(
            getattr(self.model, "stop_training", False))
        if epoch % self.freq == 0 or last:
            self._log(epoch)
        else:
            self._fit.report_errors()
        if logs is not None:  # for the callbacks after this one, History and CSVLogger
            logs.update(self._epochs.values)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # a callback listed after this one may have stopped the fit after its last epoch
        # ended here (EarlyStopping): that epoch is logged now, before any later callback's
        # on_train_end (EarlyStopping's restore_best_weights) changes the weights
        if self._epochs.ended is not None and self._epochs.ended != self._epochs.logged:
            self._log(self._epochs.ended)
        self._fit.stop()

    def flush(self) -> None:
        """Wait until everything logged so far is written and synced to disk.

        Logged epochs are drawn and written on a background thread; the event files are
        complete after ``fit`` returns without this. Failures become warnings, as in ``fit``.

        Example:
            >>> cam = GradCamCallback(x_val[:4], log_dir="logs/flushed/gradcam")
            >>> history = model.fit(x, y, epochs=1, verbose=0, callbacks=[cam])
            >>> cam.flush()
        """
        self._fit.flush()

    def get_config(self) -> dict[str, Any]:
        """The callback's settings (the probe data itself is not included)."""
        return {
            "num_probes": len(self.probe_x),
            "targets": self.targets if isinstance(self.targets, (str, type(None)))
            else describe(self.targets) if callable(self.targets)
            else [int(t) if is_int(t) else describe(t) for t in self.targets],
            "class_names": self.class_names,
            "layer": self.layer if isinstance(self.layer, (str, int, type(None)))
            else self.layer.name,
            "output": self.output,
            "log_dir": self.log_dir,
            "freq": self.freq,
            "log_initial": self.log_initial,
            "max_probes": self.max_probes,
            "has_probe_boxes": self.probe_boxes is not None,
            "has_probe_masks": self.probe_masks is not None and self.probe_boxes is None,
            "has_artifact_boxes": self.artifact_boxes is not None,
            "has_artifact_masks": self.artifact_masks is not None
            and self.artifact_boxes is None,
            "colormap": getattr(self.colormap, "name", repr(self.colormap)),
            "alpha_limit": self.alpha_limit,
            "display_size": self.display_size,
            "method": [m.config() for m in self._requested] if len(self._requested) > 1
            else None if self._requested[0] is None else self._requested[0].config(),
            "max_channels": self.max_channels,
            "batch_size": self.batch_size,
            "alarm": None if self.alarm is None else repr(self.alarm),
            "sink": (["TensorBoardSink"] if self.tensorboard else [])
            + [type(s).__name__ for s in self.sinks],
            "faithfulness": list(self.faithfulness),
        }

    # -- work ------------------------------------------------------------------------------
    def explain_probes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first method's maps of every probe now: heatmaps ``(N, h, w)``, targets
        ``(N,)`` (class indices, or score functions' ``repr``), scores ``(N,)``, NaN or inf
        where the model gave such values. Uses the pass built in ``on_train_begin``."""
        return self.explain_probes_by_method()[0][1:]

    def explain_probes_by_method(
        self,
    ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """Every method's maps of every probe now, from one pass: ``(name, heatmaps (N, h, w),
        targets (N,), scores (N,))`` per method, in the order given."""
        if self._plan is None or self._slots is None:
            raise RuntimeError("explain_probes() needs on_train_begin() (model.fit) first")
        # non-finite maps come back as they are: _log reports them per probe
        raws = self._plan.run(self.probe_x, self._slots, self.methods, self.batch_size,
                              name="probe", check_finite=False)
        return [(r.method.name, r.heatmaps[:, 0], r.explained_targets()[:, 0], r.scores[:, 0])
                for r in raws]

    def _requested_targets(self) -> Any:
        if self.targets is None or callable(self.targets):
            return self.targets
        if isinstance(self.targets, str):
            return [int(t) for t in labels(self.probe_y)]
        return [int(t) if is_int(t) else t for t in self.targets]

    def _start_fit(self) -> None:
        """Per-fit state, reset so that one callback serves several fits and models; a run
        directory of the fit's own (see :mod:`gradcam_callbacks.watch.logdirs`)."""
        assert self.pictures is not None
        self._reports = [
            ProbeReport(self.pictures, self.colormap, self.alpha_limit, self.display_size,
                        self.probe_boxes, self.probe_masks, self.class_names,
                        read_by(self.model, self._plan.layer, method) if self._plan else "",
                        method=None if index == 0 else method.name, title=method.title,
                        artifact_masks=self.artifact_masks)
            for index, method in enumerate(self.methods)]
        self._epochs = EpochLog(self._reports, self.probe_masks, self.artifact_masks,
                                self.faithfulness, self.alarm)
        self._fit.start(self.sinks, self.log_dir, self.tensorboard)
        self.run_dir = self._fit.run_dir

    def _log(self, step: int) -> None:
        """Grad-CAM of the probes now (on the training thread: it needs these weights), then
        hand the drawing and writing of ``step`` to the background writer."""
        self._fit.report_errors()
        self._epochs.logged = step
        if not self._fit.writing:  # not the chief process, or on_train_begin not run
            return
        try:
            # a single method goes through explain_probes, which subclasses may extend
            results = self.explain_probes_by_method() if len(self.methods) > 1 else [
                (self.methods[0].name, *self.explain_probes())]
        except Exception as error:  # a monitoring hiccup must never end a training run
            self._warn(f"could not compute {self.methods[0].title} at step {step} "
                       f"({type(error).__name__}: {error}); {GOES_ON}")
            self._epochs.failed()
            return
        jobs = self._epochs.add(step, results, self.model, self._faithfulness)
        self._fit.submit(jobs, step, self.log_dir)

    def _faithfulness(self, maps: EpochMaps, step: int,
                      title: str) -> dict[str, dict[int, float]] | None:
        """The ``faithfulness`` metrics of the first method's finite maps (one chunked run
        of compiled forwards, :func:`~gradcam_callbacks.faithfulness.probe_faithfulness`),
        or None, with a warning, if that fails."""
        def score(rows: np.ndarray) -> dict[str, np.ndarray]:
            assert self._slots is not None and self._plan is not None
            functions = self._slots.functions
            # the targets the maps explain: the same score functions, or the classes decided
            # for these maps (targets=None: this epoch's predicted class)
            targets = [int(t) for t in maps.targets[rows]] if functions is None else [
                functions[int(k)] for k in self._slots.indices[rows, 0]]
            return probe_faithfulness(self.model, self.probe_x[rows], maps.heatmaps[rows],
                                      targets, names=self.faithfulness,
                                      batch_size=self.batch_size,
                                      output=self._plan.output_index)

        try:
            return measure_faithfulness(maps, score)
        except Exception as error:  # noqa: BLE001 - never end the fit; logged as NaN
            self._warn(f"could not measure the faithfulness of the {title} maps at step "
                       f"{step} ({type(error).__name__}: {error}); {GOES_ON}")
            return None

    _warn = staticmethod(warn)
