"""``explain``'s image reading and preprocessing: one file in, ``(doc, picture)`` out.

Files are opened without blocking and checked to be regular files before Pillow reads them,
so a FIFO or a device can never stall the reader.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .inputs import special_file_problem
from .parse import DISPLAY_MAX, InputError, one_line


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



@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb limit set to ``max_pixels`` (``0``: none) while the
    command reads images, and put back afterwards, even on error: :func:`read_image` applies
    ``--max-pixels`` itself, and Pillow must not refuse an image below it first. Nothing
    outlives the command's run.

    Example:
        >>> before = Image.MAX_IMAGE_PIXELS
        >>> with pixel_limit(0):
        ...     Image.MAX_IMAGE_PIXELS is None
        True
        >>> Image.MAX_IMAGE_PIXELS == before
        True
    """
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels or None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


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
        InputError: The file is not a regular file or not a readable image, or has more
            than ``max_pixels`` pixels (``0`` for no limit).

    Example:
        >>> doc, picture = read_image(Path("cat.jpg"), Geometry(3, 32, 32, False),
        ...                           Image.MAX_IMAGE_PIXELS)
        >>> doc.shape, picture.mode
        ((32, 32, 3), 'RGB')
    """
    bound = max(DISPLAY_MAX, geometry.height or 0, geometry.width or 0)
    try:
        with _open_regular(path) as file, warnings.catch_warnings():
            # Pillow's own bomb limit is replaced by max_pixels, checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as opened:
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
        raise InputError(f"{one_line(error)}; raise --max-pixels to read it") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports unreadable, truncated and corrupt files with these
        raise InputError(f"not a readable image: {one_line(error)}") from None
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


def _open_regular(path: Path) -> io.BufferedReader:
    """Open ``path`` for reading without blocking (a FIFO would block ``open()``), and
    refuse anything but a regular file before a byte is read."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                         | getattr(os, "O_CLOEXEC", 0))
    try:
        problem = special_file_problem(os.fstat(descriptor).st_mode)
        if problem:
            raise InputError(problem)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


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
