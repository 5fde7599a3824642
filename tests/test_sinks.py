"""``GradCamCallback(sink=...)``: TensorBoard, MLflow (a SQLite store under tmp), W&B
(offline mode) and a user's sink, with real packages and small real models; no mocks.

MLflow and W&B are optional extras: their tests skip where the package is missing.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from models import images, small_cnn
from PIL import Image

from gradcam_callbacks import GradCamCallback
from gradcam_callbacks.watch import tags
from gradcam_callbacks.watch.sinks import FanOut, MLflowSink, TensorBoardSink, WandbSink
from gradcam_callbacks.watch.tensorboard import read_events

PROBES = 2
EPOCHS = 2
STEPS = [-1, 0, 1]  # log_initial, then each epoch


def _fit(cam, epochs=EPOCHS):
    model = small_cnn()
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = images(8)
    y = np.arange(8) % 5
    return model.fit(x, y, epochs=epochs, batch_size=4, verbose=0, callbacks=[cam])


class Recorder:
    """A user's sink: keeps what it is given."""

    def __init__(self, fail: bool = False) -> None:
        self.images: list[tuple[str, Image.Image, int]] = []
        self.scalars: list[tuple[str, float, int]] = []
        self.flushes = self.closes = 0
        self.fail = fail

    def add_image(self, tag, image, step, description=None):
        if self.fail:
            raise RuntimeError("this sink is broken")
        self.images.append((tag, image, step))

    def add_scalar(self, tag, value, step, description=None):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closes += 1


def test_user_sinks_and_tensorboard_get_the_same_images_drawn_once(tmp_path):
    first, second = Recorder(), Recorder()
    cam = GradCamCallback(images(PROBES), sink=[TensorBoardSink(tmp_path / "tb"), first, second])
    _fit(cam)
    probe_images = [(t, s) for t, _, s in first.images if t.startswith(tags.PROBE_PREFIX)]
    assert len(probe_images) == PROBES * len(STEPS)
    # the very same image objects: drawn once, sent to each sink
    assert all(a[1] is b[1] for a, b in zip(first.images, second.images, strict=True))
    assert first.scalars == second.scalars and first.closes == 1
    written = {(r.tag, r.step) for r in read_events(cam.run_dir)}
    assert {(t, s) for t, _, s in first.images} <= written
    assert cam.run_dir == str(tmp_path / "tb")


def test_a_list_without_tensorboard_writes_no_event_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recorder = Recorder()
    cam = GradCamCallback(images(PROBES), sink=recorder)
    _fit(cam, epochs=1)
    assert cam.run_dir is None and not os.path.exists("logs")
    assert {s for _, _, s in recorder.images} == {-1, 0}


def test_a_broken_sink_warns_and_the_others_and_training_go_on(tmp_path):
    good, bad = Recorder(), Recorder(fail=True)
    cam = GradCamCallback(images(PROBES), sink=[bad, good])
    with pytest.warns(RuntimeWarning, match="this sink is broken.*training goes on"):
        history = _fit(cam)
    assert len(history.history["loss"]) == EPOCHS
    assert len([t for t, _, _ in good.images if t.startswith(tags.PROBE_PREFIX)]) == \
        PROBES * len(STEPS)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("sink, error, words", [
    ([], ValueError, "sink must be a sink or a non-empty list of sinks; received []"),
    ("mlflow", TypeError, "sink must be TensorBoardSink, MLflowSink, WandbSink or an object "
     "with add_image, add_scalar, flush and close (the Sink protocol), or a list of them; "
     "received str: 'mlflow'"),
    ([TensorBoardSink(), TensorBoardSink()], ValueError, "sink may hold one TensorBoardSink"),
])
def test_bad_sinks_are_refused(sink, error, words):
    with pytest.raises(error, match=re.escape(words)):
        GradCamCallback(images(1), sink=sink)


@pytest.mark.backend_agnostic
def test_log_dir_and_a_tensorboard_sink_must_agree(tmp_path):
    with pytest.raises(ValueError, match="log_dir and sink=TensorBoardSink"):
        GradCamCallback(images(1), log_dir=tmp_path / "a", sink=TensorBoardSink(tmp_path / "b"))
    with pytest.raises(TypeError, match="log_dir must be a path or None; received log_dir=3"):
        TensorBoardSink(3)
    cam = GradCamCallback(images(1), log_dir=tmp_path / "a", sink=TensorBoardSink(tmp_path / "a"))
    assert cam.log_dir == str(tmp_path / "a")


@pytest.mark.backend_agnostic
def test_fan_out_calls_every_sink_then_raises_the_first_error_at_the_step_end():
    good, bad = Recorder(), Recorder(fail=True)
    both = FanOut([bad, good])
    both.add_image("t", Image.new("RGB", (2, 2)), 0)
    both.add_image("u", Image.new("RGB", (2, 2)), 0)
    with pytest.raises(RuntimeError, match="this sink is broken"):
        both.flush()
    assert len(good.images) == 2 and good.flushes == 1
    both.flush()  # reported once


# -- MLflow -------------------------------------------------------------------------------
def test_mlflow_sink_logs_metrics_per_logged_epoch_and_a_png_per_probe_and_step(
        tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # the store's artifacts go to ./mlruns
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:  # the active run is used, and left running
            cam = GradCamCallback(images(PROBES), sink=MLflowSink(),
                                  method=["gradcam", "gradcam++"])
            _fit(cam)
            assert mlflow.active_run().info.run_id == run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = run.info.run_id
    history = client.get_metric_history(run_id, tags.NONFINITE)
    assert sorted(m.step for m in history) == STEPS
    assert len(client.get_metric_history(run_id, tags.MEAN_CHANGE)) == EPOCHS  # none at -1
    # gradcam++ is a key MLflow accepts once its '+' are '_'
    assert len(client.get_metric_history(run_id, "gradcam/gradcam__/nonfinite")) == 3

    def walk(path=None):
        found = []
        for item in client.list_artifacts(run_id, path):
            found += walk(item.path) if item.is_dir else [item.path]
        return found

    files = walk()
    probe_pngs = [f for f in files if re.fullmatch(r"images/gradcam~probe_\d\d\+step\+.*\.png", f)]
    assert len(probe_pngs) == PROBES * len(STEPS)
    assert sorted({int(f.split("+step+")[1].split("+")[0]) for f in probe_pngs}) == STEPS
    assert "gradcam_descriptions/gradcam/probe_00.txt" in files


def test_mlflow_sink_starts_a_run_of_its_own_per_fit_when_none_is_active(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        cam = GradCamCallback(images(PROBES), sink=MLflowSink(run_name="probe-run"))
        _fit(cam, epochs=1)
        _fit(cam, epochs=1)
        assert mlflow.active_run() is None  # ended with each fit
    finally:
        mlflow.set_tracking_uri(None)
    runs = mlflow.tracking.MlflowClient(uri).search_runs(["0"])
    assert [r.info.run_name for r in runs] == ["probe-run", "probe-run"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_mlflow_sink_runs_go_to_the_experiment_mlflow_would_use(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    # set_experiment writes MLFLOW_EXPERIMENT_ID into the environment: restored after the test
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        # the experiment named by MLFLOW_EXPERIMENT_NAME, created as start_run() would
        _fit(GradCamCallback(images(PROBES), sink=MLflowSink(run_name="env")), epochs=1)
        # mlflow.set_experiment() wins over the environment's name, as in start_run()
        chosen = mlflow.set_experiment("chosen")
        _fit(GradCamCallback(images(PROBES), sink=MLflowSink(run_name="set")), epochs=1)
        with mlflow.start_run() as run:  # where MLflow itself puts a run now
            pass
        mlflow.set_experiment(experiment_id="0")  # the default again, for later tests
    finally:
        mlflow.set_tracking_uri(None)
    client = mlflow.tracking.MlflowClient(uri)
    from_env = client.get_experiment_by_name("from-env")
    assert from_env is not None
    assert [r.info.run_name for r in client.search_runs([from_env.experiment_id])] == ["env"]
    ours = client.search_runs([chosen.experiment_id])
    assert sorted(r.info.run_name for r in ours) == sorted(["set", run.info.run_name])
    assert client.search_runs(["0"]) == []


# -- W&B ----------------------------------------------------------------------------------
def test_wandb_sink_logs_offline_media_per_probe_and_step(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="gradcam-test")
    try:
        cam = GradCamCallback(images(PROBES), sink=WandbSink())
        _fit(cam)
        assert wandb.run is run  # the active run, left to its owner
    finally:
        run.finish()
    media = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "images"
                          / "gradcam" / "probe_*.png"))
    assert len(media) == PROBES * len(STEPS), media


# -- no TensorFlow under JAX or torch --------------------------------------------------------
@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="TensorFlow's own backend")
def test_sinks_import_no_tensorflow_under_jax_or_torch(tmp_path):
    sinks = ["TensorBoardSink(r'%s')" % (tmp_path / "tb"), "Recorder()"]
    for module, name in (("mlflow", "MLflowSink()"), ("wandb", "WandbSink()")):
        try:
            __import__(module)
            sinks.append(name)
        except ImportError:
            pass
    script = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = [{os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r},
                        {os.path.dirname(os.path.abspath(__file__))!r}]
        os.chdir({str(tmp_path)!r})
        os.environ["WANDB_SILENT"] = "true"
        from test_sinks import Recorder, _fit, images
        from gradcam_callbacks import GradCamCallback
        from gradcam_callbacks.watch.sinks import MLflowSink, TensorBoardSink, WandbSink
        try:
            import mlflow
            mlflow.set_tracking_uri("sqlite:///" + os.path.join({str(tmp_path)!r}, "m.db"))
        except ImportError:
            pass
        try:
            import wandb
            wandb.init(mode="offline", dir={str(tmp_path)!r}, project="gradcam-test")
        except ImportError:
            pass
        _fit(GradCamCallback(images(2), sink=[{", ".join(sinks)}]), epochs=1)
        print("sinks:", {len(sinks)}, "tensorflow imported:", "tensorflow" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"sinks: {len(sinks)} tensorflow imported: False" in done.stdout, done.stdout

