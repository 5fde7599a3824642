"""explain_prediction(s) on every backend: ELI5's semantics case by case, batches, several
targets, the model kinds people have, and the model left as it was."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from models import images, nested_model, set_numpy_weights, small_cnn, small_sequential
from PIL import Image

import gradcam_callbacks as gc
from gradcam_callbacks import backends
from gradcam_callbacks.explain import explain_raw


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.fixture(scope="module")
def cnn():
    return small_cnn()


def test_explanation_fields_and_top_target(cnn):
    x = images(1)
    expl = gc.explain_prediction(cnn, x)
    probs = predict(cnn, x)[0]
    assert expl.estimator == "small_cnn" and expl.method == "Grad-CAM" and expl.error == ""
    assert expl.layer == "feat" and "Grad-CAM" in expl.description
    (target,) = expl.targets
    assert target.target == int(np.argmax(probs))
    assert target.score == pytest.approx(float(probs.max()), rel=1e-6)
    assert target.proba is None
    assert target.heatmap.shape == (8, 8) and target.heatmap.dtype == np.float64
    assert 0 <= target.heatmap.min() and target.heatmap.max() <= 1
    assert target.heatmap.max() > 0.5


def test_explicit_targets_in_order_with_numpy_ints(cnn):
    x = images(1)
    expl = gc.explain_prediction(cnn, x, targets=[np.int64(3), 1, 3])
    probs = predict(cnn, x)[0]
    assert [t.target for t in expl.targets] == [3, 1, 3]
    assert [t.score for t in expl.targets] == pytest.approx([probs[3], probs[1], probs[3]])
    np.testing.assert_array_equal(expl.targets[0].heatmap, expl.targets[2].heatmap)
    assert not np.array_equal(expl.targets[0].heatmap, expl.targets[1].heatmap)


def test_batch_equals_one_at_a_time(cnn):
    x = images(5, seed=3)
    batch = gc.explain_predictions(cnn, x, targets=[0, [1, 2], 4, [3], [0, 0, 1]])
    assert [len(e.targets) for e in batch] == [1, 2, 1, 1, 3]
    for n, expl in enumerate(batch):
        one = gc.explain_prediction(cnn, x[n:n + 1], targets=[t.target for t in expl.targets])
        for a, b in zip(expl.targets, one.targets):
            assert a.target == b.target
            np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
            assert a.score == pytest.approx(b.score, rel=1e-5)


def test_batch_size_gives_the_same_result(cnn):
    x = images(5, seed=4)
    whole = gc.explain_predictions(cnn, x)
    chunked = gc.explain_predictions(cnn, x, batch_size=2)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a.targets[0].heatmap, b.targets[0].heatmap, atol=1e-5)


def test_derived_image_is_array_to_img_and_given_image_is_kept(cnn):
    x = images(1) * 7 - 3
    expl = gc.explain_prediction(cnn, x)
    reference = keras.utils.array_to_img(x[0])
    assert expl.image.mode == "RGB" and expl.image.size == (16, 16)
    np.testing.assert_array_equal(np.asarray(expl.image), np.asarray(reference))
    picture = Image.new("RGB", (64, 64), (10, 20, 30))
    assert gc.explain_prediction(cnn, x, image=picture).image is picture
    arr = np.zeros((32, 32, 3), np.uint8)
    assert gc.explain_prediction(cnn, x, image=arr).image.size == (32, 32)


def test_gradcam_backend_contract(cnn):
    x = images(1)
    weights, acts, grads, idx, val = gc.gradcam_backend(cnn, x, [2], "feat")
    assert weights.shape == (12,) and acts.shape == (8, 8, 12) and grads.shape == (8, 8, 12)
    assert idx == 2 and isinstance(idx, int) and isinstance(val, float)
    np.testing.assert_allclose(weights, grads.mean(axis=(0, 1)), rtol=1e-5, atol=1e-9)
    expl = gc.explain_prediction(cnn, x, targets=[2])
    np.testing.assert_allclose(gc.gradcam(weights, acts), expl.targets[0].heatmap, atol=1e-12)
    # the activations are the layer's real output
    feat = keras.Model(cnn.inputs, cnn.get_layer("feat").output)
    np.testing.assert_allclose(acts, keras.ops.convert_to_numpy(feat(x))[0], rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="exactly one class index"):
        gc.gradcam_backend(cnn, x, [1, 2], "feat")


def test_gradients_match_finite_differences(cnn):
    """The gradient is d score / d activation, checked numerically on the head."""
    x = images(1, seed=5)
    _, acts, grads, idx, _ = gc.gradcam_backend(cnn, x, [1], "feat")
    head = keras.Sequential([cnn.get_layer("gap"), cnn.get_layer("head")])
    a = acts.astype(np.float64)
    eps = 1e-2
    for (i, j, c) in [(0, 0, 0), (3, 4, 5), (7, 7, 11)]:
        up, down = a.copy(), a.copy()
        up[i, j, c] += eps
        down[i, j, c] -= eps
        f_up = keras.ops.convert_to_numpy(head(up[None].astype("float32")))[0, idx]
        f_down = keras.ops.convert_to_numpy(head(down[None].astype("float32")))[0, idx]
        assert grads[i, j, c] == pytest.approx((f_up - f_down) / (2 * eps), rel=2e-2, abs=1e-5)


@pytest.mark.parametrize("how", ["input", "build", "fit"])
def test_sequential_models(how):
    model = small_sequential(how=how)
    reference = small_cnn()
    x = images(2)
    got = gc.explain_predictions(model, x)
    want = gc.explain_predictions(reference, x)
    assert got[0].layer == "feat"
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.targets[0].heatmap, b.targets[0].heatmap, atol=1e-5)


def test_nested_model_auto_path_and_instance():
    model = nested_model()
    x = images(2)
    auto = gc.explain_predictions(model, x)
    assert auto[0].layer == "base_net/out_relu"
    by_path = gc.explain_predictions(model, x, layer="base_net/out_relu")
    inner = model.get_layer("base_net").get_layer("out_relu")
    by_instance = gc.explain_predictions(model, x, layer=inner)
    assert by_instance[0].layer == "base_net/out_relu"
    earlier = gc.explain_predictions(model, x, layer="base_net/b_relu1")
    assert earlier[0].targets[0].heatmap.shape == (16, 16)
    for a, b, c in zip(auto, by_path, by_instance):
        np.testing.assert_array_equal(a.targets[0].heatmap, b.targets[0].heatmap)
        np.testing.assert_array_equal(a.targets[0].heatmap, c.targets[0].heatmap)
    # the nested model's activations are the base's output, i.e. the same as a flat model
    flat_x = keras.ops.convert_to_numpy(model.get_layer("base_net")(x))
    _, acts, _, _, _ = gc.gradcam_backend(model, x[:1], None, "base_net/out_relu")
    np.testing.assert_allclose(acts, flat_x[0], rtol=1e-5, atol=1e-6)


def test_layer_by_index_and_negative_index(cnn):
    x = images(1)
    by_name = gc.explain_prediction(cnn, x, layer="relu1")
    index = [layer.name for layer in cnn.layers].index("relu1")
    by_index = gc.explain_prediction(cnn, x, layer=index)
    by_negative = gc.explain_prediction(cnn, x, layer=index - len(cnn.layers))
    np.testing.assert_array_equal(by_name.targets[0].heatmap, by_index.targets[0].heatmap)
    np.testing.assert_array_equal(by_name.targets[0].heatmap, by_negative.targets[0].heatmap)
    assert by_name.targets[0].heatmap.shape == (16, 16)


class SubclassedCNN(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.conv = keras.layers.Conv2D(6, 3, padding="same")
        self.act = keras.layers.ReLU()
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.dense(self.pool(self.act(self.conv(x))))


def test_subclassed_model_with_layer_given():
    model = SubclassedCNN()
    x = images(2, shape=(10, 10, 3))
    model(x)
    set_numpy_weights(model)
    expls = gc.explain_predictions(model, x, layer=model.act)
    probs = predict(model, x)
    assert [e.targets[0].target for e in expls] == list(probs.argmax(-1))
    assert expls[0].targets[0].heatmap.shape == (10, 10)
    with pytest.raises(ValueError, match="layer=None needs a model with a symbolic input"):
        gc.explain_predictions(model, x)
    with pytest.raises(ValueError, match="rank 2"):
        gc.explain_predictions(model, x, layer=model.pool)


def multi_output_model():
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="feat")(inputs)
    g = keras.layers.GlobalAveragePooling2D()(h)
    first = keras.layers.Dense(3, activation="softmax", name="kind")(g)
    second = keras.layers.Dense(5, activation="softmax", name="color")(g)
    return set_numpy_weights(keras.Model(inputs, [first, second], name="two_heads"))


def test_multi_output_by_index_and_name():
    model = multi_output_model()
    x = images(2, shape=(12, 12, 3))
    default = gc.explain_predictions(model, x)
    probs_kind, probs_color = (keras.ops.convert_to_numpy(p) for p in model(x))
    assert [e.targets[0].target for e in default] == list(probs_kind.argmax(-1))
    by_index = gc.explain_predictions(model, x, output=1)
    by_name = gc.explain_predictions(model, x, output="color")
    assert [e.targets[0].target for e in by_index] == list(probs_color.argmax(-1))
    for a, b in zip(by_index, by_name):
        np.testing.assert_array_equal(a.targets[0].heatmap, b.targets[0].heatmap)
    assert by_index[0].targets[0].score == pytest.approx(float(probs_color[0].max()), rel=1e-5)
    with pytest.raises(ValueError, match=r"output must be one of the model's output names"):
        gc.explain_predictions(model, x, output="colour")
    with pytest.raises(ValueError, match=r"output must be an index in \[-2, 2\)"):
        gc.explain_predictions(model, x, output=2)


def test_none_spatial_dims_accept_any_size():
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="feat")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = set_numpy_weights(keras.Model(inputs, outputs))
    for size in [(9, 13), (20, 7)]:
        expl = gc.explain_prediction(model, images(1, shape=(*size, 3)))
        assert expl.targets[0].heatmap.shape == size
        assert expl.image.size == (size[1], size[0])


def test_grayscale_input():
    model = small_cnn(input_shape=(16, 16, 1))
    expl = gc.explain_prediction(model, images(1, shape=(16, 16, 1)))
    assert expl.image.mode == "L" and expl.targets[0].heatmap.shape == (8, 8)


def test_channels_first_model_matches_channels_last():
    last = small_cnn(input_shape=(16, 16, 3))
    inputs = keras.Input((3, 16, 16))
    h = keras.layers.Conv2D(8, 3, padding="same", data_format="channels_first",
                            name="conv1")(inputs)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.Conv2D(12, 3, strides=2, padding="same", data_format="channels_first",
                            name="conv2")(h)
    h = keras.layers.ReLU(name="feat")(h)
    h = keras.layers.GlobalAveragePooling2D(data_format="channels_first", name="gap")(h)
    outputs = keras.layers.Dense(5, activation="softmax", name="head")(h)
    first = keras.Model(inputs, outputs)
    first.set_weights(last.get_weights())
    x = images(2)
    # Whether the model runs at all is decided by trying it, not by the backend's name:
    # TensorFlow's own CPU kernels refuse NCHW convolutions, its oneDNN kernels (on by
    # default on AVX512_VNNI/AMX CPUs) run them.
    try:
        first.predict(np.transpose(x, (0, 3, 1, 2)), verbose=0)
    except Exception as error:  # noqa: BLE001 - narrowed just below; anything else re-raises
        if type(error).__name__ != "UnimplementedError" or "NHWC" not in str(error):
            raise
        pytest.skip("this TensorFlow's CPU kernels cannot run channels_first convolutions "
                    "(UnimplementedError: NHWC only; oneDNN off)")
    got = gc.explain_predictions(first, np.transpose(x, (0, 3, 1, 2)))
    want = gc.explain_predictions(last, x)
    for a, b in zip(got, want):
        assert a.targets[0].target == b.targets[0].target
        np.testing.assert_allclose(a.targets[0].heatmap, b.targets[0].heatmap, atol=1e-4)
        assert a.image.size == (16, 16)
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))


def test_binary_sigmoid_classifier_and_its_other_class():
    model = small_cnn(classes=1, activation="sigmoid")
    x = images(2)
    expls = gc.explain_predictions(model, x)
    p = predict(model, x)[:, 0]
    assert [e.targets[0].target for e in expls] == [0, 0]
    assert [e.targets[0].score for e in expls] == pytest.approx(list(p), rel=1e-5)
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 1\)"):
        gc.explain_predictions(model, x, targets=[1, 1])
    # The documented recipe (docs/explaining.md) for the other class: a model whose output is 1 - p.
    negative = keras.Model(model.inputs, keras.layers.Lambda(lambda q: 1 - q)(model.outputs[0]))
    other = gc.explain_predictions(negative, x)
    assert other[0].targets[0].score == pytest.approx(1 - p[0], rel=1e-5)
    _, _, grads_pos, _, _ = gc.gradcam_backend(model, x[:1], None, "feat")
    _, _, grads_neg, _, _ = gc.gradcam_backend(negative, x[:1], None, "feat")
    np.testing.assert_allclose(grads_neg, -grads_pos, rtol=1e-4, atol=1e-8)


def test_mixed_precision_heatmaps_match_float32():
    classes = 1000
    reference = small_cnn(classes=classes)
    x = images(2, seed=7)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((16, 16, 3))
        h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
        h = keras.layers.ReLU(name="relu1")(h)
        h = keras.layers.Conv2D(12, 3, strides=2, padding="same", name="conv2")(h)
        h = keras.layers.ReLU(name="feat")(h)
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        outputs = keras.layers.Dense(classes, activation="softmax", name="head",
                                     dtype="float32")(h)
        mixed = keras.Model(inputs, outputs)
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(reference.get_weights())
    assert mixed.get_layer("feat").compute_dtype == "float16"
    got = gc.explain_predictions(mixed, x)
    want = gc.explain_predictions(reference, x)
    for a, b in zip(got, want):
        assert a.targets[0].heatmap.max() > 0.5
        assert a.targets[0].target == b.targets[0].target
        np.testing.assert_allclose(a.targets[0].heatmap, b.targets[0].heatmap, atol=0.02)
    # the gradients too, not only the normalised heatmaps: the score scale is divided out
    _, _, grads_mixed, _, _ = gc.gradcam_backend(mixed, x[:1], None, "feat")
    _, _, grads_want, _, _ = gc.gradcam_backend(reference, x[:1], None, "feat")
    np.testing.assert_allclose(grads_mixed, grads_want, atol=2e-3 * np.abs(grads_want).max())


def test_zero_gradient_gives_all_zero_heatmap():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="feat")(inputs)
    g = keras.layers.GlobalAveragePooling2D()(h)
    dead = keras.layers.Dense(3, name="dead")(keras.layers.Lambda(lambda t: t * 0.0)(g))
    model = keras.Model(inputs, dead)
    expl = gc.explain_prediction(model, images(1, shape=(8, 8, 3)))
    heatmap = expl.targets[0].heatmap
    assert heatmap.shape == (8, 8) and np.all(heatmap == 0) and not np.isnan(heatmap).any()


def _state(model):
    return [np.array(w) for w in model.get_weights()]


def test_model_left_as_it_was():
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="feat")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dropout(0.5)(h)
    outputs = keras.layers.Dense(4, activation="softmax")(h)
    model = set_numpy_weights(keras.Model(inputs, outputs))
    # set_numpy_weights draws a negative moving variance: NaN outputs; make the BN statistics
    # valid so that the heatmaps compared below are numbers (NaN == NaN hid any difference)
    gamma, beta, mean, variance = model.get_layer("bn").get_weights()
    model.get_layer("bn").set_weights([gamma, beta, mean, np.abs(variance) + 0.5])
    model.get_layer("conv").trainable = False
    before = _state(model)
    layer_count = len(model.layers)
    policy = keras.config.dtype_policy().name
    trainable = [layer.trainable for layer in model.layers]
    x = images(4, shape=(12, 12, 3))
    first = gc.explain_predictions(model, x)
    second = gc.explain_predictions(model, x)
    after = _state(model)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)  # BatchNorm statistics included
    for a, b in zip(first, second):  # Dropout inactive: deterministic
        np.testing.assert_array_equal(a.targets[0].heatmap, b.targets[0].heatmap)
    assert len(model.layers) == layer_count
    assert [layer.trainable for layer in model.layers] == trainable
    assert keras.config.dtype_policy().name == policy
    assert all("call" not in vars(layer) for layer in model.layers)
    if keras.backend.backend() == "torch":
        assert all(p.grad is None for p in model.parameters())


def test_no_retrace_on_repeated_calls_and_fresh_weights():
    model = small_cnn(seed=11)
    x = images(4, seed=2)
    before = backends.compilations()
    first = gc.explain_predictions(model, x)
    function = backends.gradient_function(model, model.get_layer("feat"), "feat", 0)
    traces = function.traces
    assert traces >= 1
    # process-wide: one pass built and traced once, on every backend (a pass rebuilt per
    # call would add builds on torch too, where the cached object's own count stays at 1)
    built = backends.compilations()
    assert built["builds"] - before["builds"] == 1
    assert built["traces"] - before["traces"] == 1
    for _ in range(3):
        gc.explain_predictions(model, x)
    assert function.traces == traces
    assert backends.compilations() == built
    # new weights are used at once (no stale jit constants), still without a retrace
    set_numpy_weights(model, seed=12)
    second = gc.explain_predictions(model, x)
    assert function.traces == traces
    assert backends.compilations() == built
    fresh = small_cnn(seed=12)
    expected = gc.explain_predictions(fresh, x)
    for a, b, c in zip(first, second, expected):
        assert not np.allclose(a.targets[0].heatmap, b.targets[0].heatmap)
        np.testing.assert_allclose(b.targets[0].heatmap, c.targets[0].heatmap, atol=1e-6)


def test_engine_reports_padded_targets_consistently(cnn):
    raw = explain_raw(cnn, images(2), [[1, 2, 3], [4]], "feat")
    assert raw.targets.shape == (2, 3) and list(raw.counts) == [3, 1]
    assert list(raw.targets[1]) == [4, 4, 4]


@pytest.mark.backend_agnostic
def test_a_non_finite_map_of_any_method_names_its_doc():
    # Plan.run checks the pass's numbers once and every method's maps: a NaN in the second
    # method's map of doc 1 alone names doc 1, as "heatmap"
    from gradcam_callbacks.engine import NonFiniteError
    from gradcam_callbacks.engine.raw import check_finite

    finite = np.ones((3, 1, 2, 2))
    broken = finite.copy()
    broken[1, 0, 0, 0] = np.nan
    numbers = (np.ones((3, 1)), np.ones((3, 2, 2, 4)), np.ones((3, 1, 2, 2, 4)))
    check_finite(small_cnn(), *numbers, [finite, finite], np.ones(3))
    with pytest.raises(NonFiniteError, match=r"heatmap\) for doc\(s\) \[1\] of 3") as caught:
        check_finite(small_cnn(), *numbers, [finite, broken], np.ones(3))
    assert caught.value.problems == {1: ["heatmap"]}
