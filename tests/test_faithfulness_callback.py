"""``GradCamCallback(faithfulness=...)``: insertion and deletion of the probes' maps at every
logged epoch, in TensorBoard (read back through a real server) and in the epoch's Keras
``logs``, equal to :func:`~gradcam_callbacks.faithfulness.probe_faithfulness` called by hand
on the same weights.

A real small CNN trained on scikit-learn's bundled 8x8 digits (3 epochs, about a second);
no mocks. The fits run under every backend (the forwards are the backend's); the argument
checks and the failure path do not depend on it.
"""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits
from tb_server import running_tensorboard

import gradcam_callbacks.watch.callback as callback_module
from gradcam_callbacks import GradCamCallback, backends
from gradcam_callbacks.faithfulness import probe_faithfulness
from gradcam_callbacks.watch import tags
from gradcam_callbacks.watch.sinks import TensorBoardSink
from gradcam_callbacks.watch.tensorboard import read_events

METRICS = ("insertion", "deletion")
KEYS = {"insertion": tags.LOG_FAITHFULNESS_INSERTION, "deletion": tags.LOG_FAITHFULNESS_DELETION}
EPOCHS = 3
LOGGED = [-1, 0, 2]  # log_initial, then freq=2's epoch 0 and the fit's last epoch


@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    return (bunch.images / 16.0).astype("float32")[..., None], bunch.target


def _model() -> keras.Model:
    """Conv, flatten, softmax, then a guard that passes the probabilities on for inputs
    without a negative pixel and makes them NaN for an input with one (so that a probe can
    have a non-finite score: a NaN input would be refused, and oneDNN's fused conv + ReLU
    turns NaN into 0)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="feat")(inputs)
    h = keras.layers.Flatten()(h)
    probabilities = keras.layers.Dense(10, activation="softmax")(h)
    outputs = keras.layers.Lambda(lambda pair: pair[0] + 0.0 * keras.ops.min(
        keras.ops.sqrt(pair[1]), axis=(1, 2, 3))[:, None], name="guard")(
            [probabilities, inputs])
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.03), "sparse_categorical_crossentropy")
    return model


def _probes(digits):
    """Five held-out digits and one negated: the model's guard makes its scores NaN, so it
    must be left out."""
    x, y = digits
    return np.concatenate([x[-5:], -x[-6:-5]]), np.concatenate([y[-5:], y[-6:-5]])


class ByHand(keras.callbacks.Callback):
    """Listed after the GradCamCallback: on the same weights, the callback's own maps of the
    finite probes scored by ``probe_faithfulness`` directly (before the first epoch: step -1)."""

    def __init__(self, cam: GradCamCallback) -> None:
        super().__init__()
        self.cam = cam
        self.areas: dict[int, dict[str, dict[int, float]]] = {}

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0:
            self.areas[-1] = self._areas()

    def on_epoch_end(self, epoch, logs=None):
        self.areas[epoch] = self._areas()

    def _areas(self) -> dict[str, dict[int, float]]:
        heatmaps, targets, scores = self.cam.explain_probes()
        rows = np.flatnonzero(np.isfinite(heatmaps).all(axis=(1, 2)) & np.isfinite(scores))
        found = probe_faithfulness(self.model, self.cam.probe_x[rows], heatmaps[rows],
                                   [int(t) for t in targets[rows]])
        return {name: dict(zip(rows.tolist(), values.tolist()))
                for name, values in found.items()}


class Passes(keras.callbacks.Callback):
    """Counts the compiled passes run between its epoch end and ``since``'s."""

    def __init__(self, since: Passes | None = None) -> None:
        super().__init__()
        self.since, self.at, self.delta = since, {}, {}

    def on_epoch_end(self, epoch, logs=None):
        self.at[epoch] = backends.passes_run()
        if self.since is not None:
            self.delta[epoch] = self.at[epoch] - self.since.at[epoch]


@pytest.fixture(scope="module")
def faithful_run(digits, tmp_path_factory):
    """A 3-epoch fit with ``faithfulness=True, freq=2``, probes scored by hand beside it and
    the compiled passes counted around the callback."""
    x, y = digits
    root = tmp_path_factory.mktemp("faithful")
    probes, labels = _probes(digits)
    cam = GradCamCallback((probes, labels), targets="true", freq=2, faithfulness=True,
                          log_dir=root / "gradcam", display_size=8)
    hand = ByHand(cam)
    before = Passes()
    after = Passes(since=before)
    traces: dict[int, dict[str, int]] = {}
    keep = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: traces.setdefault(epoch, backends.compilations()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "GradCamCallback found", RuntimeWarning)  # probe 5
        history = _model().fit(x[:1000], y[:1000], epochs=EPOCHS, batch_size=100, verbose=0,
                               callbacks=[before, cam, after, keep, hand])
    return root, cam, history.history, hand, after.delta, traces


def _mean(areas: dict[int, float]) -> float:
    return float(np.mean(list(areas.values())))


def test_faithfulness_in_history_and_event_files_equals_a_hand_call(faithful_run):
    _, cam, history, hand, passes, traces = faithful_run
    for name, key in KEYS.items():
        # epoch 1 is not logged (freq=2): it carries epoch 0's means
        expected = [_mean(hand.areas[e][name]) for e in (0, 0, 2)]
        np.testing.assert_allclose(history[key], expected, rtol=1e-6, err_msg=key)
    # the two metrics differ, so a swap of their keys or tags would not go unseen
    for epoch in range(EPOCHS):
        assert abs(history[KEYS["insertion"]][epoch] - history[KEYS["deletion"]][epoch]) > 0.01
    # per logged epoch: one Grad-CAM pass and one forward of all 5 x 2 x 11 perturbed inputs
    # (one 2 MiB chunk); an epoch that is not logged runs none; nothing compiles after epoch 0
    assert passes == {0: 2, 1: 0, 2: 2}
    assert traces[2]["traces"] == traces[0]["traces"]

    written = {(r.tag, r.step): r.value for r in read_events(cam.run_dir)
               if r.kind == "scalar"}
    for name in METRICS:
        assert sorted(step for tag, step in written if tag == tags.faithfulness_tag(name)) \
            == LOGGED
        for step in LOGGED:
            assert written[(tags.faithfulness_tag(name), step)] == pytest.approx(
                _mean(hand.areas[step][name]), rel=1e-6), (name, step)
            for probe in range(5):
                assert written[(tags.faithfulness_tag(name, probe), step)] == pytest.approx(
                    hand.areas[step][name][probe], rel=1e-6), (name, probe, step)
            # the negated probe (5) is left out: no value of its own, not in the mean
            assert (tags.faithfulness_tag(name, 5), step) not in written
            assert written[(tags.NONFINITE, step)] == 1


@pytest.mark.backend_agnostic  # what TensorBoard serves does not depend on the backend
def test_a_real_tensorboard_serves_the_faithfulness_scalars(faithful_run):
    root, _, history, hand, _, _ = faithful_run
    with running_tensorboard(root) as tb:
        def series(tag):
            found = tb.get_json("data/plugin/scalars/scalars", run="gradcam", tag=tag)
            return {step: value for _, step, value in found} if len(found) == 3 else None

        for name in METRICS:
            means = tb.wait_for(lambda name=name: series(tags.faithfulness_tag(name)),
                                timeout=60)
            assert sorted(means) == LOGGED
            for step in LOGGED:
                assert means[step] == pytest.approx(_mean(hand.areas[step][name]),
                                                    rel=1e-6), (name, step)
            assert [means[0], means[0], means[2]] == pytest.approx(history[KEYS[name]],
                                                                   rel=1e-6)
            for probe in range(5):
                values = tb.wait_for(
                    lambda p=probe, name=name: series(tags.faithfulness_tag(name, p)))
                assert [values[s] for s in LOGGED] == pytest.approx(
                    [hand.areas[s][name][probe] for s in LOGGED], rel=1e-6), (name, probe)
        served = tb.get_json("data/plugin/scalars/tags")["gradcam"]
        assert not [t for t in served if t.startswith(tags.probe_tag(5) + "/faithfulness")]
        assert tags.faithfulness_tag("insertion", 4) in served


def test_list_of_one_metric_and_a_user_sink_beside_tensorboard(digits, tmp_path):
    x, y = digits
    seen = []

    class Recorder:  # a user's sink, next to TensorBoard: the scalars reach both (FanOut)
        def add_image(self, tag, image, step, description=None):
            pass

        def add_scalar(self, tag, value, step, description=None):
            seen.append((tag, step, value))

        def flush(self):
            pass

        def close(self):
            pass

    sinks = [TensorBoardSink(str(tmp_path / "gradcam")), Recorder()]
    cam = GradCamCallback(x[-3:], faithfulness=["deletion"], log_initial=False,
                          display_size=8, sink=sinks)
    history = _model().fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0,
                           callbacks=[cam])
    assert tags.LOG_FAITHFULNESS_DELETION in history.history
    assert tags.LOG_FAITHFULNESS_INSERTION not in history.history
    written = {(r.tag, r.step): r.value for r in read_events(cam.run_dir)
               if "faithfulness" in r.tag}
    recorded = {(tag, step): value for tag, step, value in seen if "faithfulness" in tag}
    assert set(written) == {(tags.faithfulness_tag("deletion"), 0)} | {
        (tags.faithfulness_tag("deletion", i), 0) for i in range(3)}
    assert recorded == pytest.approx(written, rel=1e-6)
    assert written[(tags.faithfulness_tag("deletion"), 0)] == pytest.approx(
        history.history[tags.LOG_FAITHFULNESS_DELETION][0], rel=1e-6)
    assert cam.get_config()["faithfulness"] == ["deletion"]


@pytest.mark.backend_agnostic
def test_a_failing_measurement_warns_and_training_goes_on(digits, tmp_path, monkeypatch):
    x, y = digits

    def broken(*args, **kwargs):
        raise MemoryError("no room for the perturbed inputs")

    # our own function made to fail (the model, Keras and TensorBoard stay real)
    monkeypatch.setattr(callback_module, "probe_faithfulness", broken)
    cam = GradCamCallback(x[-2:], faithfulness=True, log_dir=tmp_path / "gradcam",
                          display_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _model().fit(x[:128], y[:128], epochs=2, batch_size=64, verbose=0,
                               callbacks=[cam])
    assert len(history.history["loss"]) == 2
    # one warning per logged step, naming it and the cause
    messages = [str(w.message) for w in caught if "faithfulness" in str(w.message)]
    assert [re.search(r"at step (-?\d+) \(MemoryError: no room", m).group(1)
            for m in messages] == ["-1", "0", "1"], messages
    assert all(m.startswith("GradCamCallback could not measure the faithfulness of the "
                            "Grad-CAM maps") and "training goes on" in m for m in messages)
    for key in KEYS.values():
        assert np.isnan(history.history[key]).all()  # the keys are there, unmeasured
    logged = {r.tag for r in read_events(cam.run_dir)}
    assert tags.MEAN_CHANGE in logged  # the rest of the step is written
    assert not [t for t in logged if "faithfulness" in t]


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("value, error, words", [
    ("mufidelity", ValueError, "unknown: ['mufidelity']"),
    (["insertion", "insertion"], ValueError, "repeated: ['insertion']"),
    ([], ValueError, "received an empty list"),
    (1, TypeError, "received int: 1"),
    ({"insertion": 5}, TypeError, "received dict"),
    ([0.5], TypeError, "received list: [0.5]"),
])
def test_bad_faithfulness_is_refused_before_any_epoch(digits, value, error, words):
    with pytest.raises(error) as raised:
        GradCamCallback(digits[0][:2], faithfulness=value)
    message = str(raised.value)
    assert message.startswith("faithfulness must")
    assert "'insertion', 'deletion', 'road'" in message or "each metric once" in message
    assert words in message


@pytest.mark.backend_agnostic
def test_faithfulness_settings_and_config(digits):
    assert GradCamCallback(digits[0][:2]).get_config()["faithfulness"] == []
    assert GradCamCallback(digits[0][:2], faithfulness=True).faithfulness == (
        "insertion", "deletion")
    assert GradCamCallback(digits[0][:2], faithfulness="road").faithfulness == ("road",)
