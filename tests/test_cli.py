"""The command line through its real entry point, ``python -m gradcam_callbacks``, in
subprocesses: what a user types and what lands on disk.

Models are trained and saved in a subprocess under ANOTHER backend than the suite's, then
explained by the CLI under the suite's own backend. Test images are made with Pillow into
tmp_path: nested folders, a corrupt file, a text file named .png, a 16-bit PNG, a grayscale
JPEG, a CMYK JPEG, an EXIF-rotated JPEG, a 6000x6000 JPEG, a decompression bomb, a GIF, an
RGBA WebP and an image too small for the model.
"""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
# Models are saved under another backend than the suite's: the quickest one to train under.
OTHER_BACKEND = "torch" if BACKEND == "tensorflow" else "tensorflow"
GAP = 4  # pixels between panels, image.grid's default
from gradcam_callbacks.image import LABEL_HEIGHT  # noqa: E402 - the column-label strip

# Importing Keras fails under this backend name: commands run with it prove they need no Keras.
NO_KERAS = "no-keras-needed"


def cli(*args: object, backend: str = BACKEND, timeout: float = 600,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m gradcam_callbacks ARGS`` under ``backend``."""
    return subprocess.run([sys.executable, "-m", "gradcam_callbacks", *map(str, args)],
                          capture_output=True, text=True, env=_env(backend), timeout=timeout,
                          cwd=cwd)


def _env(backend: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path}


def results(out: Path) -> dict[str, dict]:
    """results.jsonl, keyed by input file name (relative to the inputs' root)."""
    lines = (out / "results.jsonl").read_text().splitlines()
    return {Path(r["file"]).name: r for r in map(json.loads, lines)}


def picture(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


# -- models, saved under another backend -----------------------------------------------------
TRAIN_AND_SAVE = """
import sys, keras, numpy as np
out = sys.argv[1]
keras.utils.set_random_seed(0)
rng = np.random.RandomState(0)

# any size, RGB, 0..255 in (rescaled inside): two valid 3x3 convolutions, so a map of
# (H - 4, W - 4), and an input under 5x5 pixels cannot be explained
inputs = keras.Input((None, None, 3))
h = keras.layers.Rescaling(1 / 255)(inputs)
h = keras.layers.Conv2D(8, 3, name="conv1")(h)
h = keras.layers.ReLU()(h)
h = keras.layers.Conv2D(12, 3, name="conv2")(h)
h = keras.layers.ReLU(name="feat")(h)
h = keras.layers.GlobalAveragePooling2D()(h)
any_size = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(h), name="any_size")
any_size.compile("adam", "sparse_categorical_crossentropy")
any_size.fit(rng.rand(64, 16, 16, 3) * 255, rng.randint(0, 5, 64), epochs=2, verbose=0)
any_size.save(f"{out}/any_size.keras")

# 28x28 grayscale in [0, 1], a nested base model whose last ReLU is 'base_net/feat' (14x14)
base_in = keras.Input((28, 28, 1))
b = keras.layers.Conv2D(8, 3, padding="same")(base_in)
b = keras.layers.ReLU()(b)
b = keras.layers.Conv2D(8, 3, strides=2, padding="same")(b)
base = keras.Model(base_in, keras.layers.ReLU(name="feat")(b), name="base_net")
gray_in = keras.Input((28, 28, 1))
g = keras.layers.GlobalAveragePooling2D()(base(gray_in))
gray = keras.Model(gray_in, keras.layers.Dense(4, activation="softmax")(g), name="gray")
gray.compile("adam", "sparse_categorical_crossentropy")
gray.fit(rng.rand(64, 28, 28, 1), rng.randint(0, 4, 64), epochs=2, verbose=0)
gray.save(f"{out}/gray.h5")
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    done = subprocess.run([sys.executable, "-c", TRAIN_AND_SAVE, str(folder)],
                          capture_output=True, text=True, env=_env(OTHER_BACKEND), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


# -- test images --------------------------------------------------------------------------------
def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def make_edge_case_tree(root: Path) -> None:
    """Most images are 24x24, so that JAX (which compiles once per input shape) stays quick."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 256, (24, 24, 3), np.uint8)).save(root / "a.png")
    gradient = np.tile(np.linspace(0, 255, 24).astype(np.uint8), (24, 1))
    Image.fromarray(gradient, "L").save(root / "sub" / "b.jpg", quality=95)
    sixteen = np.tile(np.linspace(0, 65535, 24).astype(np.uint16), (24, 1))
    Image.fromarray(sixteen).save(root / "sub" / "deeper" / "c.png")
    Image.new("CMYK", (24, 24), (255, 0, 0, 0)).save(root / "sub" / "deeper" / "cmyk.jpg",
                                                     quality=95)
    # left half red, right half blue; orientation 6: shown turned 90 degrees clockwise
    sideways = Image.new("RGB", (24, 24), (0, 0, 255))
    sideways.paste((255, 0, 0), (0, 0, 12, 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(root / "exif.jpg", exif=exif, quality=95)
    huge = Image.new("RGB", (6000, 6000), (30, 120, 200))
    ImageDraw.Draw(huge).ellipse((1000, 1000, 4000, 4000), fill=(250, 200, 40))
    huge.save(root / "huge.jpg", quality=80)
    frames = [Image.new("RGB", (24, 24), colour).convert("P") for colour in ((255, 0, 0),
                                                                             (0, 255, 0))]
    frames[0].save(root / "palette.gif", save_all=True, append_images=frames[1:])
    Image.new("RGBA", (24, 24), (0, 128, 0, 100)).save(root / "rgba.webp")
    whole = io.BytesIO()
    Image.fromarray(rng.randint(0, 256, (32, 32, 3), np.uint8)).save(whole, format="PNG")
    (root / "corrupt.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (root / "notes.png").write_text("not a picture, despite the name\n")
    Image.new("RGB", (2, 2), (9, 9, 9)).save(root / "tiny.png")
    (root / "bomb.png").write_bytes(png_claiming(20000, 10000))
    (root / "readme.txt").write_text("not an input")
    Image.new("RGB", (8, 8)).save(root / ".hidden" / "skipped.png")


FAILING = {"corrupt.png": "not a readable image", "notes.png": "not a readable image",
           "tiny.png": "does not fit model 'any_size' at 2x2 pixels", "bomb.png": "--max-pixels"}
GOOD = {  # input -> (its output under --out, (height, width) of the picture)
    "a.png": ("a.gradcam.png", (24, 24)),
    "b.jpg": ("sub/b.gradcam.png", (24, 24)),
    "c.png": ("sub/deeper/c.gradcam.png", (24, 24)),
    "cmyk.jpg": ("sub/deeper/cmyk.gradcam.png", (24, 24)),
    "exif.jpg": ("exif.gradcam.png", (24, 24)),
    "huge.jpg": ("huge.gradcam.png", (1024, 1024)),  # scaled down, at most 1024 a side
    "palette.gif": ("palette.gradcam.png", (24, 24)),
    "rgba.webp": ("rgba.gradcam.png", (24, 24)),
}


@pytest.fixture(scope="module")
def edge_case_run(models, tmp_path_factory):
    """One run over every awkward input, with the heatmap made invisible (--alpha-limit 0)
    so that each PNG shows exactly the picture the CLI read."""
    work = tmp_path_factory.mktemp("edge")
    make_edge_case_tree(work / "in")
    before = {p: p.read_bytes() for p in (work / "in").rglob("*") if p.is_file()}
    done = cli("explain", models / "any_size.keras", work / "in", "--out", work / "out",
               "--alpha-limit", "0", "--batch-size", "4")
    return work, done, before


def test_explain_reads_every_kind_of_image_and_skips_bad_files(edge_case_run):
    work, done, before = edge_case_run
    assert done.returncode == 1, done.stderr[-3000:]
    assert "img/s" not in done.stderr  # no progress bar when stderr is not a terminal
    lines = results(work / "out")
    assert set(lines) == set(GOOD) | set(FAILING)  # not readme.txt, not .hidden/
    for name, reason in FAILING.items():
        assert set(lines[name]) == {"file", "error"}
        assert reason in lines[name]["error"], lines[name]
        reported = [line for line in done.stderr.splitlines() if name in line]
        assert len(reported) == 1 and reason in reported[0], done.stderr
    for name, (output, (height, width)) in GOOD.items():
        line = lines[name]
        assert "error" not in line, line
        assert line["output"] == output
        assert line["layer"] == "feat"
        assert line["image_size"] == [height, width]
        # a model without a fixed size sees each image at its own size: two valid 3x3 convs
        assert line["heatmap_size"] == [height - 4, width - 4], name
        assert 0 <= line["target"] < 5 and 0 <= line["score"] <= 1
        assert line["targets"] == [{k: line[k] for k in ("target", "class_name", "score")}]
        assert line["class_name"] is None
        assert picture(work / "out" / output).shape == (height, width, 3), name
    assert sorted(p.relative_to(work / "out").as_posix() for p in (work / "out").rglob("*.png")
                  ) == sorted(o for o, _ in GOOD.values())
    assert not [p for p in (work / "out").rglob("*") if p.name.endswith(".tmp")]
    assert {p: p.read_bytes() for p in before} == before


def test_explain_converts_modes_orientation_and_size_faithfully(edge_case_run):
    work, done, _ = edge_case_run
    out = work / "out"
    rgb = np.asarray(Image.open(work / "in" / "a.png")).astype(int)
    assert np.array_equal(picture(out / "a.gradcam.png"), rgb)
    upright = picture(out / "exif.gradcam.png")  # turned clockwise: the red half on top
    assert upright[:10].mean(axis=(0, 1)) == pytest.approx([255, 0, 0], abs=12)
    assert upright[14:].mean(axis=(0, 1)) == pytest.approx([0, 0, 255], abs=12)
    sixteen = picture(out / "sub" / "deeper" / "c.gradcam.png")  # 16 bits scaled, not clipped
    assert np.abs(sixteen[..., 0] - np.linspace(0, 255, 24)[None, :]).max() <= 1
    assert (sixteen == sixteen[..., :1]).all()
    gray = picture(out / "sub" / "b.gradcam.png")
    assert (gray == gray[..., :1]).all() and gray.std() > 50
    cmyk = picture(out / "sub" / "deeper" / "cmyk.gradcam.png")  # cyan ink: no red
    assert cmyk.mean(axis=(0, 1)) == pytest.approx([0, 255, 255], abs=12)
    gif = picture(out / "palette.gradcam.png")  # the first frame
    assert (gif == [255, 0, 0]).all()
    huge = picture(out / "huge.gradcam.png")
    assert huge[512, 512] == pytest.approx([250, 200, 40], abs=12)
    assert huge[20, 20] == pytest.approx([30, 120, 200], abs=12)


def test_explain_top3_names_nested_layer_h5_side_by_side_in_place(models, tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.RandomState(1)
    for name in ("x.png", "x.jpg", "y.bmp"):
        Image.fromarray(rng.randint(0, 256, (40, 50, 3), np.uint8)).save(folder / name)
    Image.new("RGB", (5, 5)).save(folder / "old.gradcam.png")  # an earlier run's output
    (tmp_path / "names.json").write_text(json.dumps(["zero", "one", "two", "three"]))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # --out is the input folder itself: inputs must survive, outputs go beside them
    done = cli("explain", models / "gray.h5", folder, "--out", folder, "--top", "3",
               "--class-names", tmp_path / "names.json", "--layer", "base_net/feat",
               "--preprocess", "unit", "--side-by-side")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = results(folder)
    assert set(lines) == {"x.png", "x.jpg", "y.bmp"}
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before
    model = keras.saving.load_model(models / "gray.h5", compile=False)
    differs = False
    for name, line in lines.items():
        # same stem twice: the whole name is kept
        assert line["output"] == {"x.png": "x.png.gradcam.png", "x.jpg": "x.jpg.gradcam.png",
                                  "y.bmp": "y.gradcam.png"}[name]
        assert line["layer"] == "base_net/feat" and line["heatmap_size"] == [14, 14]
        with Image.open(folder / name) as image:
            doc = np.asarray(image.convert("L").resize((28, 28), Image.BILINEAR), np.float32)
        scores = np.asarray(model.predict_on_batch(doc[None, :, :, None] / 255))[0]
        top = np.argsort(-scores)[:3]
        assert [t["target"] for t in line["targets"]] == top.tolist()
        assert [t["score"] for t in line["targets"]] == pytest.approx(scores[top], abs=1e-4)
        assert [t["class_name"] for t in line["targets"]] == [
            ["zero", "one", "two", "three"][t] for t in top]
        assert line["target"] == top[0] and line["class_name"] == ["zero", "one", "two",
                                                                   "three"][top[0]]
        # the input, then one overlay per target, each enlarged 3x (50 px is under the
        # 128 px a labelled panel needs) and labelled below with its class and score
        sheet = picture(folder / line["output"])
        assert sheet.shape[1] == 4 * 150 + 3 * GAP and sheet.shape[0] > 120 + 2 * 12
        shown = np.asarray(Image.open(folder / name).convert("RGB")).astype(int)
        shown = shown.repeat(3, axis=0).repeat(3, axis=1)
        assert np.array_equal(sheet[:120, :150], shown)
        for k in range(4):
            caption = sheet[122:, k * (150 + GAP):k * (150 + GAP) + 150]
            assert (caption.mean(axis=-1) < 128).sum() > 30, f"panel {k} has no label"
        differs |= any(not np.array_equal(sheet[:120, k * 154:k * 154 + 150], shown)
                       for k in (1, 2, 3))
    assert differs, "no overlay shows a heatmap"
    assert not (folder / "old.gradcam.gradcam.png").exists()


# -- usage errors -------------------------------------------------------------------------------
@pytest.mark.backend_agnostic
@pytest.mark.parametrize("args, message", [
    (["explain", "missing.keras", ".", "--out", "o"], "MODEL 'missing.keras' is not a file"),
    (["explain", "{model}", "nowhere/", "--out", "o"], "INPUT 'nowhere' does not exist"),
    (["explain", "{model}", "{empty}", "--out", "o"], "no image files found"),
    (["explain", "{model}", ".", "--out", "o", "--bogus"], "unrecognized arguments: --bogus"),
    (["explain", "{model}", ".", "--out", "o", "--top", "0"], "--top: must be a positive"),
    (["explain", "{model}", ".", "--out", "o", "--top", "2", "--target", "1"],
     "not allowed with argument"),
    (["explain", "{model}", ".", "--out", "o", "--size", "12by3"], "--size: must be HEIGHTx"),
    (["explain", "{model}", ".", "--out", "o", "--alpha-limit", "2"], "--alpha-limit: alpha"),
    (["explain", "{model}", ".", "--out", "o", "--colormap", "nope"], "--colormap: colormap"),
    (["explain", "{model}", ".", "--out", "o", "--class-names", "none.txt"],
     "--class-names: cannot read 'none.txt'"),
    (["sheet", "{empty}", "--out", "s.png"], "no probe images"),
    (["sheet", "nowhere", "--out", "s.png"], "LOGDIR 'nowhere' does not exist"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2_before_loading_anything(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.keras").write_text("never read")
    Image.new("RGB", (4, 4)).save(tmp_path / "i.png")
    args = [a.format(model="m.keras", empty="empty") for a in args]
    done = cli(*args, cwd=tmp_path, backend=NO_KERAS)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.png").exists()


@pytest.mark.backend_agnostic
def test_usage_errors_that_need_the_model_exit_2_naming_every_bad_option(models, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "i.png")
    (tmp_path / "not_a_model.keras").write_text("plain text")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    cases = [
        ([tmp_path / "not_a_model.keras"], ["cannot load MODEL"]),
        ([models / "any_size.keras", "--layer", "nope"], ["--layer: layer 'nope' not found"]),
        ([models / "gray.h5", "--top", "5", "--size", "32x32"],
         ["--top 5 is more than the model's 4 classes", "height is fixed at 28"]),
        ([models / "gray.h5", "--target", "4", "--class-names", tmp_path / "three.txt",
          "--preprocess", "caffe"],
         ["--target: targets must be class indices in [0, 4)", "has 3 names",
          "--preprocess caffe needs an RGB model"]),
    ]
    with ThreadPoolExecutor(2) as pool:  # each loads Keras: two at a time
        runs = list(pool.map(lambda case: cli("explain", case[0][0], tmp_path / "i.png",
                                              "--out", tmp_path / "o", *case[0][1:]), cases))
    for (_, messages), done in zip(cases, runs):
        assert done.returncode == 2, (messages, done.stderr[-2000:])
        errors = [line for line in done.stderr.splitlines()
                  if line.startswith("gradcam-callbacks explain: error: ")]
        assert len(errors) == len(messages), done.stderr[-2000:]
        for message, line in zip(messages, errors):
            assert message in line
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "o" / "results.jsonl").exists()


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("command", [[], ["explain"], ["sheet"]])
def test_help_on_every_subcommand(command):
    done = cli(*command, "--help", backend=NO_KERAS)
    assert done.returncode == 0 and done.stdout.startswith("usage: gradcam-callbacks")
    expected = {(): ["explain", "sheet", "demo", "--version"],
                ("explain",): ["--layer", "--target", "--top", "--class-names", "--preprocess",
                               "--size", "--colormap", "--alpha-limit", "--batch-size",
                               "--side-by-side", "--quiet"],
                ("sheet",): ["LOGDIR", "--out", "--every", "--gif"]}[tuple(command)]
    assert all(word in done.stdout for word in expected)


@pytest.mark.backend_agnostic
def test_version():
    import gradcam_callbacks

    done = cli("--version", backend=NO_KERAS)
    assert done.returncode == 0
    assert done.stdout.strip() == f"gradcam-callbacks {gradcam_callbacks.__version__}"


@pytest.mark.backend_agnostic
def test_demo_help_is_the_demos_own():
    done = cli("demo", "--help")
    assert done.returncode == 0, done.stderr
    assert "--epochs" in done.stdout and "--log-dir" in done.stdout


# -- Ctrl-C, progress bar, explicit targets ------------------------------------------------------
def _drain(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the terminal's other end closed: the process ended
            return
        if not data:
            return
        chunks.append(data)


@pytest.mark.backend_agnostic
def test_ctrl_c_on_a_terminal_keeps_every_finished_png_and_json_line(models, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.RandomState(2)
    for i in range(400):
        Image.fromarray(rng.randint(0, 256, (16, 16, 3), np.uint8)).save(folder / f"{i:03d}.png")
    out = tmp_path / "out"
    terminal, stderr_end = pty.openpty()  # stderr is a terminal: the progress bar shows
    process = subprocess.Popen(
        [sys.executable, "-m", "gradcam_callbacks", "explain", str(models / "any_size.keras"),
         str(folder), "--out", str(out), "--batch-size", "1", "--target", "2", "--target", "0",
         "--size", "20x20"],
        stdout=subprocess.DEVNULL, stderr=stderr_end, env=_env(BACKEND))
    os.close(stderr_end)
    chunks: list[bytes] = []
    drain = threading.Thread(target=_drain, args=(terminal, chunks))
    drain.start()
    deadline = time.monotonic() + 300
    log = out / "results.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 5:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    drain.join(timeout=30)
    os.close(terminal)
    stderr = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted after" in stderr and "Traceback" not in stderr
    assert "/400 " in stderr and "img/s" in stderr  # the bar: count and rate
    text = log.read_text()
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert 5 <= len(lines) < 400
    pngs = sorted(out.glob("*.png"))
    assert {line["output"] for line in lines} == {p.name for p in pngs}
    # complete, and two overlays of the 16x16 picture side by side, each enlarged 8x to the
    # 128 px a labelled panel needs, with two 17 px label lines (class, score) below
    for png in pngs:
        with Image.open(png) as image:
            image.load()
            assert image.size == (2 * 128 + GAP, 128 + 2 + 2 * 17)
    assert sorted(p.name for p in out.iterdir()) == sorted([*(p.name for p in pngs),
                                                           "results.jsonl"])
    for line in lines:
        assert [t["target"] for t in line["targets"]] == [2, 0] and line["target"] == 2
        assert line["heatmap_size"] == [16, 16]  # fed at --size 20x20: two valid 3x3 convs


# -- sheet --------------------------------------------------------------------------------------
PROBES, EPOCHS = 3, 2


@pytest.fixture(scope="module")
def fitted_log_dir(tmp_path_factory) -> Path:
    from models import images, small_cnn

    import gradcam_callbacks as gc

    log_dir = tmp_path_factory.mktemp("fit") / "gradcam"
    x, y = images(24, seed=3), np.arange(24) % 5
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    cam = gc.GradCamCallback((x[:PROBES], y[:PROBES]), targets="true", log_dir=log_dir)
    model.fit(x, y, epochs=EPOCHS, batch_size=8, callbacks=[cam], verbose=0)
    return log_dir


def _logged(log_dir: Path) -> dict[tuple[str, int], np.ndarray]:
    from gradcam_callbacks.watch.tensorboard import read_events

    return {(r.tag, r.step): np.asarray(Image.open(io.BytesIO(r.value)).convert("RGB"))
            for r in read_events(log_dir)
            if r.kind == "image" and r.tag.startswith("gradcam/probe_")}


@pytest.mark.backend_agnostic
def test_sheet_draws_every_probe_at_every_epoch_and_gifs(fitted_log_dir, tmp_path):
    done = cli("sheet", fitted_log_dir, "--out", tmp_path / "sheet.png", "--gif",
               backend=NO_KERAS)  # TensorFlow and Keras are not needed
    assert done.returncode == 0, done.stderr
    logged = _logged(fitted_log_dir)
    cell_h, cell_w, _ = logged[("gradcam/probe_00", 0)].shape
    sheet = picture(tmp_path / "sheet.png")
    steps = list(range(-1, EPOCHS))  # step -1 is before training, then Keras' epoch steps
    columns = len(steps)
    height, width, _ = sheet.shape
    left = width - (columns * cell_w + (columns - 1) * GAP)  # room for the row labels
    top = height - (PROBES * cell_h + (PROBES - 1) * GAP)  # room for the column labels
    assert 0 < left < 100 and top == LABEL_HEIGHT + GAP
    for row in range(PROBES):
        for column, step in enumerate(steps):
            y, x = top + row * (cell_h + GAP), left + column * (cell_w + GAP)
            cell = sheet[y:y + cell_h, x:x + cell_w]
            assert np.array_equal(cell, logged[(f"gradcam/probe_{row:02d}", step)]), (row, step)
    assert (sheet[:top, left:] < 128).any()  # epoch labels drawn
    gifs = sorted(tmp_path.glob("*.gif"))
    assert [g.name for g in gifs] == [f"gradcam_probe_{i:02d}.gif" for i in range(PROBES)]
    for gif in gifs:
        with Image.open(gif) as animation:
            assert animation.n_frames == columns and animation.size == (cell_w, cell_h)


@pytest.mark.backend_agnostic
def test_contact_sheet_every_thins_columns_and_keeps_the_last(fitted_log_dir):
    from gradcam_callbacks.watch.sheet import contact_sheet, probe_frames

    assert probe_frames(fitted_log_dir, every=2)[1] == [-1, 1]
    assert probe_frames(fitted_log_dir, every=5)[1] == [-1, 1]  # the last step is always kept
    full, thin = contact_sheet(fitted_log_dir), contact_sheet(fitted_log_dir, every=2)
    cell_w = _logged(fitted_log_dir)[("gradcam/probe_00", 0)].shape[1]
    assert full.width - thin.width == cell_w + GAP and full.height == thin.height
    with pytest.raises(ValueError, match="every must be a positive integer"):
        contact_sheet(fitted_log_dir, every=0)


@pytest.mark.backend_agnostic
def test_sheet_on_a_parent_folder_names_the_run_folder(fitted_log_dir, tmp_path):
    done = cli("sheet", fitted_log_dir.parent, "--out", tmp_path / "s.png", backend=NO_KERAS)
    assert done.returncode == 2
    assert "no probe images" in done.stderr and str(fitted_log_dir) in done.stderr
