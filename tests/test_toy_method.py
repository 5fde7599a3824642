"""Issue 24's promise: a new method with one option is one file (tests/toy_method.py) plus
its registry line, and explain, the callback and the command line (with a flag learnt from
the option) all run it, with no other edit."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from models import images, small_cnn
from PIL import Image
from toy_method import PowerCAM

import gradcam_callbacks as gc
from gradcam_callbacks import methods
from gradcam_callbacks.cli import main


@pytest.fixture(autouse=True)
def registered():
    methods.register(PowerCAM)  # the registry line
    yield
    del methods.METHODS[PowerCAM.name]


def powered(maps: np.ndarray, power: int) -> np.ndarray:
    """Grad-CAM's normalised maps raised to ``power``, each scaled to a peak of 1 (the
    engine divides by ``peak + 1e-7`` before and after, so compare shapes at peak 1)."""
    found = np.maximum(maps, 0) ** power
    return found / found.max(axis=(-2, -1), keepdims=True)


def peak_one(maps: np.ndarray) -> np.ndarray:
    return maps / maps.max(axis=(-2, -1), keepdims=True)


def test_explain_runs_the_toy_method_by_name_and_by_value():
    model, x = small_cnn(), images(2, seed=1)
    base = gc.explain_predictions(model, x, layer="relu1", method="gradcam")
    by_name = gc.explain_predictions(model, x, layer="relu1", method="powercam")
    by_value = gc.explain_predictions(model, x, layer="relu1", method=PowerCAM(power=3))
    for b, two, three in zip(base, by_name, by_value):
        assert two.method == three.method == "Power-CAM"
        grad = b.targets[0].heatmap
        np.testing.assert_allclose(peak_one(two.targets[0].heatmap), powered(grad, 2), atol=1e-5)
        np.testing.assert_allclose(peak_one(three.targets[0].heatmap), powered(grad, 3), atol=1e-5)
    assert not np.allclose(by_name[0].targets[0].heatmap, base[0].targets[0].heatmap)
    with pytest.raises(ValueError, match="power must be a positive integer or None; received 0"):
        PowerCAM(power=0)


def test_the_callback_runs_it_beside_gradcam_from_one_pass(tmp_path):
    x, y = images(8, seed=2), np.arange(8) % 5
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    cam = gc.GradCamCallback(x[:2], layer="relu1", log_dir=tmp_path,
                             method=["gradcam", PowerCAM(power=3)])
    model.fit(x, y, epochs=1, batch_size=8, callbacks=[cam], verbose=0)
    (first, grad, *_), (second, power, *_) = cam.explain_probes_by_method()
    assert (first, second) == ("gradcam", "powercam")
    np.testing.assert_allclose(peak_one(power), powered(grad, 3), atol=1e-5)
    assert cam.get_config()["method"] == ["gradcam", {"name": "powercam", "power": 3}]
    with pytest.raises(ValueError, match="power must be a positive integer"):
        gc.GradCamCallback(x[:2], method={"name": "powercam", "power": -1})


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("toy")
    model = small_cnn()
    model.save(folder / "small.keras")
    Image.fromarray((images(1, seed=4)[0] * 255).astype(np.uint8)).save(folder / "a.png")
    return folder


@pytest.mark.backend_agnostic
def test_the_command_line_learns_its_flag(saved, tmp_path, capsys):
    from gradcam_callbacks.cli.parse import build_parser

    explain = build_parser()._subparsers._group_actions[0].choices["explain"]
    assert "powercam only: raise Grad-CAM's map" in explain.format_help()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(["explain", str(saved / "small.keras"), str(saved / "a.png"), "--out",
                       str(tmp_path / "out"), "--layer", "relu1", "--quiet", "--preprocess",
                       "unit", "--method", "powercam", "--power", "3"])
    assert status == 0
    [record] = map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())
    assert record["method"] == "powercam"
    assert (tmp_path / "out" / record["output"]).stat().st_size > 0
    status = main(["explain", str(saved / "small.keras"), str(saved / "a.png"), "--out",
                   str(tmp_path / "bad"), "--power", "3"])
    assert status == 2
    assert "--power applies to --method powercam only" in capsys.readouterr().err
