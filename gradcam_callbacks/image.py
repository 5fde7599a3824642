"""Pictures from explanations: ELI5's overlay (:func:`format_as_image`), side-by-side panels
and grids. Pure functions of numpy arrays and Pillow images."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ._validation import check_number


class TargetLike(Protocol):
    """What drawing reads of one target (a :class:`~gradcam_callbacks.TargetExplanation`)."""

    target: Any
    score: float | None
    heatmap: np.ndarray | None


class ExplanationLike(Protocol):
    """What drawing reads of an explanation (a :class:`~gradcam_callbacks.Explanation`):
    this module draws explanations without importing their module, which draws through it.
    """

    image: Image.Image | None
    targets: Sequence[TargetLike]

Colormap = Callable[[np.ndarray], np.ndarray] | str
#: Height in pixels of a grid's column-label strip (12 px DejaVu Sans), above its gap.
LABEL_HEIGHT = 15


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
    expl: ExplanationLike,
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
        >>> from gradcam_callbacks import explain_prediction
        >>> overlay = format_as_image(explain_prediction(model, doc))
        >>> overlay.mode
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
    top = 0 if not column_labels else LABEL_HEIGHT + gap
    sheet = Image.new(
        "RGB",
        (left + columns * cell_w + (columns - 1) * gap, top + len(rows) * cell_h
         + (len(rows) - 1) * gap),
        background,
    )
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(column_labels or []):
        draw.text((left + c * (cell_w + gap), 0), label, fill=(0, 0, 0), font=label_font(12))
    for r, row in enumerate(rows):
        y = top + r * (cell_h + gap)
        if row_labels:
            draw.text((0, y + cell_h // 2 - 7), row_labels[r], fill=(0, 0, 0),
                      font=label_font(12))
        for c, im in enumerate(row):
            if im is None:
                continue
            rgb = im.convert("RGBA")
            backdrop = Image.new("RGBA", rgb.size, background + (255,))
            sheet.paste(Image.alpha_composite(backdrop, rgb).convert("RGB"),
                        (left + c * (cell_w + gap), y))
    return sheet


def explanation_strip(expl: ExplanationLike, class_names: Sequence[str] | None = None,
                      *, labels: bool = True, include_image: bool = True,
                      min_panel_width: int = 128, **overlay_kwargs: Any) -> Image.Image:
    """The explanation's image followed by one overlay per target, in one row, each panel
    labelled below with what it shows: ``"input"``, then each target's class (``"3: cat"``
    with ``class_names``, else ``"class 3"``) and score.

    Panels narrower than ``min_panel_width`` are enlarged (nearest neighbour, pixels kept
    square) so that the labels stay legible; ``labels=False`` gives the bare row at the
    image's own size.

    Args:
        expl: An explanation whose ``image`` is a Pillow image.
        class_names: Names of the model's classes, indexed by class; optional.
        labels: Whether to draw the labels.
        include_image: Whether the row starts with the input image itself.
        min_panel_width: Smallest panel width, in pixels, when ``labels`` is true.
        **overlay_kwargs: Passed to :func:`format_as_image` (``colormap``, ``alpha_limit``...).

    Example:
        >>> from gradcam_callbacks import explain_prediction
        >>> strip = explanation_strip(explain_prediction(model, doc, targets=[1, 2]),
        ...                           class_names=names)
        >>> strip.size
        (440, 180)
    """
    if not isinstance(expl.image, Image.Image):
        raise TypeError(
            f"expl.image must be a PIL.Image.Image; received {type(expl.image).__name__}"
        )
    overlays = [format_as_image(expl, target_index=k, **overlay_kwargs)
                for k in range(len(expl.targets))]
    panels = [expl.image, *overlays] if include_image else overlays
    if not panels:
        raise ValueError("explanation_strip needs an explanation with targets or "
                         "include_image=True; received no targets and include_image=False")
    if not labels:
        return side_by_side(panels)
    if expl.image.width < min_panel_width:
        scale = -(-min_panel_width // max(expl.image.width, 1))
        panels = [im.resize((im.width * scale, im.height * scale), Image.NEAREST)
                  for im in panels]
    captions = [["input", ""]] if include_image else []
    captions += [[target_label(t.target, class_names), f"score {t.score:.3g}"]
                 for t in expl.targets]
    return side_by_side([captioned(im, lines) for im, lines in zip(panels, captions)])


def target_label(target: int | str, class_names: Sequence[str] | None = None) -> str:
    """How a target class is named in pictures: ``"3: cat"`` with names, else ``"class 3"``;
    a score function's description (a str target) as it is.

    Example:
        >>> target_label(3, ["a", "b", "c", "cat"]), target_label(3)
        ('3: cat', 'class 3')
    """
    if isinstance(target, str):
        return target
    if class_names is not None and 0 <= target < len(class_names):
        return f"{target}: {class_names[target]}"
    return f"class {target}"


def captioned(image: Image.Image, lines: Sequence[str],
              background: tuple[int, int, int] = (255, 255, 255),
              font_size: int | None = None) -> Image.Image:
    """The image with lines of text in a strip below it, as an RGB image.

    The text is set in DejaVu Sans (shipped with matplotlib), at ``font_size`` pixels or, by
    default, the largest size from 9 to 14 at which the longest line fits the image's width
    (lines stay 17 px apart, so the picture's size does not depend on its text); a line that
    still does not fit is cut with an ellipsis.

    Example:
        >>> from PIL import Image
        >>> captioned(Image.new("RGB", (100, 50)), ["epoch 3", "score 0.9"]).size
        (100, 86)
    """
    size = font_size or _fitting_size(lines, image.width - 4)
    font = label_font(size)
    # the strip's height does not depend on the text: pictures of one tag keep one size
    line_height = (font_size or 14) + 3
    sheet = Image.new("RGB", (image.width, image.height + 2 + line_height * len(lines)),
                      background)
    sheet.paste(image.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(lines):
        draw.text((2, image.height + 2 + i * line_height), _fit(line, font, image.width - 4),
                  fill=(0, 0, 0), font=font)
    return sheet


@functools.lru_cache(maxsize=16)
def label_font(size: int = 12) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size`` pixels (matplotlib ships it), for labels in pictures.

    Example:
        >>> label_font(12).size
        12
    """
    from matplotlib import font_manager

    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except OSError:  # no TrueType support in this Pillow build
        return ImageFont.load_default(size)


def _fitting_size(lines: Sequence[str], width: int, largest: int = 14,
                  smallest: int = 9) -> int:
    for size in range(largest, smallest, -1):
        font = label_font(size)
        if all(font.getlength(line) <= width for line in lines):
            return size
    return smallest


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _text_width(text: str) -> int:
    return int(label_font(12).getlength(text))
