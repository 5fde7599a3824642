"""TensorBoard event files with image and scalar summaries, written and read without TensorFlow.

The files hold the same tensor-based summaries that `tf.summary.image` and `tf.summary.scalar`
write, framed as TFRecords, so a stock TensorBoard shows them in its images and scalars
dashboards. Only the `tensorboard` package's protocol buffers are used: importing this module
never imports TensorFlow, whatever the Keras backend.
"""

from __future__ import annotations

import errno
import io
import itertools
import logging
import operator
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import google_crc32c
import numpy as np
from google.protobuf.message import DecodeError
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

__all__ = ["EventRecord", "EventWriter", "read_events"]

logger = logging.getLogger(__name__)

ImageLike = Image.Image | np.ndarray

# Files of one process never share a name, even when opened within the same second.
_file_counter = itertools.count()


def _masked_crc32c(data: bytes) -> int:
    """The CRC32C (Castagnoli) of `data`, masked as TFRecord framing requires."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _frame_record(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        (
            length,
            struct.pack("<I", _masked_crc32c(length)),
            data,
            struct.pack("<I", _masked_crc32c(data)),
        )
    )


def _iter_records(path: Path) -> Iterator[bytes]:
    """The payloads of the TFRecords in `path`, up to the first truncated or corrupt record."""
    with open(path, "rb") as file:
        while True:
            offset = file.tell()
            header = file.read(12)
            if len(header) < 12:
                return  # end of file, or a record cut short by a killed writer
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] == _masked_crc32c(header[:8]):
                data = file.read(length)
                footer = file.read(4)
                if len(data) < length or len(footer) < 4:
                    return
                if struct.unpack("<I", footer)[0] == _masked_crc32c(data):
                    yield data
                    continue
            logger.warning("Corrupt record in %s at byte %d; skipping the rest", path, offset)
            return


def _encode_png(image: ImageLike, compress_level: int = 6) -> tuple[bytes, int, int]:
    """PNG bytes, width and height of a PIL image or an HxW / HxWx{1,3,4} uint8 array."""
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise ValueError(f"Expected a uint8 image array. Received: image.dtype={array.dtype}")
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))) or (
            0 in array.shape
        ):
            raise ValueError(
                "Expected an image array of shape (height, width) or (height, width, channels) "
                f"with 1, 3 or 4 channels. Received: image.shape={np.shape(image)}"
            )
        image = Image.fromarray(np.ascontiguousarray(array))
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue(), image.width, image.height


class EventWriter:
    """Writes image and scalar summaries to a TensorBoard event file, without TensorFlow.

    Summaries are the tensor-based ones `tf.summary.image` and `tf.summary.scalar` write
    (plugins "images" and "scalars"), descriptions included, so TensorBoard shows them as it
    shows Keras' own. The event file, `events.out.tfevents.<time>.<host>.<pid>.<n>.gradcam`,
    is created on the first write, not by the constructor. Each record reaches the operating
    system in one unbuffered write, so other readers see it at once and a run killed mid-write
    leaves at most its last record truncated; TensorBoard and `read_events` read everything
    before it. `close` (or the `with` block) is not needed to keep data, only to release the
    file.

    Failure policy: every write, `flush` and `close` raises a plain `OSError` (or a subclass
    such as `FileNotFoundError`) when the file system fails: log directory removed, not
    writable, disk full. The summary being written is lost, but the writer stays usable: the
    failed file is abandoned, and the next write re-creates the log directory if it is missing
    and starts a NEW event file, so a half-written record is never followed by more data.
    Arguments that are not valid summaries raise `ValueError` or `TypeError` and leave the
    file untouched. One writer may be shared between threads.

    Args:
        log_dir: The run directory; created (with its parents) on the first write.
        png_compress_level: zlib level of the PNG images, 0 (fastest, largest) to 9; 1
            encodes several times faster than Pillow's default 6 for a slightly larger file.

    Example:
        >>> import tempfile, numpy as np
        >>> log_dir = tempfile.mkdtemp()
        >>> with EventWriter(log_dir) as writer:
        ...     writer.add_image("probe/0", np.zeros((8, 8, 3), np.uint8), step=1)
        ...     writer.add_scalar("probe/0/score", 0.5, step=1, description="Softmax score")
        >>> [(r.tag, r.kind, r.step) for r in read_events(log_dir)]
        [('probe/0', 'image', 1), ('probe/0/score', 'scalar', 1)]
    """

    def __init__(self, log_dir: str | os.PathLike, png_compress_level: int = 6) -> None:
        if (isinstance(png_compress_level, bool) or not isinstance(png_compress_level, int)
                or not 0 <= png_compress_level <= 9):
            raise ValueError("png_compress_level must be an integer in [0, 9]; received "
                             f"png_compress_level={png_compress_level!r}")
        self._png_compress_level = png_compress_level
        self._log_dir = Path(log_dir)
        self._file: io.FileIO | None = None
        self._lock = threading.Lock()

    @property
    def log_dir(self) -> Path:
        """The run directory this writer writes into."""
        return self._log_dir

    @property
    def path(self) -> Path | None:
        """The event file being written, or None before the first write (or after a failure)."""
        return Path(self._file.name) if self._file is not None else None

    def add_image(
        self, tag: str, image: ImageLike, step: int, description: str | None = None
    ) -> None:
        """Writes one image, PNG-encoded, as an "images" summary.

        Args:
            tag: The summary's name; TensorBoard groups tags by their first `/` component.
            image: A PIL image, or a uint8 array of shape (height, width) or
                (height, width, 1 | 3 | 4).
            step: The global step (usually the epoch) the image belongs to.
            description: Markdown shown with the image in TensorBoard.

        Raises:
            OSError: The event file could not be written (see the class docstring).
            ValueError: `image` or `tag` is not valid.

        Example:
            >>> import tempfile, numpy as np
            >>> with EventWriter(tempfile.mkdtemp()) as writer:
            ...     writer.add_image("overlay", np.full((4, 6), 255, np.uint8), step=0)
        """
        self.add_images(tag, [image], step, description)

    def add_images(
        self,
        tag: str,
        images: Iterable[ImageLike] | np.ndarray,
        step: int,
        description: str | None = None,
    ) -> None:
        """Writes several same-sized images as the samples of one "images" summary.

        TensorBoard shows them in one card with a sample slider, like `tf.summary.image`
        with `max_outputs` > 1.

        Args:
            tag: The summary's name.
            images: PIL images or uint8 arrays as for `add_image`, or one uint8 array of shape
                (count, height, width[, channels]).
            step: The global step the images belong to.
            description: Markdown shown with the images in TensorBoard.

        Raises:
            OSError: The event file could not be written (see the class docstring).
            ValueError: No images, images of different sizes, or an invalid image or tag.

        Example:
            >>> import tempfile, numpy as np
            >>> with EventWriter(tempfile.mkdtemp()) as writer:
            ...     writer.add_images("batch", np.zeros((2, 4, 4, 3), np.uint8), step=0)
        """
        encoded = [_encode_png(image, self._png_compress_level) for image in images]
        if not encoded:
            raise ValueError(f"Expected at least one image. Received: images={images!r}")
        sizes = {(width, height) for _, width, height in encoded}
        if len(sizes) > 1:
            raise ValueError(
                f"Expected images of one size. Received sizes (width, height): {sorted(sizes)}"
            )
        ((width, height),) = sizes
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=2 + len(encoded))]
            ),
            string_val=[str(width).encode(), str(height).encode()] + [png for png, _, _ in encoded],
        )
        metadata = image_metadata.create_summary_metadata(
            display_name=None, description=description
        )
        self._write_summary(tag, tensor, metadata, step)

    def add_scalar(self, tag: str, value: float, step: int, description: str | None = None) -> None:
        """Writes one value as a "scalars" summary (a float32 tensor, as `tf.summary.scalar`).

        Args:
            tag: The summary's name.
            value: A real number: a Python or NumPy number, or a 0-d array or tensor.
            step: The global step the value belongs to.
            description: Markdown shown with the chart in TensorBoard.

        Raises:
            OSError: The event file could not be written (see the class docstring).
            TypeError: `value` is not a number.

        Example:
            >>> import tempfile
            >>> with EventWriter(tempfile.mkdtemp()) as writer:
            ...     writer.add_scalar("gradcam/mean_energy", 0.25, step=3)
        """
        if isinstance(value, (str, bytes)):
            raise TypeError(f"Expected a real number. Received: value={value!r}")
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            float_val=[float(value)],
        )
        metadata = scalar_metadata.create_summary_metadata(
            display_name=None, description=description
        )
        self._write_summary(tag, tensor, metadata, step)

    def flush(self) -> None:
        """Makes everything written so far durable (`os.fsync`); records are already visible.

        Raises:
            OSError: The file could not be synced (see the class docstring).
        """
        with self._lock:
            if self._file is not None:
                self._guard_io(os.fsync, self._file.fileno())

    def close(self) -> None:
        """Flushes and closes the event file. A later write starts a new file.

        Raises:
            OSError: The file could not be flushed or closed; it is released all the same.
        """
        with self._lock:
            if self._file is not None:
                file, self._file = self._file, None
                try:
                    os.fsync(file.fileno())
                finally:
                    file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_summary(
        self,
        tag: str,
        tensor: tensor_pb2.TensorProto,
        metadata: summary_pb2.SummaryMetadata,
        step: int,
    ) -> None:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"Expected a non-empty string tag. Received: tag={tag!r}")
        event = event_pb2.Event(
            wall_time=time.time(),
            step=operator.index(step),
            summary=summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)]
            ),
        )
        record = _frame_record(event.SerializeToString())
        with self._lock:
            self._guard_io(self._write_record, record)

    def _guard_io(self, operation: Callable[..., object], *args: object) -> None:
        """Runs a file operation; on OSError abandons the file so the next write starts anew."""
        try:
            operation(*args)
        except OSError:
            if self._file is not None:
                file, self._file = self._file, None
                try:
                    file.close()
                except OSError:
                    pass  # the file is being abandoned for the error raised below
            raise

    def _write_record(self, record: bytes) -> None:
        if self._file is None:
            self._open_new_file()
        elif not os.path.exists(self._file.name):
            # Writes to a removed file (or one in a removed directory) succeed silently.
            raise FileNotFoundError(
                errno.ENOENT, "The event file was removed while being written", self._file.name
            )
        view = memoryview(record)
        while view:  # a raw write may write less than asked for
            view = view[self._file.write(view) :]

    def _open_new_file(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        stamp = f"{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        # Zero-padded so that name order (TensorBoard's reading order) is creation order.
        name = f"events.out.tfevents.{stamp}.{next(_file_counter):06d}.gradcam"
        self._file = open(self._log_dir / name, "xb", buffering=0)
        header = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        self._write_record(_frame_record(header.SerializeToString()))


@dataclass(frozen=True)
class EventRecord:
    """One image or scalar read from an event file by `read_events`.

    Attributes:
        file: The event file's path relative to the run directory.
        wall_time: Seconds since the epoch when the summary was written.
        step: The summary's global step.
        tag: The summary's name.
        kind: "image" or "scalar".
        value: The scalar as a float, or the image's PNG bytes.
        description: The tag's description (from the first summary of the tag that has
            one), or None.
        sample: The image's index among the samples of its summary (0 for scalars).

    Example:
        >>> EventRecord("events.out.tfevents.1", 1.0, 2, "loss", "scalar", 0.5, None).value
        0.5
    """

    file: str
    wall_time: float
    step: int
    tag: str
    kind: Literal["image", "scalar"]
    value: float | bytes
    description: str | None
    sample: int = 0


def read_events(path: str | os.PathLike) -> Iterator[EventRecord]:
    """Reads the image and scalar summaries of a run directory, or of one event file.

    Reads every file whose name contains "tfevents" in the directory (not its
    subdirectories), in name order as TensorBoard does, checking the TFRecord CRCs. A file's
    reading stops quietly at its first truncated record (a killed writer) or corrupt record
    (the latter is logged). Understands this module's files and those of `tf.summary` and
    `keras.callbacks.TensorBoard`: tensor-based "images" / "scalars" summaries and the legacy
    `simple_value` and `Summary.Image` ones. Other summaries (histograms, graphs, text) are
    skipped.

    Args:
        path: A run directory, or a single event file.

    Yields:
        `EventRecord`s in file order.

    Raises:
        FileNotFoundError: `path` does not exist.

    Example:
        >>> import tempfile
        >>> log_dir = tempfile.mkdtemp()
        >>> with EventWriter(log_dir) as writer:
        ...     writer.add_scalar("loss", 0.5, step=0)
        ...     writer.add_scalar("loss", 0.25, step=1)
        >>> [(r.step, r.value) for r in read_events(log_dir)]
        [(0, 0.5), (1, 0.25)]
    """
    path = Path(path)
    if path.is_dir():
        run_dir = path
        files = sorted(p for p in path.iterdir() if "tfevents" in p.name and p.is_file())
    elif path.exists():
        run_dir, files = path.parent, [path]
    else:
        raise FileNotFoundError(f"No such event file or run directory: {str(path)!r}")
    # tag -> (plugin name, description), from the tag's first summary with metadata, as in
    # TensorBoard: later summaries of a tag may carry no metadata.
    tag_metadata: dict[str, tuple[str, str | None]] = {}
    for file in files:
        relative = file.relative_to(run_dir).as_posix()
        for data in _iter_records(file):
            try:
                event = event_pb2.Event.FromString(data)
            except DecodeError:
                logger.warning("Undecodable event in %s; skipping the rest of it", file)
                break
            for value in event.summary.value:
                yield from _summary_records(value, event, relative, tag_metadata)


def _summary_records(
    value: summary_pb2.Summary.Value,
    event: event_pb2.Event,
    file: str,
    tag_metadata: dict[str, tuple[str, str | None]],
) -> Iterator[EventRecord]:
    if value.metadata.plugin_data.plugin_name and value.tag not in tag_metadata:
        tag_metadata[value.tag] = (
            value.metadata.plugin_data.plugin_name,
            value.metadata.summary_description or None,
        )
    plugin, description = tag_metadata.get(value.tag, ("", None))

    def record(kind: Literal["image", "scalar"], item: float | bytes, sample: int = 0):
        return EventRecord(
            file, event.wall_time, event.step, value.tag, kind, item, description, sample
        )

    field = value.WhichOneof("value")
    if field == "simple_value":
        yield record("scalar", value.simple_value)
    elif field == "image":
        yield record("image", value.image.encoded_image_string)
    elif field == "tensor" and plugin == scalar_metadata.PLUGIN_NAME:
        yield record("scalar", float(tensor_util.make_ndarray(value.tensor).item()))
    elif field == "tensor" and plugin == image_metadata.PLUGIN_NAME:
        # [width, height, png, png, ...], as tf.summary.image writes it
        pngs = tensor_util.make_ndarray(value.tensor).ravel()[2:]
        for sample, png in enumerate(pngs):
            yield record("image", bytes(png), sample)
