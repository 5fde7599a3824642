"""The main job's entry points run end to end (a short run; the full one is docs/demo.md's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from gradcam_callbacks.watch.tensorboard import read_events


@pytest.mark.backend_agnostic  # the quickstart's job (TensorFlow); the callback and training
# on JAX and torch are held by test_callback.py and the documented blocks (test_readme.py)
def test_demo_command_runs_and_writes_its_outputs(tmp_path):
    log_dir = tmp_path / "logs"
    done = subprocess.run(
        [sys.executable, "-m", "gradcam_callbacks", "demo", "--epochs", "2", "--probes", "3",
         "--train-size", "256", "--log-dir", str(log_dir)],
        capture_output=True, text=True, timeout=600, env={**os.environ},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("test accuracy:", "pointing game:", "contact sheet:",
                 f"tensorboard --logdir {log_dir}"):
        assert line in done.stdout
    steps = sorted({r.step for r in read_events(log_dir / "gradcam")
                    if r.tag == "gradcam/probe_02" and r.kind == "image"})
    assert steps == [-1, 0, 1]  # untrained, then Keras' epoch steps
    sheet = Image.open(log_dir / "contact_sheet.png")
    assert sheet.width > sheet.height  # 3 steps across, 3 probes down, each panel wide


@pytest.mark.backend_agnostic  # argparse's help: no backend involved
@pytest.mark.parametrize("script, option", [("cluttered_digits.py", "--epochs"),
                                            ("shortcut_digits.py", "--shortcut-rate")])
def test_example_script_help(script, option):
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", script)
    done = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True,
                          timeout=300, env={**os.environ})
    assert done.returncode == 0 and option in done.stdout
