"""One process, two XLA host devices, keras.distribution: fit with GradCamCallback under
DataParallel (replicated variables), then under ModelParallel (conv and head kernels
sharded over the two devices), each followed by explain_predictions with the distribution
set. Run by tests/test_distributed.py."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"
# Two CPU devices; must be set before JAX initialises. LLVM optimisation off: on the test
# machines it turns ~5 s compiles (Keras' random initialisers) into ~0.1 s, same HLO.
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
    " --xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0")

import jax  # noqa: E402
import keras  # noqa: E402
from models import small_cnn  # noqa: E402

import gradcam_callbacks as gc  # noqa: E402
from distributed.common import (  # noqa: E402
    EPOCHS,
    PROBES,
    Recorder,
    X,
    Y,
    arguments,
    heatmaps,
    identity,
    write_result,
)


def distributions() -> dict[str, keras.distribution.Distribution]:
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    layout = keras.distribution.LayoutMap(mesh)
    layout["conv.*kernel"] = (None, None, None, "model")  # output channels: 8 and 12
    layout["head.*kernel"] = ("model", None)  # 12 input features
    return {
        "data": keras.distribution.DataParallel(devices=devices),
        "model": keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch"),
    }


def run(name: str, distribution: keras.distribution.Distribution, args) -> dict:
    keras.distribution.set_distribution(distribution)
    model = small_cnn()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    recorder = Recorder(args.out / name / "logs")
    model.fit(X, Y, epochs=EPOCHS, batch_size=8, callbacks=[recorder.callback], verbose=0)
    explained = heatmaps(gc.explain_predictions(model, X[:PROBES]))
    keras.distribution.set_distribution(None)
    arrays = {
        **recorder.arrays(f"{name}_"), f"{name}_in_distribution": explained,
        **{f"{name}_final_{i}": w for i, w in enumerate(model.get_weights())},
    }
    specs = {v.path: list(v.value.sharding.spec) for v in model.trainable_variables}
    return {"specs": specs, "arrays": arrays}


def main() -> None:
    args = arguments()
    result = {**identity(), "devices": len(jax.devices()), "specs": {}}
    arrays = {}
    for name, distribution in distributions().items():
        done = run(name, distribution, args)
        result["specs"][name] = done["specs"]
        arrays.update(done["arrays"])
    write_result(args.out, result, **arrays)


if __name__ == "__main__":
    main()
