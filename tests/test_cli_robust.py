"""The command line against hostile inputs and users (issues #9, #10, #12): every input ends
as a PNG or as an error line, the run always ends, Ctrl-C is honoured within a second or two,
and the user is told what happened.

Models are small, built under the suite's backend and saved to .keras files; the CLI runs in
subprocesses through its real entry points (``python -m gradcam_callbacks`` and the installed
``gradcam-callbacks`` script).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from gradcam_callbacks.cli import interrupt
from gradcam_callbacks.watch.tensorboard import EventWriter, _masked_crc32c

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
PROG = "gradcam-callbacks"


def _env(backend: str = BACKEND, home: Path | None = None) -> dict[str, str]:
    """The environment of a CLI run; ``home``: a writable folder for Keras' and matplotlib's
    caches (a user other than root cannot write root's)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    caches = {} if home is None else {"KERAS_HOME": str(home / ".keras"),
                                      "MPLCONFIGDIR": str(home / ".matplotlib")}
    # a user's shell has no TF_CPP_MIN_LOG_LEVEL; this process has one because importing
    # jax (which Keras does) sets it
    shell = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**shell, "KERAS_BACKEND": backend, "PYTHONPATH": path, **caches}


def cli(*args: object, prefix: tuple[str, ...] = (), timeout: float = 300,
        cwd: Path | None = None, home: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m gradcam_callbacks ARGS``, optionally behind ``prefix`` (setpriv)."""
    return subprocess.run([*prefix, sys.executable, "-m", "gradcam_callbacks", *map(str, args)],
                          capture_output=True, text=True, env=_env(home=home), timeout=timeout,
                          cwd=cwd)


def records(out: Path) -> dict[str, dict]:
    """results.jsonl keyed by the input's file name."""
    lines = (out / "results.jsonl").read_text().splitlines()
    return {Path(r["file"]).name: r for r in map(json.loads, lines)}


def save_image(path: Path, value: int | None = None, size: int = 12, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if value is None:
        pixels = np.random.RandomState(seed).randint(0, 256, (size, size, 3), np.uint8)
    else:
        pixels = np.full((size, size, 3), value, np.uint8)
    Image.fromarray(pixels).save(path)


# -- models ---------------------------------------------------------------------------------
def _small(name: str, scale: float, seed: int = 0) -> keras.Model:
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Rescaling(scale)(inputs)
    h = keras.layers.Conv2D(6, 3, name="conv", kernel_initializer=keras.initializers.RandomNormal(
        0.0, 0.3, seed=seed))(h)
    h = keras.layers.ReLU(name="feat")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(4, activation="softmax", kernel_initializer=(
        keras.initializers.RandomNormal(0.0, 1.0, seed=seed + 1)))(h)
    return keras.Model(inputs, outputs, name=name)


def _nan_model() -> keras.Model:
    """``_small``'s CNN plus an explicit NaN: every pixel looks up a table by brightness
    (``Discretization`` then ``Embedding``: a gather, no arithmetic that a kernel could round
    away), row 1 (brighter than 127) is NaN, row 0 zeros; their mean is added to the logits.
    So any input with a bright pixel scores NaN on every backend and CPU, a black one gives
    finite, tied scores."""
    cnn = _small("nan_cnn", 1 / 255)
    head = cnn.layers[-1]
    logits = keras.layers.Dense(4, name="logits")(head.input)
    bins = keras.layers.Discretization(bin_boundaries=[127.5], name="bright")(cnn.inputs[0])
    table = keras.layers.Embedding(2, 1, name="nan_table")
    poison = keras.layers.GlobalAveragePooling1D()(
        keras.layers.Reshape((-1, 1))(table(bins)))
    logits = keras.layers.Add()([logits, keras.layers.Dense(
        4, use_bias=False, kernel_initializer="ones", name="spread")(poison)])
    model = keras.Model(cnn.inputs, keras.layers.Softmax()(logits), name="nan_model")
    model.get_layer("logits").set_weights(head.get_weights())
    table.set_weights([np.array([[0.0], [np.nan]], "float32")])
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """``nan.keras``: any input with a bright pixel scores NaN (an explicit NaN, not an
    overflow: :func:`_nan_model`), a black one gives finite (tied) scores. ``raw.keras``:
    expects pixels in [0, 1]; fed 0..255 (--preprocess none) its softmax saturates.
    ``plain.keras``: rescales inside, any size."""
    folder = tmp_path_factory.mktemp("robust_models")
    keras.utils.set_random_seed(0)
    _nan_model().save(folder / "nan.keras")
    _small("raw_model", 1.0).save(folder / "raw.keras")
    _small("plain_model", 1 / 255).save(folder / "plain.keras")
    os.chmod(folder, 0o755)
    return folder


# -- #9.4: a model producing NaN -------------------------------------------------------------
def test_a_model_producing_nan_fails_those_inputs_only(models, tmp_path):
    inputs = tmp_path / "in"
    for name in ("a_black.png", "c_black.png", "e_black.png"):
        save_image(inputs / name, value=0)
    for k, name in enumerate(("b_bright.png", "d_bright.png")):
        save_image(inputs / name, seed=k)
    # batches of 2 mix finite and NaN inputs; the last batch holds one input
    done = cli("explain", models / "nan.keras", inputs, "--out", tmp_path / "out",
               "--batch-size", "2")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = records(tmp_path / "out")
    assert set(lines) == {"a_black.png", "b_bright.png", "c_black.png", "d_bright.png",
                          "e_black.png"}
    for name in ("b_bright.png", "d_bright.png"):
        assert set(lines[name]) == {"file", "error"}
        assert "non-finite" in lines[name]["error"], lines[name]
        assert any(name in line and "non-finite" in line for line in done.stderr.splitlines())
    for name in ("a_black.png", "c_black.png", "e_black.png"):
        assert "error" not in lines[name], lines[name]
        assert (tmp_path / "out" / lines[name]["output"]).is_file()
        assert lines[name]["score"] == pytest.approx(0.25)  # black: four tied classes
    assert "explained 3, failed 2" in done.stderr


# -- #9.5: special files ---------------------------------------------------------------------
@pytest.mark.backend_agnostic
def test_a_fifo_or_a_device_among_the_inputs_is_skipped_without_opening_it(models, tmp_path):
    inputs = tmp_path / "in"
    save_image(inputs / "a.png")
    save_image(inputs / "z.png", seed=1)
    os.mkfifo(inputs / "pipe.png")  # opening it would block until a writer comes
    done = cli("explain", models / "plain.keras", inputs, os.devnull, "--out",
               tmp_path / "out", timeout=180)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = records(tmp_path / "out")
    assert set(lines) == {"a.png", "z.png", "pipe.png", "null"}
    assert "error" not in lines["a.png"] and "error" not in lines["z.png"]
    assert "a FIFO" in lines["pipe.png"]["error"] and "without opening" in lines["pipe.png"][
        "error"]
    assert "a character device" in lines["null"]["error"]
    for name in ("pipe.png", os.devnull):
        assert any(name in line and "not a regular file" in line
                   for line in done.stderr.splitlines()), done.stderr
    assert stat.S_ISFIFO(os.stat(inputs / "pipe.png").st_mode)


# -- #9.6: a folder that cannot be listed ----------------------------------------------------
def _unprivileged(folder: Path) -> tuple[str, ...]:
    """A command prefix under which permission bits apply (root ignores them): as uid 65534
    when that user can run this interpreter, else root without any capability (the
    interpreter may live where uid 65534 cannot read, e.g. under /root). ``folder`` is made
    world-writable for the former."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop "
                    "privileges, and root reads a chmod 000 folder")
    nobody = (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")
    capless = (setpriv, "--inh-caps=-all", "--bounding-set=-all")
    probe = ("import os, sys, gradcam_callbacks, PIL\n"
             "try: os.listdir(sys.argv[1])\n"
             "except PermissionError: sys.exit(0)\n"
             "sys.exit(3)")
    locked = Path(tempfile.mkdtemp(dir=folder))
    locked.chmod(0o000)
    try:
        for prefix in (nobody, capless):
            folder.chmod(0o777)
            done = subprocess.run([*prefix, sys.executable, "-c", probe, str(locked)],
                                  capture_output=True, text=True, env=_env(home=folder),
                                  timeout=120)
            if done.returncode == 0:
                return prefix
    finally:
        locked.chmod(0o700)
        locked.rmdir()
    pytest.skip("running as root and neither 'setpriv --reuid=65534' (this interpreter "
                f"{sys.executable} is not readable by uid 65534) nor dropping capabilities "
                f"('setpriv --bounding-set=-all') worked: {done.stderr[-300:]}")


@pytest.mark.backend_agnostic
def test_a_folder_that_cannot_be_listed_is_reported_not_skipped(models):
    work = Path(tempfile.mkdtemp(prefix="gradcam-cli-"))  # world-readable, unlike tmp_path
    try:
        prefix = _unprivileged(work)
        shutil.copy(models / "plain.keras", work / "plain.keras")
        save_image(work / "in" / "a.png")
        save_image(work / "in" / "locked" / "hidden.png", seed=1)
        save_image(work / "in" / "z" / "z.png", seed=2)
        for path in [work, *work.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        (work / "in" / "locked").chmod(0o000)
        done = cli("explain", work / "plain.keras", work / "in", "--out", work / "out",
                   prefix=prefix, home=work)
        (work / "in" / "locked").chmod(0o755)
        assert done.returncode == 1, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
        lines = records(work / "out")
        assert set(lines) == {"a.png", "locked", "z.png"}, lines
        assert "cannot list folder" in lines["locked"]["error"]
        assert "Permission denied" in lines["locked"]["error"]
        assert [line for line in done.stderr.splitlines() if "cannot list folder" in line
                and str(work / "in" / "locked") in line]
        assert "error" not in lines["a.png"] and "error" not in lines["z.png"]
    finally:
        for path in [work, *work.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(work, ignore_errors=True)


# -- #9.7: an output path that collides ------------------------------------------------------
@pytest.mark.backend_agnostic
def test_an_output_collision_fails_that_input_and_the_run_goes_on(models, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    for k, name in enumerate(("d.png", "e.png", "f.png", "sub/g.png", "sub/h.png", "z.png")):
        save_image(inputs / name, seed=k)
    (out / "e.gradcam.png").mkdir(parents=True)  # a folder where e's PNG should go
    (out / "e.gradcam.png" / "keep.txt").write_text("mine")
    (out / "sub").write_text("a file where a folder of outputs should go")
    done = cli("explain", models / "plain.keras", inputs, "--out", out, "--batch-size", "2")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = records(out)
    assert set(lines) == {"d.png", "e.png", "f.png", "g.png", "h.png", "z.png"}
    assert str(out / "e.gradcam.png") in lines["e.png"]["error"]
    assert "cannot write its output" in lines["e.png"]["error"]
    for name in ("g.png", "h.png"):
        assert str(out / "sub" / name.replace(".png", ".gradcam.png")) in lines[name]["error"]
    for name in ("d.png", "f.png", "z.png"):
        assert "error" not in lines[name] and (out / lines[name]["output"]).is_file()
    assert (out / "e.gradcam.png" / "keep.txt").read_text() == "mine"
    assert "explained 3, failed 3" in done.stderr


# -- Ctrl-C ------------------------------------------------------------------------------------
def _interrupt(args: list[object], when: str, tmp_path: Path) -> tuple[float, str, int, float]:
    """Start the CLI, send one SIGINT when ``when`` happens ('lines': results.jsonl has
    lines; 'backend': the backend's shared library is mapped, i.e. Keras is loading), return
    (seconds from SIGINT to exit, stderr, status, seconds from SIGINT to the process's last
    write to stderr). The last is the kernel's stamp on that write (the file's mtime), so it
    does not grow when this process is slow to look, nor with the exit's own cost."""
    errors = tmp_path / "stderr.txt"
    with open(errors, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gradcam_callbacks", *map(str, args)],
            stdout=subprocess.DEVNULL, stderr=sink, env=_env())
        log = tmp_path / "out" / "results.jsonl"
        deadline = time.monotonic() + 300
        maps = Path(f"/proc/{process.pid}/maps")
        while time.monotonic() < deadline and process.poll() is None:
            if when == "backend" and BACKEND in maps.read_text():
                break
            if when == "lines" and log.exists() and log.read_text().count("\n") >= 3:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be interrupted"
        sent_ns = time.time_ns()  # the same clock as the file's mtime
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        finally:
            process.kill()
        return (time.monotonic() - sent, errors.read_text(), process.returncode,
                (errors.stat().st_mtime_ns - sent_ns) / 1e9)


def test_ctrl_c_mid_run_stops_within_the_grace_keeping_what_was_done(models, tmp_path):
    inputs = tmp_path / "in"
    for i in range(240):
        save_image(inputs / f"{i:03d}.png", seed=i, size=96)
    seconds, stderr, status, stopped = _interrupt(
        ["explain", models / "plain.keras", inputs, "--out", tmp_path / "out",
         "--batch-size", "60", "--side-by-side", "--top", "2"], "lines", tmp_path)
    assert status == 130, stderr[-3000:]
    # The run's last word ("interrupted ...": its own once it stopped in order, or the
    # watchdog's) comes at most GRACE (1 s: docs say "within about a second") after Ctrl-C,
    # whatever the main thread was doing; 1 s more for scheduling. Timed at the write, not at
    # the exit, which adds the kernel's freeing of the backend's memory after os._exit and
    # grows with load. Seen on 2 cores already at load average 10 (other jobs), 3 runs each:
    # stop 0.02-0.16 s, exit 0.07-0.28 s; with 2 busy processes beside it 0.13-0.26 s,
    # 0.36-0.65 s; with 6, 0.34-1.01 s, 0.97-1.78 s (the old bound, exit < 2 s, nearly broke).
    assert interrupt.GRACE <= 1.0
    assert stopped < interrupt.GRACE + 1.0, (
        f"last word {stopped:.2f} s after Ctrl-C (exit after {seconds:.2f} s)")
    assert "interrupted" in stderr and "Traceback" not in stderr
    text = (tmp_path / "out" / "results.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert text.endswith("\n") and 3 <= len(lines) < 240
    for line in lines:
        with Image.open(tmp_path / "out" / line["output"]) as picture:
            picture.load()


@pytest.mark.backend_agnostic
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_ctrl_c_while_keras_loads_ends_within_two_seconds(models, tmp_path):
    save_image(tmp_path / "in" / "a.png")
    seconds, stderr, status, _ = _interrupt(
        ["explain", models / "plain.keras", tmp_path / "in", "--out", tmp_path / "out"],
        "backend", tmp_path)
    # Nothing is written yet: the process dies by the signal itself (while the backend's
    # libraries load, no Python code can run), which a shell reports as status 130.
    assert status == -signal.SIGINT, stderr[-3000:]
    assert seconds < 2.0, f"exited {seconds:.2f} s after Ctrl-C"
    assert "Traceback" not in stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


# -- #9.9: sheet errors ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sheet") / "gradcam"
    with EventWriter(folder) as writer:
        for step in range(2):
            for probe in range(2):
                writer.add_image(f"gradcam/probe_{probe:02d}",
                                 Image.new("RGB", (8, 8), (40 * step, 90, 200)), step=step)
    return folder


def _one_error_line(done: subprocess.CompletedProcess, status: int, *words: str) -> None:
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{PROG} sheet: error")]
    assert len(errors) == 1, done.stderr
    for word in words:
        assert word in errors[0], done.stderr


@pytest.mark.backend_agnostic
def test_sheet_out_a_folder_and_gif_a_file_are_usage_errors(log_dir, tmp_path):
    (tmp_path / "made.png").mkdir()
    (tmp_path / "file").write_text("not a folder")
    _one_error_line(cli("sheet", log_dir, "--out", tmp_path / "made.png"), 2, "is a folder")
    _one_error_line(cli("sheet", log_dir, "--out", tmp_path / "s.png", "--gif",
                        tmp_path / "file"), 2, "--gif", "is not a folder")
    assert not (tmp_path / "s.png").exists()
    done = cli("sheet", log_dir, "--out", tmp_path / "ok" / "s.png", "--gif")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == (f"{PROG} sheet: wrote {str(tmp_path / 'ok' / 's.png')!r} "
                                   f"(2 probe(s) x 2 epoch(s)) and 2 GIF(s) to "
                                   f"{str(tmp_path / 'ok')!r}")
    assert cli("sheet", log_dir, "--out", tmp_path / "q.png", "--quiet").stderr == ""


def _rewrite_records(path: Path, change) -> None:
    """Rewrite a TFRecord file, passing each payload through ``change``, CRCs recomputed."""
    data, out, at = path.read_bytes(), b"", 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        payload = change(data[at + 12:at + 12 + length])
        header = struct.pack("<Q", len(payload))
        out += (header + struct.pack("<I", _masked_crc32c(header)) + payload
                + struct.pack("<I", _masked_crc32c(payload)))
        at += 12 + length + 4
    path.write_bytes(out)


@pytest.mark.backend_agnostic
def test_sheet_with_corrupt_or_unreadable_event_files_fails_in_one_line(log_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(log_dir, broken)
    for events in broken.iterdir():  # a logged PNG that Pillow cannot read
        _rewrite_records(events, lambda payload: payload.replace(b"\x89PNG", b"\x89XNG"))
    _one_error_line(cli("sheet", broken, "--out", tmp_path / "s.png"), 1, "cannot read")
    assert not (tmp_path / "s.png").exists()

    work = Path(tempfile.mkdtemp(prefix="gradcam-sheet-"))
    try:
        prefix = _unprivileged(work)
        shutil.copytree(log_dir, work / "logs")
        for path in [work, *work.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o000)
        _one_error_line(cli("sheet", work / "logs", "--out", work / "s.png", prefix=prefix,
                            home=work), 1, "cannot read", "Permission denied")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- #12.4: advice and summary -----------------------------------------------------------------
@pytest.mark.backend_agnostic  # the advice reads scores; test_cli.py runs the CLI per backend
def test_saturated_scores_warn_to_check_preprocess_and_runs_end_with_a_summary(models, tmp_path):
    inputs = tmp_path / "in"
    for i in range(6):
        save_image(inputs / f"{i}.png", seed=i, size=16)
    raw = cli("explain", models / "raw.keras", inputs, "--out", tmp_path / "raw")
    assert raw.returncode == 0, raw.stderr[-3000:]
    warnings = [line for line in raw.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--preprocess" in warnings[0], raw.stderr
    assert "saturated" in warnings[0] and "(this run: none)" in warnings[0]
    flagged = [r for r in records(tmp_path / "raw").values() if r["warnings"]]
    assert len(flagged) > 3
    assert raw.stderr.splitlines()[-1] == (f"{PROG} explain: explained 6, failed 0, wrote to "
                                           f"{str(tmp_path / 'raw')!r}")

    unit = cli("explain", models / "raw.keras", inputs, "--out", tmp_path / "unit",
               "--preprocess", "unit", "--quiet")
    assert unit.returncode == 0 and unit.stderr == "", unit.stderr
    assert not [r for r in records(tmp_path / "unit").values() if r["warnings"]]


def test_native_start_up_lines_stay_out_of_stderr_unless_the_user_asks(models, tmp_path):
    """TensorFlow's C++ start-up lines (absl's notice, "oneDNN custom operations are on")
    are not ours: without ``TF_CPP_MIN_LOG_LEVEL`` the user sees our lines only; a user who
    set it chose what to see. oneDNN is forced on so that TensorFlow has a line to print on
    any x86 CPU."""
    inputs = tmp_path / "in"
    save_image(inputs / "a.png", size=16)
    base = _env()
    command = [sys.executable, "-m", "gradcam_callbacks", "explain", str(models / "plain.keras"),
               str(inputs), "--quiet"]
    quiet = subprocess.run([*command, "--out", str(tmp_path / "a")], capture_output=True,
                           text=True, timeout=300, env={**base, "TF_ENABLE_ONEDNN_OPTS": "1"})
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr == "", quiet.stderr
    if BACKEND != "tensorflow":
        return  # no TensorFlow import, no native lines to hide or to show
    asked = subprocess.run([*command, "--out", str(tmp_path / "b")], capture_output=True,
                           text=True, timeout=300, env={**base, "TF_ENABLE_ONEDNN_OPTS": "1",
                                                        "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert asked.returncode == 0, asked.stderr[-3000:]
    assert "oneDNN custom operations are on" in asked.stderr


# -- #10: --top in one pass, --help without a backend, the console script -----------------------
def test_top_k_takes_one_forward_pass_and_ranks_ties_by_index(models):
    from gradcam_callbacks.cli.images import Geometry
    from gradcam_callbacks.cli.pipeline import ExplainOptions, explain_docs
    from gradcam_callbacks.explain import plan

    calls = []

    class Counting(keras.layers.Layer):
        def call(self, x):
            calls.append(1)  # once per eager call (torch), once per trace (tf, jax)
            return x

    def fresh_options(top: int | None) -> ExplainOptions:
        inputs = keras.Input((None, None, 3))
        h = keras.layers.Conv2D(4, 3, name="conv")(Counting()(inputs))
        h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
        model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(h))
        return ExplainOptions(
            model=model, plan=plan(model), geometry=Geometry(3, None, None, False),
            targets=None, top=top, class_names=None, preprocess="none", colormap="viridis",
            alpha_limit=0.5, side_by_side=False, max_pixels=0)

    rng = np.random.RandomState(0)
    items = [(rng.rand(10, 10, 3).astype("float32") * 255, Image.new("RGB", (10, 10)))
             for _ in range(2)] + [(np.zeros((10, 10, 3), "float32"), Image.new("RGB", (10, 10)))]
    # the model's calls (or traces) for the top class alone, then for the top 3, each on a
    # fresh model: the same, as --top K picks its K classes inside the Grad-CAM pass
    options = fresh_options(None)
    calls.clear()
    explain_docs(items, options)
    top_class_only = len(calls)
    options = fresh_options(3)
    calls.clear()
    outcomes = explain_docs(items, options)
    assert len(calls) == top_class_only >= 1
    expected = np.asarray(options.model.predict_on_batch(np.stack([doc for doc, _ in items])))
    for outcome, scores in zip(outcomes, expected):
        targets = outcome.explanation.targets
        assert [t.target for t in targets] == np.argsort(-scores, kind="stable")[:3].tolist()
        assert [t.score for t in targets] == pytest.approx(np.sort(scores)[::-1][:3], abs=1e-6)
    # a black doc: all five scores tie; the lower index ranks first, as argmax would
    assert [t.target for t in outcomes[2].explanation.targets] == [0, 1, 2]


HELP_IMPORTS = """
import runpy, sys
sys.argv = ["gradcam-callbacks", *sys.argv[1:]]
try:
    runpy.run_module("gradcam_callbacks", run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print("LOADED", sorted(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules))
"""


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("command", [[], ["explain"], ["sheet"], ["demo"]])
def test_help_of_every_subcommand_imports_no_backend(command):
    done = subprocess.run([sys.executable, "-c", HELP_IMPORTS, *command, "--help"],
                          capture_output=True, text=True, env=_env("tensorflow"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: gradcam-callbacks" in done.stdout
    assert done.stdout.splitlines()[-1] == "LOADED []", done.stdout[-500:]


@pytest.mark.backend_agnostic
def test_the_installed_console_script_runs_explain(models, tmp_path):
    import gradcam_callbacks

    script = shutil.which("gradcam-callbacks", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip(f"no gradcam-callbacks script beside {sys.executable}: the package is not "
                    "installed in this environment (pip install -e .)")
    version = subprocess.run([script, "--version"], capture_output=True, text=True,
                             env=_env(), timeout=120)
    assert version.stdout.strip() == f"{PROG} {gradcam_callbacks.__version__}"
    save_image(tmp_path / "in" / "a.png")
    done = subprocess.run([script, "explain", str(models / "plain.keras"), str(tmp_path / "in"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert records(tmp_path / "out")["a.png"]["output"] == "a.gradcam.png"
    assert f"{PROG} explain: explained 1, failed 0" in done.stderr


def test_a_batch_whose_pass_raises_is_retried_one_input_at_a_time():
    """The engine may raise for a whole batch (e.g. a ValueError naming the docs whose
    output is not finite): each input is then explained alone, and fails alone."""
    from gradcam_callbacks.cli.images import Geometry
    from gradcam_callbacks.cli.pipeline import Explained, ExplainOptions, explain_batch
    from gradcam_callbacks.explain import plan

    class RefusesBatches(keras.layers.Layer):
        def call(self, x):
            if x.shape[0] is not None and x.shape[0] > 1:
                raise ValueError("docs [1] gave outputs that are not finite")
            return x

        def compute_output_shape(self, input_shape):
            return input_shape  # (JAX infers shapes by calling with a stand-in batch size)

    inputs = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(RefusesBatches()(inputs))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    options = ExplainOptions(
        model=model, plan=plan(model), geometry=Geometry(3, None, None, False), targets=None,
        top=None, class_names=None, preprocess="none", colormap="viridis", alpha_limit=0.5,
        side_by_side=False, max_pixels=0)
    rng = np.random.RandomState(0)
    docs = {i: (rng.rand(9, 9, 3).astype("float32") * 255, Image.new("RGB", (9, 9)))
            for i in range(3)}
    outcomes = explain_batch(([None, "unreadable", None, None], {0: docs[0], 2: docs[1],
                                                                 3: docs[2]}), options)
    assert outcomes[1] == "unreadable"
    assert all(isinstance(outcomes[i], Explained) for i in (0, 2, 3)), outcomes
    # a single input whose pass raises fails with the engine's reason
    tiny = {0: (np.zeros((2, 2, 3), "float32"), Image.new("RGB", (2, 2)))}
    (reason,) = explain_batch(([None], tiny), options)
    assert isinstance(reason, str) and "does not fit model" in reason and "2x2" in reason
