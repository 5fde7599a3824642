"""Distributed training: who writes (``process_identity``, ``is_chief``), and
``GradCamCallback`` / ``explain_predictions`` under tf.distribute and keras.distribution.

The runs on several devices or processes happen in subprocesses (tests/distributed/), because
devices must be set up before the framework initialises; each is bounded in time and killed
on failure. The single-device numbers they are held to are computed here, in this process.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import sys
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest
from distributed.harness import all_ok, describe, free_port, run_workers
from models import images, small_cnn

import gradcam_callbacks as gc
from gradcam_callbacks.watch import distribute
from gradcam_callbacks.watch.distribute import (
    is_chief,
    launcher_env_identity,
    process_identity,
    tf_config_identity,
)
from gradcam_callbacks.watch.tensorboard import read_events

BACKEND = keras.backend.backend()
PROBES, EPOCHS = 3, 2
X = images(32, seed=21)  # the workers' data (tests/distributed/common.py)
Y = (np.arange(32) * 7) % 5
ONE_DEVICE_ATOL = 1e-4

only = {
    name: pytest.mark.skipif(BACKEND != name, reason=f"{name} backend only")
    for name in ("tensorflow", "jax", "torch")
}


def tf_config(cluster: dict, task: dict | None = None) -> str:
    return json.dumps({"cluster": cluster, **({"task": task} if task else {})})


@pytest.fixture
def single_process_env(monkeypatch):
    """No cluster in the environment, whatever the machine running the tests has set."""
    for name in ("TF_CONFIG", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- the harness: a hung worker is reported as hung, with where it hung ------------------------

@pytest.mark.backend_agnostic
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's on_exit, SIGUSR1")
def test_harness_reports_where_a_worker_hung(tmp_path):
    modes = ["none", "sleep", "shutdown", "watchdog"]  # see tests/distributed/hang.py
    ok, sleep, shutdown, watchdog = run_workers(
        "hang.py", [[m] for m in modes], tmp_path, timeout_s=10, native_stacks=False)
    report = describe([ok, sleep, shutdown, watchdog])
    assert ok.ok and not ok.hung, report
    assert report.startswith("worker 0: returncode 0\n"), report
    # Python code that never returns: killed at the limit, with its Python stacks
    assert (sleep.killed, sleep.returncode) == (True, -signal.SIGKILL), report
    assert re.search(r"worker 1: HUNG, still running at the 10 s limit; so killed; "
                     r"in wait_forever \(\S*hang\.py:\d+\)\n", report), report
    assert "--- worker 1: Python stacks when killed (faulthandler)\n" in report
    # hung in exit(), after Python: no Python stack, and SIGUSR1 did not end it
    assert (shutdown.killed, shutdown.returncode, shutdown.stacks) == (True, -signal.SIGKILL, "")
    assert "worker 2: HUNG, still running at the 10 s limit; so killed; without a Python " \
           "stack: past the end of its Python code" in report, report
    # its own exit watchdog ended it: status 1, and the watchdog's stacks say where
    assert (watchdog.killed, watchdog.returncode, watchdog.hung) == (False, 1, True), report
    assert re.search(r"worker 3: HUNG in its ending, so its exit watchdog ended it "
                     r"\(returncode 1\); in wait_forever \(.*hang\.py:\d+\)", report), report
    assert not all_ok([ok, sleep]) and all_ok([ok])


# -- the identity check: each framework's way of saying "I am process k of n" ------------------

@pytest.mark.backend_agnostic
@pytest.mark.parametrize(("config", "expected"), [
    (None, (0, 1)),
    ("", (0, 1)),
    (tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}), (0, 2)),
    (tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}), (1, 2)),
    (tf_config({"worker": ["a:1", "b:1", "c:1"]}, {"type": "worker", "index": "2"}), (2, 3)),
    # with a chief, the chief is process 0 and worker 0 is not
    (tf_config({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}), (0, 2)),
    (tf_config({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}), (1, 2)),
    # parameter servers never come first, whatever the JSON's key order
    (tf_config({"ps": ["p:1"], "worker": ["a:1"]}, {"type": "ps", "index": 0}), (1, 2)),
    (tf_config({"ps": ["p:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}), (0, 2)),
    # an evaluator outside the cluster counts after it
    (tf_config({"worker": ["a:1", "b:1"]}, {"type": "evaluator", "index": 0}), (2, 3)),
    # sparse cluster specs map indices to addresses
    (tf_config({"worker": {"3": "a:1", "1": "b:1"}}, {"type": "worker", "index": 3}), (1, 2)),
    (tf_config({"worker": ["a:1"]}), (0, 1)),
    (tf_config({}, {"type": "worker", "index": 0}), (0, 1)),
])
def test_tf_config_identity(config, expected):
    assert tf_config_identity(config) == expected


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(("config", "message"), [
    ("{not json", "TF_CONFIG must be JSON"),
    ("[1, 2]", "TF_CONFIG must be a JSON object"),
    ('{"cluster": ["a:1"]}', "'cluster' and 'task' must be JSON objects"),
    (tf_config({"worker": "a:1"}, {"type": "worker", "index": 0}), "must be a list of addresses"),
    (tf_config({"worker": ["a:1", "b:1"]}), "names no task of this process"),
    (tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 2}),
     "task worker:2 is not in its cluster"),
    (tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": "one"}),
     "TF_CONFIG task index must be an integer; received 'one'"),
])
def test_tf_config_identity_rejects(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        tf_config_identity(config)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(("environ", "expected"), [
    ({}, (0, 1)),
    ({"RANK": "0", "WORLD_SIZE": "1"}, (0, 1)),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4)),
    ({"RANK": " 1 ", "WORLD_SIZE": "2"}, (1, 2)),
])
def test_launcher_env_identity(environ, expected):
    assert launcher_env_identity(environ) == expected


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(("environ", "message"), [
    ({"RANK": "1"}, "RANK and WORLD_SIZE must be set together"),
    ({"WORLD_SIZE": "2"}, "RANK and WORLD_SIZE must be set together"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK must be an integer; received 'x'"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK/WORLD_SIZE says process 2 of 2"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "says process 0 of 0"),
])
def test_launcher_env_identity_rejects(environ, message):
    with pytest.raises(ValueError, match=message):
        launcher_env_identity(environ)


def test_single_process_is_the_chief(single_process_env):
    assert process_identity() == (0, 1)
    assert is_chief()


@only["tensorflow"]
def test_tensorflow_reads_tf_config(single_process_env):
    single_process_env.setenv(
        "TF_CONFIG", tf_config({"chief": ["c:1"], "worker": ["a:1", "b:1"]},
                               {"type": "worker", "index": 0}))
    assert process_identity() == (1, 3)
    assert not is_chief()
    single_process_env.setenv("TF_CONFIG", "{broken")
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON"):
        is_chief()


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TF_CONFIG is TensorFlow's")
def test_other_backends_ignore_tf_config(single_process_env):
    single_process_env.setenv(
        "TF_CONFIG", tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}))
    assert process_identity() == (0, 1)


@only["jax"]
def test_jax_reads_process_index(single_process_env):
    import jax

    single_process_env.setattr(jax, "process_index", lambda *a, **k: 1)
    single_process_env.setattr(jax, "process_count", lambda *a, **k: 2)
    assert process_identity() == (1, 2)
    assert not is_chief()


@only["torch"]
def test_torch_reads_launcher_env_then_process_group(single_process_env):
    import torch.distributed as dist

    single_process_env.setenv("RANK", "1")
    single_process_env.setenv("WORLD_SIZE", "2")
    assert process_identity() == (1, 2)
    assert not is_chief()
    # once the process group exists, its rank is the truth
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        assert process_identity() == (0, 1)
    finally:
        dist.destroy_process_group()


def test_framework_answer_is_checked(monkeypatch):
    monkeypatch.setattr(distribute.backends, "process_index_and_count", lambda: (2, 2))
    with pytest.raises(ValueError, match="the framework says process 2 of 2"):
        process_identity()


@pytest.fixture
def second_process(single_process_env):
    """This process told, in its backend's own way, that it is process 1 of 2."""
    if BACKEND == "tensorflow":
        single_process_env.setenv(
            "TF_CONFIG", tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}))
    elif BACKEND == "jax":
        import jax

        single_process_env.setattr(jax, "process_index", lambda *a, **k: 1)
        single_process_env.setattr(jax, "process_count", lambda *a, **k: 2)
    else:
        single_process_env.setenv("RANK", "1")
        single_process_env.setenv("WORLD_SIZE", "2")
    assert not is_chief()


def test_callback_on_other_process_neither_computes_nor_writes(second_process, tmp_path):
    model = small_cnn()
    model.compile("sgd", "sparse_categorical_crossentropy")
    cam = gc.GradCamCallback(X[:PROBES], log_dir=tmp_path / "cam")
    computed = []
    cam.explain_probes = lambda: computed.append(1)  # type: ignore[method-assign]
    model.fit(X[:8], Y[:8], epochs=EPOCHS, batch_size=8, callbacks=[cam], verbose=0)
    assert computed == []
    assert not (tmp_path / "cam").exists()


# -- what the workers recorded, held to one-device numbers ---------------------------------

@functools.cache
def reference_model() -> keras.Model:
    """One plain single-device model, reused so that its compiled Grad-CAM pass is too."""
    return small_cnn()


def single_device_heatmaps(weights: list[np.ndarray]) -> np.ndarray:
    """Grad-CAM of the probes by a plain model with these weights, in this process."""
    model = reference_model()
    model.set_weights(weights)
    return np.stack([e.targets[0].heatmap for e in gc.explain_predictions(model, X[:PROBES])])


def recorded(arrays: dict[str, np.ndarray], prefix: str = "") -> list[tuple]:
    """``[(heatmaps, weights), ...]``: each Grad-CAM computation a worker's callback made."""
    runs = []
    while f"{prefix}heatmaps_{len(runs)}" in arrays:
        j = len(runs)
        count = sum(k.startswith(f"{prefix}weights_{j}_") for k in arrays)
        runs.append((arrays[f"{prefix}heatmaps_{j}"],
                     [arrays[f"{prefix}weights_{j}_{i}"] for i in range(count)]))
    return runs


def assert_one_device_numbers(arrays: dict[str, np.ndarray], prefix: str = "") -> None:
    """Each logged step's heatmaps equal one device's with the same weights, and training
    changed the weights between the first and the last."""
    runs = recorded(arrays, prefix)
    assert len(runs) == EPOCHS + 1, f"{len(runs)} Grad-CAM computations, one per logged step"
    for step, (heatmaps, weights) in enumerate(runs):
        np.testing.assert_allclose(heatmaps, single_device_heatmaps(weights),
                                   atol=ONE_DEVICE_ATOL, rtol=0, err_msg=f"step {step}")
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[-1][1]))


def assert_one_image_per_probe(log_dir: Path) -> None:
    """Exactly one image per probe (its timeline, and one grid) per logged step: -1 (the
    untrained model) .. EPOCHS - 1."""
    images = Counter((r.tag, r.step) for r in read_events(log_dir) if r.kind == "image")
    tags = ({f"gradcam/probe_{i:02d}" for i in range(PROBES)} | {"gradcam/grid"}
            | {f"gradcam/timeline/probe_{i:02d}" for i in range(PROBES)})
    assert {tag for tag, _ in images} == tags
    assert sorted(images) == sorted((t, s) for t in tags for s in range(-1, EPOCHS))
    assert set(images.values()) == {1}, images


def final_weights(arrays: dict[str, np.ndarray], prefix: str = "") -> list[np.ndarray]:
    count = sum(k.startswith(f"{prefix}final_") for k in arrays)
    return [arrays[f"{prefix}final_{i}"] for i in range(count)]


def assert_only_chief_wrote(workers) -> None:
    """Worker 0 wrote one image per probe and step; the others computed and wrote nothing,
    and all ended training with the same weights (their collective steps went through)."""
    results = [w.result() for w in workers]
    assert [r["identity"] for r in results] == [[k, len(workers)] for k in range(len(workers))]
    assert [r["chief"] for r in results] == [k == 0 for k in range(len(workers))]
    assert_one_image_per_probe(workers[0].out_dir / "logs")
    chief = workers[0].arrays()
    assert_one_device_numbers(chief)
    for other in workers[1:]:
        assert not (other.out_dir / "logs").exists()
        arrays = other.arrays()
        assert recorded(arrays) == []
        for mine, theirs in zip(final_weights(chief), final_weights(arrays), strict=True):
            np.testing.assert_allclose(mine, theirs, atol=1e-6)


# -- tf.distribute ---------------------------------------------------------------------------

@only["tensorflow"]
def test_mirrored_strategy_on_two_cpus(tmp_path):
    workers = run_workers("tf_mirrored.py", [[]], tmp_path, timeout_s=360)
    assert all_ok(workers), describe(workers)
    result, arrays = workers[0].result(), workers[0].arrays()
    assert (result["replicas"], result["variable_type"]) == (2, "MirroredVariable")
    assert result["identity"] == [0, 1] and result["chief"]
    assert_one_image_per_probe(workers[0].out_dir / "logs")
    assert_one_device_numbers(arrays)
    expected = single_device_heatmaps(final_weights(arrays))
    for name in ("in_scope", "single_in_scope"):  # explain_predictions inside the scope
        np.testing.assert_allclose(arrays[name], expected, atol=ONE_DEVICE_ATOL, rtol=0)


class KerasMultiWorkerFailure(Exception):
    """Keras 3's fit failed under MultiWorkerMirroredStrategy the known upstream way."""


# Keras 3 (3.15, TF 2.21) cannot fit under MultiWorkerMirroredStrategy: the TF trainer's
# _maybe_symbolic_build reduces the first PerReplica batch with strategy.reduce, which the
# collective strategy rejects. keras-team/keras#20585, tensorflow/tensorflow#72388.
_UPSTREAM_ERROR = "ValueError: Attempt to convert a value (PerReplica"
_UPSTREAM_FRAME = "trainer.py:_maybe_symbolic_build"


@only["tensorflow"]
@pytest.mark.xfail(raises=KerasMultiWorkerFailure, strict=True, reason=(
    "keras-team/keras#20585: Keras 3 fit under tf.distribute.MultiWorkerMirroredStrategy "
    "fails in TensorFlowTrainer._maybe_symbolic_build (ValueError: Attempt to convert a value "
    "(PerReplica...) to a Tensor)"))
def test_multi_worker_mirrored_two_processes(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    envs = [{"TF_CONFIG": tf_config(cluster, {"type": "worker", "index": k})} for k in (0, 1)]
    workers = run_workers("tf_multiworker.py", [[], []], tmp_path, timeout_s=360, envs=envs)
    assert all_ok(workers), describe(workers)
    results = [w.result() for w in workers]
    assert [r["identity"] for r in results] == [[0, 2], [1, 2]]
    assert [r["chief"] for r in results] == [True, False]
    assert [r["replicas"] for r in results] == [2, 2]
    if any("fit_error" in r for r in results):
        for r in results:
            assert r.get("fit_error", "").startswith(_UPSTREAM_ERROR), r.get("fit_error")
            assert _UPSTREAM_FRAME in r["fit_frames"], r["fit_frames"]
        raise KerasMultiWorkerFailure(f"{results[0]['fit_error']} in {_UPSTREAM_FRAME}")
    assert_only_chief_wrote(workers)


# -- keras.distribution on JAX -----------------------------------------------------------------

@pytest.fixture(scope="module")
def jax_two_devices(tmp_path_factory):
    """One run of tests/distributed/jax_local.py: DataParallel, then ModelParallel."""
    out = tmp_path_factory.mktemp("jax_local")
    workers = run_workers("jax_local.py", [[]], out, timeout_s=420)
    assert all_ok(workers), describe(workers)
    return workers[0]


@only["jax"]
@pytest.mark.parametrize(("name", "spec"), [
    ("data", [None, None, None, None]),  # replicated
    ("model", [None, None, None, "model"]),  # output channels split over the devices
])
def test_keras_distribution_on_two_devices(jax_two_devices, name, spec):
    result, arrays = jax_two_devices.result(), jax_two_devices.arrays()
    assert (result["devices"], result["tensorflow_imported"]) == (2, False)
    assert result["specs"][name]["conv1/kernel"] == spec
    assert_one_image_per_probe(jax_two_devices.out_dir / name / "logs")
    assert_one_device_numbers(arrays, f"{name}_")
    expected = single_device_heatmaps(final_weights(arrays, f"{name}_"))
    np.testing.assert_allclose(  # explain_predictions with the distribution set
        arrays[f"{name}_in_distribution"], expected, atol=ONE_DEVICE_ATOL, rtol=0)


@only["jax"]
def test_jax_two_processes(tmp_path):
    port = free_port()
    workers = run_workers("jax_multiprocess.py", [[str(port), "0"], [str(port), "1"]],
                          tmp_path, timeout_s=420)
    assert all_ok(workers), describe(workers)
    results = [w.result() for w in workers]
    assert [(r["processes"], r["devices"]) for r in results] == [(2, 2), (2, 2)]
    # (TensorFlow does get imported here, by keras.distribution.initialize's set_random_seed)
    assert_only_chief_wrote(workers)
    # Variables sharded across the processes: the chief cannot explain alone; it warns
    # instead of joining a collective the others never enter, and training goes on.
    chief, other = results
    assert chief["sharded_spec"] == [None, None, None, "model"]
    assert chief["sharded_computed"] == other["sharded_computed"] == 0
    assert len(chief["sharded_warnings"]) == 2, chief["sharded_warnings"]
    assert all("is sharded across processes" in m for m in chief["sharded_warnings"])
    assert other["sharded_warnings"] == []
    assert len(chief["sharded_losses"]) == len(other["sharded_losses"]) == 1


# -- torch.distributed ------------------------------------------------------------------------

@only["torch"]
def test_torch_two_ranks(tmp_path):
    port = str(free_port())
    envs = [{"RANK": str(k), "WORLD_SIZE": "2"} for k in (0, 1)]
    workers = run_workers("torch_ddp.py", [[port], [port]], tmp_path, timeout_s=300, envs=envs)
    assert all_ok(workers), describe(workers)
    results = [w.result() for w in workers]
    assert [r["before_init"]["identity"] for r in results] == [[0, 2], [1, 2]]
    assert [r["tensorflow_imported"] for r in results] == [False, False]
    assert_only_chief_wrote(workers)
