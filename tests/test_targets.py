"""Score-function targets (issue 14): each ready-made score against gradients this test takes
with the backend's own autodiff (not through the engine), one score per doc in one batch,
every method, the same numbers on every backend, the callback through a real TensorBoard,
the command line, and the table of bad score functions refused before any pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from targets_reference import HEADS, PATH, cases, docs, heads_model, masks

import gradcam_callbacks as gc
from gradcam_callbacks import backends, methods
from gradcam_callbacks.explain import NonFiniteError, explain_raw
from gradcam_callbacks.methods import scorecam
from gradcam_callbacks.targets import (
    ClassScore,
    MultiLabelScore,
    RegressionScore,
    SegmentationScore,
)

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[1]
ops = keras.ops


@pytest.fixture(scope="module")
def heads():
    return heads_model()


def autodiff(function, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(function(a), d sum(function(a)) / d a)`` by the backend's own autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        a = tf.constant(a)
        with tf.GradientTape() as tape:
            tape.watch(a)
            values = function(a)
            total = tf.reduce_sum(values)
        return values.numpy(), tape.gradient(total, a).numpy()
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        values, vjp = jax.vjp(function, jnp.asarray(a))
        return np.asarray(values), np.asarray(vjp(jnp.ones_like(values))[0])
    import torch

    a = torch.tensor(a, requires_grad=True)
    values = function(a)
    (grad,) = torch.autograd.grad(values.sum(), a)
    return values.detach().numpy(), grad.numpy()


def replay(tails, head, score):
    """The score of ``head``'s output, as a function of the "feat" activations."""
    def function(a):
        for layer in tails[head]:
            a = layer(a)
        return score(a)
    return function


def features(model, x: np.ndarray) -> np.ndarray:
    return ops.convert_to_numpy(
        keras.Model(model.inputs[0], model.get_layer("feat").output)(x, training=False))


# ---------------------------------------------------------------- against autodiff

@pytest.mark.parametrize("case", sorted(cases()))
def test_each_ready_made_score_matches_the_backends_own_autodiff(heads, case):
    model, tails = heads
    head, targets = cases()[case]
    x = docs()
    raw = explain_raw(model, x, targets, "feat", HEADS.index(head))
    a = features(model, x)
    if isinstance(targets, list):  # one score per doc: each doc on its own
        pairs = [autodiff(replay(tails, head, t), a[n:n + 1]) for n, t in enumerate(targets)]
        values = np.concatenate([v for v, _ in pairs])
        grads = np.concatenate([g for _, g in pairs])
    else:
        values, grads = autodiff(replay(tails, head, targets), a)
    assert raw.grads.shape == (len(x), 1) + a.shape[1:]
    assert np.abs(grads).max() > 1e-3  # a gradient worth comparing
    np.testing.assert_allclose(raw.scores[:, 0], values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw.grads[:, 0], grads, rtol=1e-4, atol=1e-6)


def test_scores_are_the_documented_sums(heads):
    """The values, in numpy: mask sums, predicted-pixel sums, signs, columns."""
    model, _ = heads
    x = docs()
    seg, reg, _, ml = (ops.convert_to_numpy(o) for o in model(x, training=False))
    per_doc = masks()

    def scores(head, targets):
        return explain_raw(model, x, targets, "feat", HEADS.index(head)).scores[:, 0]

    np.testing.assert_allclose(scores("seg", SegmentationScore(2, per_doc)),
                               (seg[..., 2] * per_doc).sum(axis=(1, 2)), rtol=1e-5)
    predicted = seg.argmax(-1) == 1
    assert predicted.any()
    np.testing.assert_allclose(scores("seg", SegmentationScore(1)),
                               (seg[..., 1] * predicted).sum(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(scores("reg", RegressionScore(1, sign=-1)), -reg[:, 1],
                               rtol=1e-5)
    np.testing.assert_allclose(scores("ml", MultiLabelScore(2)), ml[:, 2], rtol=1e-5)


def test_class_score_is_what_an_int_means(heads):
    model, _ = heads
    x = docs()
    ints = explain_raw(model, x, [[0, 1], [2], [1, 0], [0]], "feat", HEADS.index("cls"))
    mixed = explain_raw(model, x, [[0, ClassScore(1)], [ClassScore(2)], [1, 0], 0], "feat",
                        HEADS.index("cls"))
    np.testing.assert_allclose(mixed.grads, ints.grads, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mixed.heatmaps, ints.heatmaps, atol=1e-5)
    np.testing.assert_array_equal(mixed.counts, ints.counts)
    expls = gc.explain_predictions(model, x, targets=[ClassScore(2)] * 4, layer="feat",
                                   output=HEADS.index("cls"))
    assert expls[0].targets[0].target == "ClassScore(class_index=2)"
    assert gc.explain_predictions(model, x, targets=[2] * 4, layer="feat",
                                  output=HEADS.index("cls"))[0].targets[0].target == 2


def test_per_doc_masks_survive_batching(heads):
    model, _ = heads
    x = docs()
    head, targets = cases()["segmentation_per_doc_masks"]
    whole = explain_raw(model, x, targets, "feat", HEADS.index(head))
    chunked = explain_raw(model, x, targets, "feat", HEADS.index(head), batch_size=3)
    np.testing.assert_allclose(chunked.grads, whole.grads, rtol=1e-5, atol=1e-7)
    alone = [explain_raw(model, x[n:n + 1], SegmentationScore(2, masks()[n]), "feat",
                         HEADS.index(head)) for n in range(len(x))]
    np.testing.assert_allclose(np.concatenate([r.grads for r in alone]), whole.grads,
                               rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- every method, Score-CAM

def test_every_method_explains_a_score_function(heads):
    model, _ = heads
    x = docs()
    head, targets = cases()["segmentation_per_doc_masks"]
    shown = []
    # every method that explains a CNN; the attention methods read MultiHeadAttention
    # weights: a model without them is refused (Swin, in tests/test_transformers.py)
    for name in [name for name, m in methods.METHODS.items() if not m.needs_attention]:
        raw = explain_raw(model, x, targets, "feat", HEADS.index(head), method=name)
        assert raw.heatmaps.shape == (len(x), 1, 8, 8), name
        peaks = raw.heatmaps.max(axis=(2, 3))
        assert np.isfinite(raw.heatmaps).all() and raw.heatmaps.min() >= 0, name
        assert ((peaks == 0) | ((peaks > 0.99) & (peaks <= 1))).all(), name  # ReLU'd or scaled
        shown.append(peaks.any())
    assert sum(shown) >= 5  # Grad-CAM's family is not all zero here


def test_scorecam_scores_masked_inputs_with_the_same_score_function(heads):
    model, _ = heads
    x = docs()
    per_doc = masks()
    raw = explain_raw(model, x, SegmentationScore(2, per_doc), "feat", HEADS.index("seg"),
                      method="scorecam", batch_size=3)
    a = features(model, x)
    for n in range(len(x)):
        channel_masks = scorecam.channel_masks(np.moveaxis(a[n], -1, 0), 8, 8)
        masked = (x[n][None] * channel_masks[..., None]).astype("float32")
        seg = ops.convert_to_numpy(model(masked, training=False)[0])
        scores = (seg[..., 2] * per_doc[n]).sum(axis=(1, 2))
        expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(raw.weights[n, 0], expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- backends, compiled passes

def test_same_numbers_on_every_backend(heads):
    model, _ = heads
    stored = dict(np.load(PATH))
    # Largest difference from the stored numbers seen (TensorFlow oneDNN on and off, JAX at
    # XLA level 0 and default, torch): heatmaps 1.4e-6, grads 1.0e-7, scores 3.8e-6 (scores
    # up to 28), Score-CAM 1.9e-7.
    for name, (head, targets) in cases().items():
        raw = explain_raw(model, docs(), targets, "feat", HEADS.index(head))
        for field in ("heatmaps", "grads", "scores"):
            np.testing.assert_allclose(getattr(raw, field), stored[f"{name}/{field}"],
                                       atol=4e-5, rtol=0, err_msg=f"{name} {field}")
    head, targets = cases()["segmentation_per_doc_masks"]
    scored = explain_raw(model, docs(), targets, "feat", HEADS.index(head), method="scorecam")
    np.testing.assert_allclose(scored.heatmaps, stored["segmentation_per_doc_masks/scorecam"],
                               atol=4e-5)


def test_equal_scores_share_one_compiled_pass(heads):
    model, _ = heads
    x = docs()
    square = np.zeros((8, 8), bool)
    square[1:4, 2:6] = True
    explain_raw(model, x, SegmentationScore(1, square), "feat", 0)
    before = backends.compilations()
    explain_raw(model, x, SegmentationScore(1, square.copy()), "feat", 0)  # equal, new object
    assert backends.compilations() == before
    explain_raw(model, x, SegmentationScore(0, square), "feat", 0)  # another score: its own
    assert backends.compilations()["builds"] == before["builds"] + 1


@pytest.mark.backend_agnostic
def test_reprs_name_the_score():
    square = np.zeros((48, 48), bool)
    square[:4, :53] = True
    assert repr(SegmentationScore(3, square)) == (
        "SegmentationScore(class_index=3, mask=<48x48 bool, 192 px>)")
    assert repr(SegmentationScore(3)) == "SegmentationScore(class_index=3, mask=None)"
    assert repr(RegressionScore()) == "RegressionScore(index=0, sign=1)"
    assert repr(MultiLabelScore(2)) == "MultiLabelScore(class_index=2)"
    assert repr(ClassScore(2)) != repr(MultiLabelScore(2))
    assert ClassScore(2) != MultiLabelScore(2)


# ---------------------------------------------------------------- errors

def _mean_over_pixels(y):
    return ops.mean(y, axis=(1, 2, 3))


BAD = [
    # (name, targets, error, message)
    ("int on a map output", [1, 1, 1, 1], ValueError,
     r"output 0 of model 'heads' has shape \(None, 8, 8, 3\); Grad-CAM explains class scores"),
    ("a string", "seg", TypeError, r"targets must be None, a list of 4 class indices"),
    ("a float among scores", [SegmentationScore(1), 2.5, SegmentationScore(1),
                              SegmentationScore(1)], TypeError,
     r"targets\[1\] must be a score function .* received float: 2.5"),
    ("a class, not a score", SegmentationScore, TypeError,
     r"targets must be a score function .* received type"),
    ("wrong count", [SegmentationScore(1)] * 3, ValueError,
     r"targets must be one score function for all docs or a list with one entry per doc "
     r"\(4\); received 3"),
    ("the whole output", lambda y: y, ValueError,
     r"targets: score function .*lambda.* must return one score per doc, shape \(3,\), for an "
     r"output of shape \(3, 8, 8, 3\); received shape \(3, 8, 8, 3\)"),
    ("one score for the batch", lambda y: ops.sum(y), ValueError,
     r"must return one score per doc, shape \(3,\).*received shape \(\)"),
    ("an integer score", lambda y: ops.argmax(ops.sum(y, axis=(1, 2)), axis=-1), TypeError,
     r"must return floating-point scores \(integer or boolean scores have no gradient\); "
     r"received dtype int"),
    ("a boolean score", lambda y: _mean_over_pixels(y) > 0.5, TypeError,
     r"received dtype bool"),
    ("not a tensor", lambda y: 1.0, TypeError,
     r"must return a tensor of shape \(batch,\), one score per doc; received float"),
    ("class score on a map", ClassScore(1), ValueError,
     r"targets: ClassScore needs an output of shape \(batch,\) or \(batch, k\); received an "
     r"output of shape \(3, 8, 8, 3\)"),
    ("class out of range", SegmentationScore(5), ValueError,
     r"SegmentationScore\(class_index=5, mask=None\): index 5 is out of range"),
    ("mask of another size", SegmentationScore(1, np.ones((5, 5), bool)), ValueError,
     r"mask must be shaped like the output's spatial dims \(8, 8\); received mask of shape "
     r"\(5, 5\)"),
    ("masks for 3 docs", SegmentationScore(1, np.ones((3, 8, 8), bool)), ValueError,
     r"SegmentationScore with one mask per doc must have 4 masks"),
    ("a function that fails", lambda y: y.nonexistent, ValueError,
     r"failed on the model's output .* write it with keras.ops"),
]


@pytest.mark.parametrize("name, targets, error, message", BAD, ids=[b[0] for b in BAD])
def test_bad_score_functions_are_refused_before_any_pass(heads, name, targets, error, message):
    model, _ = heads
    before = backends.compilations(), backends.passes_run()
    with pytest.raises(error, match=message):
        gc.explain_predictions(model, docs(), targets=targets, layer="feat")
    # nothing built, traced or run
    assert (backends.compilations(), backends.passes_run()) == before


def test_nan_scores_name_the_docs(heads):
    model, _ = heads
    x = docs()
    means = ops.convert_to_numpy(model(x, training=False)[0])[..., 0].mean(axis=(1, 2))
    lowest, second = np.sort(means)[:2]
    threshold = float((lowest + second) / 2)  # below it: one doc, whose log is NaN

    def log_excess(y):
        return ops.log(ops.mean(y[..., 0], axis=(1, 2)) - threshold)

    with pytest.raises(NonFiniteError, match=r"\(NaN or inf: score.*doc\(s\) \[\d\] of 4") \
            as caught:
        gc.explain_predictions(model, x, targets=log_excess, layer="feat")
    assert caught.value.indices == [int(np.argmin(means))]
    assert "score" in caught.value.problems[int(np.argmin(means))]


@pytest.mark.parametrize("make, message", [
    (lambda: ClassScore(-1), r"ClassScore class_index must be an integer >= 0; received "
                             r"class_index=-1"),
    (lambda: RegressionScore(sign=2), r"RegressionScore sign must be \+1 or -1; received sign=2"),
    (lambda: SegmentationScore(1, np.ones((4, 4))), r"mask must be a boolean array \(h, w\) or "
                                                    r"\(N, h, w\); received dtype float64"),
])
@pytest.mark.backend_agnostic
def test_bad_arguments_of_the_ready_made_scores(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---------------------------------------------------------------- callback, TensorBoard

def _fit_with_a_segmentation_score(log_dir: Path) -> list[float]:
    """One epoch of a segmenter with the callback explaining SegmentationScore(1) on three
    probes (one mask each); returns the engine's scores of the trained model."""
    full, _ = heads_model(seed=5)
    model = keras.Model(full.inputs[0], full.outputs[0], name="segmenter")
    # one-hot labels: sparse_categorical_crossentropy on a (N, h, w, C) softmax fails in
    # PyTorch's backward on the CPU ("grad_input must be contiguous", Keras 3 / torch)
    model.compile("adam", "categorical_crossentropy")
    x = docs(3, seed=7)
    y = np.eye(3, dtype="float32")[np.random.RandomState(0).randint(0, 3, (3, 8, 8))]
    score = SegmentationScore(1, masks(3))
    cam = gc.GradCamCallback(x, targets=score, layer="feat", probe_masks=masks(3),
                             log_dir=log_dir)
    model.fit(x, y, epochs=1, batch_size=3, verbose=0, callbacks=[cam])
    assert cam.get_config()["targets"] == repr(score)
    return [e.targets[0].score
            for e in gc.explain_predictions(model, x, targets=score, layer="feat")]


def test_callback_logs_a_segmentation_score(tmp_path):
    from gradcam_callbacks.watch.tensorboard import read_events

    expected = _fit_with_a_segmentation_score(tmp_path / "gradcam")
    records = list(read_events(tmp_path / "gradcam"))
    scores = {(r.tag, r.step): r.value for r in records if r.kind == "scalar"}
    for i in range(3):
        assert scores[(f"gradcam/probe_{i:02d}/score", 0)] == pytest.approx(expected[i],
                                                                            rel=1e-5)
        assert (f"gradcam/probe_{i:02d}/box_mass", 0) in scores
    assert scores[("gradcam/nonfinite", 0)] == 0
    assert {r.step for r in records if r.tag == "gradcam/probe_02"} == {-1, 0}


@pytest.mark.backend_agnostic
def test_callback_with_a_segmentation_score_read_back_through_tensorboard(tmp_path):
    from tb_server import running_tensorboard

    expected = _fit_with_a_segmentation_score(tmp_path / "gradcam")
    with running_tensorboard(tmp_path) as tb:
        tags = tb.wait_for(lambda: tb.get_json("data/plugin/scalars/tags").get("gradcam"),
                           timeout=60)
        assert {"gradcam/probe_00/score", "gradcam/probe_00/box_mass"} <= set(tags)
        for i in range(3):
            series = tb.wait_for(lambda i=i: len(s := tb.get_json(
                "data/plugin/scalars/scalars", run="gradcam",
                tag=f"gradcam/probe_{i:02d}/score")) == 2 and s)
            assert [point[1] for point in series] == [-1, 0]
            assert series[1][2] == pytest.approx(expected[i], rel=1e-5)
        images = tb.get_json("data/plugin/images/images", run="gradcam",
                             tag="gradcam/probe_02", sample=0)
        assert [entry["step"] for entry in images] == [-1, 0]


# ---------------------------------------------------------------- command line

@pytest.mark.backend_agnostic
def test_cli_segmentation_class_writes_the_score_and_its_repr(heads, tmp_path):
    """The command line runs under PyTorch (its quickest start); the expected score comes
    from this session's backend."""
    model, _ = heads
    keras.Model(model.inputs[0], model.outputs[0]).save(tmp_path / "seg.keras")
    pixels = np.random.RandomState(3).randint(0, 256, (8, 8), np.uint8)
    Image.fromarray(pixels, "L").save(tmp_path / "digit.png")
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "gradcam_callbacks", "explain", tmp_path / "seg.keras",
         tmp_path / "digit.png", "--out", tmp_path / "out", "--layer", "feat",
         "--preprocess", "unit", "--segmentation-class", "1"],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    (line,) = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    result = json.loads(line)
    score = SegmentationScore(1)
    assert result["target"] == repr(score) and result["targets"][0]["target"] == repr(score)
    doc = (pixels / 255.0).astype("float32")[None, ..., None]
    expected = gc.explain_prediction(model, doc, targets=score, layer="feat")
    assert result["score"] == pytest.approx(expected.targets[0].score, rel=1e-5)
    assert (tmp_path / "out" / "digit.gradcam.png").is_file()


@pytest.mark.backend_agnostic
def test_cli_score_options_and_their_exclusions():
    from gradcam_callbacks.cli.explain_command import score_option
    from gradcam_callbacks.cli.parse import build_parser

    def parsed(*options):
        return build_parser().parse_args(["explain", "m.keras", "i.png", "--out", "o", *options])

    assert score_option(parsed("--regression")) == RegressionScore(0)
    assert score_option(parsed("--regression", "2")) == RegressionScore(2)
    assert score_option(parsed("--segmentation-class", "4")) == SegmentationScore(4)
    assert score_option(parsed("--target", "4")) is None
    for options in (["--regression", "--target", "1"], ["--segmentation-class", "1", "--top", "2"],
                    ["--regression", "--segmentation-class", "1"]):
        with pytest.raises(SystemExit) as exited:
            parsed(*options)
        assert exited.value.code == 2


class Segmenter(keras.Model):
    """A subclassed segmenter: no symbolic output, so score functions are checked in the
    traced pass."""

    def __init__(self):
        super().__init__(name="subclassed_segmenter")
        self.conv = keras.layers.Conv2D(4, 3, padding="same")
        self.feat = keras.layers.ReLU()
        self.classes = keras.layers.Conv2D(3, 1, activation="softmax")

    def call(self, x):
        return self.classes(self.feat(self.conv(x)))


def test_subclassed_models_check_score_functions_in_the_traced_pass():
    model = Segmenter()
    x = docs()
    model(x)
    good = gc.explain_predictions(model, x, targets=SegmentationScore(1), layer=model.feat)
    assert good[0].targets[0].target == "SegmentationScore(class_index=1, mask=None)"
    with pytest.raises(ValueError, match=r"must return one score per doc, shape \(4,\), for an "
                                         r"output of shape \(4, 8, 8, 3\); received shape \(4, 8"):
        gc.explain_predictions(model, x, targets=lambda y: y[..., 0], layer=model.feat)
    with pytest.raises(TypeError, match=r"received dtype bool"):
        gc.explain_predictions(model, x, targets=lambda y: ops.max(y, axis=(1, 2, 3)) > 0.5,
                               layer=model.feat)
