"""Argument checks shared by the package, with one error style:
``"<name> must be <expected>; received <what was given>"``.

``TypeError`` when the kind of value is wrong, ``ValueError`` when its value or shape is.
This module imports nothing from the package (no import cycles), no backend framework and
not even Keras (the command line's ``--help`` stays fast): backend tensors (TensorFlow, JAX,
PyTorch) are recognised through the array protocols they all implement, and through
``keras.ops`` when Keras is already loaded.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

ARRAY_KINDS = ("a numpy array, a backend tensor (TensorFlow, JAX, PyTorch) or nested lists of "
               "numbers")


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for bools (which Python counts as ints).

    Example:
        >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
        (True, True, False, False)
    """
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def describe(value: Any) -> str:
    """A short description of a received value for error messages: its type and repr.

    Example:
        >>> describe(1.5), describe("x")
        ('float: 1.5', "str: 'x'")
    """
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__}: {text}"


def check_int(name: str, value: Any, *, minimum: int | None = None,
              none_ok: bool = False) -> int | None:
    """``value`` as an int: an integer (not a bool), at least ``minimum`` when given.

    Raises:
        TypeError: not an integer (``None`` too, unless ``none_ok``).
        ValueError: below ``minimum``.

    Example:
        >>> check_int("freq", 2, minimum=1)
        2
        >>> check_int("freq", 0, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: freq must be a positive integer; received freq=0
    """
    if value is None and none_ok:
        return None
    expected = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}") + (" or None" if none_ok else "")
    if not is_int(value):
        raise TypeError(f"{name} must be {expected}; received {describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {expected}; received {name}={value!r}")
    return int(value)


def check_number(name: str, value: Any, low: float, high: float, *,
                 none_ok: bool = False) -> float | None:
    """``value`` as a float in ``[low, high]`` (a real number, not a bool).

    Example:
        >>> check_number("alpha_limit", 0.5, 0, 1)
        0.5
    """
    if value is None and none_ok:
        return None
    expected = f"a number in [{low}, {high}]" + (" or None" if none_ok else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected}; received {describe(value)}")
    if not low <= value <= high:  # False for NaN too
        raise ValueError(f"{name} must be in [{low}, {high}]; received {name}={value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool.

    Example:
        >>> check_bool("log_initial", True)
        True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; received {describe(value)}")
    return bool(value)


def is_array_like(value: Any) -> bool:
    """True for numpy arrays, backend tensors, objects with the numpy array protocols and
    lists/tuples (which may hold numbers); False for strings, mappings and the rest.

    Example:
        >>> is_array_like([[1, 2]]), is_array_like("12"), is_array_like(iter([1]))
        (True, False, False)
    """
    if isinstance(value, (str, bytes, dict)):
        return False
    return (isinstance(value, (np.ndarray, list, tuple)) or _keras_tensor(value)
            or hasattr(value, "__array__") or hasattr(value, "__array_interface__"))


def _keras_tensor(value: Any) -> bool:
    """A tensor of the running Keras backend (only if Keras is loaded: no import here)."""
    keras = sys.modules.get("keras")
    ops = getattr(keras, "ops", None)  # Keras 2.15 (TensorFlow <= 2.15) has none
    return ops is not None and bool(ops.is_tensor(value))


def as_array(value: Any, name: str) -> np.ndarray:
    """A numpy array from a numpy array, a backend tensor of any Keras backend, or an
    array-like (nested lists of numbers), without importing any framework.

    Raises:
        TypeError: anything else (strings, mappings, iterators, objects), or a conversion
            that fails (a symbolic tensor).
        ValueError: ragged nested lists.

    Example:
        >>> as_array([[1, 2], [3, 4]], "doc").shape
        (2, 2)
    """
    if isinstance(value, np.ndarray):
        return value
    if not is_array_like(value):
        raise TypeError(f"{name} must be {ARRAY_KINDS}; received {type(value).__name__}")
    try:
        if _keras_tensor(value):
            return np.asarray(sys.modules["keras"].ops.convert_to_numpy(value))
        try:
            return np.asarray(value)
        except (RuntimeError, TypeError):
            # e.g. a tensor of another framework that needs detaching or copying first
            numpy = getattr(value, "numpy", None)
            if numpy is None:
                raise
            detach = getattr(value, "detach", None)
            return np.asarray((detach().cpu() if detach is not None else value).numpy())
    except ValueError as error:
        raise ValueError(
            f"{name} must be a rectangular array (every row of the same length); received a "
            f"{type(value).__name__} numpy cannot stack ({error})"
        ) from None
    except (RuntimeError, TypeError, AttributeError) as error:
        raise TypeError(
            f"{name} must be {ARRAY_KINDS}; received {type(value).__name__} that cannot be "
            f"converted to numpy ({error})"
        ) from None


def check_real_array(name: str, array: np.ndarray) -> np.ndarray:
    """``array`` if it holds finite real numbers (integers or floats, not bools).

    Raises:
        TypeError: bools, strings, objects, complex numbers.
        ValueError: NaN or infinite values.

    Example:
        >>> check_real_array("docs", np.zeros((1, 2))).shape
        (1, 2)
    """
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(f"{name} must hold real numbers; received dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        where = np.flatnonzero(~np.isfinite(array).reshape(len(array), -1).all(axis=1)) \
            if array.ndim else np.array([], int)
        at = f" (in entries {_index_list(where)})" if where.size else ""
        raise ValueError(f"{name} must be finite; received {bad} NaN or infinite value(s){at}")
    return array


def to_picture(picture: Any, name: str = "image") -> Image.Image:
    """A Pillow image from a Pillow image or an HxW / HxWx{1,3,4} uint8 array (numpy, a
    backend tensor or nested lists).

    Example:
        >>> to_picture(np.zeros((4, 5, 3), np.uint8)).size
        (5, 4)
    """
    if isinstance(picture, Image.Image):
        return picture
    array = None
    if is_array_like(picture):
        try:
            array = as_array(picture, name)
        except (TypeError, ValueError):
            array = None
    if array is not None and array.dtype == np.uint8 and (
        array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))
    ):
        return Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1
                               else array)
    got = (f"array of shape {array.shape} and dtype {array.dtype}"
           if array is not None else type(picture).__name__)
    raise TypeError(
        f"{name} must be a Pillow image or a uint8 array of shape (H, W) or (H, W, 1|3|4); "
        f"received {got}"
    )


def check_pictures(images: Any, count: int, name: str = "images",
                   per: str = "doc") -> list[Image.Image] | None:
    """One Pillow image per input: ``images`` is None, a list/tuple of pictures or a stacked
    uint8 array/tensor ``(N, H, W[, C])``.

    Raises:
        TypeError: not a list or array, or an entry that is no picture.
        ValueError: not ``count`` entries.

    Example:
        >>> len(check_pictures(np.zeros((2, 4, 4, 3), np.uint8), 2))
        2
    """
    if images is None:
        return None
    if not isinstance(images, (list, tuple)):
        if not is_array_like(images):
            raise TypeError(
                f"{name} must be None, a list of Pillow images or uint8 arrays, or a uint8 "
                f"array (N, H, W[, C]); received {type(images).__name__}"
            )
        images = list(as_array(images, name))
    if len(images) != count:
        raise ValueError(
            f"{name} must hold one picture per {per} ({count}); received {len(images)}"
        )
    return [to_picture(picture, f"{name}[{i}]") for i, picture in enumerate(images)]


def check_names(name: str, value: Any) -> list[str]:
    """A list of str from a list, tuple, array or other finite iterable of str, read once
    (a generator is materialised, not consumed by the check and lost).

    Raises:
        TypeError: a single str, a mapping or set (no order), not iterable, or a non-str entry.

    Example:
        >>> check_names("class_names", (n for n in "ab"))
        ['a', 'b']
    """
    if isinstance(value, (str, bytes, dict, set, frozenset)) or not _iterable(value):
        raise TypeError(f"{name} must be a list of str; received {describe(value)}")
    names = list(value)
    for i, entry in enumerate(names):
        if not isinstance(entry, str):
            raise TypeError(f"{name} must be a list of str; received {describe(entry)} at "
                            f"{name}[{i}]")
    return names


def index_list(indices: Sequence[int] | np.ndarray, limit: int = 8) -> str:
    """``[0, 3, 4]``, shortened to ``limit`` entries with a count of the rest.

    Example:
        >>> index_list(range(12), limit=3)
        '[0, 1, 2, ... and 9 more]'
    """
    return _index_list(indices, limit)


def _index_list(indices: Any, limit: int = 8) -> str:
    values = [int(i) for i in indices]
    if len(values) <= limit:
        return str(values)
    return "[" + ", ".join(map(str, values[:limit])) + f", ... and {len(values) - limit} more]"


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True
