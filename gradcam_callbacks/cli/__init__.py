"""The ``gradcam-callbacks`` command line (also ``python -m gradcam_callbacks``).

Subcommands:

``explain MODEL INPUT... --out DIR``
    Grad-CAM overlays of image files, one PNG per input plus ``results.jsonl``.
``sheet LOGDIR --out sheet.png``
    A contact sheet (and optionally GIFs) of what :class:`GradCamCallback` logged.
``demo``
    The cluttered-digits demo (its options belong to :mod:`gradcam_callbacks.demo`).

One module per concern: :mod:`.parse` (arguments, exit statuses, error types),
:mod:`.inputs` (which files, output names), :mod:`.images` (reading and preprocessing),
:mod:`.pipeline` (reader, explainer and writer threads), :mod:`.progress` (the bar),
:mod:`.interrupt` (Ctrl-C within a second), and one module per subcommand. The command line
is a thin user of the library: :func:`~gradcam_callbacks.engine.plan` and
:meth:`Plan.run <gradcam_callbacks.engine.Plan.run>` explain, :mod:`~gradcam_callbacks.image`
draws, :mod:`~gradcam_callbacks.watch.sheet` reads event files. Keras (and so a backend) is imported
only once ``explain`` has checked its arguments, so ``--help``, ``--version``, most usage
errors and ``sheet`` answer in about a second.

Exit status: 0 success, 1 some input could not be explained (the others were) or a file
could not be read or written, 2 usage error (bad option, unreadable model or class-names
file, no input), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext

from .interrupt import InterruptWatchdog
from .parse import (
    EXIT_FAILED_INPUTS,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    CommandError,
    UsageError,
    build_parser,
)
from .startup import quiet_native_startup

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``). Without
            ``argv`` (run as a program), Ctrl-C ends the process within about a second
            (see :mod:`.interrupt`), and an interrupted run ends it at once with status 130
            rather than wait for threads or the backend's clean-up.

    Returns:
        0 on success, 1 if some input or file failed, 2 for a usage error, 130 when
        interrupted.

    Example:
        >>> main(["explain", "model.keras", "photos/", "--out", "overlays", "--preprocess", "unit"])
        0
    """
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        return run_demo(argv[1:])
    args = build_parser().parse_args(argv)
    with InterruptWatchdog(args.command) if as_program else nullcontext():
        status = _run(args)
    if status == EXIT_INTERRUPTED and as_program:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "explain":
            from .explain_command import run_explain

            return run_explain(args)
        from .sheet_command import run_sheet

        return run_sheet(args)
    except UsageError as error:
        for message in error.args:
            print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_demo(argv: list[str]) -> int:
    """Forward ``demo``'s arguments to :func:`gradcam_callbacks.demo.run.main`.

    Example:
        >>> # trains on 4000 images, minutes (tests/test_demo.py runs the command, smaller):
        >>> run_demo(["--epochs", "2", "--log-dir", "logs/demo"])  # doctest: +SKIP
        0
    """
    from ..demo.settings import parse_args

    parse_args(argv)  # usage errors and --help answer here, before Keras is imported
    with quiet_native_startup():
        from ..demo import main as demo_main

    return demo_main(argv)
