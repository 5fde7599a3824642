"""GradCamCallback inside real model.fit runs on every backend: what it logs, when, and
that it never changes or stops training."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import warnings
from collections import defaultdict

import keras
import numpy as np
import pytest
from models import images, small_cnn
from PIL import Image

import gradcam_callbacks as gc
from gradcam_callbacks import backends
from gradcam_callbacks.watch import metrics
from gradcam_callbacks.watch.tensorboard import read_events

X = images(32, seed=21)
Y = (np.arange(32) * 7) % 5


def compiled(seed=0, dropout=False):
    keras.utils.set_random_seed(seed)
    model = small_cnn(seed=seed)
    if dropout:
        h = keras.layers.Dropout(0.3)(model.get_layer("gap").output)
        model = keras.Model(model.inputs, model.get_layer("head")(h))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def by_tag(log_dir):
    events = defaultdict(list)
    for record in read_events(log_dir):
        events[(record.tag, record.kind)].append(record)
    return events


def test_logs_each_probe_per_logged_epoch(tmp_path):
    model = compiled()
    cam = gc.GradCamCallback((X[:3], Y[:3]), targets="true", log_dir=tmp_path / "cam",
                             class_names=list("abcde"), probe_boxes=[[0, 0, 8, 8]] * 3)
    model.fit(X, Y, epochs=3, batch_size=8, callbacks=[cam], verbose=0)
    events = by_tag(tmp_path / "cam")
    for i in range(3):
        tag = f"gradcam/probe_{i:02d}"
        shots = events[(tag, "image")]
        assert [r.step for r in shots] == [-1, 0, 1, 2]  # untrained, then Keras' epoch steps
        for record in shots:
            picture = Image.open(io.BytesIO(record.value))
            # 16 px probes are shown 8x (display_size 128): input and overlay, 4 px apart,
            # with a two-line caption below (17 px a line, whatever the text)
            assert picture.size == (128 * 2 + 4, 128 + 2 + 2 * 17)
        for scalar in ("score", "box_mass", "pointing_hit"):
            assert [r.step for r in events[(f"{tag}/{scalar}", "scalar")]] == [-1, 0, 1, 2]
        assert [r.step for r in events[(f"{tag}/change", "scalar")]] == [0, 1, 2]
        assert [r.step for r in events[(f"gradcam/timeline/probe_{i:02d}", "image")]] == [
            -1, 0, 1, 2]
    assert [r.step for r in events[("gradcam/grid", "image")]] == [-1, 0, 1, 2]
    assert [r.value for r in events[("gradcam/nonfinite", "scalar")]] == [0, 0, 0, 0]
    for scalar in ("pointing_game", "mean_box_mass"):
        assert len(events[(f"gradcam/{scalar}", "scalar")]) == 4
    # The last step's scalars are the final model's numbers.
    final = gc.explain_predictions(model, X[:3], targets=list(Y[:3]))
    heatmaps = np.stack([e.targets[0].heatmap for e in final])
    masks = metrics.boxes_to_masks(np.array([[0, 0, 8, 8]] * 3), (16, 16))
    for i in range(3):
        tag = f"gradcam/probe_{i:02d}"
        assert events[(f"{tag}/score", "scalar")][-1].value == pytest.approx(
            final[i].targets[0].score, rel=1e-4)
        assert events[(f"{tag}/box_mass", "scalar")][-1].value == pytest.approx(
            metrics.mask_masses(heatmaps, masks)[i], abs=1e-4)
    assert events[("gradcam/pointing_game", "scalar")][-1].value == pytest.approx(
        metrics.mask_pointing_hits(heatmaps, masks).mean())


@pytest.mark.parametrize("freq, epochs, log_initial, steps", [
    (2, 5, False, [0, 2, 4]),
    (3, 7, True, [-1, 0, 3, 6]),  # as histogram_freq=3 logs [0, 3, 6]
    (3, 8, False, [0, 3, 6, 7]),  # the last epoch of a fit is always logged
])
def test_freq_and_log_initial_steps(tmp_path, freq, epochs, log_initial, steps):
    model = compiled()
    cam = gc.GradCamCallback(X[:2], log_dir=tmp_path, freq=freq, log_initial=log_initial)
    model.fit(X[:16], Y[:16], epochs=epochs, batch_size=16, callbacks=[cam], verbose=0)
    assert [r.step for r in by_tag(tmp_path)[("gradcam/probe_00", "image")]] == steps


def test_one_compiled_pass_for_all_epochs(tmp_path):
    model = compiled()
    cam = gc.GradCamCallback(X[:4], log_dir=tmp_path)
    before = backends.compilations()
    model.fit(X[:8], Y[:8], epochs=12, batch_size=8, callbacks=[cam], verbose=0)
    after = backends.compilations()
    # process-wide counts: a pass rebuilt per epoch adds a build on every backend (torch too)
    assert after["builds"] - before["builds"] == 1
    assert after["traces"] - before["traces"] == 1
    function = backends.gradient_function(model, model.get_layer("feat"), "feat", 0)
    assert function.traces == 1
    assert len(by_tag(tmp_path)[("gradcam/probe_00", "image")]) == 13


def test_training_is_unchanged_by_the_callback(tmp_path):
    def train(callbacks):
        model = compiled(seed=5, dropout=True)
        model.fit(X, Y, epochs=2, batch_size=8, callbacks=callbacks, verbose=0, shuffle=True)
        return model.get_weights()

    plain = train([])
    watched = train([gc.GradCamCallback((X[:4], Y[:4]), targets="true", log_dir=tmp_path)])
    assert len(by_tag(tmp_path)[("gradcam/probe_00", "image")]) == 3
    for a, b in zip(plain, watched):
        np.testing.assert_array_equal(a, b)


def test_targets_true_one_hot_and_explicit(tmp_path):
    model = compiled()
    one_hot = np.eye(5)[Y[:3]]
    cam = gc.GradCamCallback((X[:3], one_hot), targets="true", log_dir=tmp_path / "a")
    model.fit(X[:8], Y[:8], epochs=1, callbacks=[cam], verbose=0)
    _, targets, _ = cam.explain_probes()
    assert list(targets) == list(Y[:3])
    explicit = gc.GradCamCallback(X[:3], targets=[4, 4, 0], log_dir=tmp_path / "b")
    model.fit(X[:8], Y[:8], epochs=1, callbacks=[explicit], verbose=0)
    assert list(explicit.explain_probes()[1]) == [4, 4, 0]
    predicted = gc.GradCamCallback(X[:3], log_dir=tmp_path / "c")
    model.fit(X[:8], Y[:8], epochs=1, callbacks=[predicted], verbose=0)
    probs = keras.ops.convert_to_numpy(model(X[:3]))
    assert list(predicted.explain_probes()[1]) == list(probs.argmax(-1))


def test_probes_from_batches_pydataset_and_given_images(tmp_path):
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return X[i * 5:(i + 1) * 5], Y[i * 5:(i + 1) * 5]

    cam = gc.GradCamCallback(Batches(), targets="true", max_probes=7, log_dir=tmp_path)
    assert len(cam.probe_x) == 7 and list(cam.probe_y) == list(Y[:7])
    generator = ((X[i:i + 2], Y[i:i + 2]) for i in range(0, 32, 2))
    from_generator = gc.GradCamCallback(generator, max_probes=3, log_dir=tmp_path)
    np.testing.assert_array_equal(from_generator.probe_x, X[:3])
    pictures = [np.full((40, 30, 3), 200, np.uint8)] * 2
    drawn = gc.GradCamCallback(X[:2], images=pictures, log_dir=tmp_path / "drawn",
                               display_size=10)
    model = compiled()
    model.fit(X[:8], Y[:8], epochs=1, callbacks=[drawn], verbose=0)
    shot = by_tag(tmp_path / "drawn")[("gradcam/probe_00", "image")][0]
    shown = Image.open(io.BytesIO(shot.value))  # one caption line of 17 px
    assert shown.size == (30 * 2 + 4, 40 + 2 + 17)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data needs TensorFlow")
def test_probes_from_tf_data(tmp_path):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(3)
    cam = gc.GradCamCallback(dataset, targets="true", max_probes=5, log_dir=tmp_path)
    np.testing.assert_array_equal(cam.probe_x, X[:5])
    assert list(cam.probe_y) == list(Y[:5])


def test_get_config():
    cam = gc.GradCamCallback(X[:2], targets=[1, 2], layer="feat", freq=3, colormap="jet")
    config = cam.get_config()
    assert config["targets"] == [1, 2] and config["layer"] == "feat" and config["freq"] == 3
    assert config["colormap"] == "jet" and config["num_probes"] == 2
    # the default run directory is new per callback: logs/gradcam/<YYYYmmdd-HHMMSS>[-k]
    assert re.fullmatch(r"logs/gradcam/\d{8}-\d{6}(-\d+)?", config["log_dir"])
    assert gc.GradCamCallback(X[:2]).log_dir != config["log_dir"]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(freq=0), ValueError, r"freq must be a positive integer; received freq=0"),
    (dict(max_probes=-1), ValueError, r"max_probes must be a positive integer"),
    (dict(targets="predicted"), ValueError,
     r"targets must be None, 'true', a list of class indices or score functions; "
     r"received targets='predicted'"),
    (dict(targets="true"), ValueError, r"targets='true' needs labels"),
    (dict(targets=[1]), ValueError, r"targets must have one entry per probe \(2\); received 1 "),
    (dict(targets=[1, [2, 3]]), ValueError,
     r"targets\[1\] must be one class index or score function .*; received \[2, 3\]"),
    (dict(targets=[1, "x"]), TypeError,
     r"targets\[1\] must hold integer class indices; received str: 'x'"),
    (dict(probe_boxes=[[0, 0, 4, 4]]), ValueError, r"probe_boxes must have shape \(2, 4\)"),
    (dict(alpha_limit=2), ValueError, r"alpha_limit must be in \[0, 1\]"),
    (dict(log_initial="yes"), TypeError, r"log_initial must be a bool"),
    (dict(images=[np.zeros((4, 4, 3), np.uint8)]), ValueError,
     r"images must hold one picture per probe \(2\); received 1"),
])
def test_misconfiguration_raises_in_init(kwargs, error, message):
    with pytest.raises(error, match=message):
        gc.GradCamCallback(X[:2], **kwargs)


def test_bad_probe_sources_raise_in_init():
    with pytest.raises(TypeError, match=r"probes must be an array .* received int"):
        gc.GradCamCallback(3)
    with pytest.raises(ValueError, match=r"probes must be images: .*; received probes of "
                                         r"shape \(2, 8\), one grayscale image"):
        gc.GradCamCallback(np.zeros((2, 8)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(probes=images(2, shape=(12, 12, 3))),
     r"probes shape must match the model's input \(N, 16, 16, 3\); "
     r"received shape \(2, 12, 12, 3\)"),
    (dict(probes=X[:2], layer="missing"), r"layer 'missing' not found"),
    (dict(probes=X[:2], targets=[1, 9]), r"targets must be class indices in \[0, 5\); received 9"),
])
def test_model_mismatch_raises_before_the_first_epoch(tmp_path, kwargs, message):
    model = compiled()
    epochs_started = []
    spy = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_started.append(e))
    cam = gc.GradCamCallback(log_dir=tmp_path, **kwargs)
    with pytest.raises(ValueError, match=message):
        model.fit(X, Y, epochs=2, callbacks=[cam, spy], verbose=0)
    assert epochs_started == []


def test_unwritable_log_dir_warns_and_training_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    model = compiled()
    cam = gc.GradCamCallback(X[:2], log_dir=blocker / "gradcam")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(X, Y, epochs=3, batch_size=8, callbacks=[cam], verbose=0)
    assert len(history.history["loss"]) == 3
    messages = [str(w.message) for w in caught if "GradCamCallback" in str(w.message)]
    assert len(messages) == 4  # one per logged step (-1..2), none lost silently
    assert all("training goes on" in m for m in messages)


def test_log_dir_removed_mid_run_recovers(tmp_path):
    import shutil

    log_dir = tmp_path / "run"
    model = compiled()
    cam = gc.GradCamCallback(X[:2], log_dir=log_dir)
    def remove(epoch, logs):
        if epoch == 1:
            cam.flush()  # steps -1 and 0 are written (in the background) before the removal
            shutil.rmtree(log_dir)

    remover = keras.callbacks.LambdaCallback(on_epoch_end=remove)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, Y, epochs=4, batch_size=8, callbacks=[remover, cam], verbose=0)
    messages = [str(w.message) for w in caught if "GradCamCallback" in str(w.message)]
    assert len(messages) == 1 and "step 1" in messages[0]
    # after the failure the callback started a new file in a re-created directory
    assert [r.step for r in by_tag(log_dir)[("gradcam/probe_00", "image")]] == [2, 3]


def test_shares_a_log_dir_with_keras_tensorboard(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("keras.callbacks.TensorBoard needs the TensorFlow backend's summary ops")
    model = compiled()
    model.fit(X, Y, epochs=2, verbose=0, callbacks=[
        keras.callbacks.TensorBoard(log_dir=tmp_path),
        gc.GradCamCallback(X[:2], log_dir=tmp_path / "gradcam"),
    ])
    assert {"train", "gradcam"} <= set(os.listdir(tmp_path))
    assert len(by_tag(tmp_path / "gradcam")[("gradcam/probe_01", "image")]) == 3


@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="the point is the JAX and torch backends")
def test_no_tensorflow_imported_during_fit(tmp_path):
    script = f"""
import sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import numpy as np
import keras
from models import small_cnn, images
import gradcam_callbacks as gc
model = small_cnn()
model.compile("adam", "sparse_categorical_crossentropy")
x = images(8)
cam = gc.GradCamCallback(x[:2], log_dir={str(tmp_path)!r}, probe_boxes=[[0, 0, 4, 4]] * 2)
model.fit(x, np.arange(8) % 5, epochs=2, callbacks=[cam], verbose=0)
print("TF", "tensorflow" in sys.modules)
"""
    import importlib.util

    assert importlib.util.find_spec("tensorflow") is not None, "TensorFlow must be installed"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TF False" in done.stdout
    assert len(by_tag(tmp_path)[("gradcam/probe_00", "image")]) == 3


# -- failure policy: nothing at an epoch end ends the fit (issue 9) ---------------------------
def gradcam_messages(caught):
    return [str(w.message) for w in caught if "GradCamCallback" in str(w.message)]


ONE_HOT = np.eye(5)[Y]


def diverging(seed=0):
    """Linear scores, squared error and a huge learning rate: the loss is inf or NaN within
    the first epoch on every backend (a softmax cross-entropy saturates on some instead)."""
    keras.utils.set_random_seed(seed)
    model = small_cnn(seed=seed, activation="linear")
    model.compile(keras.optimizers.SGD(1e6), "mse")
    return model


def test_a_diverging_model_trains_to_the_end_and_is_reported(tmp_path):
    model = diverging()
    cam = gc.GradCamCallback((X[:3], Y[:3]), targets="true", probe_boxes=[[0, 0, 8, 8]] * 3,
                             log_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(X, ONE_HOT, epochs=4, batch_size=8, callbacks=[cam], verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 4 and not np.isfinite(losses[-1])  # it did diverge, and ran on
    events = by_tag(tmp_path)
    nonfinite = {r.step: r.value for r in events[("gradcam/nonfinite", "scalar")]}
    assert sorted(nonfinite) == [-1, 0, 1, 2, 3] and nonfinite[-1] == 0 and nonfinite[3] == 3
    broken = [s for s, n in nonfinite.items() if n]
    messages = gradcam_messages(caught)
    assert len(messages) == len(broken)  # one warning per step with non-finite maps
    for step, message in zip(broken, messages):
        assert f"at step {step}" in message and "not finite" in message
    # every logged step still has its images; broken probes have no scores at those steps
    for i in range(3):
        assert [r.step for r in events[(f"gradcam/probe_{i:02d}", "image")]] == [
            -1, 0, 1, 2, 3]
        assert [r.step for r in events[(f"gradcam/timeline/probe_{i:02d}", "image")]] == [
            -1, 0, 1, 2, 3]
        scored = [r.step for r in events[(f"gradcam/probe_{i:02d}/score", "scalar")]]
        assert 3 not in scored and -1 in scored
        assert all(np.isfinite(r.value) for r in events[(f"gradcam/probe_{i:02d}/score",
                                                          "scalar")])
    last = Image.open(io.BytesIO(events[("gradcam/probe_00", "image")][-1].value))
    overlay = np.asarray(last.convert("RGB"))[:128, 128 + 4:]
    assert (overlay == 128).all(axis=-1).mean() > 0.9  # a grey "not finite" panel, no colours


def test_terminate_on_nan_still_decides(tmp_path):
    model = diverging()
    cam = gc.GradCamCallback(X[:2], log_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(X, ONE_HOT, epochs=6, batch_size=8, verbose=0,
                            callbacks=[keras.callbacks.TerminateOnNaN(), cam])
    stopped = len(history.history["loss"])
    assert stopped < 6  # TerminateOnNaN ended the fit, not the callback
    # the epoch it stopped in is the fit's last: logged, as the last epoch always is
    assert by_tag(tmp_path)[("gradcam/probe_00", "image")][-1].step == stopped - 1


def test_a_fit_stopped_early_logs_its_last_epoch(tmp_path):
    def stop(epoch, logs):
        if epoch == 2:
            model.stop_training = True  # as EarlyStopping does, listed before the callback

    model = compiled()
    cam = gc.GradCamCallback(X[:2], log_dir=tmp_path, freq=10)
    model.fit(X[:16], Y[:16], epochs=20, batch_size=8, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=stop), cam])
    assert [r.step for r in by_tag(tmp_path)[("gradcam/probe_00", "image")]] == [-1, 0, 2]


def test_extreme_probes_do_not_end_the_fit(tmp_path):
    model = compiled()
    cam = gc.GradCamCallback(X[:2] * 1e37, log_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(X, Y, epochs=2, batch_size=8, callbacks=[cam], verbose=0)
    assert len(history.history["loss"]) == 2
    messages = gradcam_messages(caught)
    assert messages and "at step -1" in messages[0] and "not finite" in messages[0]
    assert [r.step for r in by_tag(tmp_path)[("gradcam/probe_00", "image")]] == [-1, 0, 1]


def test_a_failure_to_draw_or_compute_is_one_warning_and_the_next_epoch_tries_again(tmp_path):
    import matplotlib

    viridis, calls = matplotlib.colormaps["viridis"], []

    def flaky_colormap(values):
        calls.append(1)
        if len(calls) == 3:  # the first probe of step 0 (after 2 probes at step -1)
            raise RuntimeError("colormap broke")
        return viridis(values)

    class FlakyPass(gc.GradCamCallback):
        def explain_probes(self):
            if self.model.optimizer.iterations.numpy() == 8:  # after epoch 1 (4 batches each)
                raise MemoryError("out of memory")
            return super().explain_probes()

    model = compiled()
    cam = FlakyPass(X[:2], log_dir=tmp_path, colormap=flaky_colormap)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(X, Y, epochs=4, batch_size=8, callbacks=[cam], verbose=0)
    assert len(history.history["loss"]) == 4
    messages = gradcam_messages(caught)
    assert len(messages) == 2, messages
    assert "could not draw step 0" in messages[0] and "RuntimeError: colormap broke" in messages[0]
    assert "could not compute Grad-CAM at step 1" in messages[1] and "MemoryError" in messages[1]
    assert all("training goes on" in m for m in messages)
    assert [r.step for r in by_tag(tmp_path)[("gradcam/grid", "image")]] == [-1, 2, 3]


def test_one_callback_serves_two_fits_of_different_models(tmp_path):
    def wide_model():
        inputs = keras.Input((16, 16, 3))
        h = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inputs)
        h = keras.layers.ReLU(name="feat")(h)  # 16x16x6, where small_cnn's is 8x8x12
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    cam = gc.GradCamCallback((X[:2], Y[:2]), targets="true", log_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled().fit(X[:16], Y[:16], epochs=2, batch_size=8, callbacks=[cam], verbose=0)
        first = cam.explain_probes()[0]
        wide_model().fit(X[:16], Y[:16], epochs=2, batch_size=8, callbacks=[cam], verbose=0)
        second = cam.explain_probes()[0]
    assert gradcam_messages(caught) == []
    assert first.shape == (2, 8, 8) and second.shape == (2, 16, 16)
    # one run, one history: the second fit wrote a run directory of its own
    assert cam.run_dir == f"{tmp_path}-2"
    for run in (tmp_path, f"{tmp_path}-2"):
        events = by_tag(run)
        assert [r.step for r in events[("gradcam/probe_00", "image")]] == [-1, 0, 1]
        # each fit compares with its own previous maps only: no change at its first step
        assert [r.step for r in events[("gradcam/probe_00/change", "scalar")]] == [0, 1]
        # both models were untrained when their fit began
        assert [r.value for r in events[("gradcam/optimizer_steps", "scalar")]] == [0, 2, 4]
