"""A stopped run keeps what it showed (issue 25): Ctrl-C and exceptions from other callbacks
(real signals, in subprocesses), EarlyStopping anywhere in the list, second fits and two
processes on one log_dir (read back with TensorBoard's own loader and with ``sheet``), and the
messages for probes and score functions."""

from __future__ import annotations

import gc as garbage
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest
from models import images, small_cnn
from tensorboard.backend.event_processing import event_accumulator

import gradcam_callbacks as gc
from gradcam_callbacks.watch import logdirs
from gradcam_callbacks.watch.sheet import probe_frames
from gradcam_callbacks.watch.tensorboard import read_events

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BACKEND = keras.backend.backend()
X = images(16, seed=3)
Y = np.arange(16) % 5
PROBES, METHODS = 4, ["gradcam", "layercam"]


def _env(backend: str = BACKEND) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path,
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def compiled(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = small_cnn(seed=seed)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def records_by_step(run: Path) -> tuple[Counter, Counter]:
    """Records per step and per (tag, step), read with TensorBoard's own loader (all kept)."""
    loader = event_accumulator.EventAccumulator(str(run), size_guidance={
        event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0,
        event_accumulator.SCALARS: 0})
    loader.Reload()
    per_step, per_key = Counter(), Counter()
    for tag in loader.Tags()["tensors"]:
        for event in loader.Tensors(tag):
            per_step[event.step] += 1
            per_key[(tag, event.step)] += 1
    return per_step, per_key


def expected_records(step: int, first: bool, probes: int = PROBES,
                     methods: int = len(METHODS)) -> int:
    """What one logged step writes: per method and probe an image, a timeline and a score
    (and a change after the fit's first step); per method a grid and a nonfinite count (and
    a mean change); once, the optimizer's step count."""
    per_method = probes * (3 + (not first)) + 2 + (not first)
    return methods * per_method + 1


# -- Ctrl-C and exceptions: real signals, subprocesses --------------------------------------
SCRIPT = textwrap.dedent(
    """
    import json, sys, time, warnings
    sys.path.insert(0, {tests!r})
    import keras, numpy as np
    from models import images, small_cnn
    import gradcam_callbacks as gc

    mode, log_dir, marker = sys.argv[1:4]
    x, y = images(16, seed=3), np.arange(16) % 5

    def compiled():
        keras.utils.set_random_seed(0)
        model = small_cnn()
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        return model

    class Stop(keras.callbacks.Callback):
        # at batch 0 of the second epoch: ask the parent for a SIGINT and wait, or raise
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch != 1 or batch != 0:
                return
            if mode.startswith("sigint"):
                open(marker, "w").close()
                deadline = time.monotonic() + 240
                while time.monotonic() < deadline:
                    time.sleep(0.01)
                raise SystemExit("no SIGINT came")
            raise RuntimeError("another callback failed")

    # display_size=512: each logged step takes seconds to draw, so the stop surely comes
    # while step 0 is being written (what main lost)
    cam = gc.GradCamCallback(x[:{probes}], log_dir=log_dir, method={methods!r},
                             display_size=512)
    try:
        compiled().fit(x, y, epochs=4, batch_size=4, verbose=0, callbacks=[cam, Stop()])
    except (KeyboardInterrupt, RuntimeError) as error:
        if not mode.endswith("refit"):
            raise
        print("stopped by", type(error).__name__, flush=True)
    # as a notebook's next cell: a NEW callback on the same log_dir, in the same process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = gc.GradCamCallback(x[:{probes}], log_dir=log_dir, method={methods!r})
        history = compiled().fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[again])
    print(json.dumps({{"run_dir": again.run_dir, "epochs": len(history.history["loss"]),
                      "warnings": [str(w.message) for w in caught
                                   if "GradCamCallback" in str(w.message)]}}))
    """
).format(tests=str(TESTS), probes=PROBES, methods=METHODS)


def stopped_fit(mode: str, log_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run SCRIPT; for the sigint modes, send a real SIGINT once the child is waiting for it
    at batch 0 of its second epoch (a marker file, not a sleep: the machine may be slow)."""
    marker = tmp_path / "waiting-for-sigint"
    child = subprocess.Popen([sys.executable, "-c", SCRIPT, mode, str(log_dir), str(marker)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(), cwd=ROOT)
    try:
        if mode.startswith("sigint"):
            deadline = time.monotonic() + 400
            while not marker.exists() and child.poll() is None:
                assert time.monotonic() < deadline, "the fit never reached its second epoch"
                time.sleep(0.05)
            assert child.poll() is None, child.communicate()[1][-3000:]
            os.kill(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=400)
    finally:
        if child.poll() is None:
            child.kill()
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


@pytest.mark.parametrize("mode", ["sigint", "raise", "sigint-refit", "raise-refit"])
def test_a_stopped_fit_keeps_every_record_of_its_finished_epochs(mode, tmp_path):
    log_dir = tmp_path / "run"
    done = stopped_fit(mode, log_dir, tmp_path)
    if mode == "sigint":  # an uncaught KeyboardInterrupt: Python ends by SIGINT (by exit
        # status 1 when a library replaced Python's SIGINT handler, as under torch)
        assert done.returncode in (1, -signal.SIGINT), done.stderr[-3000:]
        assert done.stderr.rstrip().endswith("KeyboardInterrupt"), done.stderr[-3000:]
    elif mode == "raise":
        assert done.returncode == 1 and "another callback failed" in done.stderr, \
            done.stderr[-3000:]
    else:
        assert done.returncode == 0, done.stderr[-3000:]
    per_step, per_key = records_by_step(log_dir)
    # steps -1 (before training) and 0 (epoch 1) were computed; the second epoch never ended
    expected = {-1: expected_records(-1, first=True), 0: expected_records(0, first=False)}
    assert dict(per_step) == expected, (mode, dict(per_step), expected)
    assert set(per_key.values()) == {1}  # no (tag, step) twice
    assert sorted(probe_frames(log_dir)[1]) == [-1, 0]
    if mode.endswith("refit"):
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["epochs"] == 2
        assert result["run_dir"] == f"{log_dir}-2"  # its own run, next to the stopped one
        assert len(result["warnings"]) == 1 and "writes this fit to" in result["warnings"][0]
        per_step, per_key = records_by_step(Path(result["run_dir"]))
        assert dict(per_step) == {-1: expected_records(-1, True), 0: expected_records(0, False),
                                  1: expected_records(1, False)}
        assert set(per_key.values()) == {1}


# -- one run directory per fit, also across processes --------------------------------------
HOLD = textwrap.dedent(
    """
    import sys, time
    from gradcam_callbacks.watch.logdirs import take_run_dir
    run = take_run_dir(sys.argv[1])
    open(sys.argv[2], "w").write(run.path)
    time.sleep(600)
    """
)


@pytest.mark.backend_agnostic  # file locks only; the child runs Keras' numpy backend
def test_a_run_dir_held_by_another_process_is_left_to_it_until_that_process_dies(tmp_path):
    log_dir, marker = str(tmp_path / "run"), tmp_path / "held"
    child = subprocess.Popen([sys.executable, "-c", HOLD, log_dir, str(marker)],
                             env=_env("numpy"), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() or not marker.read_text():
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            time.sleep(0.05)
        assert marker.read_text() == log_dir
        mine = logdirs.take_run_dir(log_dir)
        assert mine.path == f"{log_dir}-2" and mine.locked  # kept apart, not shared
        mine.release()
    finally:
        child.send_signal(signal.SIGKILL)  # kill -9: no exit handler runs
        child.wait(timeout=60)
    again = logdirs.take_run_dir(log_dir)  # the kernel released the dead process's lock
    assert again.path == log_dir
    again.release()


TWO = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import keras, numpy as np
    from models import images, small_cnn
    import gradcam_callbacks as gc

    log_dir, mine, other = sys.argv[1:4]

    class Meet(keras.callbacks.Callback):
        # both processes hold their run directory before either logs anything
        def on_train_begin(self, logs=None):
            open(mine, "w").close()
            deadline = time.monotonic() + 400
            while not os.path.exists(other):
                assert time.monotonic() < deadline, "the other process never started"
                time.sleep(0.02)

    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    x = images(8, seed=3)
    cam = gc.GradCamCallback(x[:2], log_dir=log_dir)
    model.fit(x, np.arange(8) % 5, epochs=2, batch_size=4, verbose=0, callbacks=[cam, Meet()])
    print(cam.run_dir)
    """
).format(tests=str(TESTS))


def test_two_processes_on_one_log_dir_write_two_runs_that_sheet_reads_apart(tmp_path):
    log_dir = tmp_path / "run"
    marks = [tmp_path / "a", tmp_path / "b"]
    children = [subprocess.Popen([sys.executable, "-c", TWO, str(log_dir), str(mine),
                                  str(other)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=_env(), cwd=ROOT)
                for mine, other in (marks, marks[::-1])]
    outputs = []
    try:
        for child in children:
            out, err = child.communicate(timeout=500)
            assert child.returncode == 0, err[-3000:]
            outputs.append(out.strip().splitlines()[-1])
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert sorted(outputs) == [str(log_dir), f"{log_dir}-2"]
    for run in outputs:
        files = [p for p in Path(run).iterdir() if "tfevents" in p.name]
        assert len(files) == 1  # one process's file per run
        per_step, per_key = records_by_step(Path(run))
        assert dict(per_step) == {-1: expected_records(-1, True, 2, 1),
                                  0: expected_records(0, False, 2, 1),
                                  1: expected_records(1, False, 2, 1)}
        assert set(per_key.values()) == {1}
        assert sheet(run, tmp_path / "sheet.png").returncode == 0
    # event files of both processes put into one folder: sheet says so, draws nothing
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for run in outputs:
        for file in Path(run).glob("*tfevents*"):
            shutil.copy(file, mixed)
    done = sheet(mixed, tmp_path / "mixed.png")
    assert done.returncode != 0 and not (tmp_path / "mixed.png").exists()
    assert "holds the probe images of 2 fits that share steps" in done.stderr, done.stderr
    assert "(steps -1 to 1)" in done.stderr


def sheet(log_dir: Path | str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradcam_callbacks", "sheet", str(log_dir),
                           "--out", str(out)], capture_output=True, text=True,
                          env=_env(), timeout=300)


def test_a_second_fit_writes_its_own_run_labelled_before_fit(tmp_path):
    model = compiled()
    cam = gc.GradCamCallback(X[:2], log_dir=tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X[:16], Y[:16], epochs=2, batch_size=8, callbacks=[cam], verbose=0)
        assert cam.run_dir == str(tmp_path / "run")
        model.fit(X[:16], Y[:16], epochs=2, batch_size=8, callbacks=[cam], verbose=0)
    assert not [w for w in caught if "GradCamCallback" in str(w.message)]  # as documented
    assert cam.run_dir == f"{tmp_path / 'run'}-2"
    for run, label, optimizer_steps in ((tmp_path / "run", "untrained", [0, 2, 4]),
                                        (Path(cam.run_dir), "before fit", [4, 6, 8])):
        per_step, per_key = records_by_step(run)
        assert sorted(per_step) == [-1, 0, 1] and set(per_key.values()) == {1}
        frames = probe_frames(run)
        assert frames[1] == [-1, 0, 1]
        assert frames.labels == {-1: label, 0: "epoch 1", 1: "epoch 2"}
        loader = event_accumulator.EventAccumulator(str(run))
        loader.Reload()
        steps = [e.tensor_proto.float_val[0] for e in loader.Tensors("gradcam/optimizer_steps")]
        assert steps == optimizer_steps
    # both fits' files in one folder (as older versions wrote them): refused, listed
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for run in (tmp_path / "run", Path(cam.run_dir)):
        for file in run.glob("*tfevents*"):
            shutil.copy(file, mixed)
    with pytest.raises(ValueError, match=r"holds the probe images of 2 fits that share steps "
                       r"\(fit 1: events\.out\.tfevents\..*\.gradcam \(steps -1 to 1\); fit 2: "):
        probe_frames(mixed)


def test_two_callbacks_in_one_fit_on_one_log_dir_are_kept_apart(tmp_path):
    first = gc.GradCamCallback(X[:2], log_dir=tmp_path / "run")
    second = gc.GradCamCallback(X[2:4], log_dir=str(tmp_path / "run") + "/")  # same dir
    with pytest.warns(UserWarning, match=r"GradCamCallback writes this fit to '.*run-2': "
                      r"log_dir='.*run/' is another fit's run"):
        compiled().fit(X, Y, epochs=1, batch_size=8, callbacks=[first, second], verbose=0)
    assert (first.run_dir, second.run_dir) == (str(tmp_path / "run"), f"{tmp_path / 'run'}-2")
    for run in (first.run_dir, second.run_dir):
        assert sorted(records_by_step(Path(run))[0]) == [-1, 0]


def _writers() -> int:
    return sum(t.name == "gradcam-writer" and t.is_alive() for t in threading.enumerate())


def test_a_fit_that_raised_blocks_nothing_and_a_deleted_callback_lets_go(tmp_path):
    def boom(epoch, logs):
        raise RuntimeError("the user's own callback failed")

    before = _writers()
    crashed = gc.GradCamCallback(X[:2], log_dir=tmp_path / "run")
    with pytest.raises(RuntimeError, match="own callback failed"):
        compiled().fit(X, Y, epochs=2, batch_size=8, verbose=0, callbacks=[
            crashed, keras.callbacks.LambdaCallback(on_epoch_end=boom)])
    assert _writers() == before + 1  # no on_train_end: its writer is still open
    # the notebook's next cell: a new callback on the same log_dir trains, in its own run
    fresh = gc.GradCamCallback(X[:2], log_dir=tmp_path / "run")
    with pytest.warns(UserWarning, match="writes this fit to"):
        compiled().fit(X, Y, epochs=1, batch_size=8, verbose=0, callbacks=[fresh])
    assert fresh.run_dir == f"{tmp_path / 'run'}-2"
    assert sorted(records_by_step(tmp_path / "run")[0]) == [-1, 0]  # all it had computed
    # the crashed callback, deleted, finishes its writing and lets its directory go
    del crashed
    garbage.collect()
    deadline = time.monotonic() + 60
    while _writers() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _writers() == before


# -- EarlyStopping before or after the callback --------------------------------------------
class KeepWeights(keras.callbacks.Callback):
    """The weights after each epoch, read through self.model (which syncs JAX's state)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


@pytest.mark.parametrize("restore", [False, True])
@pytest.mark.parametrize("order", ["stopper after the callback", "stopper before"])
def test_early_stopping_anywhere_logs_the_last_epochs_weights(tmp_path, order, restore):
    model = compiled()
    keep = KeepWeights()
    # min_delta=10: no epoch improves on the first, so it stops after epoch 2 (step 1)
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10,
                                         restore_best_weights=restore)
    cam = gc.GradCamCallback(X[:2], log_dir=tmp_path, freq=5)
    callbacks = [keep, cam, stop] if order.endswith("after the callback") else [keep, stop, cam]
    history = model.fit(X[:16], Y[:16], epochs=20, batch_size=8, callbacks=callbacks,
                        verbose=0)
    assert len(history.history["loss"]) == 2
    per_step, per_key = records_by_step(tmp_path)
    assert sorted(per_step) == [-1, 0, 1] and set(per_key.values()) == {1}
    assert per_step[1] == expected_records(1, first=False, probes=2, methods=1)
    logged = [r for r in read_events(tmp_path)
              if r.tag.endswith("probe_00/score") and r.step == 1]
    final = model.predict(X[:2], verbose=0).max(axis=1)
    model.set_weights(keep.weights[-1])
    last = model.predict(X[:2], verbose=0).max(axis=1)
    # step 1 shows the model after epoch 2, whatever EarlyStopping restores afterwards
    np.testing.assert_allclose(logged[0].value, last[0], rtol=1e-5)
    if restore:  # the fit ends with epoch 1's weights, which step 0 shows
        assert abs(final[0] - last[0]) > 1e-3


# -- messages -------------------------------------------------------------------------------
@pytest.mark.backend_agnostic  # shape checks in __init__, before any backend call
def test_one_image_or_one_example_is_one_probe():
    one = gc.GradCamCallback(X[0])
    assert one.probe_x.shape == (1, 16, 16, 3) and one.probe_y is None
    pair = gc.GradCamCallback((X[0], Y[0]), targets="true")
    assert pair.probe_x.shape == (1, 16, 16, 3) and pair.probe_y.tolist() == [Y[0]]
    plain = gc.GradCamCallback((X[1], 3), targets="true")  # a Python int label
    assert plain.probe_x.shape == (1, 16, 16, 3) and plain.probe_y.tolist() == [3]


@pytest.mark.backend_agnostic  # shape checks in __init__, before any backend call
@pytest.mark.parametrize("probes, received, to_pass", [
    (X[:4, ..., 0], r"received probes of shape \(4, 16, 16\), which has no channel axis",
     r"for 4 grayscale images of 16x16 pass x\[\.\.\., None\] \(shape \(4, 16, 16, 1\)\)"),
    ((X[:4, ..., 0], Y[:4]), r"received probes x of shape \(4, 16, 16\) with labels of shape "
     r"\(4,\), which has no channel axis", r"pass x\[\.\.\., None\] \(shape \(4, 16, 16, 1\)\)"),
    ((X[0, ..., 0], Y[0]), r"received probes x of shape \(16, 16\) with labels of shape \(\), "
     r"one grayscale image without a channel axis", r"pass x\[\.\.\., None\] \(shape "
     r"\(16, 16, 1\)\)"),
    (list(X[:2, ..., 0]), r"received probes element 0 of shape \(16, 16\), one grayscale "
     r"image without a channel axis", r"pass x\[\.\.\., None\]"),
])
def test_probes_without_a_channel_axis_say_what_was_received_and_what_to_pass(
        probes, received, to_pass):
    with pytest.raises(ValueError, match=r"^probes must be images: a batch \(N, H, W, C\), one "
                       r"image \(H, W, C\), .*; " + received + r".*" + to_pass):
        gc.GradCamCallback(probes)


def sneaky(outputs):
    """Passes the symbolic check (a batch of 3) but gives (batch, 2) for other batches."""
    return outputs[:, 0] if outputs.shape[0] == 3 else outputs[:, :2]


SNEAKY = (r"targets: score function sneaky must return one score per doc, shape \(2,\), "
          r"for an output of shape \(2, 5\); received shape \(2, 2\)")


def test_a_score_function_wrong_at_run_time_is_one_clean_line(tmp_path):
    with pytest.raises(ValueError) as caught:
        gc.explain_predictions(small_cnn(), X[:2], targets=sneaky)
    # the message itself (JAX adds a PEP 678 note about its filtered traceback, apart)
    assert re_match(rf"{SNEAKY}$", str(caught.value)), str(caught.value)
    cam = gc.GradCamCallback(X[:2], targets=sneaky, log_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled().fit(X[:8], Y[:8], epochs=1, batch_size=8, callbacks=[cam], verbose=0)
    messages = [str(w.message) for w in caught if "GradCamCallback" in str(w.message)]
    assert len(messages) == 2  # steps -1 and 0
    for message in messages:
        assert "\n" not in message and "user code" not in message
        assert re_match(rf"GradCamCallback could not compute Grad-CAM at step -?\d "
                        rf"\(ValueError: {SNEAKY}\); training goes on", message)


def re_match(pattern: str, text: str) -> bool:
    import re

    return re.match(pattern, text) is not None
