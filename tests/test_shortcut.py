"""The shortcut demo's claims, as assertions against a clean run of the same setup.

Training digits carry a marker whose spot gives the label away; test digits carry it at
a random spot. A model trained that way scores high in training and near chance in test,
and Grad-CAM of its predicted class sits on the marker and leaves the digit. A model of the
same setup trained on clean digits, scored on the same marked test images, meets none of the
thresholds (its own numbers are printed with ``-s``).

As in the demo, the numbers per epoch are the library's: the `GradCamCallback` gets the
probes' grown markers as ``artifact_boxes`` and the demo's `ShortcutAlarm`, and fills the
epoch logs (``History``) with ``gradcam_artifact_mass`` and the rest; the untrained model's
means are its TensorBoard scalars at step -1. After the fit, `demo.shortcut_scores` scores
all the test images once, as the demo's last lines do. An ``EarlyStopping`` on
``gradcam_artifact_mass`` runs in both fits.

Measured ranges in the comments: 17 pairs of runs, seeds 0-4 (data and weights; the tests use
seed 0) under TensorFlow 2.21 with oneDNN on and with it off and under JAX 0.10, seeds 0-1
under PyTorch 2.13, Keras 3.15, on a 2-core AMD EPYC.
"""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pytest

from gradcam_callbacks import GradCamCallback, demo
from gradcam_callbacks.demo.datasets import make_cluttered_digits, marker_spots
from gradcam_callbacks.watch import tags
from gradcam_callbacks.watch.alarm import ShortcutAlarm, ShortcutWarning
from gradcam_callbacks.watch.tensorboard import read_events

# A short run of the demo's training (demo.train: Adam, its cosine decay over EPOCHS) on a
# quarter of its images in batches of 16: enough steps for the marker to be learned (it is
# learned long before the digits are). (600 images in batches of 8 was cheaper but not
# enough on JAX: train accuracy 0.21. The demo's first rate throughout, as an older 2-epoch
# version of this test ran, left the clean model's test accuracy swinging from epoch to
# epoch over 4 epochs, 0.11 to 0.475 under TensorFlow: no steady number to compare with.)
NUM_TRAIN = 1000
EPOCHS = 5  # at most: EarlyStopping ends the marked run after 4
BATCH_SIZE = 16
RATE = 1.0
NUM_TEST = 200
PROBES = 16  # the demo's GradCamCallback probes, with its alarm
# EarlyStopping as a user would set it to catch the shortcut: watch from the second epoch
# (start_from_epoch=1: after one epoch the maps of either model are still finding their
# object), and stop when the mass on the marker has not come under BASELINE (3.6 times the
# 0.042 an even spread puts there) for PATIENCE epochs. Keras resets the wait only on an
# improvement that is also under the baseline, so the marked run, whose mass stays above it,
# is stopped after epoch 1 + PATIENCE (at the first epoch from then on that is not a new
# minimum); the clean run comes under it at once, and 3 epochs of patience outlast its run.
# EarlyStopping waits for an *improvement*: a clean run whose low mass stops falling is
# stopped too, later (with 4 epochs and PATIENCE 2 it flagged the clean JAX seed 0 run at its
# last epoch, masses 0.015, 0.037, 0.033 after epochs 2-4), and a dip in a marked run's mass
# counts as one (the same setting did not stop the marked run under TensorFlow with oneDNN
# off, 0.334 then 0.297). A level held for k epochs is the ShortcutAlarm's job.
BASELINE = 0.15
PATIENCE = 3
# Two trainings in the module's fixture: its first test bears them. Its setup took 22-51 s
# under TensorFlow and 28-35 s under JAX on the shared 2-core machine, and 187 s under PyTorch
# (whose fits took 12 to 140 s each here, as the machine's load came and went: its threads
# suffer most from a shared CPU), too much for the suite's budget. So not under PyTorch: what
# it would add is Keras' training arithmetic; the logs, the alarm and EarlyStopping on the
# callback's keys run under PyTorch too (tests/test_monitor.py), so does the demo's entry
# point (test_shortcut_demo_prints_its_table...), and Grad-CAM of a trained model is held on
# every backend by tests/test_pretrained.py.
SLOW = pytest.mark.timeout(1800)
TRAINS = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="trains two CNNs for up to 9 epochs: 187 s under PyTorch on 2 shared cores (22-51 s "
           "under TensorFlow and JAX); the monitor's wiring runs under PyTorch in "
           "test_monitor.py")


def _fit(marker: float | None, log_dir) -> dict:
    """Train on marked (``marker`` a rate) or clean training digits, watched as the demo does
    (16 marked test probes, the demo's alarm), with EarlyStopping on the artifact mass; the
    test accuracy per epoch is Keras' ``val_accuracy`` on the marked test images."""
    keras.utils.set_random_seed(0)
    train_set, test_set = demo.load_data(num_train=NUM_TRAIN, num_test=NUM_TEST, seed=0,
                                         marker=RATE)
    if marker is None:
        train_set, _ = demo.load_data(num_train=NUM_TRAIN, num_test=1, seed=0)
    model = demo.build_model(train_set.x.shape[1:])
    alarm = ShortcutAlarm(patience=demo.SHORTCUT_PATIENCE)
    cam = GradCamCallback(test_set.x[:PROBES], probe_boxes=test_set.boxes[:PROBES],
                          artifact_boxes=demo.marker_regions(test_set)[:PROBES],
                          layer=demo.GRADCAM_LAYER, alarm=alarm, log_dir=log_dir)
    stop = keras.callbacks.EarlyStopping(monitor=tags.LOG_ARTIFACT_MASS, mode="min",
                                         baseline=BASELINE, start_from_epoch=1,
                                         patience=PATIENCE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = demo.train(model, train_set, epochs=EPOCHS, batch_size=BATCH_SIZE,
                             callbacks=[cam, stop], validation_data=test_set, verbose=0)
    fired = [str(w.message) for w in caught if issubclass(w.category, ShortcutWarning)]
    rows = demo.shortcut_rows(history.history, cam.run_dir)
    scores = demo.shortcut_scores(model, test_set)
    print("shortcut" if marker is not None else "clean",
          *(demo.format_shortcut_row(row) for row in rows), scores, sep="\n")
    print("alarm:", alarm.fired_at, "stopped:", stop.stopped_epoch)
    # train_accuracy: Keras' own over the last epoch, as fit reports it (the model in
    # inference mode scored lower on torch after two short epochs: 0.19 against 0.48).
    return {**scores, "train_accuracy": rows[-1]["train_accuracy"], "rows": rows,
            "alarm": alarm.fired_at, "fired": fired, "history": history.history,
            "stopped_epoch": stop.stopped_epoch, "epochs": len(history.history["loss"])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    return {"shortcut": _fit(RATE, tmp_path_factory.mktemp("shortcut")),
            "clean": _fit(None, tmp_path_factory.mktemp("clean"))}


@SLOW
@TRAINS
def test_shortcut_model_scores_in_training_and_not_in_test(runs):
    shortcut, clean = runs["shortcut"], runs["clean"]
    # Four epochs (EarlyStopping ends it): the marker is learned, the digits are not.
    # (The old run of two epochs at a constant rate asked train >= 0.4, test <= 0.3 and a gap
    # >= 0.3; four epochs of the demo's schedule clear far more, so the bars went up.)
    assert shortcut["train_accuracy"] >= 0.9  # measured 0.972-0.995
    assert shortcut["accuracy"] <= 0.2  # 0.07-0.14; chance is 0.1: the marker says nothing here
    assert shortcut["train_accuracy"] - shortcut["accuracy"] >= 0.7  # 0.844-0.915
    # The clean model generalises as well as it fits: no such gap, and it has learned digits.
    assert clean["train_accuracy"] - clean["accuracy"] < 0.15  # -0.057 to 0.074
    assert clean["accuracy"] >= 0.2  # 0.28-0.675: at least twice chance


@SLOW
@TRAINS
def test_shortcut_heatmaps_sit_on_the_marker_not_the_digit(runs):
    shortcut, clean = runs["shortcut"], runs["clean"]
    area = shortcut["marker_area"]  # 0.042
    # Mass on the marker (and its 4 px surround): several times what an even spread
    # would put there, and what the clean model puts there.
    assert shortcut["marker_mass"] >= 4 * area  # 0.317-0.454: 7.5-10.8 times
    assert clean["marker_mass"] < 2 * area  # 0.018-0.049
    assert shortcut["marker_mass"] >= 2 * clean["marker_mass"]  # 6.7-19.8 times
    # Peaks on the marker in most images; the clean model's almost never.
    assert shortcut["marker_pointing"] >= 0.5  # 0.815-0.99
    assert clean["marker_pointing"] < 0.2  # 0-0.02
    # And off the digit.
    assert shortcut["pointing_game"] <= 0.3  # 0-0.085
    assert shortcut["pointing_game"] < clean["pointing_game"]  # clean 0.745-0.98


@SLOW
@TRAINS
def test_shortcut_alarm_fires_on_the_marked_run_and_not_on_the_clean_one(runs):
    shortcut, clean = runs["shortcut"], runs["clean"]
    # within the marked run's epochs (it fired after epoch 2 or 3 of 4 in all 17 runs)
    assert shortcut["alarm"] is not None and shortcut["alarm"] < shortcut["epochs"]
    assert len(shortcut["fired"]) == 1
    assert "the model may be using a shortcut" in shortcut["fired"][0]
    assert clean["alarm"] is None and not clean["fired"]
    # the numbers it read are the epoch logs' (History): the marker held more than the digit
    # in the SHORTCUT_PATIENCE epochs up to its firing, and never that long in the clean run
    marked, fired = shortcut["history"], shortcut["alarm"]
    held = range(fired - demo.SHORTCUT_PATIENCE + 1, fired + 1)
    assert all(marked[tags.LOG_ARTIFACT_MASS][e] > marked[tags.LOG_BOX_MASS][e] for e in held)
    over = [a > b for a, b in zip(clean["history"][tags.LOG_ARTIFACT_MASS],
                                  clean["history"][tags.LOG_BOX_MASS])]
    # (in one epoch of the 85 measured clean ones: JAX, seed 3, after its first epoch, 0.109
    # against 0.088; which is why the demo's patience is 2)
    assert not any(a and b for a, b in zip(over, over[1:]))


@SLOW
@TRAINS
def test_early_stopping_on_the_artifact_mass_stops_the_marked_run_and_not_the_clean_one(runs):
    shortcut, clean = runs["shortcut"], runs["clean"]
    # the marked run: mass on the marker 0.225-0.479 from epoch 2 on, never under the
    # baseline; stopped after epoch 1 + PATIENCE = 4 of 5 in all 17 runs
    assert shortcut["stopped_epoch"] == PATIENCE and shortcut["epochs"] == PATIENCE + 1
    assert min(shortcut["history"][tags.LOG_ARTIFACT_MASS][1:]) >= BASELINE
    # the clean run: under the baseline from its second epoch (0.010-0.109), all 5 epochs
    # run and EarlyStopping never flagged a stop (17 runs)
    assert clean["epochs"] == EPOCHS and clean["stopped_epoch"] == 0
    assert max(clean["history"][tags.LOG_ARTIFACT_MASS][1:]) < BASELINE


@SLOW
@TRAINS
def test_during_training_marker_mass_rises_while_pointing_falls(runs):
    rows = runs["shortcut"]["rows"]  # on the 16 probes, from the logs and TensorBoard
    assert [row["step"] for row in rows] == list(range(-1, runs["shortcut"]["epochs"]))
    assert rows[0]["train_accuracy"] is None and rows[0]["accuracy"] is None
    # untrained 0.050-0.067, at the end 0.316-0.479: a rise of 0.254-0.422 (the old test's
    # 0.1 was on 200 test images after 2 epochs; these are the 16 probes after 4)
    assert rows[-1]["marker_mass"] >= rows[0]["marker_mass"] + 0.2
    # At the end at most 2 of the 16 probes peak on the digit (0-0.125).
    assert rows[-1]["pointing_game"] <= 0.25
    # The untrained model's share depends on its initial weights: 0.06-0.94 over the seeds,
    # where 0.06 leaves nothing to fall; with seed 0, 0.625-0.812 falling to 0-0.125 (by
    # 0.56-0.75) under each backend. (The old test asked a fall of 0.2 on 200 test images.)
    assert rows[-1]["pointing_game"] <= rows[0]["pointing_game"] - 0.3


# -- the marker in the data set (no training) ---------------------------------------------
@pytest.mark.backend_agnostic
def test_marker_spot_follows_the_rate():
    always = make_cluttered_digits(300, seed=1, marker=1.0)
    never = make_cluttered_digits(2000, seed=1, split="test", marker=0.0)
    most = make_cluttered_digits(2000, seed=1, marker=0.9)

    np.testing.assert_array_equal(always.marker_spot, always.y)
    np.testing.assert_array_equal(always.marker_boxes, marker_spots(48)[always.y])
    # At random the spot matches the label one time in ten; with 0.9 in 0.9 + 0.1 * 0.1.
    assert abs(np.mean(never.marker_spot == never.y) - 0.1) < 0.03
    assert abs(np.mean(most.marker_spot == most.y) - 0.91) < 0.03
    assert np.bincount(never.marker_spot, minlength=10).min() > 150


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("canvas_size, digit_size", [(48, 16), (64, 24), (32, 24)])
def test_marker_is_a_full_bright_square_clear_of_the_digit(canvas_size, digit_size):
    data = make_cluttered_digits(200, canvas_size=canvas_size, digit_size=digit_size,
                                 noise=0.0, seed=2, marker=0.5)
    side = max(2, round(canvas_size / 12))
    assert data.marker_boxes.shape == (200, 4)
    assert ((data.marker_boxes[:, 2:] - data.marker_boxes[:, :2]) == side).all()
    for image, box, marker in zip(data.x[..., 0], data.boxes, data.marker_boxes, strict=True):
        x0, y0, x1, y1 = (int(v) for v in marker)
        assert (image[y0:y1, x0:x1] == 1.0).all()
        # The digit's box keeps a pixel from the marker.
        assert (box[2] + 1 <= x0 or box[0] >= x1 + 1 or box[3] + 1 <= y0 or box[1] >= y1 + 1)


@pytest.mark.backend_agnostic
def test_marker_leaves_the_rest_of_the_image_as_without_it():
    plain = make_cluttered_digits(100, seed=3)
    marked = make_cluttered_digits(100, seed=3, marker=0.9)

    assert plain.marker_boxes is None and plain.marker_spot is None
    np.testing.assert_array_equal(plain.y, marked.y)
    same_place = (plain.boxes == marked.boxes).all(axis=1)
    assert same_place.mean() > 0.7  # only digits in the marker's way are moved
    for i in np.flatnonzero(same_place):
        x0, y0, x1, y1 = marked.marker_boxes[i]
        outside = np.ones(plain.x.shape[1:3], dtype=bool)
        outside[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(plain.x[i, ..., 0][outside], marked.x[i, ..., 0][outside])


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("marker, error, words", [
    (True, TypeError, "marker must be a number in [0, 1]; received bool"),
    ("0.5", TypeError, "marker must be a number in [0, 1]; received str"),
    (1.5, ValueError, "marker must be in [0, 1]; received marker=1.5"),
    (-0.1, ValueError, "marker must be in [0, 1]; received marker=-0.1"),
])
def test_bad_marker_is_refused(marker, error, words):
    with pytest.raises(error, match=re.escape(words)):
        make_cluttered_digits(4, marker=marker)


@pytest.mark.backend_agnostic
def test_marker_needs_room_beside_the_digit():
    with pytest.raises(ValueError, match="canvas_size - digit_size must be >= 6.*digit_size=44"):
        make_cluttered_digits(4, canvas_size=48, digit_size=44, marker=0.5)
    make_cluttered_digits(4, canvas_size=48, digit_size=42, marker=0.5)


@pytest.mark.backend_agnostic
def test_shortcut_scores_need_markers():
    keras.utils.set_random_seed(0)
    clean = make_cluttered_digits(4)
    with pytest.raises(ValueError, match="marker_boxes=None"):
        demo.marker_regions(clean)
    with pytest.raises(ValueError, match="marker_boxes=None"):
        demo.shortcut_scores(demo.build_model((48, 48, 1)), clean)


# -- the demo's entry points --------------------------------------------------------------
def test_shortcut_demo_prints_its_table_and_writes_a_sheet(tmp_path, capsys):
    log_dir = tmp_path / "logs"
    assert demo.main(["--shortcut", "--epochs", "1", "--train-size", "64", "--test-size", "40",
                      "--probes", "2", "--log-dir", str(log_dir)]) == 0
    out = capsys.readouterr().out
    assert "in 95% of the training images" in out
    number = r"(\d\.\d+)"
    untrained = re.search(r"untrained \| acc train   -   test   -   \| digit peak " + number +
                          " mass " + number + r" \| marker mass " + number, out)
    assert untrained, out
    assert re.search(r"  epoch 1 \| acc train \d\.\d{3} test \d\.\d{3} \| digit peak \d\.\d\d "
                     r"mass \d\.\d\d \| marker mass \d\.\d\d", out), out
    # the untrained row is the callback's TensorBoard scalars at step -1
    written = {r.tag: r.value for r in read_events(log_dir / "gradcam") if r.step == -1}
    for shown, tag in zip(untrained.groups(), (tags.POINTING_GAME, tags.MEAN_BOX_MASS,
                                               tags.MEAN_ARTIFACT_MASS)):
        assert float(shown) == pytest.approx(written[tag], abs=0.005), tag
    # one epoch cannot hold the condition for SHORTCUT_PATIENCE = 2 epochs
    assert ("shortcut alarm (more Grad-CAM mass on the marker than on the digit on the 2 "
            "probes, 2 epochs in a row): did not fire") in out
    for line in ("training accuracy:", "test accuracy:", "on the marker", "contact sheet:",
                 f"tensorboard --logdir {log_dir}"):
        assert line in out
    assert (log_dir / "contact_sheet.png").is_file()
