"""Faithfulness metrics: deletion / insertion by hand and against Xplique 2.0.2, ROAD by hand,
the demo CNN's Grad-CAM against random maps, the cascading-randomisation sanity check."""

from __future__ import annotations

import sys
import types

import keras
import numpy as np
import pytest

from gradcam_callbacks import backends, explain_predictions
from gradcam_callbacks.demo import build_model, load_data, pretrained
from gradcam_callbacks.faithfulness import (
    causal_curves,
    curve_area,
    deletion,
    insertion,
    probe_faithfulness,
    road,
    sanity_check,
)
from gradcam_callbacks.pixels import baseline_images, impute, sobel_maps, spearman_rows
from gradcam_callbacks.resample import resize_heatmaps
from gradcam_callbacks.targets import ClassScore
from tests.models import images, small_cnn

# score = x00 + 2 x01 + 3 x10 + 4 x11 (row-major), a linear model whose areas are sums
WEIGHTS = np.array([[1.0], [2.0], [3.0], [4.0]])
ONES = np.ones((1, 2, 2, 1), "float32")
DECREASING = np.array([[[4.0, 3.0], [2.0, 1.0]]])  # remove (0,0), (0,1), (1,0), (1,1)


def linear_toy() -> keras.Model:
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Conv2D(1, 1, use_bias=False),
                              keras.layers.Flatten(), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].set_weights([np.ones((1, 1, 1, 1), "float32")])
    model.layers[2].set_weights([WEIGHTS.astype("float32")])
    return model


def test_deletion_and_insertion_of_a_2x2_toy_by_hand():
    model = linear_toy()
    # deletion towards 0 takes 10 -> 9 -> 7 -> 4 -> 0: area (9.5 + 8 + 5.5 + 2) / 4
    assert causal_curves(model, ONES, DECREASING, [0], steps=4).tolist() == [[10, 9, 7, 4, 0]]
    assert deletion(model, ONES, DECREASING, [0], steps=4) == pytest.approx([6.25])
    # insertion from 0 reveals 0 -> 1 -> 3 -> 6 -> 10: area (0.5 + 2 + 4.5 + 8) / 4
    assert insertion(model, ONES, DECREASING, [0], steps=4) == pytest.approx([3.75])
    # ties: the later pixel first, (0,1) before (0,0), (1,1) before (1,0): 10, 8, 7, 3, 0
    tied = np.array([[[1.0, 1.0], [0.0, 0.0]]])
    assert causal_curves(model, ONES, tied, [0], steps=4).tolist() == [[10, 8, 7, 3, 0]]
    assert deletion(model, ONES, tied, [0], steps=4) == pytest.approx([5.75])
    # steps=3 on 4 pixels: linspace(0, 4, 4) = 0, 1.33, 2.67, 4 -> 0, 1, 2, 4 pixels
    assert causal_curves(model, ONES, DECREASING, [0], steps=3).tolist() == [[10, 9, 7, 0]]
    # a low-resolution map is resized bilinearly (pixel centres aligned) before ranking:
    # a 1x2 map [1, 0] becomes [[1, 0], [1, 0]] at 2x2: the left column goes first
    assert causal_curves(model, ONES, np.array([[[1.0, 0.0]]]), [0], steps=2).tolist() == [
        [10, 6, 0]]
    # None: the top (only) class; batch_size=1 forwards one input at a time, same numbers
    assert deletion(model, ONES, DECREASING, steps=4, batch_size=1) == pytest.approx([6.25])


def test_baselines_a_number_mean_blur_and_a_callable():
    model = linear_toy()
    picture = np.array([[[[0.0], [5.0]], [[5.0], [2.0]]]], "float32")  # score 33, mean 3
    # towards 1: 33 -> 34 -> 26 -> 14 -> 10 (each removed pixel becomes 1)
    assert causal_curves(model, picture, DECREASING, [0], steps=4, baseline=1.0).tolist() == [
        [33, 34, 26, 14, 10]]
    # insertion from each image's mean colour (3 everywhere, score 30)
    assert causal_curves(model, picture, DECREASING, [0], steps=4, mode="insertion",
                         baseline="mean").tolist() == [[30, 27, 31, 37, 33]]
    assert causal_curves(model, picture, DECREASING, [0], steps=1,
                         baseline=lambda x: x * 2).tolist() == [[33, 66]]
    blurred = baseline_images(picture, "blur")
    assert blurred.shape == picture.shape and blurred.std() < picture.std()
    assert blurred.mean() == pytest.approx(picture.mean(), abs=1e-6)  # reflected edges
    wide = np.zeros((1, 24, 24, 1))
    wide[0, 12, 12] = 1.0
    spread = baseline_images(wide, "blur")[0, :, :, 0]
    assert spread.sum() == pytest.approx(1.0) and spread[12, 12] < 0.02 < spread[12, 10] * 2


def test_score_functions_work_as_targets():
    model = small_cnn(input_shape=(8, 8, 3), classes=4)
    x = images(3, (8, 8, 3))
    maps = np.random.RandomState(1).rand(3, 4, 4)
    by_index = deletion(model, x, maps, [2, 2, 2], steps=5)
    assert deletion(model, x, maps, ClassScore(2), steps=5) == pytest.approx(by_index, abs=1e-6)
    top = [int(k) for k in np.argmax(model.predict(x, verbose=0), axis=-1)]
    assert len(set(top)) > 1  # None reads each image's own top class
    assert deletion(model, x, maps, None, steps=5) == pytest.approx(
        deletion(model, x, maps, top, steps=5), abs=1e-6)
    doubled = insertion(model, x, maps, lambda y: 2 * y[:, 2], steps=5)
    assert doubled == pytest.approx(2 * insertion(model, x, maps, [2, 2, 2], steps=5),
                                    abs=1e-6)


def _xplique_fidelity(stable: bool):
    """Xplique 2.0.2's metrics.fidelity module, imported without the package's __init__
    (which pulls tensorflow-probability, which wants tf_keras). With ``stable``, its numpy
    gets a stable argsort: Xplique calls numpy's default one, whose order within ties is
    up to the CPU (AVX-512's sort is not stable), so ties compare only with both orders
    defined."""
    pytest.importorskip("tensorflow")
    import importlib.util

    spec = importlib.util.find_spec("xplique")
    if spec is None:
        pytest.skip("xplique is not installed (pip install --no-deps xplique==2.0.2)")
    import pathlib

    root = pathlib.Path(spec.origin).parent
    saved = {k: v for k, v in sys.modules.items() if k == "xplique" or k.startswith("xplique.")}
    for name, path in (("xplique", root), ("xplique.metrics", root / "metrics")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    try:
        import xplique.metrics.fidelity as fidelity
    finally:
        for name in [k for k in sys.modules if k == "xplique" or k.startswith("xplique.")]:
            del sys.modules[name]
        sys.modules.update(saved)
    if stable:
        fidelity.np = types.SimpleNamespace(**{
            name: getattr(np, name) for name in dir(np) if not name.startswith("__")})
        fidelity.np.argsort = lambda a, axis=-1: np.argsort(a, axis=axis, kind="stable")
    return fidelity


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="Xplique 2.0.2 runs on TensorFlow only")
@pytest.mark.parametrize("ties", [False, True])
def test_mean_area_equals_xplique_202(ties):
    fidelity = _xplique_fidelity(stable=ties)
    model = small_cnn(input_shape=(12, 12, 3), classes=5)
    x = images(6, (12, 12, 3), seed=3)
    rng = np.random.RandomState(4)
    # ties: maps quantised to 3 levels at 6x6, resized to 12x12: flat regions cut by steps
    maps = np.round(rng.rand(6, 6, 6) * 2) / 2 if ties else rng.rand(6, 12, 12)
    targets = [0, 3, 1, 4, 2, 3]
    one_hot = np.eye(5, dtype="float32")[targets]
    resized = resize_heatmaps(maps, (12, 12))
    if ties:
        assert len(np.unique(resized[0])) < resized[0].size / 2  # many ties
    for steps, baseline in ((10, 0.0), (7, 0.5), (144, 0.0)):
        for name, ours in (("Deletion", deletion), ("Insertion", insertion)):
            theirs = getattr(fidelity, name)(model, x, one_hot, batch_size=16, steps=steps,
                                             baseline_mode=baseline).evaluate(resized)
            mine = ours(model, x, maps, targets, steps=steps, baseline=baseline)
            assert mine.mean() == pytest.approx(float(theirs), abs=1e-5), (name, steps)
    # a callable baseline (Xplique calls a plain function with the inputs)

    def half(inputs):
        return inputs * 0.5

    theirs = fidelity.Deletion(model, x, one_hot, steps=10, baseline_mode=half).evaluate(resized)
    assert deletion(model, x, maps, targets, baseline=half).mean() == pytest.approx(
        float(theirs), abs=1e-5)


def test_road_of_a_2x2_toy_by_hand():
    model = linear_toy()
    picture = np.array([[[[0.0], [5.0]], [[5.0], [2.0]]]], "float32")  # score 33
    found = road(model, picture, DECREASING, [0], percentages=(25, 50), noise=0.0)
    # MoRF 25 %: (0,0) <- (1/6 * 5 + 1/6 * 5 + 1/12 * 2) / (5/12) = 4.4: score 37.4
    # MoRF 50 %: a=(0,0), b=(0,1): 5a = 2b + 12, 5b = 2a + 9 -> b = 69/21, a = (2b + 12)/5
    b = 69 / 21
    a = (2 * b + 12) / 5
    assert found.most_relevant_first[0] == pytest.approx([37.4, a + 2 * b + 23], abs=1e-4)
    # LeRF 25 %: (1,1) <- (5/6 + 5/6 + 0/12) / (5/12) = 4: score 41
    # LeRF 50 %: c=(1,0), d=(1,1): 5d = 2c + 10, 5c = 2d + 5 -> c = 45/21
    c = 45 / 21
    d = (2 * c + 10) / 5
    assert found.least_relevant_first[0] == pytest.approx([41, 10 + 3 * c + 4 * d], abs=1e-4)
    assert found.combined[0] == pytest.approx(
        np.mean([(41 - 37.4) / 2, (10 + 3 * c + 4 * d - a - 2 * b - 23) / 2]), abs=1e-4)
    # the noise is drawn per input from the seed: the same whatever the chunking
    noisy = road(model, picture, DECREASING, [0], percentages=(25, 50), noise=0.5, seed=3)
    again = road(model, picture, DECREASING, [0], percentages=(25, 50), noise=0.5, seed=3,
                 batch_size=1)
    assert np.allclose(noisy.most_relevant_first, again.most_relevant_first)
    assert not np.allclose(noisy.most_relevant_first, found.most_relevant_first)


def test_impute_fills_a_hole_with_the_mean_of_its_neighbours():
    rng = np.random.RandomState(0)
    x = rng.rand(2, 5, 6, 3)
    removed = np.zeros((2, 5, 6), bool)
    removed[0, 2, 3] = removed[1, 0, 0] = True
    filled = impute(x, removed)
    weights = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12
    expected = (x[0, 1:4, 2:5] * weights[..., None]).sum(axis=(0, 1))  # interior: all 8
    assert filled[0, 2, 3] == pytest.approx(expected)
    corner = (2 * x[1, 0, 1] + 2 * x[1, 1, 0] + x[1, 1, 1]) / 5
    assert filled[1, 0, 0] == pytest.approx(corner)
    assert np.array_equal(filled[~removed], x[~removed])
    # a batch is solved 8 images per sparse system: the same numbers as one at a time
    many = rng.rand(20, 7, 5, 2)
    holes = rng.rand(20, 7, 5) < 0.6
    alone = np.concatenate([impute(many[i:i + 1], holes[i:i + 1], 0.1, [(0, i)])
                            for i in range(20)])
    assert np.allclose(impute(many, holes, 0.1, [(0, i) for i in range(20)]), alone)


@pytest.fixture(scope="module")
def digits():
    _, test_set = load_data(num_train=1, num_test=48)
    return test_set


def _gradcam_maps(model, x, targets):
    expls = explain_predictions(model, x, targets=targets, batch_size=48)
    return np.stack([e.targets[0].heatmap for e in expls])


def test_gradcam_beats_a_random_map_on_the_trained_demo_cnn_and_not_on_an_untrained_one(
        digits):
    targets = [int(t) for t in digits.y]
    random_maps = np.random.RandomState(0).rand(len(digits.x), 12, 12)
    gaps = {}
    for name in ("trained", "untrained"):
        if name == "trained":
            model = pretrained()
        else:
            keras.utils.set_random_seed(0)
            model = build_model((48, 48, 1))
        maps = _gradcam_maps(model, digits.x, targets)
        gaps[name] = {
            "insertion": (insertion(model, digits.x, maps, targets)
                          - insertion(model, digits.x, random_maps, targets)).mean(),
            "deletion": (deletion(model, digits.x, random_maps, targets, baseline="blur")
                         - deletion(model, digits.x, maps, targets, baseline="blur")).mean(),
        }
    assert gaps["trained"]["insertion"] > 0.3 and gaps["trained"]["deletion"] > 0.1, gaps
    assert abs(gaps["untrained"]["insertion"]) < 0.02, gaps
    assert abs(gaps["untrained"]["deletion"]) < 0.02, gaps


def test_sanity_check_decorrelates_gradcam_and_restores_the_weights(digits):
    model = pretrained()
    before = model.get_weights()
    x = digits.x[:16]
    check = sanity_check(model, x, [int(t) for t in digits.y[:16]],
                         methods=("gradcam", "eigencam"))
    assert check.layers[0] == "logits" and len(check.layers) == 8  # 4 convs, 3 BNs, Dense
    assert check.correlations["gradcam"].shape == (8, 16)
    assert check.mean("gradcam").max() < 0.5, check.mean("gradcam")
    # Eigen-CAM reads the activations alone: randomising the head leaves it untouched
    assert check.mean("eigencam")[0] == pytest.approx(1.0)
    after = model.get_weights()
    assert all(np.array_equal(b, a) for b, a in zip(before, after))
    trained = _gradcam_maps(model, x, [int(t) for t in digits.y[:16]])
    assert np.allclose(_gradcam_maps(model, x, [int(t) for t in digits.y[:16]]), trained)


def test_spearman_rows_and_sobel_maps():
    rng = np.random.RandomState(0)
    a = rng.rand(4, 30)
    assert spearman_rows(a, a) == pytest.approx(np.ones(4))
    assert spearman_rows(a, -a) == pytest.approx(-np.ones(4))
    assert spearman_rows(a, a ** 3 + 2) == pytest.approx(np.ones(4))  # ranks only
    assert np.isnan(spearman_rows(a[:1], np.zeros((1, 30)))[0])
    x = np.zeros((1, 6, 6, 1))
    x[0, 2:4, 2:4] = 1.0
    edges = sobel_maps(x)[0]
    assert edges[0, 0] == 0 and edges[2, 1] > 0 and edges.shape == (6, 6)


def test_repeated_calls_reuse_the_compiled_forward():
    model = small_cnn(input_shape=(8, 8, 3), classes=4)
    x = images(5, (8, 8, 3))
    maps = np.random.RandomState(1).rand(5, 4, 4)
    # 5 images x 7 steps = 35 inputs in 5 chunks of 7; ROAD's 5 x 18 = 90 in 12 of 8
    deletion(model, x, maps, [1] * 5, steps=6, batch_size=8)
    road(model, x, maps, [1] * 5, batch_size=8)
    before = backends.compilations()
    found = probe_faithfulness(model, x, maps, [1] * 5, steps=6, batch_size=8)
    road(model, x, maps, [1] * 5, batch_size=8, percentages=(30, 60, 90))  # 30 in 4 of 8
    assert backends.compilations() == before
    assert set(found) == {"insertion", "deletion"} and found["deletion"].shape == (5,)
    assert found["deletion"] == pytest.approx(deletion(model, x, maps, [1] * 5, steps=6))
    assert found["insertion"] == pytest.approx(insertion(model, x, maps, [1] * 5, steps=6))
    both = probe_faithfulness(model, x, maps, [1] * 5, names=("road", "insertion"))
    assert list(both) == ["road", "insertion"]
    assert both["road"] == pytest.approx(road(model, x, maps, [1] * 5).combined)
    assert curve_area(np.array([[1.0, 1.0]])) == pytest.approx([1.0])


@pytest.mark.parametrize("call, message", [
    (lambda m, x, h: deletion(m, x, h, [0], steps=0), "steps must be a positive integer"),
    (lambda m, x, h: deletion(m, x, h, [0], steps=2.5), "steps must be a positive integer"),
    (lambda m, x, h: deletion(m, x, h, [0], baseline="black"), "baseline must be a number"),
    (lambda m, x, h: deletion(m, x, h, [0], baseline=lambda i: i[:, :1]), "baseline (a callable)"),
    (lambda m, x, h: insertion(m, x, h[:, 0], [0]), "heatmaps must be a stack"),
    (lambda m, x, h: insertion(m, x, np.concatenate([h, h]), [0]), "one map per image (1)"),
    (lambda m, x, h: insertion(m, x, h, [[0, 0]]), "one target per image"),
    (lambda m, x, h: insertion(m, x, -h, [0]), "non-negative"),
    (lambda m, x, h: causal_curves(m, x, h, [0], mode="both"), "mode must be"),
    (lambda m, x, h: road(m, x, h, [0], percentages=(50, 100)), "percentages must be"),
    (lambda m, x, h: road(m, x, h, [0], noise=-1), "noise must be"),
    (lambda m, x, h: probe_faithfulness(m, x, h, [0], names=("mufidelity",)), "names must be"),
    (lambda m, x, h: sanity_check(m, x, [0], methods=("nope",)), "nope"),
    (lambda m, x, h: deletion(m, x[..., :0], h, [0]), "images"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises((TypeError, ValueError), match=None) as raised:
        call(linear_toy(), ONES, DECREASING)
    assert message in str(raised.value), str(raised.value)


def test_cli_explain_faithfulness_adds_the_areas_to_results_jsonl(digits, tmp_path):
    import json

    from PIL import Image

    from gradcam_callbacks.cli import main

    model = pretrained()
    model.save(tmp_path / "digits.keras")
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(3):
        Image.fromarray((digits.x[n, :, :, 0] * 255).round().astype("uint8")).save(
            folder / f"d{n}.png")
    out = tmp_path / "out"
    status = main(["explain", str(tmp_path / "digits.keras"), str(folder), "--out", str(out),
                   "--method", "gradcam", "--method", "layercam", "--faithfulness",
                   "--preprocess", "unit", "--quiet"])
    assert status == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        areas = line["faithfulness"]
        assert set(areas) == {"gradcam", "layercam"}
        assert set(areas["gradcam"]) == {"deletion", "insertion"}
        assert 0 <= areas["gradcam"]["deletion"] < areas["gradcam"]["insertion"] <= 1
    # the same areas as the library's on the same inputs and maps
    x = np.stack([np.asarray(Image.open(folder / f"d{n}.png"), np.float32)[..., None] / 255
                  for n in range(3)])
    lines.sort(key=lambda line: line["file"])
    targets = [line["target"] for line in lines]
    maps = _gradcam_maps(model, x, targets)
    assert [line["faithfulness"]["gradcam"]["insertion"] for line in lines] == pytest.approx(
        insertion(model, x, maps, targets), abs=1e-6)
    # without the option, no such key
    main(["explain", str(tmp_path / "digits.keras"), str(folder), "--out",
          str(tmp_path / "plain"), "--preprocess", "unit", "--quiet"])
    assert all("faithfulness" not in json.loads(line) for line in
               (tmp_path / "plain" / "results.jsonl").read_text().splitlines())
