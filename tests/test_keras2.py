"""Keras 2 models: ``tf_keras`` (TensorFlow >= 2.16, run with ``TF_USE_LEGACY_KERAS=1``) and
``tf.keras`` of TensorFlow 2.15 (where ``keras`` itself is Keras 2.15).

Tests marked ``keras2`` run in those two environments only (scripts/run_tests.py); where no
Keras 2 is importable they skip, except under ``GRADCAM_REQUIRE_KERAS2=1`` (CI), where they
fail. The numbers are held to the Keras 3 path: directly where both Keras are installed (the
same weights in a Keras 3 and a Keras 2 model, TensorFlow both sides), and through
``tests/data/keras2_reference.npz`` (written by Keras 3, ``python tests/test_keras2.py``)
where Keras 3 cannot be installed (TensorFlow 2.15).

How the stored numbers were made: by this package itself (:func:`keras3_reference`: the
engine on Keras 3 models with seeded weights, TensorFlow on CPU, commit 05cc411,
2026-11-30); they hold the Keras 2 path to the Keras 3 one, not to the definitions. Those are
held live: Grad-CAM here against a GradientTape by hand (Sequential and subclassed Keras 2
models), every method in tests/test_methods.py against numpy transcriptions on every Keras 3
backend (the methods' numpy code is the same for Keras 2). Measured spread from the stored
numbers (tf_keras 2.21 with oneDNN on and off; the same weights through Keras 3 on TensorFlow
with oneDNN on and off, JAX and torch): heatmaps 6.9e-6, scores 3.8e-6; the test allows 3e-5.
Not measured: TensorFlow 2.15.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).parent / "data" / "keras2_reference.npz"
METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam")
SHAPE = (12, 12, 3)
keras2 = pytest.mark.keras2


def keras2_module() -> Any:
    """``tf_keras`` where installed, else ``tf.keras`` when it is Keras 2, else ``None``."""
    try:
        import tf_keras

        return tf_keras
    except ImportError:
        pass
    import keras

    if keras.__version__.startswith("2."):
        import tensorflow as tf

        return tf.keras
    return None


@pytest.fixture(scope="module")
def K() -> Any:
    module = keras2_module()
    if module is None:
        reason = ("no Keras 2 importable: install tf-keras (TensorFlow >= 2.16) or use "
                  "TensorFlow <= 2.15")
        if os.environ.get("GRADCAM_REQUIRE_KERAS2"):
            pytest.fail(f"GRADCAM_REQUIRE_KERAS2 is set, but {reason}")
        pytest.skip(reason)
    return module


def keras3_tf() -> Any:
    """Keras 3 on TensorFlow, or skip: the direct comparison needs both Keras."""
    import keras

    if not keras.__version__.startswith("3.") or keras.backend.backend() != "tensorflow":
        pytest.skip("needs Keras 3 on TensorFlow next to Keras 2 (the stored reference covers "
                    "the rest)")
    return keras


# -- models, the same architecture in either Keras -----------------------------------------
def cnn(K: Any, head: tuple[int, str | None] = (4, "softmax"), name: str = "cnn") -> Any:
    inputs = K.Input(SHAPE)
    h = K.layers.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    h = K.layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = K.layers.GlobalAveragePooling2D(name="gap")(h)
    units, activation = head
    return K.Model(inputs, K.layers.Dense(units, activation=activation, name="head")(h),
                   name=name)


def regressor(K: Any) -> Any:
    return cnn(K, (2, None), "regressor")


def tagger(K: Any) -> Any:
    return cnn(K, (4, "sigmoid"), "tagger")


def segmenter(K: Any) -> Any:
    """A small fully convolutional segmenter: 3 classes per pixel, same size as the input."""
    inputs = K.Input(SHAPE)
    h = K.layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(inputs)
    return K.Model(inputs, K.layers.Conv2D(3, 1, activation="softmax", name="seg")(h),
                   name="segmenter")


def nested(K: Any) -> Any:
    base_in = K.Input(SHAPE)
    b = K.layers.Conv2D(6, 3, activation="relu", name="b1")(base_in)
    base = K.Model(base_in, K.layers.Conv2D(8, 3, activation="relu", name="b2")(b), name="base")
    inputs = K.Input(SHAPE)
    h = K.layers.GlobalAveragePooling2D(name="gap")(base(inputs))
    return K.Model(inputs, K.layers.Dense(4, name="logits")(h), name="outer")


def sequential(K: Any) -> Any:
    return K.Sequential([
        K.layers.Conv2D(6, 3, activation="relu", input_shape=SHAPE, name="conv"),
        K.layers.MaxPooling2D(name="pool"),
        K.layers.Flatten(),
        K.layers.Dense(4, name="logits"),
    ], name="seq")


MASK = np.zeros(SHAPE[:2], bool)
MASK[2:8, 3:9] = True


def y_minus_x(outputs: Any) -> Any:
    """A user-written score function: tensor indexing only, so any Keras's tensors take it."""
    return outputs[:, 1] - outputs[:, 0]


def class_targets(count: int) -> list[list[Any]]:
    return [[n % 4, 2] for n in range(count)]


def regression_targets(count: int) -> list[list[Any]]:
    from gradcam_callbacks import RegressionScore

    return [[RegressionScore(0), y_minus_x]] + [[RegressionScore(1, sign=-1)]] * (count - 1)


def segmentation_targets(count: int) -> list[list[Any]]:
    from gradcam_callbacks import SegmentationScore

    return [[SegmentationScore(1, mask=MASK), SegmentationScore(2)]] * count


def label_targets(count: int) -> list[list[Any]]:
    from gradcam_callbacks import ClassScore, MultiLabelScore

    return [[MultiLabelScore(2), ClassScore(1)]] * count


# name: (model builder, targets for N docs, layer, methods); the stored reference has each
CASES = {
    "cnn": (cnn, class_targets, None, METHODS),
    "nested": (nested, class_targets, None, METHODS),
    "regressor": (regressor, regression_targets, None, ("gradcam", "scorecam")),
    "segmenter": (segmenter, segmentation_targets, "features", ("gradcam", "scorecam")),
    "tagger": (tagger, label_targets, None, ("gradcam", "scorecam")),
}
BUILDERS = {name: case[0] for name, case in CASES.items()}


def seeded_weights(model: Any, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.4, w.shape).astype("float32") for w in model.get_weights()]


def probe_images(count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *SHAPE)).astype("float32")


def engine_numbers(model: Any, x: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """Case ``name``'s methods' heatmaps and scores for ``x`` (up to two targets per input:
    class indices, or score functions)."""
    from gradcam_callbacks.explain import explain_raw

    _, targets, layer, methods = CASES[name]
    numbers = {}
    for method in methods:
        raw = explain_raw(model, x, targets(len(x)), layer, method=method)
        numbers[f"{method}__heatmaps"] = raw.heatmaps
        numbers[f"{method}__scores"] = raw.scores
    return numbers


def keras3_reference() -> dict[str, np.ndarray]:
    """The stored numbers: Keras 3 (TensorFlow) models with seeded weights."""
    import keras

    x = probe_images()
    stored: dict[str, np.ndarray] = {"x": x}
    for name, build in BUILDERS.items():
        model = build(keras)
        weights = seeded_weights(model, seed=len(name))
        model.set_weights(weights)
        stored.update({f"{name}__weight{i}": w for i, w in enumerate(weights)})
        stored.update({f"{name}__{k}": v for k, v in engine_numbers(model, x, name).items()})
    return stored


# -- the engine ----------------------------------------------------------------------------
@keras2
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_method_matches_the_stored_keras3_numbers(K, name):
    stored = np.load(REFERENCE)
    model = BUILDERS[name](K)
    count = sum(1 for key in stored.files if key.startswith(f"{name}__weight"))
    model.set_weights([stored[f"{name}__weight{i}"] for i in range(count)])
    numbers = engine_numbers(model, stored["x"], name)
    # Largest difference seen, tf_keras 2.21 with oneDNN on and off and the same numbers
    # through Keras 3 on TensorFlow (oneDNN on, off), JAX and torch: heatmaps 6.9e-6 (the
    # tagger's Grad-CAM map: its gradients nearly cancel), scores 3.8e-6 (scores up to 25).
    for key, value in numbers.items():
        np.testing.assert_allclose(value, stored[f"{name}__{key}"], rtol=0, atol=3e-5,
                                   err_msg=f"{name} {key}")


@keras2
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_same_weights_in_keras2_and_keras3_give_the_same_heatmaps(K, name):
    keras = keras3_tf()
    model2, model3 = BUILDERS[name](K), BUILDERS[name](keras)
    weights = seeded_weights(model3, seed=7)
    model2.set_weights(weights)
    model3.set_weights(weights)
    x = probe_images(seed=5)
    two, three = engine_numbers(model2, x, name), engine_numbers(model3, x, name)
    for key in three:
        np.testing.assert_allclose(two[key], three[key], rtol=0, atol=1e-5, err_msg=key)


@keras2
def test_nested_application_walks_to_the_same_layer_as_keras3(K):
    from gradcam_callbacks import explain_prediction

    def outer(module: Any) -> Any:
        base = module.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                               include_top=False, weights=None)
        inputs = module.Input((32, 32, 3))
        pooled = module.layers.GlobalAveragePooling2D()(base(inputs))
        return module.Model(inputs, module.layers.Dense(3)(pooled))

    x = np.random.default_rng(2).random((1, 32, 32, 3)).astype("float32")
    expl = explain_prediction(outer(K), x)
    # 32x32 inputs: the last maps (out_relu, block_16...) are 1x1, so the walk goes back to
    # the last one larger than 1x1, inside the nested base
    assert expl.layer == "mobilenetv2_0.35_32/block_13_pad"
    assert expl.targets[0].heatmap.shape == (3, 3)
    if _has_keras3_tf():
        import keras

        assert explain_prediction(outer(keras), x).layer == expl.layer


def _has_keras3_tf() -> bool:
    import keras

    return keras.__version__.startswith("3.") and keras.backend.backend() == "tensorflow"


def _gradcam_by_hand(activations: Any, score: Any, tape: Any) -> np.ndarray:
    grads = tape.gradient(score, activations).numpy()[0]
    cam = np.maximum((activations.numpy()[0] * grads.mean(axis=(0, 1))).sum(-1), 0)
    return cam / (cam.max() + 1e-7)


@keras2
def test_sequential_and_subclassed_models_match_a_gradient_tape_by_hand(K):
    import tensorflow as tf

    from gradcam_callbacks import explain_prediction

    x = probe_images(1, seed=9)
    model = sequential(K)
    model.set_weights(seeded_weights(model, seed=3))
    expl = explain_prediction(model, x, targets=[1])
    assert expl.layer == "pool"  # the automatic rule on a Keras 2 Sequential
    with tf.GradientTape() as tape:
        pooled = model.get_layer("pool")(model.get_layer("conv")(x))
        tape.watch(pooled)
        score = model.get_layer("logits")(model.layers[2](pooled))[:, 1]
    np.testing.assert_allclose(expl.targets[0].heatmap, _gradcam_by_hand(pooled, score, tape),
                               atol=1e-5)

    class Subclassed(K.Model):
        def __init__(self) -> None:
            super().__init__(name="sub")
            self.conv = K.layers.Conv2D(5, 3, activation="relu")
            self.head = K.layers.Dense(3)

        def call(self, inputs: Any) -> Any:
            return self.head(tf.reduce_mean(self.conv(inputs), axis=(1, 2)))

    sub = Subclassed()
    sub(x)
    with pytest.raises(ValueError, match="layer=None needs a model with a symbolic input"):
        explain_prediction(sub, x)
    expl = explain_prediction(sub, x, layer=sub.conv, targets=[2])
    with tf.GradientTape() as tape:
        activations = sub.conv(x)
        tape.watch(activations)
        score = sub.head(tf.reduce_mean(activations, axis=(1, 2)))[:, 2]
    np.testing.assert_allclose(expl.targets[0].heatmap,
                               _gradcam_by_hand(activations, score, tape), atol=1e-5)


@keras2
def test_public_functions_take_keras2_models(K):
    from gradcam_callbacks import (
        explain_predictions,
        format_as_image,
        gradcam_backend,
        show_prediction,
    )

    model = cnn(K)
    x = probe_images(3)
    expls = explain_predictions(model, x, targets=[[0, 1], [2], [3]])
    assert [len(e.targets) for e in expls] == [2, 1, 1]
    assert all(e.layer == "conv2" and e.estimator == "cnn" for e in expls)
    weights, activations, grads, index, value = gradcam_backend(model, x[:1], [3], "conv1")
    assert (weights.shape, activations.shape, grads.shape, index) == ((6,), (10, 10, 6),
                                                                       (10, 10, 6), 3)
    assert value == pytest.approx(float(model(x[:1])[0, 3]), abs=1e-6)
    assert format_as_image(expls[0]).size == (12, 12)
    assert show_prediction(model, x[:1], targets=[0, 1]).width > 24
    with pytest.raises(ValueError, match="layer 'gap' has an output of rank 2"):
        explain_predictions(model, x, layer="gap")


# -- score functions (gradcam_callbacks.targets) ---------------------------------------------
@keras2
def test_ready_made_and_own_score_functions_score_what_keras2_predicts(K):
    from gradcam_callbacks import (
        ClassScore,
        MultiLabelScore,
        RegressionScore,
        SegmentationScore,
        explain_predictions,
    )

    x = probe_images(3, seed=6)
    models = {name: BUILDERS[name](K) for name in ("regressor", "segmenter", "tagger")}
    for seed, model in enumerate(models.values()):
        model.set_weights(seeded_weights(model, seed))
    predicted = {name: model.predict(x, verbose=0) for name, model in models.items()}
    seg = predicted["segmenter"]
    painted = int(np.bincount(seg.argmax(-1).ravel(), minlength=3).argmax())  # some pixels
    cases = [
        ("regressor", RegressionScore(1, sign=-1), -predicted["regressor"][:, 1]),
        ("regressor", y_minus_x, predicted["regressor"][:, 1] - predicted["regressor"][:, 0]),
        ("segmenter", SegmentationScore(1, mask=MASK), seg[:, MASK, 1].sum(axis=1)),
        ("segmenter", SegmentationScore(painted), np.where(
            seg.argmax(-1) == painted, seg[..., painted], 0).sum(axis=(1, 2))),
        ("tagger", MultiLabelScore(2), predicted["tagger"][:, 2]),
        ("tagger", ClassScore(3), predicted["tagger"][:, 3]),
    ]
    for name, score, expected in cases:
        layer = "features" if name == "segmenter" else None
        expls = explain_predictions(models[name], x, targets=score, layer=layer)
        label = repr(score) if name != "regressor" or score is not y_minus_x else "y_minus_x"
        assert [e.targets[0].target for e in expls] == [label] * 3
        np.testing.assert_allclose([e.targets[0].score for e in expls], expected, rtol=1e-5,
                                   atol=1e-5, err_msg=label)
        maps = np.stack([e.targets[0].heatmap for e in expls])
        assert maps.shape == ((3, 12, 12) if name == "segmenter" else (3, 8, 8))
        assert 0 <= maps.min() and maps.max() <= 1 and maps.max() > 0, label


@keras2
def test_bad_score_functions_are_refused_before_any_keras2_pass(K):
    from gradcam_callbacks import SegmentationScore, explain_predictions
    from gradcam_callbacks.backends import compilations

    model = regressor(K)
    x = probe_images(2)
    before = compilations()
    refused = [
        (lambda y: y, ValueError, r"must return one score per doc, shape \(3,\).*received "
                                  r"shape \(3, 2\)"),
        (lambda y: y[:, 0] > 0, TypeError, "must return floating-point scores.*received dtype "
                                           "bool"),
        (lambda y: y.numpy()[:, 0], ValueError, "failed on the model's output"),
        (SegmentationScore(0), ValueError, r"needs a segmentation output \(batch, h, w, "
                                           r"classes\); received an output of shape \(3, 2\)"),
        ([y_minus_x, "nope"], TypeError, r"targets\[1\] must be a score function"),
    ]
    for targets, kind, message in refused:
        with pytest.raises(kind, match=message):
            explain_predictions(model, x, targets=targets)
    assert compilations() == before  # refused before any pass was built or traced


@keras2
def test_callback_with_a_score_function_in_keras2_fit(K, tmp_path):
    from gradcam_callbacks import GradCamCallback, RegressionScore
    from gradcam_callbacks.watch.tensorboard import read_events

    model = regressor(K)
    model.set_weights(seeded_weights(model, 2))
    model.compile(K.optimizers.SGD(0.05), "mse")
    values = np.stack([DATA_Y / 4, 1 - DATA_Y / 4], axis=1).astype("float32")
    callback = GradCamCallback(DATA_X[:2], targets=RegressionScore(1, sign=-1), log_dir=tmp_path)
    model.fit(DATA_X, values, epochs=2, batch_size=8, shuffle=False, callbacks=[callback],
              verbose=0)
    final = model.predict(DATA_X[:2], verbose=0)
    scores = {e.step: e.value for e in read_events(tmp_path) if e.tag == "gradcam/probe_01/score"}
    assert sorted(scores) == [-1, 0, 1]
    assert scores[1] == pytest.approx(-float(final[1, 1]), abs=1e-5)
    assert scores[-1] != pytest.approx(scores[1], abs=1e-7)  # the fit moved the value


# -- the callback --------------------------------------------------------------------------
def _compiled(K: Any, seed: int = 1) -> Any:
    model = cnn(K)
    model.set_weights(seeded_weights(model, seed))
    model.compile(K.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    return model


DATA_X = probe_images(16, seed=11)
DATA_Y = np.arange(16) % 4


@keras2
def test_callback_in_keras2_fit_reaches_a_real_tensorboard(K, tmp_path):
    from tb_server import running_tensorboard

    from gradcam_callbacks import GradCamCallback

    model = _compiled(K)
    callback = GradCamCallback(DATA_X[:3], targets=[0, 1, 2], log_dir=tmp_path / "gradcam")
    model.fit(DATA_X, DATA_Y, epochs=2, batch_size=8, shuffle=False, callbacks=[callback],
              verbose=0)
    final = model.predict(DATA_X[:3], verbose=0)
    with running_tensorboard(tmp_path) as tb:
        tags = tb.wait_for(lambda: tb.get_json("data/plugin/images/tags").get("gradcam"),
                           timeout=60)
        assert {"gradcam/probe_00", "gradcam/grid"} <= set(tags)
        entries = tb.wait_for(lambda: len(found := tb.get_json(
            "data/plugin/images/images", run="gradcam", tag="gradcam/probe_02")) == 3 and found)
        assert [e["step"] for e in entries] == [-1, 0, 1]
        png = tb.get_bytes("data/plugin/images/individualImage?" + entries[-1]["query"])
        assert png.startswith(b"\x89PNG")
        series = tb.wait_for(lambda: tb.get_json("data/plugin/scalars/scalars", run="gradcam",
                                                 tag="gradcam/probe_02/score"))
    assert [s[1] for s in series] == [-1, 0, 1]
    assert series[-1][2] == pytest.approx(float(final[2, 2]), abs=1e-5)


@keras2
def test_callback_leaves_keras2_training_bit_for_bit_unchanged(K, tmp_path):
    from gradcam_callbacks import GradCamCallback
    from gradcam_callbacks.backends import compilations

    plain, watched = _compiled(K), _compiled(K)
    plain.fit(DATA_X, DATA_Y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    callback = GradCamCallback(DATA_X[:4], log_dir=tmp_path)
    before = compilations()
    watched.fit(DATA_X, DATA_Y, epochs=2, batch_size=8, shuffle=False, callbacks=[callback],
                verbose=0)
    after = compilations()  # one pass, built and traced once for the whole fit
    assert (after["builds"] - before["builds"], after["traces"] - before["traces"]) == (1, 1)
    for a, b in zip(plain.get_weights(), watched.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(plain.get_weights()[0], seeded_weights(plain, 1)[0])


@keras2
def test_callback_errors_before_the_first_keras2_epoch(K, tmp_path):
    from gradcam_callbacks import GradCamCallback

    model = _compiled(K)
    before = model.get_weights()
    epochs: list[int] = []
    counter = K.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))
    callback = GradCamCallback(DATA_X[:2], layer="nope", log_dir=tmp_path)
    with pytest.raises(ValueError, match="layer 'nope' not found"):
        model.fit(DATA_X, DATA_Y, epochs=2, callbacks=[counter, callback], verbose=0)
    assert epochs == []
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@keras2
def test_a_failing_epoch_end_never_ends_keras2_fit(K, tmp_path):
    from gradcam_callbacks import GradCamCallback

    class Failing(GradCamCallback):
        def explain_probes(self) -> Any:
            raise RuntimeError("probe trouble")

    model = _compiled(K)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(DATA_X, DATA_Y, epochs=2, verbose=0,
                            callbacks=[Failing(DATA_X[:2], log_dir=tmp_path)])
    assert len(history.history["loss"]) == 2
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert sum("could not compute Grad-CAM" in m and "probe trouble" in m
               for m in messages) == 3  # the initial step and both epochs


MIRRORED = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {tests!r})
    from test_keras2 import DATA_X, DATA_Y, cnn, keras2_module, seeded_weights
    from gradcam_callbacks import GradCamCallback
    K = keras2_module()
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    cluster = {{"chief": ["localhost:1"], "worker": ["localhost:2"]}}
    finals = []
    for role, log_dir in zip(["chief", "worker"], sys.argv[1:]):
        os.environ["TF_CONFIG"] = json.dumps({{"cluster": cluster,
                                              "task": {{"type": role, "index": 0}}}})
        with strategy.scope():
            model = cnn(K)
            model.set_weights(seeded_weights(model, 1))
            model.compile(K.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        callback = GradCamCallback(DATA_X[:2], log_dir=log_dir)
        model.fit(DATA_X, DATA_Y, epochs=2, batch_size=8, callbacks=[callback], verbose=0)
        finals.append(model.predict(DATA_X[:2], verbose=0).tolist())
    print(json.dumps(finals))
""")


@keras2
def test_mirrored_strategy_fit_writes_from_the_chief_only(K, tmp_path):
    from gradcam_callbacks.watch.tensorboard import read_events

    script = MIRRORED.format(tests=str(Path(__file__).parent))
    chief, worker = tmp_path / "chief", tmp_path / "worker"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(chief), str(worker)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    final = np.array(json.loads(done.stdout.strip().splitlines()[-1])[0])
    scores = {e.step: e.value for e in read_events(chief) if e.tag == "gradcam/probe_01/score"}
    assert sorted(scores) == [-1, 0, 1]
    assert scores[1] == pytest.approx(float(final[1].max()), abs=1e-5)
    assert not worker.exists() or not list(worker.iterdir())  # a worker writes nothing


# -- the command line ----------------------------------------------------------------------
def explain_command(*args: Any) -> int:
    from gradcam_callbacks.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(["explain", *map(str, args)])


@keras2
@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_cli_explains_a_saved_keras2_model_and_says_which_keras(K, tmp_path, suffix, capsys):
    model = _compiled(K)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    picture = (probe_images(1, seed=4)[0] * 255).astype("uint8")
    Image.fromarray(picture).save(tmp_path / "photo.png")
    status = explain_command(path, tmp_path / "photo.png", "--out", tmp_path / "out",
                             "--preprocess", "unit")
    err = capsys.readouterr().err
    assert status == 0, err[-3000:]
    assert f"loaded MODEL {str(path)!r} with Keras 2 (" in err
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    expected = model.predict(picture[None].astype("float32") / 255, verbose=0)[0]
    assert record["targets"][0]["target"] == int(expected.argmax())
    assert record["targets"][0]["score"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert record["layer"] == "conv2"
    assert (tmp_path / "out" / "photo.gradcam.png").is_file()


@keras2
def test_cli_says_why_no_keras_could_load_a_file(K, tmp_path, capsys):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not a model")
    status = explain_command(broken, broken, "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert status == 2, err[-3000:]
    assert "cannot load MODEL" in err and "Keras 2 (" in err
    if _has_keras3_tf():
        import keras

        assert f"Keras {keras.__version__}: " in err


# -- Keras 3 users pay nothing -------------------------------------------------------------
KERAS3_ONLY = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    import gradcam_callbacks
    from gradcam_callbacks import GradCamCallback, explain_prediction
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    explain_prediction(model, x[:1])
    model.fit(x, np.zeros((4, 2)), epochs=1, verbose=0,
              callbacks=[GradCamCallback(x[:2], log_dir=sys.argv[1])])
    print(sorted(m for m in sys.modules
                 if m.startswith("tf_keras") or m.endswith("keras2_backend")))
""")


@pytest.mark.skipif(not __import__("keras").__version__.startswith("3."),
                    reason="Keras 3 is not installed here")
@pytest.mark.backend_agnostic  # the dispatch that could import tf_keras is one code path
def test_keras3_explain_and_fit_never_import_tf_keras(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    env.pop("TF_USE_LEGACY_KERAS", None)
    done = subprocess.run([sys.executable, "-c", KERAS3_ONLY, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


if __name__ == "__main__":  # write the stored reference (Keras 3 on TensorFlow)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, str(ROOT))
    np.savez_compressed(REFERENCE, **keras3_reference())
    print(f"wrote {REFERENCE}")
