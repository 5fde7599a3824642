"""End to end: a short fit with GradCamCallback, then a real TensorBoard server reads the
run back over HTTP, and a real headless Chromium shows the images dashboard.

Only the first test runs on every backend (the callback computes and writes on that backend,
TensorBoard reads it back); the others concern steps, event files, TensorBoard and the
browser, which no backend touches, so they run once (``backend_agnostic``)."""

from __future__ import annotations

import io
import os
import shutil

import keras
import numpy as np
import pytest
from models import images, small_cnn
from PIL import Image
from tb_server import open_images_dashboard, running_tensorboard

import gradcam_callbacks as gc
from gradcam_callbacks.image import LABEL_HEIGHT
from gradcam_callbacks.watch.tensorboard import read_events

PROBES = 3
EPOCHS = 2


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    log_root = tmp_path_factory.mktemp("logs")
    x = images(24, seed=3)
    y = np.arange(24) % 5
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    cam = gc.GradCamCallback((x[:PROBES], y[:PROBES]), targets="true",
                             probe_boxes=[[2, 2, 10, 10]] * PROBES,
                             log_dir=log_root / "gradcam")
    model.fit(x, y, epochs=EPOCHS, batch_size=8, callbacks=[cam], verbose=0)
    return log_root


def test_tensorboard_serves_every_probe_image_and_scalar(trained_run):
    with running_tensorboard(trained_run) as tb:
        tags = tb.wait_for(
            lambda: tb.get_json("data/plugin/images/tags").get("gradcam") or None, timeout=60)
        probe_tags = [f"gradcam/probe_{i:02d}" for i in range(PROBES)]
        timeline_tags = [f"gradcam/timeline/probe_{i:02d}" for i in range(PROBES)]
        assert set(probe_tags + timeline_tags + ["gradcam/grid"]) <= set(tags)
        assert "input (left)" in tags["gradcam/probe_00"]["description"]
        for tag in probe_tags:
            def all_steps(tag=tag):
                found = tb.get_json("data/plugin/images/images", run="gradcam", tag=tag,
                                    sample=0)
                return found if len(found) == EPOCHS + 1 else None

            entries = tb.wait_for(all_steps)
            assert [e["step"] for e in entries] == list(range(-1, EPOCHS))
            for entry in entries:
                png = tb.get_bytes("data/plugin/images/individualImage?" + entry["query"])
                picture = Image.open(io.BytesIO(png))
                assert picture.format == "PNG"
                # two caption lines of 17 px
                assert picture.size == (128 * 2 + 4, 128 + 2 + 2 * 17)
                assert np.asarray(picture).std() > 0  # not a blank image
        scalar_tags = tb.wait_for(
            lambda: tb.get_json("data/plugin/scalars/tags").get("gradcam") or None)
        expected = {f"{t}/{s}" for t in probe_tags for s in ("score", "box_mass",
                                                             "pointing_hit", "change")}
        expected |= {"gradcam/pointing_game", "gradcam/mean_box_mass", "gradcam/mean_change"}
        assert expected <= set(scalar_tags)
        series = tb.get_json("data/plugin/scalars/scalars", run="gradcam",
                             tag="gradcam/probe_00/score")
        assert [point[1] for point in series] == list(range(-1, EPOCHS))
        assert all(0 <= point[2] <= 1 for point in series)


@pytest.mark.backend_agnostic
def test_images_dashboard_in_chromium(trained_run, tmp_path):
    if shutil.which("chromium") is None and not os.path.exists("/usr/bin/chromium"):
        pytest.fail("Debian's chromium is required for the dashboard check (.ci/run installs it)")
    screenshot = tmp_path / "dashboard.png"
    with running_tensorboard(trained_run) as tb:
        tb.wait_for(lambda: len(tb.get_json("data/plugin/images/tags").get("gradcam", {}))
                    >= PROBES + 1 or None, timeout=60)
        view = open_images_dashboard(tb.url, screenshot, min_loaded=PROBES + 1,
                                     tag_filter="gradcam/")
    shown = set(view.tags)
    assert {f"gradcam/probe_{i:02d}" for i in range(PROBES)} | {"gradcam/grid"} <= shown
    loaded = [card for card in view.cards if card.natural_width > 0]
    assert len(loaded) >= PROBES + 1
    assert Image.open(screenshot).size[0] >= 1000
    kept = os.environ.get("GRADCAM_SCREENSHOT_DIR")
    if kept:
        os.makedirs(kept, exist_ok=True)
        shutil.copy(screenshot, os.path.join(kept, f"dashboard-{keras.backend.backend()}.png"))


# -- steps, timelines and TensorBoard's defaults (issue 11) -----------------------------------
def served_steps(tb, run, tag):
    return [e["step"] for e in tb.get_json("data/plugin/images/images", run=run, tag=tag,
                                           sample=0)]


@pytest.mark.backend_agnostic
def test_maps_share_the_step_of_keras_epoch_loss(tmp_path):
    """One slider position, one model state: the maps after epoch e are at the step of that
    epoch's epoch_loss in keras.callbacks.TensorBoard; freq means histogram_freq."""
    x, y = images(16, seed=4), np.arange(16) % 5
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    cam = gc.GradCamCallback((x[:2], y[:2]), targets="true", freq=3,
                             log_dir=tmp_path / "gradcam")
    losses, scores = {}, {}

    def record(epoch, logs):  # after the callback: the epoch's loss and its maps' scores
        losses[epoch] = logs["loss"]
        scores[epoch] = float(cam.explain_probes()[2][0])

    model.fit(x, y, epochs=7, batch_size=8, verbose=0, callbacks=[
        keras.callbacks.TensorBoard(tmp_path), cam,
        keras.callbacks.LambdaCallback(on_epoch_end=record)])
    with running_tensorboard(tmp_path) as tb:
        def scalars(run, tag, count):
            found = tb.get_json("data/plugin/scalars/scalars", run=run, tag=tag)
            return found if len(found) == count else None

        keras_loss = {step: value for _, step, value in
                      tb.wait_for(lambda: scalars("train", "epoch_loss", 7), timeout=60)}
        maps = {step: value for _, step, value in
                tb.wait_for(lambda: scalars("gradcam", "gradcam/probe_00/score", 4))}
        assert sorted(maps) == [-1, 0, 3, 6]  # untrained, then histogram_freq=3's epochs
        assert served_steps(tb, "gradcam", "gradcam/probe_00") == [-1, 0, 3, 6]
        for step in (0, 3, 6):
            assert keras_loss[step] == pytest.approx(losses[step], rel=1e-5)
            assert maps[step] == pytest.approx(scores[step], rel=1e-4)


LONG_EPOCHS = 30
LONG_PROBES = 2
CELL = 64  # display_size: each overlay (and timeline cell) is 64 x 64


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    log_root = tmp_path_factory.mktemp("long")
    x, y = images(8, seed=5), np.arange(8) % 5
    model = small_cnn()
    model.compile(keras.optimizers.Adam(3e-2), "sparse_categorical_crossentropy")
    cam = gc.GradCamCallback(x[:LONG_PROBES], display_size=CELL, log_dir=log_root / "gradcam")
    model.fit(x, y, epochs=LONG_EPOCHS, batch_size=8, callbacks=[cam], verbose=0)
    return log_root


@pytest.mark.backend_agnostic
def test_default_tensorboard_reaches_every_epoch_through_the_timelines(long_run):
    logged = list(range(-1, LONG_EPOCHS))
    overlays = {(r.tag, r.step): np.asarray(Image.open(io.BytesIO(r.value)).convert("RGB"))
                [:CELL, CELL + 4:2 * CELL + 4]
                for r in read_events(long_run / "gradcam") if r.kind == "image"}
    # 31 logged steps, at most 12 columns: every 4th from the first, and the latest
    columns = [-1, 3, 7, 11, 15, 19, 23, 27, 29]
    with running_tensorboard(long_run, samples_per_plugin=None, load_fast=None,
                             startup_timeout=300) as tb:
        for i in range(LONG_PROBES):
            tag = f"gradcam/timeline/probe_{i:02d}"
            entries = tb.wait_for(lambda tag=tag: [
                e for e in tb.get_json("data/plugin/images/images", run="gradcam", tag=tag,
                                       sample=0) if e["step"] == logged[-1]], timeout=90)
            timeline = np.asarray(Image.open(io.BytesIO(tb.get_bytes(
                "data/plugin/images/individualImage?" + entries[0]["query"]))).convert("RGB"))
            top = LABEL_HEIGHT + 4  # the epoch labels
            assert timeline.shape == (top + CELL, len(columns) * (CELL + 4) - 4, 3)
            for c, step in enumerate(columns):
                cell = timeline[top:, c * (CELL + 4):c * (CELL + 4) + CELL]
                assert np.array_equal(cell, overlays[(f"gradcam/probe_{i:02d}", step)]), step
                assert (timeline[:top - 4, c * (CELL + 4):(c + 1) * (CELL + 4) - 4] < 100).any()
            # why the timeline exists: a default TensorBoard drops most steps of a probe tag
            assert len(served_steps(tb, "gradcam", f"gradcam/probe_{i:02d}")) <= 10


@pytest.mark.backend_agnostic
def test_documented_samples_per_plugin_serves_every_step(long_run):
    from gradcam_callbacks.watch.tags import SAMPLES_PER_PLUGIN

    logged = list(range(-1, LONG_EPOCHS))
    image_tags = [f"gradcam/{kind}{i:02d}" for kind in ("probe_", "timeline/probe_")
                  for i in range(LONG_PROBES)] + ["gradcam/grid"]
    with running_tensorboard(long_run, samples_per_plugin=SAMPLES_PER_PLUGIN,
                             load_fast=None, startup_timeout=300) as tb:
        for tag in image_tags:
            assert tb.wait_for(lambda tag=tag: served_steps(tb, "gradcam", tag) == logged,
                               timeout=90), tag


KILLED_RUN = """
import sys
import numpy as np
import keras
sys.path.insert(0, {tests!r})
from models import images, small_cnn
import gradcam_callbacks as gc
from gradcam_callbacks.watch.tensorboard import read_events
x, y = images(64, seed=6), np.arange(64) % 5
model = small_cnn()
model.compile("adam", "sparse_categorical_crossentropy")
cam = gc.GradCamCallback((x[:4], y[:4]), targets="true", probe_boxes=[[0, 0, 8, 8]] * 4,
                         log_dir={log_dir!r}, freq=1)
said = keras.callbacks.LambdaCallback(
    on_epoch_end=lambda epoch, logs: print("ended", epoch, flush=True))
model.fit(x, y, epochs=200, batch_size=8, callbacks=[cam, said], verbose=0)
"""


@pytest.mark.backend_agnostic
def test_sigkill_mid_run_keeps_every_epoch_logged_before_it(tmp_path):
    import signal
    import subprocess
    import sys

    from tensorboard.backend.event_processing import event_accumulator

    from gradcam_callbacks.watch.sheet import probe_frames

    log_dir = tmp_path / "gradcam"
    script = KILLED_RUN.format(tests=os.path.dirname(__file__), log_dir=str(log_dir))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    ended = -1
    try:
        for line in process.stdout:
            ended = int(line.split()[1])
            if ended == 4:
                process.send_signal(signal.SIGKILL)  # while step 4 is being written
                break
    finally:
        process.kill()
        rest = process.communicate(timeout=60)[0]
    ended = max([ended] + [int(line.split()[1]) for line in rest.splitlines()])
    assert process.returncode == -signal.SIGKILL and ended >= 4
    # when epoch e's end was printed, the callback had finished writing step e - 1
    written = list(range(-1, ended))
    accumulator = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    for i in range(4):
        for tag in (f"gradcam/probe_{i:02d}", f"gradcam/timeline/probe_{i:02d}",
                    f"gradcam/probe_{i:02d}/score", f"gradcam/probe_{i:02d}/box_mass"):
            steps = [event.step for event in accumulator.Tensors(tag)]
            assert steps[:len(written)] == written, tag
    tags, steps, frames = probe_frames(log_dir)
    assert tags == [f"gradcam/probe_{i:02d}" for i in range(4)]
    assert steps[:len(written)] == written
    for (_, step), frame in frames.items():
        if step in written:
            frame.load()  # every image before the kill decodes
