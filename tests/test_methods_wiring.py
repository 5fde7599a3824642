"""Issue 13's wiring: the CAM methods in GradCamCallback (read back through a real
TensorBoard) and in ``gradcam-callbacks explain`` (--method, --max-channels)."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from models import images, small_cnn
from PIL import Image
from tb_server import running_tensorboard

import gradcam_callbacks as gc
from gradcam_callbacks import methods
from gradcam_callbacks.cli import main
from gradcam_callbacks.cli.parse import build_parser
from gradcam_callbacks.explain import Plan
from gradcam_callbacks.watch import tags

EPOCHS = 2
PROBES = 2
BOTH = ["gradcam", "gradcam++"]


def fit(log_dir: Path, **options) -> gc.GradCamCallback:
    x, y = images(16, seed=5), np.arange(16) % 5
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    # relu1 is followed by a convolution: its gradients vary over space, so the methods differ
    cam = gc.GradCamCallback((x[:PROBES], y[:PROBES]), targets="true", layer="relu1",
                             probe_boxes=[[2, 2, 10, 10]] * PROBES, log_dir=log_dir, **options)
    model.fit(x, y, epochs=EPOCHS, batch_size=8, callbacks=[cam], verbose=0)
    return cam


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two")
    fit(root / "gradcam", method=BOTH)
    return root


def served(tb, tag: str, count: int) -> list[dict]:
    def all_steps():
        found = tb.get_json("data/plugin/images/images", run="gradcam", tag=tag, sample=0)
        return found if len(found) == count else None

    return tb.wait_for(all_steps, timeout=60)


def overlay(tb, entry: dict) -> np.ndarray:
    """The right half (the overlay) of a probe image, above its caption."""
    png = tb.get_bytes("data/plugin/images/individualImage?" + entry["query"])
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return picture[:128, -128:]


def test_two_methods_write_one_image_per_method_per_step(two_methods):
    steps = list(range(-1, EPOCHS))
    with running_tensorboard(two_methods) as tb:
        expected = {tags.section_tag("grid", method) for method in (None, "gradcam++")}
        for i in range(PROBES):
            for method in (None, "gradcam++"):  # the first method keeps the plain tags
                expected |= {tags.probe_tag(i, method), tags.timeline_tag(i, method)}

        def loaded():
            found = tb.get_json("data/plugin/images/tags").get("gradcam", {})
            return found if expected <= set(found) else None

        image_tags = tb.wait_for(loaded, timeout=60)
        assert len(image_tags) == len(expected)  # and nothing else
        for tag in expected:
            assert [e["step"] for e in served(tb, tag, len(steps))] == steps
        assert "gradcam/gradcam/probe_00" not in image_tags
        assert "Grad-CAM++ overlay" in image_tags["gradcam/gradcam++/probe_00"]["description"]
        assert "Grad-CAM overlay" in image_tags["gradcam/probe_00"]["description"]
        plain = served(tb, "gradcam/probe_00", len(steps))
        plus = served(tb, "gradcam/gradcam++/probe_00", len(steps))
        differences = [np.abs(overlay(tb, a) - overlay(tb, b)).mean()
                       for a, b in zip(plain, plus)]
        assert min(differences) > 1.0, differences
        scalar_tags = tb.wait_for(
            lambda: tb.get_json("data/plugin/scalars/tags").get("gradcam") or None)
        for method in (None, "gradcam++"):
            assert {tags.probe_scalar_tag(0, "score", method),
                    tags.probe_scalar_tag(0, "box_mass", method),
                    tags.section_tag("pointing_game", method)} <= set(scalar_tags)
        plain_scores = tb.get_json("data/plugin/scalars/scalars", run="gradcam",
                                   tag="gradcam/probe_00/score")
        plus_scores = tb.get_json("data/plugin/scalars/scalars", run="gradcam",
                                  tag="gradcam/gradcam++/probe_00/score")
        assert [p[1] for p in plus_scores] == steps
        # one pass: the same model scores, whatever the method
        assert [p[2] for p in plus_scores] == pytest.approx([p[2] for p in plain_scores])


def test_explain_probes_by_method_matches_explain_predictions(tmp_path):
    cam = fit(tmp_path / "gradcam", method=["layercam", "scorecam"], max_channels=4)
    found = cam.explain_probes_by_method()
    assert [name for name, *_ in found] == ["layercam", "scorecam"]
    for name, heatmaps, targets, _ in found:
        options = {"max_channels": 4} if name == "scorecam" else {}
        expected = gc.explain_predictions(cam.model, cam.probe_x, targets=targets.tolist(),
                                          layer="relu1", method=name, **options)
        for expl, heatmap in zip(expected, heatmaps):
            np.testing.assert_allclose(expl.targets[0].heatmap, heatmap, atol=1e-5)
    # the option lives in the method's value, and get_config stores it there
    assert cam.get_config()["method"] == ["layercam", {"name": "scorecam", "max_channels": 4}]


def test_batch_size_sets_scorecams_chunk_of_masked_inputs(tmp_path, monkeypatch):
    chunks = []
    score = Plan.score

    def counted(self, inputs, functions=None):  # the real compiled forward, batch sizes noted
        chunks.append(len(inputs))
        return score(self, inputs, functions)

    monkeypatch.setattr(Plan, "score", counted)
    cam = fit(tmp_path / "gradcam", method="scorecam", max_channels=4, batch_size=3)
    assert cam.get_config()["batch_size"] == 3
    # 3 logged steps (-1, 0, 1) x 2 probes x 4 channels: three chunks of 3 per step
    assert chunks == [3] * 3 * (EPOCHS + 1)
    chunks.clear()
    (_, heatmaps, targets, _), = cam.explain_probes_by_method()
    assert chunks == [3, 3, 3]
    expected = gc.explain_predictions(cam.model, cam.probe_x, targets=targets.tolist(),
                                      layer="relu1", method="scorecam", max_channels=4)
    assert chunks[3:] == [8]  # by default one chunk: 8 masked 16x16 inputs are far below 2 MiB
    for expl, heatmap in zip(expected, heatmaps):
        np.testing.assert_allclose(expl.targets[0].heatmap, heatmap, atol=1e-5)


def test_single_method_keeps_todays_tags(tmp_path):
    from gradcam_callbacks.watch.tensorboard import read_events

    fit(tmp_path / "run", method="layercam")
    written = {record.tag for record in read_events(tmp_path / "run")}
    assert {"gradcam/probe_00", "gradcam/timeline/probe_00", "gradcam/grid",
            "gradcam/probe_00/score", "gradcam/pointing_game"} <= written
    assert not [t for t in written if "layercam" in t]


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("method, options, error, words", [
    ("gradcam+", {}, ValueError, "method must be one of"),
    (3, {}, TypeError, "method must be"),
    ([], {}, ValueError, "at least one"),
    (["gradcam", "gradcam"], {}, ValueError, "repeated"),
    ({"gradcam"}, {}, TypeError, "or a list of them; received set"),
    ("gradcam", {"max_channels": 8}, ValueError, "max_channels applies to method='scorecam'"),
    (["scorecam"], {"max_channels": 0}, ValueError, "max_channels must be a positive"),
    ("scorecam", {"batch_size": 0}, ValueError,
     r"batch_size must be a positive integer or None; received batch_size=0"),
    ("scorecam", {"batch_size": "8"}, TypeError,
     r"batch_size must be a positive integer or None; received str: '8'"),
    ("scorecam", {"batch_size": True}, TypeError,
     r"batch_size must be a positive integer or None; received bool: True"),
])
def test_bad_method_raises_before_any_epoch(method, options, error, words):
    with pytest.raises(error, match=words):
        gc.GradCamCallback(images(2), method=method, **options)


@pytest.mark.backend_agnostic
def test_cli_method_names_are_the_registry():
    parser = build_parser()
    explain = next(a for a in parser._subparsers._group_actions[0].choices["explain"]._actions
                   if a.dest == "method")
    assert list(explain.choices) == sorted(methods.METHODS)


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    import keras

    folder = tmp_path_factory.mktemp("cli")
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="feat")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(h), name="tiny")
    from models import set_numpy_weights

    set_numpy_weights(model, seed=3)
    model.save(folder / "tiny.keras")
    pictures = folder / "pictures"
    pictures.mkdir()
    rng = np.random.RandomState(1)
    for name in ("a", "b"):
        Image.fromarray(rng.randint(0, 256, (16, 16, 3), np.uint8)).save(pictures / f"{name}.png")
    return folder


def explain(saved: Path, out: Path, *options: str) -> dict[str, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(["explain", str(saved / "tiny.keras"), str(saved / "pictures"),
                       "--out", str(out), "--layer", "feat", "--quiet", *options])
    assert status == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    return {Path(r["file"]).name: r for r in map(json.loads, lines)}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_cli_scorecam_with_max_channels(saved, tmp_path):
    import keras

    found = explain(saved, tmp_path / "out", "--method", "scorecam", "--max-channels", "8")
    assert sorted(found) == ["a.png", "b.png"]
    model = keras.saving.load_model(saved / "tiny.keras", compile=False)
    for name, record in found.items():
        assert record["method"] == "scorecam"
        assert record["outputs"] == {"scorecam": record["output"]}
        assert record["output"] == name.replace(".png", ".gradcam.png")
        doc = pixels(saved / "pictures" / name).astype("float32")
        expl = gc.explain_prediction(model, doc[None], layer="feat", method="scorecam",
                                     max_channels=8)
        assert expl.method == "Score-CAM"
        drawn = pixels(tmp_path / "out" / record["output"])
        expected = np.asarray(gc.format_as_image(expl).convert("RGB")).astype(int)
        assert np.abs(drawn - expected).max() <= 1


def test_cli_two_methods_one_png_each(saved, tmp_path):
    found = explain(saved, tmp_path / "two", "--method", "gradcam", "--method", "layercam")
    single = explain(saved, tmp_path / "one", "--method", "layercam")
    for name, record in found.items():
        stem = name[:-len(".png")]
        assert record["method"] == "gradcam"
        assert record["outputs"] == {"gradcam": f"{stem}.gradcam.png",
                                     "layercam": f"{stem}.layercam.gradcam.png"}
        first = pixels(tmp_path / "two" / f"{stem}.gradcam.png")
        second = pixels(tmp_path / "two" / f"{stem}.layercam.gradcam.png")
        assert np.abs(first - second).mean() > 1.0
        # the further method's PNG is what that method alone draws
        np.testing.assert_array_equal(second, pixels(tmp_path / "one" / single[name]["output"]))
        assert record["targets"] == single[name]["targets"]


@pytest.mark.backend_agnostic
def test_cli_rejects_max_channels_without_scorecam(saved, tmp_path, capsys):
    status = main(["explain", str(saved / "tiny.keras"), str(saved / "pictures"), "--out",
                   str(tmp_path / "x"), "--method", "gradcam", "--max-channels", "4",
                   "--method", "gradcam"])
    assert status == 2
    err = capsys.readouterr().err
    assert "--max-channels applies to --method scorecam only" in err
    assert "--method gradcam is given more than once" in err
    assert not (tmp_path / "x").exists()
