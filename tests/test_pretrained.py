"""The trained demo model shipped in the package, and the labelled pictures it makes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from gradcam_callbacks import explain_prediction, explain_predictions
from gradcam_callbacks.demo import GRADCAM_LAYER, load_data, pretrained, pretrained_record
from gradcam_callbacks.image import explanation_strip
from gradcam_callbacks.watch.metrics import pointing_game


def test_pretrained_model_classifies_and_points_at_the_digit_without_training():
    record = pretrained_record()
    assert record["test_accuracy"] >= 0.9 and record["pointing_game"] >= 0.9, record
    model = pretrained()
    # the record's 1000 held-out images, recomputed here on every backend (docs/demo.md)
    assert record["test_images"] == 1000
    _, test_set = load_data(num_train=1, num_test=record["test_images"], seed=record["seed"])
    predicted = np.argmax(model.predict(test_set.x, verbose=0), axis=-1)
    assert np.mean(predicted == test_set.y) >= 0.9
    expls = explain_predictions(model, test_set.x, targets=[int(t) for t in test_set.y],
                                batch_size=250)
    assert {e.layer for e in expls} == {GRADCAM_LAYER}
    heatmaps = np.stack([e.targets[0].heatmap for e in expls])
    assert heatmaps.max(axis=(1, 2)).min() > 0.99  # every map has a peak: none is blank
    assert pointing_game(heatmaps, test_set.boxes, test_set.x.shape[1:3]) >= 0.9


def _dark_pixels(picture: Image.Image) -> int:
    return int((np.asarray(picture.convert("L")) < 128).sum())


def test_multi_target_strips_name_each_panel_and_its_score():
    _, test_set = load_data(num_train=1, num_test=2)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    expl = explain_prediction(pretrained(), test_set.x[:1], targets=[1, 7, 3])
    bare = explanation_strip(expl, labels=False)
    labelled = explanation_strip(expl, class_names=names)
    assert bare.size == (4 * 48 + 3 * 4, 48)
    # panels enlarged to stay legible (48 px -> 144 px), a caption strip under each
    assert labelled.width == 4 * 144 + 3 * 4 and labelled.height > 144 + 2 * 12
    for k in range(4):
        caption = labelled.crop((k * 148, 146, k * 148 + 144, labelled.height))
        assert _dark_pixels(caption) > 30, f"panel {k} has no label"
    # the text differs per panel: the captions are not one repeated picture
    crops = [np.asarray(labelled.crop((k * 148, 146, k * 148 + 144, labelled.height)))
             for k in range(1, 4)]
    assert not np.array_equal(crops[0], crops[1]) and not np.array_equal(crops[1], crops[2])
    # Jupyter's picture is the labelled strip
    shown = Image.open(__import__("io").BytesIO(expl._repr_png_()))
    assert shown.size == explanation_strip(expl).size


def test_show_prediction_labels_several_targets_and_keeps_one_bare():
    from gradcam_callbacks import show_prediction

    _, test_set = load_data(num_train=1, num_test=1)
    model = pretrained()
    one = show_prediction(model, test_set.x[:1])
    assert one.size == (48, 48)  # ELI5's overlay, at the image's size
    several = show_prediction(model, test_set.x[:1], targets=[2, 5],
                              class_names=[f"digit {d}" for d in range(10)])
    expl = explain_prediction(model, test_set.x[:1], targets=[2, 5])
    names = [f"digit {d}" for d in range(10)]
    assert np.array_equal(np.asarray(several), np.asarray(explanation_strip(expl, names)))
    assert not np.array_equal(np.asarray(several), np.asarray(explanation_strip(expl)))
