"""The command line's arguments, exit statuses and error types.

Nothing here imports Keras or a backend: ``--help``, ``--version`` and usage errors answer
without them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from PIL import Image

from .. import __version__, methods

PROG = "gradcam-callbacks"
EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUT_SUFFIX = ".gradcam.png"
RESULTS_NAME = "results.jsonl"
#: Pictures drawn on (and inputs of models without a fixed size) are scaled down to at most
#: this many pixels on their longer side.
DISPLAY_MAX = 1024
PREPROCESS_MODES = ("none", "unit", "symmetric", "caffe", "torch")
#: ``--method`` omitted: automatic (``gradcam_callbacks.engine.Plan.resolve``)
DEFAULT_METHOD = None


class UsageError(Exception):
    """Bad arguments, one message each: the command stops before explaining anything, with
    exit status 2.

    Example:
        >>> UsageError("--top: must be positive", "--size: bad").args[1]
        '--size: bad'
    """


class CommandError(Exception):
    """The command could not do its work although its arguments were fine (a file it cannot
    read or write): one message, exit status 1.

    Example:
        >>> str(CommandError("cannot write 'sheet.png'"))
        "cannot write 'sheet.png'"
    """


class InputError(Exception):
    """One input cannot be explained; it is reported and skipped, the run goes on.

    Example:
        >>> str(InputError("not a readable image"))
        'not a readable image'
    """


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
        "read, explained and written batch by batch. Inputs that cannot be read, explained "
        "or written (including special files and folders that cannot be listed) are "
        "reported on stderr, listed as errors and skipped (exit status 1).",
        epilog="Each output is named after its input with the suffix replaced by "
        f"{OUTPUT_SUFFIX!r} (the whole name is kept when two inputs of a folder share a "
        f"stem). With several --method, the first method's PNG is named so and each further "
        f"method's gets the method before the suffix ('cat.layercam{OUTPUT_SUFFIX}'); "
        f"{RESULTS_NAME} keeps one line per input, with \"method\" (the first) and "
        f"\"outputs\" (method name -> file). Images over --max-pixels are refused "
        f"(decompression-bomb guard); pictures are drawn at most {DISPLAY_MAX} pixels on "
        "their longer side.",
    )
    explain.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras or .h5)")
    explain.add_argument("inputs", metavar="INPUT", nargs="+",
                         help="image files, or folders searched recursively for images")
    explain.add_argument("--out", required=True, metavar="DIR", help="output folder")
    explain.add_argument("--layer", metavar="NAME",
                         help="layer to explain at: a name, or a path 'base/layer' into a "
                         "nested model (default: the last spatial map larger than 1x1)")
    targets = explain.add_mutually_exclusive_group()
    targets.add_argument("--target", type=non_negative_int, action="append", metavar="K",
                         help="class index to explain (repeatable; default: the top class)")
    targets.add_argument("--top", type=positive_int, metavar="K",
                         help="explain each image's K highest-scoring classes")
    targets.add_argument("--regression", type=non_negative_int, nargs="?", const=0,
                         metavar="INDEX",
                         help="explain predicted value INDEX (default 0) of a regression "
                         "head: what pushes it up (RegressionScore)")
    targets.add_argument("--segmentation-class", type=non_negative_int, metavar="K",
                         help="explain class K of a segmentation output (batch, h, w, "
                         "classes): the sum of its scores over the pixels the model assigns "
                         "to it (SegmentationScore); pass --layer, an inner feature map")
    add_method_arguments(explain)
    explain.add_argument("--class-names", metavar="FILE",
                         help="class names: one per line, or a JSON list")
    explain.add_argument("--preprocess", choices=PREPROCESS_MODES, default="none",
                         help="pixel scaling before the model: none (0..255), unit (x/255), "
                         "symmetric (x/127.5-1), caffe or torch (keras.applications' modes); "
                         "default: none")
    explain.add_argument("--size", type=image_size, metavar="HxW",
                         help="resize inputs to this size (default: the model's input size; "
                         "for a model without a fixed size, each image's own size, scaled "
                         f"down to at most {DISPLAY_MAX} pixels on its longer side)")
    explain.add_argument("--colormap", default="viridis",
                         help="matplotlib colormap of the heatmap (default: viridis)")
    explain.add_argument("--alpha-limit", type=float, default=0.65, metavar="A",
                         help="maximum opacity of the heatmap, in [0, 1] (default: 0.65)")
    explain.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                         help="images per batch (default: 32)")
    explain.add_argument("--side-by-side", action="store_true",
                         help="put the input next to its overlay(s) in each PNG")
    explain.add_argument("--max-pixels", type=non_negative_int,
                         default=Image.MAX_IMAGE_PIXELS, metavar="N",
                         help="refuse images with more pixels than this, 0 for no limit "
                         f"(default: Pillow's {Image.MAX_IMAGE_PIXELS})")
    explain.add_argument("--faithfulness", action="store_true",
                         help="add each map's deletion and insertion areas (towards / from a "
                         "black image, 10 steps; see gradcam_callbacks.faithfulness) to "
                         "results.jsonl: 22 more forwards per input and method")
    explain.add_argument("--quiet", action="store_true",
                         help="no progress bar, summary or advice (errors are still reported)")

    sheet = commands.add_parser(
        "sheet", help="contact sheet of the probe images GradCamCallback logged",
        description="Draw the probe images GradCamCallback logged as one contact sheet: a "
        "row per probe, a column per logged epoch. Reads the event files directly; "
        "TensorFlow is not needed.",
        epilog="Exit status: 0 success, 1 a file could not be read or written, 2 usage error.",
    )
    sheet.add_argument("log_dir", metavar="LOGDIR", help="the callback's log_dir")
    sheet.add_argument("--out", required=True, metavar="PNG", help="the sheet's file")
    sheet.add_argument("--every", type=positive_int, default=1, metavar="N",
                       help="keep every N-th logged epoch (the last is always kept)")
    sheet.add_argument("--gif", nargs="?", const="", metavar="DIR",
                       help="also write one animated GIF per probe, into DIR (default: "
                       "next to the sheet)")
    sheet.add_argument("--frame-ms", type=positive_int, default=500, metavar="MS",
                       help="GIF frame duration in milliseconds (default: 500)")
    sheet.add_argument("--quiet", action="store_true", help="no summary line")

    commands.add_parser(
        "demo", add_help=False, help="train on cluttered digits with GradCamCallback "
        "(see 'demo --help')",
    )
    return parser



def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """``--method`` (repeatable) and one flag per option of the registered methods
    (:data:`gradcam_callbacks.methods.METHODS`; ``max_channels`` -> ``--max-channels``), each
    stored under the option's name. A method added to the registry brings its flags.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_method_arguments(parser)
        >>> args = parser.parse_args(["--method", "scorecam", "--max-channels", "8"])
        >>> args.method, args.max_channels
        (['scorecam'], 8)
    """
    names = sorted(methods.METHODS)
    parser.add_argument("--method", action="append", choices=names, metavar="NAME",
                        help="CAM method, repeatable for one PNG per method per input: "
                        f"{', '.join(names)} (default: automatic, per model: gradcam on a "
                        "CNN, rollout on a vision transformer with a class token, hirescam "
                        "on Swin)")
    for name, takers in methods.options().items():
        found = next(o for o in takers[0].options() if o.name == name)
        parser.add_argument(found.flag, dest=name, type=_option_type(found), metavar=found.metavar,
                            help=f"{' or '.join(cls.name for cls in takers)} only: {found.help}")


def _option_type(found: methods.Option) -> Callable[[str], Any]:
    """Read the flag with the option's ``cli_type``, then its own check: argparse reports
    a bad value as a usage error naming the flag."""
    def read(text: str) -> Any:
        try:
            return found.check(found.name, found.cli_type(text))
        except (TypeError, ValueError) as error:  # argparse names the flag before it
            raise argparse.ArgumentTypeError(str(error)) from None

    read.__name__ = found.cli_type.__name__
    return read

def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    Example:
        >>> positive_int("3")
        3
    """
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; received {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0.

    Example:
        >>> non_negative_int("0")
        0
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer; received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative; received {text!r}")
    return value


def image_size(text: str) -> tuple[int, int]:
    """argparse type: ``HxW`` (or one number for a square) in pixels.

    Example:
        >>> image_size("224x160"), image_size("32")
        ((224, 160), (32, 32))
    """
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


# Lines of Keras' and TensorFlow's error messages that frame the message, not say it.
_FRAMING = ("File ", "Graph execution error", "Detected at node", "[[", "Exception encountered",
            "Arguments received", "\u2022")


def one_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error message that says what went wrong, shortened.

    Example:
        >>> one_line(ValueError("Exception encountered when calling\\nbad shape (2, 2)"))
        'bad shape (2, 2)'
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Keras' bold
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    saying = [line for line in lines if not line.startswith(_FRAMING)]
    line = (saying or lines or [type(error).__name__])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."
