"""Pictures from explanations: ELI5's overlay (:func:`format_as_image`), side-by-side panels
and grids. Pure functions of numpy arrays and Pillow images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

from ._validation import check_number
from .explanation import Explanation

Colormap = Callable[[np.ndarray], np.ndarray] | str


def get_colormap(colormap: Colormap) -> Callable[[np.ndarray], np.ndarray]:
    """A matplotlib colormap from a colormap, a callable or a colormap name.

    Example:
        >>> get_colormap("viridis").name
        'viridis'
    """
    if isinstance(colormap, str):
        try:
            return matplotlib.colormaps[colormap]
        except KeyError:
            raise ValueError(
                f"colormap must be a matplotlib colormap name such as 'viridis' or 'jet'; "
                f"received {colormap!r}"
            ) from None
    if not callable(colormap):
        raise TypeError(
            f"colormap must be a matplotlib colormap, a callable or a name; received "
            f"{type(colormap).__name__}"
        )
    return colormap


def check_alpha_limit(alpha_limit: Any) -> float | None:
    """Validate ``alpha_limit``: None or a number in [0, 1].

    Example:
        >>> check_alpha_limit(1)
        1.0
    """
    return check_number("alpha_limit", alpha_limit, 0, 1, none_ok=True)


def heatmap_overlay(
    image: Image.Image,
    heatmap: np.ndarray,
    resampling_filter: int = Image.LANCZOS,
    colormap: Colormap = "viridis",
    alpha_limit: float | None = 0.65,
) -> Image.Image:
    """Lay one heatmap over an image, ELI5's way: colourise, alpha = min(value, limit),
    to 8 bits, resize to the image, alpha-composite. Returns an RGBA image.

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> heatmap_overlay(Image.new("RGB", (32, 32)), np.eye(4)).mode
        'RGBA'
    """
    cmap = get_colormap(colormap)
    limit = check_alpha_limit(alpha_limit)
    base = image.convert("RGBA") if image.mode != "RGBA" else image
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2 or not np.issubdtype(heatmap.dtype, np.number):
        raise TypeError(f"heatmap must be a 2D numeric array; received shape {heatmap.shape}")
    if heatmap.size and not (0 <= heatmap.min() and heatmap.max() <= 1):
        raise ValueError(
            f"heatmap values must lie in [0, 1]; received min {heatmap.min()}, max {heatmap.max()}"
        )
    colored = np.array(cmap(heatmap), dtype=np.float64)
    colored[..., 3] = heatmap if limit is None else np.minimum(heatmap, limit)
    layer = Image.fromarray((colored * 255).astype("uint8"), mode="RGBA")
    layer = layer.resize((base.width, base.height), resample=resampling_filter)
    return Image.alpha_composite(base, layer)


def format_as_image(
    expl: Explanation,
    resampling_filter: int = Image.LANCZOS,
    colormap: Colormap = "viridis",
    alpha_limit: float | None = 0.65,
    *,
    target_index: int = 0,
) -> Image.Image:
    """The heatmap of one target laid over the explanation's image, as ELI5 draws it.

    Args:
        expl: An explanation whose ``image`` is a Pillow image.
        resampling_filter: Pillow filter used to resize the heatmap to the image.
        colormap: A matplotlib colormap (or its name, e.g. ``"jet"``).
        alpha_limit: Maximum opacity of the heatmap, in [0, 1]; ``None`` for no cap;
            ``0`` leaves the image unchanged.
        target_index: Which of the explanation's targets to draw (ELI5 has only one).

    Returns:
        An RGBA image of the input image's size; the image itself if there are no targets.

    Example:
        >>> overlay = format_as_image(explain_prediction(model, doc))  # doctest: +SKIP
        >>> overlay.mode  # doctest: +SKIP
        'RGBA'
    """
    if not isinstance(expl.image, Image.Image):
        raise TypeError(
            f"expl.image must be a PIL.Image.Image; received {type(expl.image).__name__}"
        )
    if not expl.targets:
        return expl.image.convert("RGBA")
    if not 0 <= target_index < len(expl.targets):
        raise ValueError(
            f"target_index must be in [0, {len(expl.targets)}); received {target_index!r}"
        )
    return heatmap_overlay(expl.image, expl.targets[target_index].heatmap,
                           resampling_filter, colormap, alpha_limit)


def side_by_side(images: Sequence[Image.Image], gap: int = 4,
                 background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Images in one row, top-aligned, ``gap`` pixels apart, as an RGB image.

    Example:
        >>> from PIL import Image
        >>> side_by_side([Image.new("RGB", (8, 8)), Image.new("RGB", (8, 6))]).size
        (20, 8)
    """
    return grid([list(images)], gap=gap, background=background)


def grid(rows: Sequence[Sequence[Image.Image | None]], gap: int = 4,
         background: tuple[int, int, int] = (255, 255, 255),
         row_labels: Sequence[str] | None = None,
         column_labels: Sequence[str] | None = None) -> Image.Image:
    """A grid of images (``None`` leaves a cell empty), cells as large as the largest image,
    with optional text labels left of the rows and above the columns.

    Example:
        >>> from PIL import Image
        >>> cell = Image.new("RGB", (10, 10))
        >>> grid([[cell, cell], [cell, None]], gap=2).size
        (22, 22)
    """
    cells = [im for row in rows for im in row if im is not None]
    if not cells:
        raise ValueError("grid needs at least one image")
    cell_w = max(im.width for im in cells)
    cell_h = max(im.height for im in cells)
    columns = max(len(row) for row in rows)
    left = 0 if not row_labels else max(_text_width(t) for t in row_labels) + gap
    top = 0 if not column_labels else 12 + gap
    sheet = Image.new(
        "RGB",
        (left + columns * cell_w + (columns - 1) * gap, top + len(rows) * cell_h
         + (len(rows) - 1) * gap),
        background,
    )
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(column_labels or []):
        draw.text((left + c * (cell_w + gap), 0), label, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        y = top + r * (cell_h + gap)
        if row_labels:
            draw.text((0, y + cell_h // 2 - 5), row_labels[r], fill=(0, 0, 0))
        for c, im in enumerate(row):
            if im is None:
                continue
            rgb = im.convert("RGBA")
            backdrop = Image.new("RGBA", rgb.size, background + (255,))
            sheet.paste(Image.alpha_composite(backdrop, rgb).convert("RGB"),
                        (left + c * (cell_w + gap), y))
    return sheet


def explanation_strip(expl: Explanation, **overlay_kwargs: Any) -> Image.Image:
    """The explanation's image followed by one overlay per target, in one row.

    Example:
        >>> explanation_strip(explain_prediction(model, doc, targets=[1, 2])).size  # doctest: +SKIP
        (684, 224)
    """
    if not isinstance(expl.image, Image.Image):
        raise TypeError(
            f"expl.image must be a PIL.Image.Image; received {type(expl.image).__name__}"
        )
    overlays = [format_as_image(expl, target_index=k, **overlay_kwargs)
                for k in range(len(expl.targets))]
    return side_by_side([expl.image, *overlays])


def captioned(image: Image.Image, lines: Sequence[str],
              background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The image with lines of text in a strip below it, as an RGB image.

    Example:
        >>> from PIL import Image
        >>> captioned(Image.new("RGB", (100, 50)), ["epoch 3", "score 0.9"]).size
        (100, 78)
    """
    line_height = 12
    sheet = Image.new("RGB", (image.width, image.height + 2 + line_height * len(lines)),
                      background)
    sheet.paste(image.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(lines):
        draw.text((2, image.height + 2 + i * line_height), line, fill=(0, 0, 0))
    return sheet


def _text_width(text: str) -> int:
    return int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text))
