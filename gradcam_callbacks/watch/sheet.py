"""Contact sheets and animated GIFs from the probe images :class:`GradCamCallback` logs.

Everything is read back with :func:`~gradcam_callbacks.watch.tensorboard.read_events`, so neither
TensorFlow nor Keras is needed. A row is one probe (tag ``gradcam/probe_00``, ...), a column
is one logged step (step ``e`` is the model after epoch ``e``, 0-based, as Keras' TensorBoard
counts; step -1 is the model before the fit: ``untrained``, or ``before fit`` when its
optimizer had taken steps).

A sheet shows one fit. The callback writes each fit to a run directory of its own; a
directory that holds several fits anyway (written by older versions, or event files copied
together) is refused with a ``ValueError`` that lists its fits, never drawn as one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..image import grid
from .tags import OPTIMIZER_STEPS, PROBE_PREFIX, step_label
from .tensorboard import read_events

__all__ = ["contact_sheet", "draw_sheet", "probe_frames", "probe_gifs", "write_gifs"]



class Frames(tuple):
    """``(tags, steps, images)`` as :func:`probe_frames` returns them (a tuple, unpacked as
    such), and ``labels``: each kept step's column label (``untrained``, ``before fit``,
    ``epoch 1``, ...).

    Example:
        >>> frames = Frames(["gradcam/probe_00"], [-1], {}, {-1: "untrained"})
        >>> tags, steps, images = frames
        >>> steps, frames.labels
        ([-1], {-1: 'untrained'})
    """

    labels: dict[int, str]

    def __new__(cls, tags: list[str], steps: list[int],
                images: dict[tuple[str, int], Image.Image], labels: dict[int, str]) -> Frames:
        frames = super().__new__(cls, (tags, steps, images))
        frames.labels = labels
        return frames


def probe_frames(
    log_dir: str | os.PathLike, every: int = 1, tag_prefix: str = PROBE_PREFIX
) -> Frames:
    """The probe images of a run: probe tags, the steps kept, and one image per (tag, step).

    Tags are those that start with ``tag_prefix`` and hold nothing after the probe's number
    (``gradcam/probe_00``, not its scalars ``gradcam/probe_00/score``). Event files are one
    fit's while none repeats a (tag, step) of the files before it; a directory whose files
    hold several fits raises (see the module docstring). Images are opened lazily: their PNG
    bytes are decoded when first used.

    Args:
        log_dir: The callback's run directory (its ``log_dir``), or one event file.
        every: Keep every ``every``-th logged step, counted from the first; the last step is
            always kept.
        tag_prefix: Which image tags count as probes.

    Returns:
        ``(tags, steps, images)``: sorted tags, sorted kept steps, and a dict from
        ``(tag, step)`` to the image (absent where a probe has no image at that step).

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
        ValueError: ``every`` is not a positive integer, no probe image was found, or the
            directory holds several fits.

    Example:
        >>> tags, steps, images = probe_frames("logs/gradcam")
        >>> tags, steps
        (['gradcam/probe_00', 'gradcam/probe_01'], [-1, 0])
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer; received every={every!r}")
    pngs: dict[tuple[str, int], bytes] = {}
    by_file: dict[str, list[tuple[str, int]]] = {}
    optimizer_steps: dict[int, float] = {}
    for record in read_events(log_dir):
        if (record.kind == "image" and record.sample == 0 and record.tag.startswith(tag_prefix)
                and "/" not in record.tag[len(tag_prefix):]):
            pngs[(record.tag, record.step)] = record.value  # type: ignore[assignment]
            by_file.setdefault(record.file, []).append((record.tag, record.step))
        elif record.kind == "scalar" and record.tag == OPTIMIZER_STEPS:
            optimizer_steps[record.step] = record.value  # type: ignore[assignment]
    _check_one_fit(log_dir, by_file)
    if not pngs:
        raise ValueError(
            f"no probe images (tags starting with {tag_prefix!r}) in {os.fspath(log_dir)!r}"
            f"{_hint(Path(log_dir))}"
        )
    tags = sorted({tag for tag, _ in pngs})
    logged = sorted({step for _, step in pngs})
    steps = [s for i, s in enumerate(logged) if i % every == 0 or i == len(logged) - 1]
    images = {key: Image.open(io.BytesIO(png)) for key, png in pngs.items() if key[1] in steps}
    # runs written before the optimizer's step count was logged read as before: untrained
    labels = {step: step_label(step, untrained=not optimizer_steps.get(step, 0))
              for step in steps}
    return Frames(tags, steps, images, labels)


def _check_one_fit(log_dir: str | os.PathLike, by_file: dict[str, list[tuple[str, int]]]
                   ) -> None:
    """Raise when the event files hold several fits: a file that repeats a (tag, step) of
    the files before it starts another fit."""
    fits: list[tuple[list[str], set[tuple[str, int]]]] = []
    for file, keys in by_file.items():  # in reading order
        if not fits or fits[-1][1] & set(keys):
            fits.append(([], set()))
        fits[-1][0].append(file)
        fits[-1][1].update(keys)
    if len(fits) < 2:
        return
    found = "; ".join(
        f"fit {n}: {', '.join(files)} (steps {min(s for _, s in keys)} to "
        f"{max(s for _, s in keys)})" for n, (files, keys) in enumerate(fits, 1))
    raise ValueError(
        f"{os.fspath(log_dir)!r} holds the probe images of {len(fits)} fits that share "
        f"steps ({found}); a sheet shows one fit. Move each fit's event files into a folder "
        "of its own and pass that folder (GradCamCallback now writes each fit to its own "
        "run directory)")


def contact_sheet(
    log_dir: str | os.PathLike, every: int = 1, tag_prefix: str = PROBE_PREFIX
) -> Image.Image:
    """One picture of a whole run: a row per probe, a column per logged step, labelled.

    Cells are the callback's probe images (input and overlay, with their caption) as
    logged; rows are labelled with the probe's tag, columns with ``untrained`` and ``epoch N``
    (as ``fit`` prints epochs, from 1). The cell layout is
    :func:`~gradcam_callbacks.image.grid`'s, with 4-pixel gaps.

    Args:
        log_dir: The callback's run directory, or one event file.
        every: Keep every ``every``-th logged step (the last one is always kept).
        tag_prefix: Which image tags count as probes.

    Returns:
        An RGB image.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
        ValueError: ``every`` is not a positive integer, or no probe image was found.

    Example:
        >>> sheet = contact_sheet("logs/gradcam", every=2)
        >>> sheet.save("sheet.png")
    """
    return draw_sheet(probe_frames(log_dir, every, tag_prefix))


def draw_sheet(frames: Frames) -> Image.Image:
    """The contact sheet of frames read by :func:`probe_frames` (see :func:`contact_sheet`).

    Example:
        >>> frames = probe_frames("logs/gradcam")
        >>> draw_sheet(frames).mode
        'RGB'
    """
    tags, steps, images = frames
    labels = getattr(frames, "labels", {})
    rows = [[images.get((tag, step)) for step in steps] for tag in tags]
    return grid(rows, row_labels=[tag.rsplit("/", 1)[-1] for tag in tags],
                column_labels=[labels.get(step) or step_label(step) for step in steps])


def probe_gifs(
    log_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    every: int = 1,
    tag_prefix: str = PROBE_PREFIX,
    duration_ms: int = 500,
) -> list[Path]:
    """One animated GIF per probe, a frame per logged step, looping forever.

    Files are named after the tag with ``/`` replaced by ``_``: ``gradcam_probe_00.gif``.
    Each is written under a temporary name and then renamed, so an interrupted call never
    leaves a half-written GIF.

    Args:
        log_dir: The callback's run directory, or one event file.
        out_dir: Where to write the GIFs; created if missing.
        every: Keep every ``every``-th logged step (the last one is always kept).
        tag_prefix: Which image tags count as probes.
        duration_ms: How long each frame shows, in milliseconds.

    Returns:
        The paths written, in tag order.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
        ValueError: Bad ``every`` or ``duration_ms``, or no probe image was found.

    Example:
        >>> [p.name for p in probe_gifs("logs/gradcam", "gifs")]
        ['gradcam_probe_00.gif', 'gradcam_probe_01.gif']
    """
    _check_duration(duration_ms)
    return write_gifs(probe_frames(log_dir, every, tag_prefix), out_dir, duration_ms)


def write_gifs(frames: Frames, out_dir: str | os.PathLike, duration_ms: int = 500) -> list[Path]:
    """One animated GIF per probe of frames read by :func:`probe_frames` (see
    :func:`probe_gifs`).

    Raises:
        ValueError: ``duration_ms`` is not a positive integer.
        OSError: ``out_dir`` cannot be created or written.

    Example:
        >>> write_gifs(probe_frames("logs/gradcam"), "gifs")
        [PosixPath('gifs/gradcam_probe_00.gif'), PosixPath('gifs/gradcam_probe_01.gif')]
    """
    _check_duration(duration_ms)
    tags, steps, images = frames
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for tag in tags:
        frames = [images[(tag, step)].convert("RGB") for step in steps if (tag, step) in images]
        path = out / (tag.replace("/", "_") + ".gif")
        save_atomically(frames[0], path, format="GIF", save_all=True,
                        append_images=frames[1:], duration=duration_ms, loop=0)
        written.append(path)
    return written


def save_atomically(image: Image.Image, path: Path, **save_options: object) -> None:
    """Encode ``image`` in memory, write it to a new temporary file next to ``path``, then
    rename that over ``path``: an interrupted call never leaves a half-written file.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> target = Path(tempfile.mkdtemp()) / "a.png"
        >>> save_atomically(Image.new("RGB", (2, 2)), target, format="PNG")
        >>> target.exists()
        True
    """
    encoded = io.BytesIO()
    image.save(encoded, **save_options)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(encoded.getbuffer())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_duration(duration_ms: int) -> None:
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int) or duration_ms < 1:
        raise ValueError(
            f"duration_ms must be a positive integer; received duration_ms={duration_ms!r}"
        )


def _hint(path: Path) -> str:
    """Where the event files are, when ``path`` holds none itself but its subfolders do."""
    if not path.is_dir() or any("tfevents" in p.name for p in path.iterdir()):
        return ""
    found = sorted({p.parent for p in path.rglob("*tfevents*") if p.is_file()})
    if not found:
        return "; it holds no event files"
    shown: Sequence[Path] = found[:5]
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    return ("; event files are in subfolder(s) " + ", ".join(repr(str(p)) for p in shown)
            + more + ": pass the callback's log_dir")
