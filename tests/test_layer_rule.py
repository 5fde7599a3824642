"""The automatic layer (``layer=None``): walking back from the explained output, the last
spatial feature map larger than 1x1, never a layer that only transforms the raw input.

Every keras.applications family that builds at a small input is tried in four shapes: (a) the
full classifier, (b) a pooled base in the keras.io transfer-learning Sequential behind
Rescaling, (c) the full classifier nested behind Normalization, (d) a base without pooling
nested behind RandomFlip and followed by pooling and a head. The expected layer is read off
each model's graph: what feeds the global pooling (or Flatten) nearest the output. Weights are
random (``weights=None``): nothing downloads. The choice over all 40 models runs once (it is
made on the symbolic graph); the gradient pass runs on every backend for a subset
(``EXPLAINED``) and for the small graphs below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from models import images, set_numpy_weights
from PIL import Image

import gradcam_callbacks as gc
from gradcam_callbacks.layers import resolve_layer
from gradcam_callbacks.watch.tensorboard import read_events

A = keras.applications
# family -> (constructor, input side): the smallest side (>= the family's minimum) whose last
# map is at least 2x2.
FAMILIES = {
    "MobileNetV2": (A.MobileNetV2, 64),
    "MobileNetV3Small": (A.MobileNetV3Small, 64),
    "ResNet50": (A.ResNet50, 64),
    "EfficientNetB0": (A.EfficientNetB0, 64),
    "EfficientNetV2B0": (A.EfficientNetV2B0, 64),
    "DenseNet121": (A.DenseNet121, 64),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 64),
    "Xception": (A.Xception, 71),
    "VGG16": (A.VGG16, 64),
    "InceptionV3": (A.InceptionV3, 107),
}
SHAPES = "abcd"
# The gradient pass, on every backend, for these (family, shape) pairs: an operation that is not
# a layer (ConvNeXt's residual ``x + y``) inside a nested pooled base, and an unpooled base
# nested after augmentation whose last map is a max pool read by GlobalAveragePooling2D.
EXPLAINED = [("ConvNeXtTiny", "b"), ("VGG16", "d")]
POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
           keras.layers.Flatten)


def _spatial(tensor) -> tuple:
    return tuple(tensor.shape[1:3])


def _producer_path(tensor) -> str:
    operation, _, index = tensor._keras_history
    if isinstance(operation, keras.Model):
        return f"{operation.name}/{_producer_path(operation.outputs[index])}"
    return operation.name


def expected_path(model: keras.Model) -> str | None:
    """The path of what feeds the global pooling or Flatten nearest the output whose input is
    larger than 1x1 (nested models searched from the output side; in these models the head's
    pooling is listed after the squeeze-and-excitation pools)."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            inner = expected_path(layer)
            if inner is not None:
                return f"{layer.name}/{inner}"
        elif isinstance(layer, POOLING) and _spatial(layer.input) != (1, 1):
            return _producer_path(layer.input)
    return None


def build(name: str, shapes: str = SHAPES) -> dict[str, keras.Model]:
    """The family's models in the shapes asked for, building each application once."""
    constructor, side = FAMILIES[name]
    shape = (side, side, 3)
    models = {}
    if "a" in shapes or "c" in shapes:
        models["a"] = constructor(weights=None, include_top=True, classes=5, input_shape=shape)
        inputs = keras.Input(shape)
        normalised = keras.layers.Normalization(mean=[127.5] * 3, variance=[5000.0] * 3)(inputs)
        models["c"] = keras.Model(inputs, models["a"](normalised), name="wrapped")
    if "b" in shapes:
        pooled = constructor(weights=None, include_top=False, pooling="avg", input_shape=shape)
        models["b"] = keras.Sequential([
            keras.Input(shape), keras.layers.Rescaling(1 / 127.5, offset=-1), pooled,
            keras.layers.Dense(5)])
    if "d" in shapes:
        bare = constructor(weights=None, include_top=False, input_shape=shape)
        inputs = keras.Input(shape)
        features = bare(keras.layers.RandomFlip()(inputs))
        head = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(features))
        models["d"] = keras.Model(inputs, head, name="unpooled")
    return models


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    """One family's four models, built once per session (three application builds)."""
    yield request.param, build(request.param)


# The choice is made on Keras' symbolic graph, which keras.applications builds identically
# under every backend; building 30 applications costs minutes per backend, so this runs once.
@pytest.mark.backend_agnostic
@pytest.mark.parametrize("shape", SHAPES)
def test_applications_layer_choice(family, shape):
    name, models = family
    model = models[shape]
    expected = expected_path(model)
    choice = resolve_layer(model, None)
    spatial = _spatial(choice.layer.output)
    print(f"LAYER-RULE {name} {shape} {choice.path} {spatial}")
    assert expected is not None and choice.path == expected
    assert all(size >= 2 for size in spatial)


@pytest.mark.parametrize("name, shape", EXPLAINED)
def test_applications_explain_pass(name, shape):
    model = build(name, shape)[shape]
    side = FAMILIES[name][1]
    doc = np.random.RandomState(0).rand(1, side, side, 3).astype("float32") * 255
    explanation = gc.explain_prediction(model, doc)
    chosen = resolve_layer(model, None)
    assert explanation.layer == chosen.path == expected_path(model)
    heatmap = explanation.targets[0].heatmap
    assert heatmap.shape == _spatial(chosen.layer.output) == (2, 2)
    assert np.isfinite(heatmap).all()


# --- small graphs, one rule each ----------------------------------------------------------

def tiny_base(shape=(16, 16, 3), pooled=True, name="tiny_base") -> keras.Model:
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    h = keras.layers.ReLU(name="feat")(h)
    if pooled:
        h = keras.layers.GlobalAveragePooling2D(name="avg_pool")(h)
    return keras.Model(inputs, h, name=name)


def transfer_model(shape=(16, 16, 3)) -> keras.Model:
    """The keras.io recipe: preprocessing, a pooled base used as a layer, a new head."""
    return set_numpy_weights(keras.Sequential([
        keras.Input(shape), keras.layers.Rescaling(1 / 127.5, offset=-1), tiny_base(shape),
        keras.layers.Dense(5, activation="softmax", name="head")], name="transfer"))


def test_preprocessing_before_a_pooled_base_is_never_chosen():
    assert resolve_layer(transfer_model(), None).path == "tiny_base/feat"
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    per_pixel = keras.layers.Normalization(axis=(1, 2, 3))  # its weights have rank 3
    per_pixel.adapt(images(4))
    h = per_pixel(h)
    h = keras.layers.Resizing(12, 12)(h)
    h = keras.layers.CenterCrop(8, 8)(h)
    h = keras.layers.BatchNormalization()(h)  # learned, but no weight matrix or kernel
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    with pytest.raises(ValueError, match=r"layer=None: walking back from output 0 of model .* "
                       r"no spatial feature map was found .*Pass layer= explicitly"):
        gc.explain_prediction(model, images(1))


class Backbone(keras.Model):
    """A subclassed model used as a layer: no graph inside, so it is taken whole."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(5, 3, strides=2, padding="same")

    def call(self, x):
        return keras.activations.relu(self.conv(x))


def test_subclassed_model_inside_a_graph_is_taken_whole():
    inputs = keras.Input((16, 16, 3))
    h = Backbone(name="backbone")(keras.layers.Rescaling(2.0)(inputs))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = set_numpy_weights(keras.Model(inputs, outputs))
    explanation = gc.explain_prediction(model, images(1))
    assert explanation.layer == "backbone" and explanation.targets[0].heatmap.shape == (8, 8)


def residual(op: bool) -> keras.Model:
    """A ConvNeXt-style block: the branch ends in a layer listed after the skip's input, and
    the block closes with ``x + branch`` (an operation, not a layer) or an Add layer."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    branch = keras.layers.Conv2D(6, 3, padding="same", name="branch_conv")(x)
    branch = keras.layers.Activation("linear", name="branch_identity")(branch)
    h = x + branch if op else keras.layers.Add(name="sum")([x, branch])
    outputs = keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    return set_numpy_weights(keras.Model(inputs, outputs, name="block"))


def test_residual_add_is_chosen_even_as_an_operation():
    with_op, with_layer = residual(op=True), residual(op=False)
    op_path = resolve_layer(with_op, None).path
    assert op_path.startswith("add") and resolve_layer(with_layer, None).path == "sum"
    docs = images(2)
    by_op = gc.explain_predictions(with_op, docs)
    by_name = gc.explain_predictions(with_op, docs, layer=op_path)  # the path resolves back
    by_layer = gc.explain_predictions(with_layer, docs)  # same weights, same numbers
    for a, b, c in zip(by_op, by_name, by_layer):
        assert a.layer == b.layer == op_path and c.layer == "sum"
        np.testing.assert_allclose(a.targets[0].heatmap, c.targets[0].heatmap, atol=1e-5)
        np.testing.assert_allclose(b.targets[0].heatmap, c.targets[0].heatmap, atol=1e-5)
        assert a.targets[0].heatmap.shape == (16, 16) and a.targets[0].heatmap.max() > 0


def test_1x1_head_is_passed_over():
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="feat")(inputs)
    h = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    h = keras.layers.Conv2D(4, 1, name="logits")(h)
    outputs = keras.layers.Activation("softmax")(keras.layers.Flatten()(h))
    model = set_numpy_weights(keras.Model(inputs, outputs))
    explanation = gc.explain_prediction(model, images(1))
    assert explanation.layer == "feat" and explanation.targets[0].heatmap.shape == (8, 8)


def two_branches(same_map: bool) -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    left = keras.layers.Conv2D(4, 3, padding="same", name="left")(inputs)
    right = left if same_map else keras.layers.Conv2D(4, 5, padding="same", name="right")(inputs)
    pooled = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(left),
                                         keras.layers.GlobalMaxPooling2D()(right)])
    return keras.Model(inputs, keras.layers.Dense(3)(pooled), name="branches")


def test_pooled_branches_agree_or_are_listed():
    assert resolve_layer(two_branches(same_map=True), None).path == "left"
    with pytest.raises(ValueError, match=r"output 0 of model 'branches' is reached from 2 "
                       r"different spatial feature maps, one per branch: '(left|right)', "
                       r"'(left|right)'. Pass layer= with the one to explain"):
        resolve_layer(two_branches(same_map=False), None)


def test_each_output_walks_back_from_itself():
    inputs = keras.Input((16, 16, 3))
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")(inputs)
    first = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="first_map")(shared)
    second = keras.layers.Conv2D(4, 3, strides=4, padding="same", name="second_map")(shared)
    outputs = [keras.layers.Dense(3, activation="softmax", name=f"out_{i}")(
        keras.layers.GlobalAveragePooling2D()(h)) for i, h in enumerate((first, second))]
    model = set_numpy_weights(keras.Model(inputs, outputs))
    a = gc.explain_prediction(model, images(1), output=0)
    b = gc.explain_prediction(model, images(1), output="out_1")
    assert (a.layer, a.targets[0].heatmap.shape) == ("first_map", (8, 8))
    assert (b.layer, b.targets[0].heatmap.shape) == ("second_map", (4, 4))


def test_callback_names_the_automatic_layer(tmp_path):
    model = transfer_model()
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = images(8) * 255, np.arange(8) % 5
    cam = gc.GradCamCallback((x[:2], y[:2]), log_dir=tmp_path / "cam")
    model.fit(x, y, epochs=1, batch_size=4, callbacks=[cam], verbose=0)
    descriptions = {r.description for r in read_events(tmp_path / "cam")
                    if r.kind == "image" and r.tag.startswith("gradcam/probe_")}
    assert descriptions and all("`tiny_base/feat`" in d for d in descriptions)


@pytest.mark.backend_agnostic  # the rule reads the graph; test_cli.py runs the CLI per backend
def test_cli_writes_the_automatic_layer(tmp_path):
    transfer_model().save(tmp_path / "nested.keras")
    (tmp_path / "in").mkdir()
    Image.fromarray((images(1)[0] * 255).astype("uint8")).save(tmp_path / "in" / "a.png")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "gradcam_callbacks", "explain", str(tmp_path / "nested.keras"),
         str(tmp_path / "in"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    (record,) = map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())
    assert record["layer"] == "tiny_base/feat" and record["heatmap_size"] == [16, 16]
