"""gradcam_callbacks.watch.tensorboard against a real TensorBoard, a real browser and TensorFlow."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tb_server import TensorBoardServer, open_images_dashboard, running_tensorboard

from gradcam_callbacks.watch.tensorboard import EventRecord, EventWriter, read_events

pytestmark = pytest.mark.backend_agnostic

IMAGE_TAGS = {  # tag -> (height, width, channels); channels None: a 2-D array; "pil": a PIL image
    "probe/0": (12, 20, 3),
    "probe/1": (9, 7, None),
    "probe/2": (16, 16, 4),
    "probe/3": (10, 14, 1),
    "probe/4": (8, 5, "pil"),
}
STEPS = (0, 1, 2, 5)


@dataclass
class Expected:
    """What a run should contain: images[tag][step] = pixel arrays (one per sample)."""

    images: dict[str, dict[int, list[np.ndarray]]] = field(default_factory=dict)
    scalars: dict[str, dict[int, float]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)

    def add_image(self, tag: str, step: int, *pixels: np.ndarray) -> None:
        self.images.setdefault(tag, {})[step] = list(pixels)

    def records(self) -> list[tuple]:
        """(kind, tag, step, sample, value) tuples, images as pixel bytes; see sort_records."""
        return sort_records(
            [("image", t, s, i, pixel_key(p)) for t, d in self.images.items()
             for s, ps in d.items() for i, p in enumerate(ps)]
            + [("scalar", t, s, 0, v) for t, d in self.scalars.items() for s, v in d.items()]
        )  # fmt: skip


def sort_records(records: list[tuple]) -> list[tuple]:
    """By step, kind, tag, sample: an order TensorBoard's HTTP API and our reader can share."""
    return sorted(records, key=lambda r: (r[2], r[0], r[1], r[3]))


def pixels_of(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(png)))


def pixel_key(pixels: np.ndarray) -> tuple:
    """Shape and pixels: comparable, hashable and short to print."""
    return pixels.shape, hashlib.sha1(pixels.tobytes()).hexdigest()[:12]


def random_image(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write_demo_run(log_dir: Path, steps=STEPS, seed: int = 0) -> Expected:
    """Images of several formats and sizes (with descriptions), a 2-sample image and scalars."""
    rng = np.random.default_rng(seed)
    expected = Expected()
    with EventWriter(log_dir) as writer:
        for step in steps:
            for tag, (height, width, channels) in IMAGE_TAGS.items():
                description = f"Grad-CAM overlay of {tag}"
                if channels == "pil":
                    pixels = random_image(rng, (height, width, 3))
                    writer.add_image(tag, Image.fromarray(pixels), step, description)
                elif channels is None:
                    pixels = random_image(rng, (height, width))
                    writer.add_image(tag, pixels, step, description)
                else:
                    array = random_image(rng, (height, width, channels))
                    writer.add_image(tag, array, step, description)
                    pixels = array[..., 0] if channels == 1 else array
                expected.add_image(tag, step, pixels)
                expected.descriptions[tag] = description
            batch = random_image(rng, (2, 6, 4, 3))
            writer.add_images("batch", batch, step=step)
            expected.add_image("batch", step, *batch)
            for tag, value in (("gradcam/score", 0.125 * step - 1), ("gradcam/energy", step**2)):
                writer.add_scalar(tag, np.float32(value), step, description=f"{tag} per epoch")
                expected.scalars.setdefault(tag, {})[step] = float(np.float32(value))
                expected.descriptions[tag] = f"{tag} per epoch"
    return expected


def read_back(path: Path) -> list[tuple]:
    """Our reader's records, in the form of Expected.records()."""
    records = [
        (r.kind, r.tag, r.step, r.sample, pixel_key(pixels_of(r.value)) if r.kind == "image"
         else r.value)
        for r in read_events(path)
    ]  # fmt: skip
    return sort_records(records)


def served_records(tb: TensorBoardServer, run: str) -> list[tuple]:
    """TensorBoard's view of a run over HTTP, in the form of Expected.records()."""
    records = []
    image_tags = tb.get_json("data/plugin/images/tags").get(run, {})
    for tag, info in image_tags.items():
        for sample in range(info["samples"]):
            for entry in tb.get_json("data/plugin/images/images", run=run, tag=tag, sample=sample):
                png = tb.get_bytes(f"data/plugin/images/individualImage?{entry['query']}")
                records.append(("image", tag, entry["step"], sample, pixel_key(pixels_of(png))))
    for tag in tb.get_json("data/plugin/scalars/tags").get(run, {}):
        for _, step, value in tb.get_json("data/plugin/scalars/scalars", run=run, tag=tag):
            records.append(("scalar", tag, step, 0, value))
    return sort_records(records)


def wait_until_served(tb: TensorBoardServer, run: str, expected: list[tuple]) -> None:
    """Polls TensorBoard until the run holds `expected` (it loads asynchronously)."""
    try:
        tb.wait_for(lambda: served_records(tb, run) == expected, timeout=30)
    except TimeoutError:
        assert served_records(tb, run) == expected  # show the difference
        raise


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One TensorBoard for the module; each test writes its own run into its log dir."""
    with running_tensorboard(tmp_path_factory.mktemp("served")) as server:
        yield server


def test_tensorboard_serves_images_scalars_and_descriptions(server):
    expected = write_demo_run(server.logdir / "demo")

    wait_until_served(server, "demo", expected.records())

    image_tags = server.get_json("data/plugin/images/tags")["demo"]
    assert set(image_tags) == set(IMAGE_TAGS) | {"batch"}
    assert image_tags["batch"]["samples"] == 2
    scalar_tags = server.get_json("data/plugin/scalars/tags")["demo"]
    assert set(scalar_tags) == {"gradcam/score", "gradcam/energy"}
    for tag, info in {**image_tags, **scalar_tags}.items():
        description = expected.descriptions.get(tag)
        assert info["description"] == (f"<p>{description}</p>" if description else "")
    # Sizes and modes as written: (height, width) from the arrays, grey / RGB / RGBA kept.
    entry = server.get_json("data/plugin/images/images", run="demo", tag="probe/2", sample=0)[-1]
    png = server.get_bytes(f"data/plugin/images/individualImage?{entry['query']}")
    image = Image.open(io.BytesIO(png))
    assert (image.size, image.mode) == ((16, 16), "RGBA")


def test_reader_round_trips_what_the_writer_wrote(tmp_path):
    expected = write_demo_run(tmp_path / "run")

    records = list(read_events(tmp_path / "run"))

    assert read_back(tmp_path / "run") == expected.records()
    (event_file,) = (tmp_path / "run").iterdir()
    assert "tfevents" in event_file.name and event_file.name.endswith(".gradcam")
    assert {r.file for r in records} == {event_file.name}
    assert all(r.description == expected.descriptions.get(r.tag) for r in records)
    assert all(r.wall_time > 1e9 for r in records)
    assert list(read_events(event_file)) == records  # a single file reads the same


def test_event_file_layout(tmp_path):
    """The first record is the file version; summaries are tensor summaries, as tf.summary's."""
    from tensorboard.compat.proto import event_pb2, types_pb2

    with EventWriter(tmp_path) as writer:
        writer.add_image("img", np.zeros((3, 5), np.uint8), step=7, description="d")
        writer.add_scalar("s", 2.5, step=7)
        path = writer.path
    data = path.read_bytes()
    events = []
    while data:  # TFRecord framing parsed by hand
        length = int.from_bytes(data[:8], "little")
        events.append(event_pb2.Event.FromString(data[12 : 12 + length]))
        data = data[16 + length :]
    assert events[0].file_version == "brain.Event:2"
    image, scalar = (event.summary.value[0] for event in events[1:])
    assert image.metadata.plugin_data.plugin_name == "images"
    assert image.metadata.summary_description == "d"
    assert image.tensor.dtype == types_pb2.DT_STRING
    assert image.tensor.string_val[:2] == [b"5", b"3"]  # width, height
    assert scalar.metadata.plugin_data.plugin_name == "scalars"
    assert (scalar.tensor.dtype, list(scalar.tensor.float_val)) == (types_pb2.DT_FLOAT, [2.5])
    assert [event.step for event in events[1:]] == [7, 7]


def test_invalid_images_and_values_are_rejected_before_writing(tmp_path):
    writer = EventWriter(tmp_path / "run")
    with pytest.raises(ValueError, match="uint8"):
        writer.add_image("t", np.zeros((4, 4), np.float32), 0)
    with pytest.raises(ValueError, match="shape"):
        writer.add_image("t", np.zeros((4, 4, 2), np.uint8), 0)
    with pytest.raises(ValueError, match="one size"):
        writer.add_images("t", [np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8)], 0)
    with pytest.raises(ValueError, match="tag"):
        writer.add_scalar("", 1.0, 0)
    with pytest.raises(TypeError):
        writer.add_scalar("t", "1.0", 0)
    with pytest.raises(TypeError):
        writer.add_scalar("t", 1.0, step=1.5)
    assert writer.path is None and not (tmp_path / "run").exists()  # lazily opened: nothing


def write_then_cut_last_record(log_dir: Path, cut) -> tuple[Path, list[tuple]]:
    """Writes a run of two files, then cuts the second file's last record at byte
    `cut(start, end)`, as a run killed mid-write leaves it; returns the records to expect."""
    expected = write_demo_run(log_dir, steps=(0, 1))
    with EventWriter(log_dir) as writer:
        writer.add_scalar("last/kept", 1.0, step=9)
        start = writer.path.stat().st_size
        writer.add_image("last/cut", np.zeros((4, 4), np.uint8), step=10)
        end = writer.path.stat().st_size
        path = writer.path
    os.truncate(path, cut(start, end))
    return path, sort_records(expected.records() + [("scalar", "last/kept", 9, 0, 1.0)])


@pytest.mark.parametrize(
    "cut",
    [
        lambda start, end: start + 5,  # inside the length header
        lambda start, end: start + 12,  # after the header: no data
        lambda start, end: (start + end) // 2,  # inside the data
        lambda start, end: end - 2,  # inside the data's CRC
    ],
    ids=["header", "no-data", "data", "footer"],
)
def test_reader_stops_cleanly_at_a_truncated_last_record(tmp_path, cut):
    _, expected = write_then_cut_last_record(tmp_path, cut)
    assert read_back(tmp_path) == expected


def test_reader_stops_at_a_corrupt_record(tmp_path, caplog):
    path, expected = write_then_cut_last_record(tmp_path, lambda start, end: end)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # a bit flip in the last record's data
    path.write_bytes(bytes(data))
    assert read_back(tmp_path) == expected
    assert "Corrupt record" in caplog.text


def test_tensorboard_serves_everything_before_a_truncated_last_record(server):
    run = server.logdir / "killed"
    _, expected = write_then_cut_last_record(run, lambda start, end: (start + end) // 2)
    wait_until_served(server, "killed", expected)


def test_removed_log_dir_raises_once_then_writes_a_new_file(tmp_path):
    run = tmp_path / "run"
    writer = EventWriter(run)
    writer.add_scalar("s", 1.0, step=0)
    first_file = writer.path
    shutil.rmtree(run)

    with pytest.raises(OSError):
        writer.add_scalar("s", 2.0, step=1)  # would otherwise vanish into the unlinked file
    assert writer.path is None
    writer.add_scalar("s", 3.0, step=2)
    writer.add_image("i", np.zeros((2, 2), np.uint8), step=2)
    writer.flush()

    assert writer.path.parent == run and writer.path != first_file
    assert [(r.tag, r.step, r.file) for r in read_events(run)] == [
        ("s", 2, writer.path.name), ("i", 2, writer.path.name)
    ]  # fmt: skip
    writer.close()


@contextlib.contextmanager
def file_size_limit(size: int):
    """Caps this process's file sizes (RLIMIT_FSIZE): a full disk, as the kernel reports
    it (EFBIG), after a partial write."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_full_disk_leaves_a_half_record_and_writing_goes_on_in_a_new_file(server):
    run = server.logdir / "disk_full"
    rng = np.random.default_rng(1)
    images = {step: random_image(rng, (16, 16, 3)) for step in (0, 1, 2)}
    writer = EventWriter(run)
    writer.add_image("probe/0", images[0], step=0)
    writer.add_scalar("loss", 0.5, step=0)
    first_file = writer.path
    size = first_file.stat().st_size

    with file_size_limit(size + 100), pytest.raises(OSError) as raised:
        writer.add_image("probe/0", images[1], step=1)  # ~800 bytes: 100 get written
    assert raised.value.errno == errno.EFBIG
    assert first_file.stat().st_size == size + 100  # the half-written record stays behind

    writer.add_image("probe/0", images[2], step=2)
    writer.add_scalar("loss", 0.25, step=2)
    writer.close()

    assert writer.path is None and len(list(run.iterdir())) == 2
    expected = sort_records(
        [("image", "probe/0", s, 0, pixel_key(images[s])) for s in (0, 2)]
        + [("scalar", "loss", 0, 0, 0.5), ("scalar", "loss", 2, 0, 0.25)]
    )
    assert read_back(run) == expected
    second_file = sorted(run.iterdir())[1]
    assert [(r.file, r.step) for r in read_events(run)] == [
        (first_file.name, 0), (first_file.name, 0), (second_file.name, 2), (second_file.name, 2)
    ]  # fmt: skip
    wait_until_served(server, "disk_full", expected)


@pytest.mark.parametrize("how", ["parent-is-a-file", "read-only"])
def test_unwritable_log_dir_raises_oserror_on_write_then_recovers(tmp_path, how):
    if how == "parent-is-a-file":
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory")
        run = blocker / "run"
    else:
        if os.geteuid() == 0:
            pytest.skip("permissions do not stop root; parent-is-a-file covers this")
        run = tmp_path / "run"
        run.mkdir()
        run.chmod(0o500)
    writer = EventWriter(run)  # nothing is touched before the first write

    with pytest.raises(OSError):
        writer.add_scalar("s", 1.0, step=0)
    with pytest.raises(OSError):
        writer.add_image("i", np.zeros((2, 2), np.uint8), step=0)

    if how == "parent-is-a-file":
        blocker.unlink()
    else:
        run.chmod(0o700)
    writer.add_scalar("s", 2.0, step=1)
    writer.close()
    assert [(r.tag, r.value) for r in read_events(run)] == [("s", 2.0)]


def test_module_never_imports_tensorflow(tmp_path):
    """Under the JAX backend, importing and using the module leaves TensorFlow unloaded."""
    import importlib.util

    assert importlib.util.find_spec("tensorflow") is not None, "needs TensorFlow installed"
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from gradcam_callbacks.watch.tensorboard import EventWriter, read_events
        with EventWriter(sys.argv[1]) as writer:
            writer.add_image("probe/0", np.zeros((4, 4, 3), np.uint8), step=0)
            writer.add_scalar("loss", 0.5, step=0)
        print(json.dumps({
            "records": len(list(read_events(sys.argv[1]))),
            "tensorflow": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"),
        }))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"records": 2, "tensorflow": []}


def test_reader_reads_tf_summary_files_and_tensorflow_reads_ours(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from tensorboard.compat.proto import summary_pb2

    rng = np.random.default_rng(2)
    batch = random_image(rng, (2, 5, 7, 3))
    legacy_image = random_image(rng, (3, 4, 3))
    buffer = io.BytesIO()
    Image.fromarray(legacy_image).save(buffer, format="PNG")
    legacy = summary_pb2.Summary(
        value=[
            summary_pb2.Summary.Value(tag="legacy/scalar", simple_value=2.5),
            summary_pb2.Summary.Value(
                tag="legacy/image",
                image=summary_pb2.Summary.Image(
                    height=3, width=4, colorspace=3, encoded_image_string=buffer.getvalue()
                ),
            ),
        ]
    )
    writer = tf.summary.create_file_writer(str(tmp_path / "tf"))
    with writer.as_default():
        tf.summary.image("tf/image", batch, step=1, max_outputs=2, description="tf images")
        tf.summary.scalar("tf/scalar", 0.75, step=1, description="tf scalar")
        tf.summary.scalar("tf/scalar", 1.5, step=2)  # no description: the tag keeps its first
        tf.summary.histogram("tf/histogram", [1.0, 2.0], step=2)  # skipped by the reader
        tf.summary.experimental.write_raw_pb(legacy.SerializeToString(), step=3)
    writer.close()

    got = [
        (r.kind, r.tag, r.step, r.sample, r.description,
         pixel_key(pixels_of(r.value)) if r.kind == "image" else r.value)
        for r in read_events(tmp_path / "tf")
    ]  # fmt: skip
    assert got == [
        ("image", "tf/image", 1, 0, "tf images", pixel_key(batch[0])),
        ("image", "tf/image", 1, 1, "tf images", pixel_key(batch[1])),
        ("scalar", "tf/scalar", 1, 0, "tf scalar", 0.75),
        ("scalar", "tf/scalar", 2, 0, "tf scalar", 1.5),
        ("scalar", "legacy/scalar", 3, 0, None, 2.5),
        ("image", "legacy/image", 3, 0, None, pixel_key(legacy_image)),
    ]

    # TensorFlow's own record reader checks our framing and CRCs.
    expected = write_demo_run(tmp_path / "ours", steps=(0,))
    (ours,) = (tmp_path / "ours").iterdir()
    events = list(tf.compat.v1.train.summary_iterator(str(ours)))
    assert events[0].file_version == "brain.Event:2"
    assert [(value.tag, event.step) for event in events[1:] for value in event.summary.value] == [
        (record.tag, record.step) for record in read_events(ours) if record.sample == 0
    ]
    assert len(events) == 1 + len(expected.images) + len(expected.scalars)


def test_reader_reads_keras_tensorboard_callback_logs(tmp_path):
    pytest.importorskip("tensorflow")
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(loss="mse", optimizer="sgd")
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)
    callback = keras.callbacks.TensorBoard(tmp_path, histogram_freq=1, write_images=True)
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])

    records = list(read_events(tmp_path / "train"))
    losses = [r for r in records if r.tag == "epoch_loss"]
    assert [(r.kind, r.step) for r in losses] == [("scalar", 0), ("scalar", 1)]
    assert [r.value for r in losses] == pytest.approx(history.history["loss"])
    weight_images = [r for r in records if r.kind == "image"]
    assert weight_images and all(pixels_of(r.value).size > 0 for r in weight_images)


def test_images_dashboard_shows_the_probe_images(server, tmp_path):
    rng = np.random.default_rng(3)
    tags = ["dashboard/cat", "dashboard/dog", "dashboard/fish"]
    with EventWriter(server.logdir / "browser") as writer:
        for index, tag in enumerate(tags):
            image = np.zeros((60, 90, 3), np.uint8)
            image[..., index] = 255  # red, green, blue cards
            image[20:40, 30:60] = random_image(rng, (20, 30, 3))
            writer.add_image(tag, image, step=3, description=f"Overlay for {tag}")
    server.wait_for(
        lambda: set(server.get_json("data/plugin/images/tags").get("browser", {})) == set(tags)
    )

    screenshot = tmp_path / "images-dashboard.png"
    view = open_images_dashboard(
        server.url,
        screenshot,
        min_loaded=3,
        tag_filter="^dashboard/",
        open_description_of="dashboard/dog",
    )

    # a filtered dashboard may show a card twice (search results and its group); the second
    # copy can still be loading when the first has loaded (seen once under load): per tag,
    # read a loaded copy
    cards = {}
    for card in view.cards:
        if card.run == "browser" and (card.tag not in cards or card.natural_width > 0):
            cards[card.tag] = card
    assert sorted(cards) == tags
    assert all((card.natural_width, card.natural_height) == (90, 60) for card in cards.values())
    assert all("individualImage" in card.src for card in cards.values())
    assert cards["dashboard/dog"].description == "<p>Overlay for dashboard/dog</p>"
    assert view.description_shown == "Overlay for dashboard/dog"
    assert Image.open(screenshot).size[0] >= 1000


def test_event_record_is_plain_data():
    record = EventRecord("f", 1.0, 2, "t", "scalar", 0.5, None)
    with pytest.raises(AttributeError):
        record.step = 3
    assert record.sample == 0


def test_png_compress_level_changes_size_not_pixels(tmp_path):
    rng = np.random.default_rng(3)
    picture = np.repeat(random_image(rng, (64, 64, 3)), 2, axis=0)  # compressible
    for level in (1, 9):
        with EventWriter(tmp_path / str(level), png_compress_level=level) as writer:
            writer.add_image("p", picture, step=0)
    fast, small = (next(iter(read_events(tmp_path / str(level)))).value for level in (1, 9))
    assert len(fast) > len(small)
    np.testing.assert_array_equal(pixels_of(fast), picture)
    np.testing.assert_array_equal(pixels_of(small), picture)
    for bad in (10, -1, 1.0, True):
        with pytest.raises(ValueError, match=rf"png_compress_level must be an integer in "
                                             rf"\[0, 9\]; received png_compress_level={bad!r}"):
            EventWriter(tmp_path, png_compress_level=bad)


def test_background_writer_back_pressure_order_and_errors(tmp_path):
    import threading
    import time

    from gradcam_callbacks.watch.sinks import BackgroundWriter, Sink

    writer = EventWriter(tmp_path)
    assert isinstance(writer, Sink)
    background = BackgroundWriter(writer)
    done, submitter = [], threading.current_thread()

    def slow(sink):
        assert threading.current_thread() is not submitter  # written off the caller's thread
        time.sleep(0.3)
        sink.add_scalar("x", 1.0, 0)
        done.append("slow")

    def failing(sink):
        raise OSError(errno.ENOSPC, "No space left on device")

    background.submit(slow, "step 0")
    background.submit(failing, "step 1")
    assert done == ["slow"]  # submit waited for the previous job: at most one pending
    background.submit(lambda sink: sink.add_scalar("x", 2.0, 2), "step 2")
    background.close()
    assert background.take_errors() == [
        "could not write step 1 ([Errno 28] No space left on device)"]
    assert background.take_errors() == []
    assert [(r.step, r.value) for r in read_events(tmp_path)] == [(0, 1.0), (2, 2.0)]
    with pytest.raises(RuntimeError, match="closed"):
        background.submit(slow, "step 3")
