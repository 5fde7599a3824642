"""What the score-function examples share: their data, command line and the comparison of a
trained model with the same model untrained. Not a script; see ``regression_digits.py`` and
``segmentation_digits.py``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import keras

from gradcam_callbacks.demo.datasets import ClutteredDigits, make_cluttered_digits


def load_data(num_train: int, num_test: int, canvas_size: int = 32, digit_size: int = 12,
              seed: int = 0, masks: bool = False) -> tuple[ClutteredDigits, ClutteredDigits]:
    """Train and test cluttered digits, three distractors each (test digits unseen in
    training); with ``masks=True`` also the digits' stroke masks.

    Example:
        >>> train_set, test_set = load_data(8, 4)
        >>> train_set.x.shape, test_set.x.shape
        ((8, 32, 32, 1), (4, 32, 32, 1))
    """
    settings = {"canvas_size": canvas_size, "digit_size": digit_size, "clutter": 3,
                "seed": seed, "masks": masks}
    return (make_cluttered_digits(num_train, split="train", **settings),
            make_cluttered_digits(num_test, split="test", **settings))


def command_line(description: str, argv: list[str] | None, epochs: int,
                 out: str) -> argparse.Namespace:
    """The examples' options: ``--epochs``, ``--train``, ``--test``, ``--seed``, ``--out``.

    Example:
        >>> command_line("demo", ["--epochs", "2"], epochs=6, out="a.png").epochs
        2
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--train", type=int, default=2000, help="training images")
    parser.add_argument("--test", type=int, default=200, help="test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=out, help="picture to save (PNG)")
    return parser.parse_args(argv)


def compare(build: Callable[[tuple[int, ...]], keras.Model],
            train: Callable[..., keras.Model],
            score: Callable[[keras.Model, ClutteredDigits], tuple[Any, list]],
            train_set: ClutteredDigits, test_set: ClutteredDigits, epochs: int,
            seed: int = 0) -> tuple[keras.Model, list]:
    """Score the model untrained (built with ``seed``), train it, score it again; print both.

    Returns:
        The trained model and its explanations of ``test_set``.

    Example:
        >>> model, expls = compare(build_regressor, train, score, train_set, test_set,
        ...                        epochs=6)  # doctest: +SKIP
        untrained: ...
    """
    keras.utils.set_random_seed(seed)
    untrained, _ = score(build(train_set.x.shape[1:]), test_set)
    print(f"untrained: {untrained}")
    model = train(train_set, epochs, seed=seed)
    trained, expls = score(model, test_set)
    print(f"trained ({epochs} epochs): {trained}")
    return model, expls
