"""``gradcam-callbacks sheet``: a contact sheet (and GIFs) from a callback's log_dir. Needs
neither Keras nor TensorFlow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .parse import EXIT_OK, PROG, CommandError, UsageError, one_line


def run_sheet(args: argparse.Namespace) -> int:
    """Check the paths, read the probe images once, write the sheet and the GIFs.

    Raises:
        UsageError: LOGDIR missing or holding no probe image; ``--out`` not a ``.png`` file
            name (or an existing folder); ``--gif`` an existing file.
        CommandError: An event file cannot be read or decoded, or an output cannot be
            written.

    Example:
        >>> from gradcam_callbacks.cli.parse import build_parser
        >>> run_sheet(build_parser().parse_args(
        ...     ["sheet", "logs/gradcam", "--out", "sheet.png", "--gif"]))
        0
    """
    from ..watch.sheet import draw_sheet, probe_frames, save_atomically, write_gifs

    log_dir, out = Path(args.log_dir), Path(args.out)
    if not log_dir.exists():
        raise UsageError(f"LOGDIR {str(log_dir)!r} does not exist")
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must name a .png file; received {str(out)!r}")
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; name the sheet's .png file")
    gif_dir = None if args.gif is None else Path(args.gif) if args.gif else out.parent
    if gif_dir is not None and gif_dir.exists() and not gif_dir.is_dir():
        raise UsageError(f"--gif {str(gif_dir)!r} exists and is not a folder; name a folder "
                         "for the GIFs")
    try:
        frames = probe_frames(log_dir, every=args.every)
        sheet = draw_sheet(frames)  # decodes every kept image
    except ValueError as error:
        raise UsageError(str(error)) from None
    except OSError as error:  # an unreadable event file, or a logged image Pillow cannot read
        raise CommandError(f"cannot read the probe images in {str(log_dir)!r}: "
                           f"{one_line(error)}") from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(sheet, out, format="PNG")
    except OSError as error:
        raise CommandError(f"cannot write {str(out)!r}: {one_line(error)}") from None
    gifs = []
    if gif_dir is not None:
        try:
            gifs = write_gifs(frames, gif_dir, duration_ms=args.frame_ms)
        except OSError as error:
            raise CommandError(f"cannot write the GIFs into {str(gif_dir)!r}: "
                               f"{one_line(error)}") from None
    if not args.quiet:
        tags, steps, _ = frames
        also = f" and {len(gifs)} GIF(s) to {str(gif_dir)!r}" if gif_dir is not None else ""
        print(f"{PROG} sheet: wrote {str(out)!r} ({len(tags)} probe(s) x {len(steps)} "
              f"epoch(s)){also}", file=sys.stderr)
    return EXIT_OK
