"""What GradCamCallback and the engine are given, checked before any epoch (issue #9 items
2, 4, 8, 9; issue #12 items 5, 6): probe sources, labels, class names, boxes and masks, one
writer per run directory, backend tensors as inputs, and non-finite model outputs."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from models import images, small_cnn

import gradcam_callbacks as gc
from gradcam_callbacks import cam as cam_module
from gradcam_callbacks import explain as explain_module

BACKEND = keras.backend.backend()
X = images(16, seed=3)
Y = np.arange(16) % 5
agnostic = pytest.mark.backend_agnostic


def compiled(classes=5):
    keras.utils.set_random_seed(0)
    model = small_cnn(classes=classes)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def fit_refused(cams, message, error=ValueError):
    """fit with the callback(s) raises ``error`` matching ``message`` before any epoch."""
    cams = cams if isinstance(cams, list) else [cams]
    started = []
    spy = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: started.append(e))
    with pytest.raises(error, match=message):
        compiled().fit(X, Y, epochs=2, batch_size=8, callbacks=[*cams, spy], verbose=0)
    assert started == []


# -- probe_masks and probe_boxes (#9 item 2) ----------------------------------------------
def masks(count=2, size=(16, 16)):
    m = np.zeros((count, *size), bool)
    m[:, 2:6, 3:9] = True
    return m


@agnostic
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(probe_masks=np.concatenate([masks(1), np.zeros((1, 16, 16), bool)])), ValueError,
     r"probe_masks\[1\] must mark the probe's object with at least one True pixel; "
     r"received an all-False mask"),
    (dict(probe_masks=masks(3)), ValueError,
     r"probe_masks must hold one mask per probe \(2\); received 3 masks"),
    (dict(probe_masks=masks(2).astype(np.uint8)), TypeError,
     r"probe_masks must be a boolean array \(2, H, W\); received an array of shape "
     r"\(2, 16, 16\) and dtype uint8"),
    (dict(probe_masks=masks(2, (8, 8)), images=[np.zeros((16, 16, 3), np.uint8)] * 2),
     ValueError, r"probe_masks\[0\] must have its picture's size \(height, width\) = "
     r"\(16, 16\); received shape \(8, 8\)"),
    (dict(probe_boxes=[[0, 0, 4, 4], [5, 2, 5, 9]]), ValueError,
     r"probe_boxes\[1\] must satisfy x0 < x1 and y0 < y1 \(x1, y1 exclusive\); "
     r"received \[5, 2, 5, 9\]"),
    (dict(probe_boxes=[[0, 0, 4, 4], [1, 1, 2.5, 3]]), ValueError,
     r"probe_boxes must hold whole pixel coordinates; received \[1.0, 1.0, 2.5, 3.0\] for "
     r"probe 1"),
    (dict(probe_boxes=[[0, 0, 4, 4]] * 3), ValueError, r"probe_boxes must have shape \(2, 4\)"),
    (dict(probe_boxes=[[0, 0, 4, 4], [0, 0, 4, 20]], images=[np.zeros((16, 16), np.uint8)] * 2),
     ValueError, r"probe_boxes\[1\] must lie inside its 16x16 image \(0 <= x0 < x1 <= 16, "
     r"0 <= y0 < y1 <= 16\); received \[0, 0, 4, 20\]"),
    (dict(probe_boxes=[[0, 0, 4, 4]] * 2, probe_masks=masks(2)), ValueError,
     r"pass probe_boxes or probe_masks, not both"),
])
def test_bad_boxes_and_masks_raise_in_init(kwargs, error, message):
    with pytest.raises(error, match=message):
        gc.GradCamCallback(X[:2], **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(probe_masks=masks(2, (8, 8))),
     r"probe_masks\[0\] must have its picture's size \(height, width\) = \(16, 16\); "
     r"received shape \(8, 8\)"),
    (dict(probe_boxes=[[0, 0, 4, 4], [10, 0, 17, 4]]),
     r"probe_boxes\[1\] must lie inside its 16x16 image .*received \[10, 0, 17, 4\]"),
])
def test_boxes_and_masks_checked_against_the_pictures_before_the_first_epoch(tmp_path, kwargs,
                                                                            message):
    fit_refused(gc.GradCamCallback(X[:2], log_dir=tmp_path, **kwargs), message)


# one run directory per fit (#9 item 8, #25): tests/test_stopped_runs.py


@agnostic
def test_default_log_dirs_are_new_per_callback():
    dirs = {gc.GradCamCallback(X[:1]).log_dir for _ in range(5)}
    assert len(dirs) == 5
    assert all(d.startswith("logs/gradcam/") for d in dirs)


# -- probe sources (#9 item 9, #12 item 6) --------------------------------------------------
def test_backend_tensors_and_lists_are_probes_not_batches():
    tensor = keras.ops.convert_to_tensor(X[:3])
    from_tensor = gc.GradCamCallback(tensor)
    np.testing.assert_array_equal(from_tensor.probe_x, X[:3])
    labelled = gc.GradCamCallback((tensor, keras.ops.convert_to_tensor(Y[:3])), targets="true")
    assert labelled.probe_y.tolist() == Y[:3].tolist()
    np.testing.assert_array_equal(gc.GradCamCallback(list(X[:3])).probe_x, X[:3])
    np.testing.assert_allclose(gc.GradCamCallback(X[:3].tolist()).probe_x, X[:3])
    np.testing.assert_array_equal(gc.GradCamCallback([X[:2], X[2:5]], max_probes=4).probe_x,
                                  X[:4])  # a list of batches of different sizes


@agnostic
def test_lists_of_mixed_images_and_bad_elements_are_named():
    with pytest.raises(ValueError, match=r"probes must all have one shape; received element 0 "
                       r"with inputs of shape \(16, 16, 3\) and element 1 with \(12, 12, 3\)"):
        gc.GradCamCallback([X[0], images(1, shape=(12, 12, 3))[0]])
    with pytest.raises(ValueError, match=r"probes must be images: .*; received probes "
                       r"element 0 of shape \(16, 16\), one grayscale image without a "
                       r"channel axis: pass x\[\.\.\., None\] \(shape \(16, 16, 1\)\)"):
        gc.GradCamCallback(iter([X[0, ..., 0], X[1, ..., 0]]))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.data needs TensorFlow")
def test_unbatched_tf_data_is_read_example_by_example():
    import tensorflow as tf

    cam = gc.GradCamCallback(tf.data.Dataset.from_tensor_slices((X, Y)), targets="true",
                             max_probes=5)
    np.testing.assert_array_equal(cam.probe_x, X[:5])
    assert cam.probe_y.tolist() == Y[:5].tolist()
    only_x = gc.GradCamCallback(tf.data.Dataset.from_tensor_slices(X), max_probes=3)
    np.testing.assert_array_equal(only_x.probe_x, X[:3])
    one_hot = tf.data.Dataset.from_tensor_slices((X, np.eye(5)[Y])).batch(4)
    assert gc.GradCamCallback(one_hot, targets="true", max_probes=6).probe_y.shape == (6, 5)


@agnostic
def test_nan_probes_are_named_probes_in_init():
    bad = X[:3].copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"probes must be finite; received 1 NaN or infinite "
                       r"value\(s\) \(in entries \[1\]\)"):
        gc.GradCamCallback(bad)


@agnostic
@pytest.mark.parametrize("y, error, message", [
    (np.array([0, np.nan, 2]), ValueError,
     r"probes labels must be finite for targets='true'; received NaN or inf in the labels of "
     r"probe\(s\) \[1\]"),
    (np.array([0, 1.5, 2]), ValueError,
     r"probes labels must be whole class indices for targets='true'; received 1.5 for probe 1"),
    (np.array([0, 1, -1]), ValueError,
     r"probes labels must be class indices >= 0 for targets='true'; received -1 for probe 2"),
    (np.array(["cat", "dog", "cat"]), TypeError,
     r"probes labels must be numbers .* for targets='true'; received labels of dtype <U3"),
    (np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]], np.float32), ValueError,
     r"probes labels as one-hot rows must mark a class \(an entry > 0\) for targets='true'; "
     r"received all-zero rows for probe\(s\) \[1\]"),
])
def test_bad_labels_are_named_in_init(y, error, message):
    with pytest.raises(error, match=message):
        gc.GradCamCallback((X[:3], y), targets="true")


@agnostic
def test_unused_labels_are_not_judged():
    gc.GradCamCallback((X[:3], np.array([0.5, np.nan, -1.0])))  # regression targets, say


def test_labels_beyond_the_model_classes_are_refused_before_the_first_epoch(tmp_path):
    fit_refused(gc.GradCamCallback((X[:3], np.array([0, 7, 1])), targets="true",
                                   log_dir=tmp_path),
                r"probes labels must be class indices in \[0, 5\) for model 'small_cnn'; "
                r"received 7 for probe 1")
    fit_refused(gc.GradCamCallback((X[:3], np.eye(4)[[0, 1, 2]]), targets="true",
                                   log_dir=tmp_path),
                r"probes labels as one-hot rows must have one column per class of model "
                r"'small_cnn' \(5\); received labels of shape \(3, 4\)")


# -- class names (#9 item 9, #12 item 5) ------------------------------------------------------
@agnostic
def test_class_names_from_a_generator_are_kept():
    cam = gc.GradCamCallback(X[:2], class_names=(name for name in "abcde"))
    assert cam.class_names == list("abcde")
    with pytest.raises(TypeError, match=r"class_names must be a list of str; received set"):
        gc.GradCamCallback(X[:2], class_names={"a", "b"})
    with pytest.raises(TypeError, match=r"class_names must be a list of str; received int: 3 at "
                       r"class_names\[1\]"):
        gc.GradCamCallback(X[:2], class_names=["a", 3])


def test_class_names_must_match_the_model_before_the_first_epoch(tmp_path):
    fit_refused(gc.GradCamCallback(X[:2], class_names=["a", "b"], log_dir=tmp_path),
                r"class_names must hold one name per class of model 'small_cnn' \(5\); "
                r"received 2 names")


# -- uint8 probes (#9 item 9) ----------------------------------------------------------------
def test_uint8_probes_for_a_float_model_warn_once_per_fit(tmp_path):
    pixels = (X[:2] * 255).astype(np.uint8)
    model = compiled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, Y, epochs=1, batch_size=8, verbose=0,
                  callbacks=[gc.GradCamCallback(pixels, log_dir=tmp_path / "a")])
    found = [str(w.message) for w in caught if issubclass(w.category, UserWarning)
             and "uint8" in str(w.message)]
    assert len(found) == 1
    assert "fed to model 'small_cnn' as-is" in found[0] and "/ 255" in found[0]
    # a model that rescales its own inputs is fed uint8 on purpose: no warning
    inputs = keras.Input((16, 16, 3))
    rescaling = keras.Model(inputs, small_cnn()(keras.layers.Rescaling(1 / 255)(inputs)))
    rescaling.compile("adam", "sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rescaling.fit(X, Y, epochs=1, batch_size=8, verbose=0,
                      callbacks=[gc.GradCamCallback(pixels, log_dir=tmp_path / "b",
                                                    layer="small_cnn/feat")])
    assert not [w for w in caught if "uint8" in str(w.message)]


# -- backend tensors for the engine (#12 item 6) -------------------------------------------
def test_backend_tensors_and_lists_as_docs_and_images():
    model = small_cnn()
    reference = gc.explain_predictions(model, X[:2])
    tensors = gc.explain_predictions(model, keras.ops.convert_to_tensor(X[:2]),
                                     images=keras.ops.convert_to_tensor(
                                         (X[:2] * 255).astype(np.uint8)))
    lists = gc.explain_predictions(model, X[:2].tolist())
    for ref, got, listed in zip(reference, tensors, lists):
        np.testing.assert_allclose(got.targets[0].heatmap, ref.targets[0].heatmap, atol=1e-6)
        np.testing.assert_allclose(listed.targets[0].heatmap, ref.targets[0].heatmap, atol=1e-5)
    assert tensors[0].image.size == (16, 16)
    one = gc.explain_prediction(model, keras.ops.convert_to_tensor(X[:1]))
    assert one.targets[0].target == reference[0].targets[0].target


@pytest.mark.skipif(BACKEND != "torch", reason="a tensor that requires grad is torch's")
def test_torch_tensor_that_requires_grad_is_a_doc():
    import torch

    model = small_cnn()
    doc = torch.tensor(X[:1], requires_grad=True)
    expl = gc.explain_prediction(model, doc)
    np.testing.assert_allclose(expl.targets[0].heatmap,
                               gc.explain_prediction(model, X[:1]).targets[0].heatmap,
                               atol=1e-6)


# -- non-finite models (#9 item 4) -----------------------------------------------------------
def nan_model():
    """small_cnn whose head weights are NaN: every score is NaN."""
    model = small_cnn()
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([np.full_like(kernel, np.nan), bias])
    return model


def test_a_nan_model_is_a_clear_error_naming_the_docs():
    with pytest.raises(ValueError, match=r"model 'small_cnn' produced non-finite values \(NaN "
                       r"or inf: score, gradients, heatmap\) for doc\(s\) \[0\] of 1, so their "
                       r"Grad-CAM maps cannot be scaled to \[0, 1\]") as caught:
        gc.explain_prediction(nan_model(), X[:1])
    assert isinstance(caught.value, explain_module.NonFiniteError)
    assert caught.value.indices == [0]
    with pytest.raises(ValueError, match=r"for doc\(s\) \[0, 1, 2\] of 3"):
        gc.explain_predictions(nan_model(), X[:3], batch_size=2)


def test_extreme_but_finite_inputs_name_only_their_docs():
    docs = X[:4].copy()
    docs[[1, 3]] *= np.float32(1e37)
    assert np.isfinite(docs).all()
    with pytest.raises(ValueError, match=r"non-finite values .* for doc\(s\) \[1, 3\] of 4"
                       ) as caught:
        gc.explain_predictions(small_cnn(), docs)
    assert set(caught.value.problems) == {1, 3}
    # which quantity turns non-finite first (the score, or only the gradients and the map)
    # depends on the kernels (oneDNN's fused ones keep some sums finite): any is named
    for index in (1, 3):
        named = caught.value.problems[index]
        assert named and set(named) <= {"score", "gradients", "heatmap"}, named


@agnostic
def test_gradcam_refuses_non_finite_numbers():
    acts = np.ones((2, 2, 1), np.float32)
    with pytest.raises(ValueError, match=r"weights must be finite; received 1 NaN"):
        cam_module.gradcam(np.array([np.nan], np.float32), acts)
    with pytest.raises(ValueError, match=r"activations must be finite"):
        cam_module.gradcam(np.ones(1, np.float32), acts * np.inf)
    with pytest.raises(ValueError, match=r"weights and activations must give a finite map; "
                       r"received values whose weighted sum overflows"):
        cam_module.gradcam(np.array([1e30, 1e30], np.float32),
                           np.full((2, 2, 2), 1e30, np.float32))
