"""The demo's settings and command line, without Keras: ``gradcam-callbacks demo --help``
answers at once, importing no backend. :mod:`gradcam_callbacks.demo` runs it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

#: Data: 48x48 canvases, 16 px digits, four distractors each, light background noise.
CANVAS_SIZE = 48
DIGIT_SIZE = 16
CLUTTER = 4
NOISE = 0.1
NUM_TRAIN = 4000
NUM_TEST = 1000
#: Shortcut demo: share of training images whose marker sits at the label's spot (test
#: images get a marker at a random spot).
SHORTCUT_RATE = 0.95
#: Shortcut demo: its ShortcutAlarm fires when the marker holds more Grad-CAM mass than the
#: digit (on the probes) for this many logged epochs in a row. Two, not one: after its first
#: epoch a model trained on clean digits may not have found them yet, and its maps can still
#: sit on the brightest thing, the marker (seen once in 15 clean test runs, tests/test_shortcut.py).
SHORTCUT_PATIENCE = 2
#: Pixels around the marker that count as on it: one cell of the 12x12 map Grad-CAM
#: explains at, which cannot place a 4 px marker more finely than that.
MARKER_REACH = 4
#: Training: Adam, cosine-decayed per epoch from LEARNING_RATE, label smoothing.
EPOCHS = 6
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
LABEL_SMOOTHING = 0.1
#: Name of the model's last conv layer (its last rank-4 layer): the layer to explain.
GRADCAM_LAYER = "last_conv"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The demo's options (``--help`` prints them and exits).

    Example:
        >>> parse_args(["--epochs", "2"]).epochs
        2
    """
    parser = argparse.ArgumentParser(
        prog="gradcam-callbacks demo",
        description="Train a small CNN on cluttered digits with GradCamCallback watching.",
    )
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"default {EPOCHS}")
    parser.add_argument("--log-dir", default=None,
                        help="TensorBoard log directory (default logs/cluttered_digits, "
                        "with --shortcut logs/shortcut_digits)")
    parser.add_argument("--probes", type=int, default=16, help="probe images (default 16)")
    parser.add_argument("--train-size", type=int, default=NUM_TRAIN, help=argparse.SUPPRESS)
    parser.add_argument("--test-size", type=int, default=NUM_TEST, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--shortcut", action="store_true",
                        help="plant a shortcut: in training, a marker's spot gives the label "
                        "away; in test it is random. Grad-CAM then explains the predicted "
                        "class, each epoch's logs get how much of it lands on the marker "
                        "(gradcam_artifact_mass), a ShortcutAlarm warns when the marker holds "
                        f"more than the digit for {SHORTCUT_PATIENCE} epochs, and the run "
                        "prints it all")
    parser.add_argument("--shortcut-rate", type=float, default=SHORTCUT_RATE,
                        help="with --shortcut, the share of training images whose marker "
                        f"gives the label away (default {SHORTCUT_RATE})")
    args = parser.parse_args(None if argv is None else list(argv))
    if args.epochs < 1 or args.probes < 1 or args.train_size < 1 or args.test_size < 1:
        parser.error("--epochs, --probes, --train-size and --test-size must be positive")
    if not 0.0 <= args.shortcut_rate <= 1.0:
        parser.error("--shortcut-rate must be in [0, 1]")
    if args.log_dir is None:
        args.log_dir = "logs/shortcut_digits" if args.shortcut else "logs/cluttered_digits"

    return args
