"""The ``gradcam-callbacks`` command line (also ``python -m gradcam_callbacks``).

Subcommands:

``explain MODEL INPUT... --out DIR``
    Grad-CAM overlays of image files, one PNG per input plus ``results.jsonl``.
``sheet LOGDIR --out sheet.png``
    A contact sheet (and optionally GIFs) of what :class:`GradCamCallback` logged.
``demo``
    The cluttered-digits demo (its options belong to :mod:`gradcam_callbacks.demo`).

The command line is a thin user of the library: :func:`~gradcam_callbacks.explain.plan` and
:meth:`Plan.run <gradcam_callbacks.explain.Plan.run>` explain, :mod:`~gradcam_callbacks.image`
draws, :mod:`~gradcam_callbacks.sheet` reads event files. Keras (and so a backend) is imported
only once ``explain`` has checked its arguments, so ``--help``, ``--version``, most usage
errors and ``sheet`` answer in about a second.

Exit status: 0 success, 1 some input could not be explained (the others were), 2 usage error
(bad option, unreadable model or class-names file, no input), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import re
import sys
import time
import warnings
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from . import __version__

if TYPE_CHECKING:
    import keras

    from .explain import Plan

PROG = "gradcam-callbacks"
EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUT_SUFFIX = ".gradcam.png"
RESULTS_NAME = "results.jsonl"
#: Pictures drawn on (and inputs of models without a fixed size) are scaled down to at most
#: this many pixels on their longer side.
DISPLAY_MAX = 1024
PREPROCESS_MODES = ("none", "unit", "symmetric", "caffe", "torch")
# Formats Pillow registers but cannot decode without an external handler.
_UNDECODABLE_SUFFIXES = {".mpg", ".mpeg"}


class UsageError(Exception):
    """Bad arguments, one message each: the command stops before explaining anything, with
    exit status 2."""


class InputError(Exception):
    """One input cannot be explained; it is reported and skipped, the run goes on."""


# -- argument parsing ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gradcam-callbacks`` and its subcommands.

    Example:
        >>> args = build_parser().parse_args(["explain", "m.keras", "img/", "--out", "o"])
        >>> args.command, args.batch_size, args.preprocess
        ('explain', 32, 'none')
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Grad-CAM for Keras 3 image classifiers on TensorFlow, JAX and PyTorch "
        "(the backend is chosen by the KERAS_BACKEND environment variable).",
        epilog="Exit status: 0 success, 1 some inputs failed, 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    explain = commands.add_parser(
        "explain", help="explain image files with Grad-CAM overlays",
        description="Explain image files: one overlay PNG per input, mirroring the input "
        f"folders under --out, and {RESULTS_NAME} with one JSON line per input. Images are "
        "read, explained and written batch by batch. Inputs that cannot be read or fitted "
        "to the model are reported on stderr, listed as errors and skipped (exit status 1).",
        epilog="Each output is named after its input with the suffix replaced by "
        f"{OUTPUT_SUFFIX!r} (the whole name is kept when two inputs of a folder share a "
        f"stem). Images over --max-pixels are refused (decompression-bomb guard); pictures "
        f"are drawn at most {DISPLAY_MAX} pixels on their longer side.",
    )
    explain.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras or .h5)")
    explain.add_argument("inputs", metavar="INPUT", nargs="+",
                         help="image files, or folders searched recursively for images")
    explain.add_argument("--out", required=True, metavar="DIR", help="output folder")
    explain.add_argument("--layer", metavar="NAME",
                         help="layer to explain at: a name, or a path 'base/layer' into a "
                         "nested model (default: the last spatial map larger than 1x1)")
    targets = explain.add_mutually_exclusive_group()
    targets.add_argument("--target", type=_non_negative_int, action="append", metavar="K",
                         help="class index to explain (repeatable; default: the top class)")
    targets.add_argument("--top", type=_positive_int, metavar="K",
                         help="explain each image's K highest-scoring classes")
    explain.add_argument("--class-names", metavar="FILE",
                         help="class names: one per line, or a JSON list")
    explain.add_argument("--preprocess", choices=PREPROCESS_MODES, default="none",
                         help="pixel scaling before the model: none (0..255), unit (x/255), "
                         "symmetric (x/127.5-1), caffe or torch (keras.applications' modes); "
                         "default: none")
    explain.add_argument("--size", type=_size, metavar="HxW",
                         help="resize inputs to this size (default: the model's input size; "
                         "for a model without a fixed size, each image's own size, scaled "
                         f"down to at most {DISPLAY_MAX} pixels on its longer side)")
    explain.add_argument("--colormap", default="viridis",
                         help="matplotlib colormap of the heatmap (default: viridis)")
    explain.add_argument("--alpha-limit", type=float, default=0.65, metavar="A",
                         help="maximum opacity of the heatmap, in [0, 1] (default: 0.65)")
    explain.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                         help="images per batch (default: 32)")
    explain.add_argument("--side-by-side", action="store_true",
                         help="put the input next to its overlay(s) in each PNG")
    explain.add_argument("--max-pixels", type=_non_negative_int,
                         default=Image.MAX_IMAGE_PIXELS, metavar="N",
                         help="refuse images with more pixels than this, 0 for no limit "
                         f"(default: Pillow's {Image.MAX_IMAGE_PIXELS})")
    explain.add_argument("--quiet", action="store_true",
                         help="no progress bar (errors are still reported)")
    explain.set_defaults(run=run_explain)

    sheet = commands.add_parser(
        "sheet", help="contact sheet of the probe images GradCamCallback logged",
        description="Draw the probe images GradCamCallback logged as one contact sheet: a "
        "row per probe, a column per logged epoch. Reads the event files directly; "
        "TensorFlow is not needed.",
    )
    sheet.add_argument("log_dir", metavar="LOGDIR", help="the callback's log_dir")
    sheet.add_argument("--out", required=True, metavar="PNG", help="the sheet's file")
    sheet.add_argument("--every", type=_positive_int, default=1, metavar="N",
                       help="keep every N-th logged epoch (the last is always kept)")
    sheet.add_argument("--gif", nargs="?", const="", metavar="DIR",
                       help="also write one animated GIF per probe, into DIR (default: "
                       "next to the sheet)")
    sheet.add_argument("--frame-ms", type=_positive_int, default=500, metavar="MS",
                       help="GIF frame duration in milliseconds (default: 500)")
    sheet.set_defaults(run=run_sheet)

    commands.add_parser(
        "demo", add_help=False, help="train on cluttered digits with GradCamCallback "
        "(see 'demo --help')",
    )
    return parser


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; received {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer; received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative; received {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        height = width = 0
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(
            f"must be HEIGHTxWIDTH in pixels, such as 224x224 (or one number for a square); "
            f"received {text!r}")
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 if some input failed, 2 for a usage error, 130 when interrupted.

    Example:
        >>> main(["explain", "model.keras", "photos/", "--out", "overlays"])  # doctest: +SKIP
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        return run_demo(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        for message in error.args:
            print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# -- demo -----------------------------------------------------------------------------------
def run_demo(argv: list[str]) -> int:
    """Forward ``demo``'s arguments to :func:`gradcam_callbacks.demo.main`.

    Example:
        >>> run_demo(["--epochs", "2", "--log-dir", "logs/demo"])  # doctest: +SKIP
        0
    """
    try:
        from .demo import main as demo_main
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}.demo":
            raise
        print(f"{PROG} demo: error: the demo is not part of this installation",
              file=sys.stderr)
        return EXIT_USAGE
    return demo_main(argv)


# -- sheet ----------------------------------------------------------------------------------
def run_sheet(args: argparse.Namespace) -> int:
    """``gradcam-callbacks sheet``: a contact sheet (and GIFs) from a callback's log_dir.

    Example:
        >>> run_sheet(build_parser().parse_args(
        ...     ["sheet", "logs/gradcam", "--out", "sheet.png", "--gif"]))  # doctest: +SKIP
        0
    """
    from .sheet import contact_sheet, probe_gifs, save_atomically

    log_dir, out = Path(args.log_dir), Path(args.out)
    if not log_dir.exists():
        raise UsageError(f"LOGDIR {str(log_dir)!r} does not exist")
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must name a .png file; received {str(out)!r}")
    try:
        sheet = contact_sheet(log_dir, every=args.every)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(sheet, out, format="PNG")
    if args.gif is not None:
        gif_dir = Path(args.gif) if args.gif else out.parent
        probe_gifs(log_dir, gif_dir, every=args.every, duration_ms=args.frame_ms)
    return EXIT_OK


# -- explain: inputs ------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One input file and where its overlay goes (relative to ``--out``); ``problem`` is
    set when the input is refused before reading (its output would collide).

    Example:
        >>> Job(Path("photos/cats/a.jpg"), Path("cats/a.gradcam.png")).problem is None
        True
    """

    source: Path
    output: Path
    problem: str | None = None


def image_suffixes() -> frozenset[str]:
    """File name suffixes of the formats Pillow can decode, for searching folders.

    Example:
        >>> {".jpg", ".png", ".bmp", ".webp", ".gif"} <= image_suffixes()
        True
    """
    Image.init()
    return frozenset(
        suffix for suffix, name in Image.registered_extensions().items()
        if name in Image.OPEN and suffix not in _UNDECODABLE_SUFFIXES
        and not (inspect.isclass(Image.OPEN[name][0])
                 and issubclass(Image.OPEN[name][0], ImageFile.StubImageFile))
    )


def collect_inputs(inputs: Sequence[Path], out_dir: Path) -> list[Job]:
    """The input files in order, each with its output path relative to ``out_dir``.

    Files named on the command line are always taken; folders are searched recursively
    (sorted, hidden entries skipped) for files with an image suffix, skipping earlier
    overlays (``*.gradcam.png``) inside ``out_dir``. A folder's layout is mirrored under
    ``out_dir``; a file given directly goes to its top. The same file given twice is taken
    once. Only paths are listed up front (to count them and settle output names); images
    are read later, batch by batch.

    Raises:
        UsageError: An input does not exist, or no image file was found.

    Example:
        >>> jobs = collect_inputs([Path("photos")], Path("out"))  # doctest: +SKIP
        >>> jobs[0].source, jobs[0].output  # doctest: +SKIP
        (PosixPath('photos/cats/a.jpg'), PosixPath('cats/a.gradcam.png'))
    """
    suffixes = image_suffixes()
    out_resolved = out_dir.resolve()
    # (source, where it is mirrored from, its resolved path): roots are resolved once, not
    # every file, which costs a system call or more per file.
    found: list[tuple[Path, Path, Path]] = []
    for given in inputs:
        if given.is_dir():
            root = given.resolve()
            for path in _walk_images(given, suffixes, out_resolved):
                relative = path.relative_to(given)
                found.append((path, relative, root / relative))
        elif given.is_file():
            found.append((given, Path(given.name), given.resolve()))
        else:
            raise UsageError(f"INPUT {str(given)!r} does not exist")
    seen: set[Path] = set()
    unique = []
    for source, relative, key in found:
        if key not in seen:
            seen.add(key)
            unique.append((source, relative))
    if not unique:
        raise UsageError("no image files found in " + ", ".join(repr(str(p)) for p in inputs))
    stems = Counter(relative.parent / relative.stem for _, relative in unique)
    jobs, taken = [], {}
    for source, relative in unique:
        name = relative.stem if stems[relative.parent / relative.stem] == 1 else relative.name
        output = relative.parent / (name + OUTPUT_SUFFIX)
        problem = None
        if output in taken:
            problem = (f"its output {str(output)!r} would overwrite that of "
                       f"{str(taken[output])!r}; explain them in separate runs")
        elif out_resolved / output in seen:
            problem = f"its output {str(output)!r} would overwrite an input file"
        else:
            taken[output] = source
        jobs.append(Job(source, output, problem))
    return jobs


def _walk_images(folder: Path, suffixes: frozenset[str], out_dir: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        in_out_dir = Path(root).resolve().is_relative_to(out_dir)
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in suffixes:
                continue
            if in_out_dir and name.endswith(OUTPUT_SUFFIX):
                continue
            yield Path(root, name)


def read_class_names(path: Path) -> list[str]:
    """Class names from a file: a JSON list of strings, or one name a line.

    Raises:
        UsageError: The file cannot be read or holds no names.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "names.txt"
        >>> _ = file.write_text("cat\\ndog\\n")
        >>> read_class_names(file)
        ['cat', 'dog']
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--class-names: cannot read {str(path)!r}: {error}") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"--class-names: {str(path)!r} is not valid JSON: {error}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UsageError(f"--class-names: {str(path)!r} must hold a JSON list of strings")
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if not names:
        raise UsageError(f"--class-names: {str(path)!r} holds no class names")
    return names


# -- explain: the model ---------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """What the model takes: channels (1, 3 or 4), fixed height and width (``None`` where
    the model takes any size) and the layout.

    Example:
        >>> Geometry(3, None, None, False).size_for(Image.new("RGB", (40, 30)))
        (30, 40)
    """

    channels: int
    height: int | None
    width: int | None
    channels_first: bool

    def size_for(self, image: Image.Image) -> tuple[int, int]:
        """``(height, width)`` to feed ``image`` at: the fixed sizes, else its own."""
        return self.height or image.height, self.width or image.width


def _model_geometry(model: keras.Model, settings: Plan, size: tuple[int, int] | None) -> Geometry:
    """The input geometry of ``model``, with ``--size`` checked against it.

    Raises:
        UsageError: ``--size`` contradicts a fixed input size, or the model wants a number
            of channels images cannot give (other than 1, 3 or 4).
    """
    from .layers import input_shape

    shape = input_shape(model)
    channels_first = settings.data_format == "channels_first"
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


def _check_options(model: keras.Model, settings: Plan, args: argparse.Namespace,
                  names: list[str] | None) -> Geometry:
    """Check the options that depend on the model, all at once; returns its geometry.

    Raises:
        UsageError: With one message per option that does not fit the model.
    """
    problems = []
    if args.target:
        try:
            settings.targets([args.target], 1)
        except (TypeError, ValueError) as error:
            problems.append(f"--target: {error}")
    classes = settings.classes
    if args.top is not None and classes is not None and args.top > classes:
        problems.append(f"--top {args.top} is more than the model's {classes} classes")
    if names is not None and classes is not None and len(names) != classes:
        problems.append(f"--class-names {args.class_names!r} has {len(names)} names; model "
                        f"{model.name!r} has {classes} classes")
    try:
        geometry = _model_geometry(model, settings, args.size)
    except UsageError as error:
        problems.extend(error.args)
    else:
        if args.preprocess in ("caffe", "torch") and geometry.channels != 3:
            problems.append(f"--preprocess {args.preprocess} needs an RGB model; model "
                            f"{model.name!r} takes {geometry.channels} channel(s)")
    if problems:
        raise UsageError(*problems)
    return geometry


def _load_model(path: Path) -> keras.Model:
    """``keras.saving.load_model(path, compile=False)``, with a usage error if it fails."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # keras raises many types for a file that is not a model
        raise UsageError(f"cannot load MODEL {str(path)!r}: {_one_line(error)}") from None


# -- explain: images ------------------------------------------------------------------------
def read_image(path: Path, geometry: Geometry, max_pixels: int) -> tuple[np.ndarray, Image.Image]:
    """Read one image file for the model: ``(doc, picture)``.

    The image is decoded (only its first frame), turned upright by its EXIF orientation and
    scaled down to at most ``DISPLAY_MAX`` pixels on its longer side (or the model's input
    size, if larger); JPEGs are decoded at reduced size directly (``Image.draft``). Any
    mode is converted: 16-bit and 32-bit grayscale are scaled to 8 bits, CMYK, palette and
    grayscale become RGB, alpha is dropped unless the model takes 4 channels. ``doc`` is a
    float32 array of the model's layout and size with values in [0, 255]; ``picture`` is the
    RGB image the overlay is drawn on.

    Raises:
        InputError: The file is not a readable image, or has more than ``max_pixels`` pixels
            (``0`` for no limit).

    Example:
        >>> doc, picture = read_image(Path("cat.jpg"), Geometry(3, 32, 32, False),
        ...                           Image.MAX_IMAGE_PIXELS)  # doctest: +SKIP
        >>> doc.shape, picture.mode  # doctest: +SKIP
        ((32, 32, 3), 'RGB')
    """
    bound = max(DISPLAY_MAX, geometry.height or 0, geometry.width or 0)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb limit is replaced by max_pixels, checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                pixels = opened.width * opened.height
                if max_pixels and pixels > max_pixels:
                    raise InputError(
                        f"{opened.width}x{opened.height} is {pixels} pixels, over the "
                        f"--max-pixels limit of {max_pixels}")
                if opened.format == "JPEG":
                    opened.draft(opened.mode, (bound, bound))
                image = ImageOps.exif_transpose(opened)
                image.load()
    except InputError:
        raise
    except Image.DecompressionBombError as error:
        raise InputError(f"{_one_line(error)}; raise --max-pixels to read it") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports unreadable, truncated and corrupt files with these
        raise InputError(f"not a readable image: {_one_line(error)}") from None
    image = _eight_bit(image)
    image.thumbnail((bound, bound), Image.LANCZOS, reducing_gap=3.0)
    height, width = geometry.size_for(image)
    model_mode = {1: "L", 3: "RGB", 4: "RGBA"}[geometry.channels]
    fed = image.convert(model_mode)
    if fed.size != (width, height):
        fed = fed.resize((width, height), Image.BILINEAR)
    doc = np.asarray(fed, dtype=np.float32)
    doc = doc[..., None] if doc.ndim == 2 else doc
    if geometry.channels_first:
        doc = np.moveaxis(doc, -1, 0)
    picture = image.convert("RGB")
    if max(picture.size) > DISPLAY_MAX:
        picture.thumbnail((DISPLAY_MAX, DISPLAY_MAX), Image.LANCZOS)
    return doc, picture


def _eight_bit(image: Image.Image) -> Image.Image:
    """An image in an 8-bit mode: 16/32-bit integer and float grayscale are rescaled
    (16-bit full range to 0..255, float 0..1 to 0..255), palettes resolved."""
    if image.mode.startswith("I"):
        values = np.asarray(image).astype(np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.nan_to_num(values * scale), 0, 255).astype(np.uint8),
                               "L")
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info
                             else "RGB")
    return image


def preprocess(docs: np.ndarray, mode: str, channels_first: bool) -> np.ndarray:
    """Scale raw 0..255 pixels as ``--preprocess`` says.

    ``symmetric``, ``caffe`` and ``torch`` are ``keras.applications.imagenet_utils.
    preprocess_input``'s modes ``tf``, ``caffe`` and ``torch``.

    Example:
        >>> float(preprocess(np.full((1, 2, 2, 3), 255.0, np.float32), "unit", False).max())
        1.0
    """
    if mode == "none":
        return docs
    if mode == "unit":
        return docs / np.float32(255)
    from keras.applications import imagenet_utils

    return imagenet_utils.preprocess_input(
        docs.copy(), data_format="channels_first" if channels_first else "channels_last",
        mode={"symmetric": "tf"}.get(mode, mode))


# -- explain: the run -----------------------------------------------------------------------
@dataclass
class _ExplainSettings:
    """Everything ``explain`` decided before reading the first image."""

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


def run_explain(args: argparse.Namespace) -> int:
    """``gradcam-callbacks explain``: check everything, then stream the inputs through the
    engine batch by batch: one thread reads the next batch, the main thread explains (one
    :func:`~gradcam_callbacks.explain.plan`, one :meth:`Plan.run` per batch and input shape),
    one thread draws and writes the previous batch.

    Example:
        >>> run_explain(build_parser().parse_args(
        ...     ["explain", "model.keras", "photos/", "--out", "overlays"]))  # doctest: +SKIP
        0
    """
    from .image import check_alpha_limit, get_colormap

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
    names = read_class_names(Path(args.class_names)) if args.class_names else None
    jobs = collect_inputs([Path(p) for p in args.inputs], out_dir)
    Image.MAX_IMAGE_PIXELS = None  # read_image applies --max-pixels itself

    # Only now pay for Keras and the backend.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    from .explain import plan

    model = _load_model(model_path)
    try:
        settings = plan(model, args.layer)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--layer: {error}") from None
    geometry = _check_options(model, settings, args, names)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out: cannot create {str(out_dir)!r}: {error}") from None
    options = _ExplainSettings(
        model=model, plan=settings, geometry=geometry, targets=args.target, top=args.top,
        class_names=names, preprocess=args.preprocess, colormap=colormap,
        alpha_limit=alpha_limit, side_by_side=args.side_by_side, max_pixels=args.max_pixels)
    progress = Progress(len(jobs), enabled=not args.quiet and sys.stderr.isatty())
    try:
        with open(out_dir / RESULTS_NAME, "w", encoding="utf-8") as results:
            writer = _Writer(results, options, out_dir, progress)
            # The next batch is read while this one is explained, in a second thread.
            reader = ThreadPoolExecutor(1, thread_name_prefix="gradcam-reader")
            try:
                batches = [jobs[i:i + args.batch_size]
                           for i in range(0, len(jobs), args.batch_size)]
                ahead = reader.submit(_read_batch, batches[0], options)
                for k, batch in enumerate(batches):
                    read = ahead.result()
                    if k + 1 < len(batches):
                        ahead = reader.submit(_read_batch, batches[k + 1], options)
                    writer.submit(batch, _explain_batch(read, options))
                writer.finish()
            finally:
                reader.shutdown(wait=True, cancel_futures=True)
                writer.close()  # after Ctrl-C: the batch being written is finished first
    except KeyboardInterrupt:
        progress.close()
        print(f"{PROG} explain: interrupted after {progress.done} of {len(jobs)} inputs; "
              f"finished outputs are in {str(out_dir)!r}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # writing failed (disk full, folder removed): stop, keep the rest
        progress.close()
        print(f"{PROG} explain: error: cannot write to {str(out_dir)!r}: {error}; stopped "
              f"after {progress.done} of {len(jobs)} inputs", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    failed = progress.failed
    progress.close(summary=f"{len(jobs) - failed} explained, {failed} failed; results in "
                   f"{str(out_dir / RESULTS_NAME)!r}")
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


_Loaded = tuple[list[Any], dict[int, tuple[np.ndarray, Image.Image]]]


def _read_batch(batch: Sequence[Job], options: _ExplainSettings) -> _Loaded:
    """Read one batch: ``(outcomes, loaded)``, where ``outcomes[i]`` is why job i failed (a
    str) or None, and ``loaded[i]`` its ``(doc, picture)``."""
    outcomes: list[Any] = [None] * len(batch)
    loaded: dict[int, tuple[np.ndarray, Image.Image]] = {}
    for i, job in enumerate(batch):
        if job.problem:
            outcomes[i] = job.problem
            continue
        try:
            loaded[i] = read_image(job.source, options.geometry, options.max_pixels)
        except InputError as error:
            outcomes[i] = str(error)
    return outcomes, loaded


def _explain_batch(read: _Loaded, options: _ExplainSettings) -> list[Any]:
    """Explain one read batch: for each job, its Explanation or why it failed (a str).

    Docs of one shape go through :meth:`Plan.run` together (one compiled pass per shape).
    """
    outcomes, loaded = read
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (doc, _) in loaded.items():
        groups.setdefault(doc.shape, []).append(i)
    for members in groups.values():
        for i, result in zip(members, _explain_group(members, loaded, options)):
            outcomes[i] = result
    return outcomes


class _Writer:
    """Draws and writes the outputs of each batch in one background thread, in input order,
    while the next batch is read and explained.

    At most two batches wait, so memory stays flat. A write error (disk full) is raised by
    the next :meth:`submit` or :meth:`finish`. Each PNG goes to a temporary name and is
    renamed when complete; each JSON line is flushed once its PNG is in place.
    """

    def __init__(self, results: TextIO, options: _ExplainSettings, out_dir: Path,
                 progress: Progress) -> None:
        self.results, self.options, self.out_dir, self.progress = (results, options, out_dir,
                                                                   progress)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gradcam-writer")
        self._pending: deque[Future[None]] = deque()
        self._folders: set[Path] = set()

    def submit(self, batch: Sequence[Job], outcomes: list[Any]) -> None:
        """Queue one batch's outcomes for writing (waits while two batches are queued)."""
        while len(self._pending) >= 2:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, batch, outcomes))

    def finish(self) -> None:
        """Wait until everything queued is written."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Finish the batch being written, drop the queued ones, stop the thread."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _write(self, batch: Sequence[Job], outcomes: list[Any]) -> None:
        progress = self.progress
        for job, outcome in zip(batch, outcomes):
            record = self._write_one(job, outcome)
            self.results.write(json.dumps(record) + "\n")
            self.results.flush()
            failed = progress.failed + ("error" in record)
            if "error" in record:
                progress.message(f"{PROG} explain: skipped {str(job.source)!r}: "
                                 f"{record['error']}")
            progress.advance(failed)

    def _write_one(self, job: Job, outcome: Any) -> dict[str, Any]:
        """Write one overlay PNG (atomically) and return its JSON record."""
        from .image import format_as_image, side_by_side
        from .sheet import save_atomically

        if isinstance(outcome, str):
            return {"file": str(job.source), "error": outcome}
        options = self.options
        overlays = [format_as_image(outcome, colormap=options.colormap,
                                    alpha_limit=options.alpha_limit, target_index=k)
                    for k in range(len(outcome.targets))]
        panels = [outcome.image, *overlays] if options.side_by_side else overlays
        picture = panels[0].convert("RGB") if len(panels) == 1 else side_by_side(panels)
        path = self.out_dir / job.output
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        save_atomically(picture, path, format="PNG")
        targets = [{"target": t.target,
                    "class_name": _class_name(options.class_names, t.target),
                    "score": t.score} for t in outcome.targets]
        heatmap = outcome.targets[0].heatmap
        return {
            "file": str(job.source), "output": job.output.as_posix(), **targets[0],
            "targets": targets, "layer": outcome.layer,
            "heatmap_size": [int(heatmap.shape[0]), int(heatmap.shape[1])],
            "image_size": [outcome.image.height, outcome.image.width],
        }


def _explain_group(members: list[int], loaded: dict[int, tuple[np.ndarray, Image.Image]],
                   options: _ExplainSettings) -> list[Any]:
    """Explanations (or error strings) for docs of one shape: the model takes
    all of them, or none (a shape it cannot take, such as an image smaller than its
    receptive field)."""
    try:
        return _explain_docs([loaded[i] for i in members], options)
    except Exception as error:  # the backends raise their own types for a misfit input
        doc = loaded[members[0]][0]
        height, width = doc.shape[1:] if options.geometry.channels_first else doc.shape[:2]
        reason = (f"does not fit model {options.model.name!r} at {height}x{width} pixels: "
                  f"{_one_line(error)}")
        return [reason] * len(members)


def _explain_docs(items: list[tuple[np.ndarray, Image.Image]],
                  options: _ExplainSettings) -> list[Any]:
    from .explain import check_docs, explanations_from_raw

    model, settings = options.model, options.plan
    docs = preprocess(np.stack([doc for doc, _ in items]), options.preprocess,
                      options.geometry.channels_first)
    check_docs(model, docs)
    if options.top is not None:
        scores = _flat_output(model.predict_on_batch(docs), settings.output_index)
        requested: Any = np.argsort(-scores, axis=-1, kind="stable")[:, :options.top].tolist()
    elif options.targets:
        requested = [options.targets] * len(docs)
    else:
        requested = None
    slots, counts = settings.targets(requested, len(docs))
    raw = settings.run(docs, slots, counts)
    return explanations_from_raw(model, docs, raw, [picture for _, picture in items])


def _flat_output(outputs: Any, index: int) -> np.ndarray:
    import keras

    scores = np.asarray(keras.tree.flatten(outputs)[index])
    return scores.reshape(len(scores), -1)


def _class_name(names: list[str] | None, target: int) -> str | None:
    return names[target] if names is not None and 0 <= target < len(names) else None


# Lines of Keras' and TensorFlow's error messages that frame the message, not say it.
_FRAMING = ("File ", "Graph execution error", "Detected at node", "[[", "Exception encountered",
            "Arguments received", "\u2022")


def _one_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error message that says what went wrong, shortened."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Keras' bold
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    saying = [line for line in lines if not line.startswith(_FRAMING)]
    line = (saying or lines or [type(error).__name__])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


# -- progress -------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on stderr: count, share, rate, time left and failures.

    Draws nothing unless ``enabled`` (the CLI enables it on a terminal, without --quiet);
    messages are printed either way, above the bar.

    Example:
        >>> bar = Progress(10, enabled=False)
        >>> bar.advance(failed=0); bar.done
        1
    """

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.done = self.failed = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def advance(self, failed: int) -> None:
        """Count one more input (``failed`` so far) and redraw, at most ten times a second."""
        self.done, self.failed = self.done + 1, failed
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= 0.1 or self.done == self.total):
            self._drawn = now
            self._draw(now)

    def message(self, line: str) -> None:
        """Print a line above the bar."""
        self._clear()
        print(line, file=self.stream, flush=True)
        if self.enabled and self.done:
            self._draw(time.monotonic())

    def close(self, summary: str | None = None) -> None:
        """End the bar's line; on a terminal, add a summary with the elapsed time."""
        if not self.enabled:
            return
        self._clear()
        if summary:
            seconds = time.monotonic() - self._started
            print(f"{PROG} explain: {summary} ({seconds:.1f} s, "
                  f"{self.done / max(seconds, 1e-9):.1f} images/s)", file=self.stream,
                  flush=True)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else math.inf
        filled = int(24 * self.done / max(self.total, 1))
        eta = "--:--" if math.isinf(left) else f"{int(left) // 60:02d}:{int(left) % 60:02d}"
        line = (f"[{'#' * filled}{'.' * (24 - filled)}] {self.done}/{self.total} "
                f"{100 * self.done / max(self.total, 1):3.0f}% {rate:.1f} img/s ETA {eta}"
                + (f" ({self.failed} failed)" if self.failed else ""))
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def _clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
