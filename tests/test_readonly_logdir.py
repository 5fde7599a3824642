"""A read-only log dir, checked as a user whom permission bits stop: root ignores them, so the
fit runs in a subprocess behind ``setpriv`` (as uid 65534, or as root without capabilities
where uid 65534 cannot run this interpreter); see ``test_cli_robust._unprivileged``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from test_cli_robust import _env, _unprivileged

from gradcam_callbacks.watch.tensorboard import read_events

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    import keras, numpy as np
    import gradcam_callbacks as gc
    from gradcam_callbacks.watch.tensorboard import EventWriter

    run = sys.argv[1]
    os.makedirs(run)
    os.chmod(run, 0o500)
    probe = EventWriter(os.path.join(run, "probe"))
    try:
        probe.add_scalar("s", 1.0, step=0)
        refused = False
    except OSError:
        refused = True
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="feat")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.RandomState(0).rand(8, 8, 8, 3).astype("float32")
    y = np.arange(8) % 3
    # the log dir becomes writable after the second epoch: the last epoch can be logged
    unlock = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: os.chmod(run, 0o700) if epoch == 1 else None)
    cam = gc.GradCamCallback(x[:2], log_dir=run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=3, batch_size=8, callbacks=[unlock, cam], verbose=0)
    print(json.dumps({
        "uid": os.geteuid(), "refused": refused, "epochs": len(history.history["loss"]),
        "warnings": [str(w.message) for w in caught if "GradCamCallback" in str(w.message)],
    }))
    """
)


@pytest.mark.backend_agnostic
def test_read_only_log_dir_warns_training_goes_on_and_recovers_unprivileged():
    home = Path(tempfile.mkdtemp(prefix="gradcam-ro-"))  # under /tmp: uid 65534 reaches it
    prefix = _unprivileged(home)
    run = home / "run"
    done = subprocess.run([*prefix, sys.executable, "-c", SCRIPT, str(run)],
                          capture_output=True, text=True, env=_env(home=home), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["refused"], "the unprivileged writer could write into a 0o500 folder"
    assert result["epochs"] == 3
    # writes are queued to a writer thread, so which early steps failed before the unlock
    # is timing; at least one was refused with a warning, and the last one was written
    assert any("could not write step" in w for w in result["warnings"]), result
    steps = sorted({r.step for r in read_events(run) if r.kind == "image"})
    assert 2 in steps and set(steps) <= {-1, 0, 1, 2}, (steps, result)
    shutil.rmtree(home, ignore_errors=True)
