"""The monitor acts: the callback's means in Keras' epoch ``logs``, where ``History``,
``CSVLogger``, ``EarlyStopping`` and ``ModelCheckpoint`` read them.

Real small models on the bundled cluttered digits (24x24, with a marker as the artifact),
a few tiny epochs each; no mocks.
"""

from __future__ import annotations

import csv
import re
import warnings

import keras
import numpy as np
import pytest

from gradcam_callbacks import GradCamCallback
from gradcam_callbacks.demo.datasets import make_cluttered_digits
from gradcam_callbacks.watch import tags
from gradcam_callbacks.watch.alarm import ShortcutAlarm, ShortcutWarning
from gradcam_callbacks.watch.tensorboard import read_events

KEYS = [tags.LOG_MEAN_CHANGE, tags.LOG_POINTING_GAME, tags.LOG_BOX_MASS, tags.LOG_ARTIFACT_MASS]


@pytest.fixture(scope="module")
def data():
    return make_cluttered_digits(64, canvas_size=24, digit_size=16, clutter=1, seed=0,
                                 marker=0.9)


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((24, 24, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="feat")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    return model


def _cam(data, tmp_path, **kwargs) -> GradCamCallback:
    return GradCamCallback(data.x[:4], probe_boxes=data.boxes[:4],
                           artifact_boxes=data.marker_boxes[:4],
                           log_dir=tmp_path / "gradcam", display_size=24, **kwargs)


def _fit(model, data, callbacks, epochs):
    return model.fit(data.x, data.y, batch_size=32, epochs=epochs, verbose=0,
                     callbacks=callbacks)


def _scalars(log_dir, tag) -> dict[int, float]:
    return {r.step: r.value for r in read_events(log_dir) if r.tag == tag}


def test_history_and_csv_logger_hold_the_keys_and_tensorboard_the_same_numbers(
        data, tmp_path):
    cam = _cam(data, tmp_path, freq=2)
    log = tmp_path / "epochs.csv"
    history = _fit(_model(), data, [cam, keras.callbacks.CSVLogger(str(log))], epochs=3)

    for key in KEYS:
        assert len(history.history[key]) == 3, key
    with open(log, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and set(KEYS) <= set(rows[0])
    # epochs 0 and 2 are logged (2 is the last); epoch 1 carries epoch 0's values
    for key, tag in [(tags.LOG_POINTING_GAME, tags.POINTING_GAME),
                     (tags.LOG_BOX_MASS, tags.MEAN_BOX_MASS),
                     (tags.LOG_ARTIFACT_MASS, tags.MEAN_ARTIFACT_MASS),
                     (tags.LOG_MEAN_CHANGE, tags.MEAN_CHANGE)]:
        written = _scalars(cam.run_dir, tag)
        # the change has no value at step -1, the first map
        assert sorted(written) == ([0, 2] if tag == tags.MEAN_CHANGE else [-1, 0, 2]), tag
        values = history.history[key]
        np.testing.assert_allclose(values, [written[0], written[0], written[2]], rtol=1e-6,
                                   err_msg=key)
        assert [float(row[key]) for row in rows] == pytest.approx(values, rel=1e-6)
    # the per-probe artifact scalars are in TensorBoard too
    assert sorted(_scalars(cam.run_dir, tags.probe_scalar_tag(3, "artifact_mass"))) == [-1, 0, 2]
    assert all(0.0 <= v <= 1.0 for v in history.history[tags.LOG_ARTIFACT_MASS])


def test_without_boxes_only_the_change_is_logged_and_nan_when_not_measurable(data, tmp_path):
    cam = GradCamCallback(data.x[:2], log_dir=tmp_path / "gradcam", log_initial=False,
                          display_size=24)
    history = _fit(_model(), data, [cam], epochs=2)
    assert not {tags.LOG_POINTING_GAME, tags.LOG_BOX_MASS, tags.LOG_ARTIFACT_MASS} & set(
        history.history)
    change = history.history[tags.LOG_MEAN_CHANGE]
    # epoch 0 has no earlier map to compare with (no log_initial): NaN, yet the key is there
    assert np.isnan(change[0]) and np.isfinite(change[1])


def test_early_stopping_reads_the_artifact_mass(data, tmp_path):
    # freq=2: epoch 1 carries epoch 0's value, which is no improvement, so patience=0 stops
    # the fit after epoch 1 (Keras stops at the first epoch > 0 without improvement)
    cam = _cam(data, tmp_path, freq=2)
    stop = keras.callbacks.EarlyStopping(monitor=tags.LOG_ARTIFACT_MASS, mode="min",
                                         patience=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "metric not available"
        history = _fit(_model(), data, [cam, stop], epochs=6)
    assert stop.stopped_epoch == 1 and len(history.history["loss"]) == 2
    # the stopped fit's last epoch is logged
    assert sorted(_scalars(cam.run_dir, tags.MEAN_ARTIFACT_MASS)) == [-1, 0, 1]


def test_reduce_lr_on_plateau_reads_the_artifact_mass(data, tmp_path):
    # freq=2: epoch 1 carries epoch 0's value, no improvement: patience=0 halves the rate
    cam = _cam(data, tmp_path, freq=2)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor=tags.LOG_ARTIFACT_MASS, mode="min",
                                                patience=0, factor=0.5, min_lr=1e-6)
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "metric not available"
        _fit(model, data, [cam, plateau], epochs=2)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == \
        pytest.approx(0.01)


def test_listed_last_the_callbacks_before_it_do_not_see_the_keys(data, tmp_path):
    cam = _cam(data, tmp_path, freq=2)
    stop = keras.callbacks.EarlyStopping(monitor=tags.LOG_ARTIFACT_MASS, mode="min",
                                         patience=0)
    with pytest.warns(UserWarning, match=re.escape(
            "Early stopping conditioned on metric `gradcam_artifact_mass` which is not "
            "available")):
        history = _fit(_model(), data, [stop, cam], epochs=3)
    assert stop.stopped_epoch == 0 and len(history.history["loss"]) == 3  # never stopped
    assert len(history.history[tags.LOG_ARTIFACT_MASS]) == 3  # History comes last


def test_model_checkpoint_keeps_the_best_looking_epoch(data, tmp_path):
    cam = _cam(data, tmp_path, log_initial=False)
    path = tmp_path / "best.weights.h5"
    keep = keras.callbacks.ModelCheckpoint(str(path), monitor=tags.LOG_POINTING_GAME,
                                           mode="max", save_best_only=True,
                                           save_weights_only=True)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(
            [np.array(w) for w in model.get_weights()]))
    model = _model()
    history = _fit(model, data, [cam, keep, record], epochs=4)

    pointing = history.history[tags.LOG_POINTING_GAME]
    best = int(np.argmax(pointing))  # the first epoch of the highest value
    other = _model(seed=1)
    other.load_weights(str(path))
    for saved, kept in zip(other.get_weights(), seen[best]):
        np.testing.assert_array_equal(saved, kept)
    if best != len(seen) - 1:  # (epoch 0 of 4 under TensorFlow) not the last weights
        assert any(not np.array_equal(a, b) for a, b in zip(seen[best], seen[-1]))


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("kwargs, error, words", [
    ({"artifact_boxes": [[0, 0, 2]]}, ValueError,
     "artifact_boxes must have shape (1, 4), one (x0, y0, x1, y1) per probe; received "
     "shape (1, 3)"),
    ({"artifact_boxes": [[2, 0, 1, 1]]}, ValueError,
     "artifact_boxes[0] must satisfy x0 < x1 and y0 < y1"),
    ({"artifact_boxes": [[0, 0, 30, 4]]}, ValueError,
     "artifact_boxes[0] must lie inside its 24x24 image"),
    ({"artifact_boxes": np.array([[True, True, True, True]])}, TypeError,
     "artifact_boxes must hold integer pixel coordinates; received dtype bool"),
    ({"artifact_masks": np.zeros((1, 24, 24), int)}, TypeError,
     "artifact_masks must be a boolean array (1, H, W)"),
    ({"artifact_masks": np.zeros((1, 24, 24), bool)}, ValueError,
     "artifact_masks[0] must mark the probe's artifact with at least one True pixel"),
    ({"artifact_masks": np.ones((1, 20, 24), bool)}, ValueError,
     "artifact_masks[0] must have its picture's size (height, width) = (24, 24)"),
    ({"artifact_boxes": [[0, 0, 2, 2]], "artifact_masks": np.ones((1, 24, 24), bool)},
     ValueError, "pass artifact_boxes or artifact_masks, not both"),
])
def test_bad_artifacts_are_refused(data, kwargs, error, words):
    with pytest.raises(error, match=re.escape(words)):
        GradCamCallback(data.x[:1], images=[(data.x[0, ..., 0] * 255).astype(np.uint8)],
                        **kwargs)


# -- the shortcut alarm -------------------------------------------------------------------
def _alarm_fit(data, tmp_path, alarm, epochs, **kwargs):
    cam = _cam(data, tmp_path, alarm=alarm, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _fit(_model(), data, [cam], epochs=epochs)
    return history, [w for w in caught if issubclass(w.category, ShortcutWarning)], caught


def test_alarm_stops_after_patience_logged_epochs(data, tmp_path):
    seen = []

    def always(means):
        seen.append(dict(means))
        return True

    alarm = ShortcutAlarm(always, patience=2, stop=True)
    history, fired, _ = _alarm_fit(data, tmp_path, alarm, epochs=6, freq=2)
    # logged epochs 0 and 2 (not step -1): it fires at epoch 2 and the fit ends there
    assert alarm.fired_at == 2 and len(history.history["loss"]) == 3
    assert len(fired) == 1
    assert "held for 2 logged epoch(s) in a row, up to epoch 3" in str(fired[0].message)
    assert "stopping the fit" in str(fired[0].message)
    assert [sorted(m) for m in seen] == [sorted(KEYS)] * 2
    assert seen[-1][tags.LOG_ARTIFACT_MASS] == history.history[tags.LOG_ARTIFACT_MASS][-1]


def test_alarm_that_only_warns_lets_the_fit_run_and_a_quiet_one_says_nothing(data, tmp_path):
    loud = ShortcutAlarm(lambda means: True)
    history, fired, _ = _alarm_fit(data, tmp_path / "loud", loud, epochs=3)
    assert loud.fired_at == 0 and len(fired) == 1 and len(history.history["loss"]) == 3
    quiet = ShortcutAlarm(lambda means: False, stop=True)
    history, fired, _ = _alarm_fit(data, tmp_path / "quiet", quiet, epochs=3)
    assert quiet.fired_at is None and not fired and len(history.history["loss"]) == 3


def test_alarm_whose_condition_raises_warns_and_training_goes_on(data, tmp_path):
    def broken(means):
        raise KeyError("nope")

    history, fired, caught = _alarm_fit(data, tmp_path, ShortcutAlarm(broken, stop=True),
                                        epochs=2)
    assert not fired and len(history.history["loss"]) == 2
    assert any("could not evaluate its alarm at step 0 (KeyError" in str(w.message)
               for w in caught)


@pytest.mark.backend_agnostic
def test_alarm_arguments_are_checked(data):
    with pytest.raises(ValueError, match=re.escape(
            "alarm=ShortcutAlarm() compares the mass on the artifact with the mass on the "
            "object: it needs artifact_boxes (or artifact_masks) and probe_boxes (or "
            "probe_masks); received artifact_boxes=None, probe_boxes=given")):
        GradCamCallback(data.x[:2], probe_boxes=data.boxes[:2], alarm=ShortcutAlarm())
    with pytest.raises(TypeError, match="alarm must be a ShortcutAlarm or None; received str"):
        GradCamCallback(data.x[:2], alarm="stop")
    with pytest.raises(TypeError, match="condition must be a function"):
        ShortcutAlarm(condition=0.5)
    with pytest.raises(ValueError, match="patience"):
        ShortcutAlarm(patience=0)
    # a condition of its own needs no artifact
    GradCamCallback(data.x[:2], alarm=ShortcutAlarm(lambda m: m["gradcam_mean_change"] > 0.5))
