"""``gradcam-callbacks explain``: check everything, load the model, run the pipeline, and
say how it went (a summary line, and advice when the maps look like a preprocessing
mistake)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import methods
from ..methods import Method
from . import interrupt
from .images import Geometry, pixel_limit
from .inputs import collect_inputs, read_class_names
from .parse import (
    DEFAULT_METHOD,
    EXIT_FAILED_INPUTS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PREPROCESS_MODES,
    PROG,
    RESULTS_NAME,
    UsageError,
    one_line,
)
from .pipeline import ExplainOptions, Interrupted, Pipeline, Tally
from .progress import Progress
from .startup import quiet_native_startup

if TYPE_CHECKING:
    import keras

    from ..engine import Plan


def run_explain(args: argparse.Namespace) -> int:
    """``gradcam-callbacks explain``: check the arguments, then stream the inputs through
    :class:`~.pipeline.Pipeline`.

    Example:
        >>> from gradcam_callbacks.cli.parse import build_parser
        >>> run_explain(build_parser().parse_args(
        ...     ["explain", "model.keras", "photos/", "--out", "overlays", "--preprocess", "unit"]))
        0
    """
    from ..image import check_alpha_limit, get_colormap

    model_path, out_dir = Path(args.model), Path(args.out)
    if not model_path.is_file():
        raise UsageError(f"MODEL {str(model_path)!r} is not a file")
    if model_path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise UsageError(f"MODEL must be a .keras or .h5 file; received {str(model_path)!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {str(out_dir)!r} exists and is not a folder")
    try:
        colormap = get_colormap(args.colormap)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--colormap: {error}") from None
    try:
        alpha_limit = check_alpha_limit(args.alpha_limit)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--alpha-limit: {error}") from None
    chosen = chosen_methods(args)
    names = read_class_names(Path(args.class_names)) if args.class_names else None
    jobs = collect_inputs([Path(p) for p in args.inputs], out_dir)

    # Only now pay for Keras and the backend; nothing is written yet, so Ctrl-C can end the
    # process at once even while the main thread is inside a native call.
    interrupt.loading()
    with quiet_native_startup():  # TensorFlow's C++ start-up chatter stays out of stderr
        from ..engine import plan

    model = _load_model(model_path, args.quiet)
    try:
        pass_plan = plan(model, args.layer)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--layer: {error}") from None
    geometry = _check_options(model, pass_plan, args, names)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out: cannot create {str(out_dir)!r}: {error}") from None
    options = ExplainOptions(
        model=model, plan=pass_plan, geometry=geometry, targets=args.target, top=args.top,
        score=score_option(args),
        class_names=names, preprocess=args.preprocess, colormap=colormap,
        alpha_limit=alpha_limit, side_by_side=args.side_by_side, max_pixels=args.max_pixels,
        methods=chosen,
        faithfulness=args.faithfulness)
    interrupt.working()  # outputs from here on: Ctrl-C stops the run in order
    terminal = sys.stderr.isatty()
    progress = Progress(len(jobs), enabled=not args.quiet and terminal)
    try:
        with pixel_limit(args.max_pixels), open(out_dir / RESULTS_NAME, "w",
                                                 encoding="utf-8") as results:
            pipeline = Pipeline(jobs, options, out_dir, results, progress, args.batch_size)
            pipeline.run()
    except Interrupted:
        progress.close()
        print(f"{PROG} explain: interrupted after {progress.done} of {len(jobs)} inputs; "
              f"finished outputs are in {str(out_dir)!r}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except OSError as error:  # writing failed (disk full, results file): stop, keep the rest
        progress.close()
        print(f"{PROG} explain: error: cannot write to {str(out_dir)!r}: {error}; stopped "
              f"after {progress.done} of {len(jobs)} inputs", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    progress.close()
    tally = pipeline.tally
    advice = preprocess_advice(tally, args.preprocess)
    if advice:
        print(f"{PROG} explain: warning: {advice}", file=sys.stderr)
    if not args.quiet:
        timing = (f" in {progress.elapsed:.1f} s "
                  f"({progress.done / max(progress.elapsed, 1e-9):.1f} images/s)"
                  if terminal else "")
        print(f"{PROG} explain: explained {tally.explained}, failed {tally.failed}, wrote to "
              f"{str(out_dir)!r}{timing}", file=sys.stderr)
    return EXIT_FAILED_INPUTS if tally.failed else EXIT_OK


def chosen_methods(args: argparse.Namespace) -> list[Method | None]:
    """The ``--method`` values in order (``[None]`` without ``--method``: automatic, chosen
    for the model by :meth:`gradcam_callbacks.engine.Plan.resolve`), with the flags of their
    options (:func:`gradcam_callbacks.cli.parse.add_method_arguments`) applied.

    Raises:
        UsageError: a method given twice, or an option flag that no given method takes.

    Example:
        >>> from gradcam_callbacks.cli.parse import build_parser
        >>> args = build_parser().parse_args(["explain", "m.keras", "x.png", "--out", "o",
        ...                                   "--method", "scorecam", "--max-channels", "8"])
        >>> chosen_methods(args)
        [ScoreCAM(max_channels=8)]
    """
    names = list(args.method or [DEFAULT_METHOD])
    problems = [f"--method {name} is given more than once" for name in sorted(set(names))
                if names.count(name) > 1]
    settings = {name: getattr(args, name) for name in methods.options()
                if getattr(args, name, None) is not None}
    for name, value in settings.items():
        takers = [cls.name for cls in methods.options()[name]]
        if not set(takers) & set(names):
            flag = "--" + name.replace("_", "-")
            problems.append(f"{flag} applies to --method {' or '.join(takers)} only; received "
                            f"{flag} {value} with --method "
                            f"{' '.join(n or 'omitted (automatic)' for n in names)}")
    if problems:
        raise UsageError(*problems)
    return methods.choose(names if args.method else None, many=True, **settings)


def preprocess_advice(tally: Tally, preprocess: str) -> str | None:
    """A warning when most explained images have an all-zero map or a saturated top score,
    the signs of pixels scaled other than the model expects.

    Example:
        >>> print(preprocess_advice(Tally(explained=4, failed=0, suspicious=3), "none"))
        3 of 4 explained images have an all-zero heatmap or a saturated top score (>= 0.999; \
see "warnings" in results.jsonl): does the model expect other pixel scaling? Try --preprocess \
unit, symmetric, caffe or torch (this run: none)
    """
    if not tally.explained or 2 * tally.suspicious <= tally.explained:
        return None
    others = [mode for mode in PREPROCESS_MODES if mode not in (preprocess, "none")]
    return (f"{tally.suspicious} of {tally.explained} explained images have an all-zero "
            f"heatmap or a saturated top score (>= 0.999; see \"warnings\" in {RESULTS_NAME}): "
            "does the model expect other pixel scaling? Try --preprocess "
            f"{', '.join(others[:-1])} or {others[-1]} (this run: {preprocess})")


def _load_model(path: Path, quiet: bool = False) -> keras.Model:
    """Load MODEL with the Keras that wrote it (Keras 3, or Keras 2: ``tf_keras`` /
    ``tf.keras``) and say which one on stderr; a usage error naming each Keras tried and why
    if none can (:func:`gradcam_callbacks.backends.load_model`)."""
    from ..backends.loading import load_model

    try:
        model, used = load_model(os.fspath(path))
    except ValueError as error:
        raise UsageError(f"cannot load MODEL {str(path)!r}: {one_line(error)}") from None
    if not quiet:
        print(f"{PROG} explain: loaded MODEL {str(path)!r} with {used}", file=sys.stderr)
    return model


def _model_geometry(model: keras.Model, pass_plan: Plan, size: tuple[int, int] | None) -> Geometry:
    """The input geometry of ``model``, with ``--size`` checked against it.

    Raises:
        UsageError: ``--size`` contradicts a fixed input size, or the model wants a number
            of channels images cannot give (other than 1, 3 or 4).
    """
    from ..layers import input_shape

    shape = input_shape(model)
    channels_first = pass_plan.data_format == "channels_first"
    if shape is None:
        shape = (None, None, None)
    spatial = shape[1:] if channels_first else shape[:2]
    channels = (shape[0] if channels_first else shape[-1]) or 3
    if channels not in (1, 3, 4):
        raise UsageError(
            f"model {model.name!r} takes {channels} channels; images give 1 (grayscale), "
            "3 (RGB) or 4 (RGBA)")
    if size is not None:
        fixed = [(axis, want, got) for axis, want, got in zip(("height", "width"), spatial, size)
                 if want is not None and want != got]
        if fixed:
            axis, want, got = fixed[0]
            raise UsageError(
                f"--size {size[0]}x{size[1]} does not fit model {model.name!r}, whose input "
                f"{axis} is fixed at {want}")
        spatial = size
    return Geometry(int(channels), spatial[0], spatial[1], channels_first)


def score_option(args: argparse.Namespace) -> Any:
    """The score function asked for by ``--regression`` or ``--segmentation-class``, if any.

    Example:
        >>> score_option(argparse.Namespace(regression=1, segmentation_class=None))
        RegressionScore(index=1, sign=1)
    """
    from ..targets import RegressionScore, SegmentationScore

    if args.regression is not None:
        return RegressionScore(args.regression)
    if args.segmentation_class is not None:
        return SegmentationScore(args.segmentation_class)
    return None


def _check_options(model: keras.Model, pass_plan: Plan, args: argparse.Namespace,
                   names: list[str] | None) -> Geometry:
    """Check the options that depend on the model, all at once; returns its geometry.

    Raises:
        UsageError: With one message per option that does not fit the model.
    """
    problems = []
    score = score_option(args)
    if score is not None:
        option = "--regression" if args.regression is not None else "--segmentation-class"
        try:
            pass_plan.targets(score, 1)
        except (TypeError, ValueError) as error:
            problems.append(f"{option}: {error}")
    else:
        try:
            pass_plan.targets([args.target] if args.target else None, 1)
        except (TypeError, ValueError) as error:
            problems.append(f"--target: {error}" if args.target else str(error))
    classes = pass_plan.classes
    if args.top is not None and classes is not None and args.top > classes:
        problems.append(f"--top {args.top} is more than the model's {classes} classes")
    if names is not None and classes is not None and len(names) != classes:
        problems.append(f"--class-names {args.class_names!r} has {len(names)} names; model "
                        f"{model.name!r} has {classes} classes")
    try:
        geometry = _model_geometry(model, pass_plan, args.size)
    except UsageError as error:
        problems.extend(error.args)
    else:
        if args.preprocess in ("caffe", "torch") and geometry.channels != 3:
            problems.append(f"--preprocess {args.preprocess} needs an RGB model; model "
                            f"{model.name!r} takes {geometry.channels} channel(s)")
    if problems:
        raise UsageError(*problems)
    return geometry
