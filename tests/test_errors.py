"""The bad-input table: every misuse is a TypeError or ValueError that names the argument,
what was expected and what was received, raised before any computation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from models import images, small_cnn
from PIL import Image

import gradcam_callbacks as gc
from gradcam_callbacks import backends


@pytest.fixture(scope="module")
def cnn():
    return small_cnn()


X1 = images(1)
X3 = images(3)

CASES = [
    # (call, kwargs, exception, message regex)
    ("one", dict(doc="cat.png"), TypeError, r"doc must be a numpy array, a backend tensor \(TensorFlow, JAX, PyTorch\) or nested lists of numbers; received str"),
    ("one", dict(doc={"x": X1}), TypeError, r"doc must be a numpy array, a backend tensor .*; received dict"),
    ("one", dict(doc=iter(X1)), TypeError, r"doc must be a numpy array, a backend tensor .*; received \w*iterator"),
    ("one", dict(doc=[[[[0.0, 1.0]], [[2.0]]]]), ValueError, r"doc must be a rectangular array \(every row of the same length\); received a list numpy cannot stack"),
    ("one", dict(doc=[[[["a", "b", "c"]] * 16] * 16]), TypeError, r"doc must hold real numbers; received dtype <U1"),
    ("one", dict(doc=X1.astype(bool)), TypeError, r"doc must hold real numbers; received dtype bool"),
    ("one", dict(doc=X1[0]), ValueError, r"doc must have rank 4, shape \(1, 16, 16, 3\).*received shape \(16, 16, 3\)"),
    ("one", dict(doc=X3), ValueError, r"doc must be a batch of exactly one input.*received shape \(3, 16, 16, 3\)"),
    ("one", dict(doc=images(1, shape=(16, 15, 3))), ValueError, r"doc shape must match the model's input \(1, 16, 16, 3\); received shape \(1, 16, 15, 3\)"),
    ("one", dict(doc=np.where(X1 > 0.5, np.nan, X1)), ValueError, r"doc must be finite; received \d+ NaN or infinite value\(s\) \(in entries \[0\]\)"),
    ("one", dict(doc=np.where(X1 > 0.5, np.inf, X1)), ValueError, r"doc must be finite"),
    ("one", dict(doc=X1, targets=3), TypeError, r"targets must be None or a list of class indices; received 3"),
    ("one", dict(doc=X1, targets=[]), ValueError, r"targets\[0\] must not be empty"),
    ("one", dict(doc=X1, targets=[1.5]), TypeError, r"targets\[0\] must hold integer class indices; received float: 1.5"),
    ("one", dict(doc=X1, targets=[True]), TypeError, r"integer class indices; received bool"),
    ("one", dict(doc=X1, targets=[5]), ValueError, r"targets must be class indices in \[0, 5\); received 5"),
    ("one", dict(doc=X1, targets=[-1]), ValueError, r"targets must be class indices in \[0, classes\); received -1"),
    ("one", dict(doc=X1, layer="nope"), ValueError, r"layer 'nope' not found: 'small_cnn' has no layer named 'nope'; its layers are .*'feat'"),
    ("one", dict(doc=X1, layer="feat/inner"), ValueError, r"layer 'feat/inner' not found: 'feat' has no layer named 'inner'"),
    ("one", dict(doc=X1, layer=99), ValueError, r"layer index must be in \[-7, 7\) for model 'small_cnn' with 7 layers; received layer=99"),
    ("one", dict(doc=X1, layer=1.0), TypeError, r"layer must be None, a keras Layer, a name or path \(str\) or an index \(int\); received float"),
    ("one", dict(doc=X1, layer="gap"), ValueError, r"layer 'gap' has an output of rank 2; Grad-CAM needs a spatial feature map of rank 4"),
    ("one", dict(doc=X1, layer=keras.layers.ReLU(name="stranger")), ValueError, r"layer must be a layer of model 'small_cnn'; received layer 'stranger'"),
    ("one", dict(doc=X1, output=1), ValueError, r"output must be an index in \[-1, 1\) for model 'small_cnn' with 1 output\(s\); received output=1"),
    ("one", dict(doc=X1, output="probs"), ValueError, r"output must be one of the model's output names \['head'\]; received output='probs'"),
    ("one", dict(doc=X1, output=1.0), TypeError, r"output must be None, an index \(int\) or an output name \(str\); received float"),
    ("one", dict(doc=X1, image="cat.png"), TypeError, r"image must be a Pillow image or a uint8 array.*received str"),
    ("one", dict(doc=X1, tagets=[1]), TypeError, r"unexpected keyword argument 'tagets'"),
    ("many", dict(docs=X3, targets=[1, 2]), ValueError, r"targets must have one entry per doc \(3\); received 2 entries"),
    ("many", dict(docs=X3, targets="1"), TypeError, r"targets must be None, a list of 3 class indices or a list of 3 lists; received str"),
    ("many", dict(docs=X3, targets=[1, [2, "x"], 0]), TypeError, r"targets\[1\] must hold integer class indices; received str: 'x'"),
    ("many", dict(docs=X3, images=[Image.new("RGB", (4, 4))]), ValueError, r"images must hold one picture per doc \(3\); received 1"),
    ("many", dict(docs=X3, images=[np.zeros((4, 4), np.float32)] * 3), TypeError, r"images\[0\] must be a Pillow image or a uint8 array.*received array of shape \(4, 4\) and dtype float32"),
    ("many", dict(docs=X3[:0]), ValueError, r"docs must hold at least one input"),
    ("many", dict(docs=X3, batch_size=0), ValueError, r"batch_size must be a positive integer or None; received 0"),
    ("many", dict(docs=X3, batch_size=1.5), ValueError, r"batch_size must be a positive integer or None; received 1.5"),
    ("many", dict(docs=X3, batch_size=True), ValueError, r"batch_size must be a positive integer or None; received True"),
    ("many", dict(docs=X3, images="cats/"), TypeError, r"images must be None, a list of Pillow images or uint8 arrays, or a uint8 array \(N, H, W\[, C\]\); received str"),
    ("many", dict(docs=np.where(X3 > 2, 0, X3 * np.array([1, np.nan, np.inf])[:, None, None, None])), ValueError, r"docs must be finite; received \d+ NaN or infinite value\(s\) \(in entries \[1, 2\]\)"),
    ("show", dict(doc=X1, alpha_limit=1.5), ValueError, r"alpha_limit must be in \[0, 1\]; received alpha_limit=1.5"),
    ("show", dict(doc=X1, alpha_limit="high"), TypeError, r"alpha_limit must be a number in \[0, 1\] or None; received str"),
    ("show", dict(doc=X1, colormap="no_such_map"), ValueError, r"colormap must be a matplotlib colormap name"),
    ("show", dict(doc=X1, colour="red"), TypeError, r"show_prediction\(\) got unexpected keyword argument\(s\) colour; accepted: image, targets"),
]


@pytest.mark.parametrize("call, kwargs, error, message", CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1])}-{i}" for i, c in enumerate(CASES)])
def test_bad_input(cnn, call, kwargs, error, message):
    function = {"one": gc.explain_prediction, "many": gc.explain_predictions,
                "show": gc.show_prediction}[call]
    before = backends.compilations(), backends.passes_run()
    with pytest.raises(error, match=message):
        function(cnn, **kwargs)
    # raised before any computation: no pass was built, traced or run (on PyTorch, eager, a
    # pass that ran is seen only by passes_run)
    assert (backends.compilations(), backends.passes_run()) == before


def test_model_argument_errors():
    with pytest.raises(TypeError, match=r"model must be a keras.Model; received str"):
        gc.explain_prediction("model.keras", X1)
    unbuilt = keras.Sequential([keras.layers.Conv2D(2, 3), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"model 'sequential.*' is not built: call it on data"):
        gc.explain_prediction(unbuilt, X1)
    no_spatial = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"model must take images, an input of rank 4 .* has "
                       r"input shape \(None, 8\)"):
        gc.explain_prediction(no_spatial, np.zeros((1, 8), "float32"), layer=None)


def test_multi_input_model_is_refused():
    a, b = keras.Input((4, 4, 1)), keras.Input((4, 4, 1))
    h = keras.layers.Concatenate()([a, b])
    out = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    model = keras.Model([a, b], out)
    with pytest.raises(ValueError, match=r"model must have one input; model .* has 2 inputs"):
        gc.explain_prediction(model, np.zeros((1, 4, 4, 1), "float32"))


def test_format_as_image_needs_a_pil_image(cnn):
    expl = gc.explain_prediction(cnn, X1)
    expl.image = np.zeros((4, 4))
    with pytest.raises(TypeError, match=r"expl.image must be a PIL.Image.Image; received ndarray"):
        gc.format_as_image(expl)
