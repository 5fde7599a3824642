"""End to end: a short fit with GradCamCallback, then a real TensorBoard server reads the
run back over HTTP, and a real headless Chromium shows the images dashboard."""

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
        assert set(probe_tags + ["gradcam/grid"]) <= set(tags)
        assert "input (left)" in tags["gradcam/probe_00"]["description"]
        for tag in probe_tags:
            def all_steps(tag=tag):
                found = tb.get_json("data/plugin/images/images", run="gradcam", tag=tag,
                                    sample=0)
                return found if len(found) == EPOCHS + 1 else None

            entries = tb.wait_for(all_steps)
            assert [e["step"] for e in entries] == list(range(EPOCHS + 1))
            for entry in entries:
                png = tb.get_bytes("data/plugin/images/individualImage?" + entry["query"])
                picture = Image.open(io.BytesIO(png))
                assert picture.format == "PNG"
                assert picture.size == (128 * 2 + 4, 128 + 2 + 2 * 12)
                assert np.asarray(picture).std() > 0  # not a blank image
        scalar_tags = tb.wait_for(
            lambda: tb.get_json("data/plugin/scalars/tags").get("gradcam") or None)
        expected = {f"{t}/{s}" for t in probe_tags for s in ("score", "box_mass",
                                                             "pointing_hit", "change")}
        expected |= {"gradcam/pointing_game", "gradcam/mean_box_mass", "gradcam/mean_change"}
        assert expected <= set(scalar_tags)
        series = tb.get_json("data/plugin/scalars/scalars", run="gradcam",
                             tag="gradcam/probe_00/score")
        assert [point[1] for point in series] == list(range(EPOCHS + 1))
        assert all(0 <= point[2] <= 1 for point in series)


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
