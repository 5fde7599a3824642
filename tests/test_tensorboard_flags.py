"""What docs/callback.md (and ``gradcam_callbacks.watch.tags.SAMPLES_PER_PLUGIN``) say about
TensorBoard's flags, held by a real TensorBoard server of this environment:

- ``--samples_per_plugin images=1000`` with the ``--load_fast false`` loader serves every step
  of an image tag too (its default loader is held by
  ``test_fit_with_callback_tensorboard.py``);
- ``--samples_per_plugin images=0``, documented upstream as "keep all", serves no image at all
  (with the default loader, as a user's ``tensorboard --logdir logs`` has it).

The run is written with the package's own ``EventWriter`` (what the callback writes with):
31 steps, from -1, of one image tag, and a scalar tag beside it that shows when TensorBoard has
read the whole file. TensorBoard and its flags are what is tested; no backend is involved.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from tb_server import running_tensorboard

from gradcam_callbacks.watch.tags import SAMPLES_PER_PLUGIN
from gradcam_callbacks.watch.tensorboard import EventWriter

STEPS = list(range(-1, 30))  # more than the 10 TensorBoard keeps per image tag by default
IMAGE_TAG = "gradcam/probe_00"
SCALAR_TAG = "gradcam/probe_00/score"
RUN = "gradcam"


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("flags")
    with EventWriter(str(root / RUN)) as writer:
        for step in STEPS:
            picture = np.full((8, 8, 3), (step + 1) * 8, np.uint8)
            writer.add_image(IMAGE_TAG, picture, step=step)
            writer.add_scalar(SCALAR_TAG, step / 100, step=step)
    return root


def _image_steps(tb) -> list[int]:
    return [e["step"] for e in tb.get_json("data/plugin/images/images", run=RUN, tag=IMAGE_TAG,
                                           sample=0)]


def _scalars_loaded(tb) -> bool:
    scalars = tb.get_json("data/plugin/scalars/scalars", run=RUN, tag=SCALAR_TAG)
    return [step for _, step, _ in scalars] == STEPS


@pytest.mark.backend_agnostic
def test_load_fast_false_loader_serves_every_step_with_the_documented_flag(run_root):
    assert SAMPLES_PER_PLUGIN == "images=1000"
    with running_tensorboard(run_root, samples_per_plugin=SAMPLES_PER_PLUGIN,
                             load_fast="false", startup_timeout=300) as tb:
        assert tb.wait_for(lambda: _image_steps(tb) == STEPS, timeout=90)
        assert "--load_fast" in " ".join(tb.process.args)


@pytest.mark.backend_agnostic
def test_images_0_serves_no_image_at_all(run_root):
    with running_tensorboard(run_root, samples_per_plugin="images=0", load_fast=None,
                             startup_timeout=300) as tb:
        # the whole file is read once every scalar is served ...
        tb.wait_for(lambda: _scalars_loaded(tb), timeout=90)
        # ... and it stays imageless over three more reloads (--reload_interval 1)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            tags = tb.get_json("data/plugin/images/tags").get(RUN, {})
            served = _image_steps(tb) if IMAGE_TAG in tags else []
            assert served == [], f"images=0 served steps {served}"
            time.sleep(0.25)
