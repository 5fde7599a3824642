"""Process k of 2 (one CPU device each, coordinator on 127.0.0.1): fit with GradCamCallback
under keras.distribution.DataParallel, each process on its half of the data; then one epoch
under ModelParallel with the conv kernels sharded across the two processes, which the chief
cannot explain alone (it must warn, and training must go on). Run by
tests/test_distributed.py."""

from __future__ import annotations

import os
import warnings

os.environ["KERAS_BACKEND"] = "jax"
# LLVM optimisation off: on the test machines it turns ~5 s compiles (Keras' random
# initialisers) into ~0.1 s, same HLO.
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from models import small_cnn  # noqa: E402

from distributed.common import (  # noqa: E402
    EPOCHS,
    Recorder,
    X,
    Y,
    arguments,
    bound_the_exit,
    gradcam_warnings,
    identity,
    write_result,
)


def main() -> None:
    args = arguments("port", "index")
    index = int(args.index)
    keras.distribution.initialize(f"127.0.0.1:{args.port}", num_processes=2, process_id=index)
    reference = small_cnn()  # before any distribution: plain single-device variables
    devices = keras.distribution.list_devices()

    # Replicated variables: the chief explains with its local copy.
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
    model = keras.models.clone_model(reference)
    model.set_weights(reference.get_weights())
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    recorder = Recorder(args.out / "logs")
    half = slice(16 * index, 16 * (index + 1))
    model.fit(X[half], Y[half], epochs=EPOCHS, batch_size=8, callbacks=[recorder.callback],
              verbose=0)
    result = {**identity(), "processes": jax.process_count(), "devices": len(jax.devices())}
    arrays = {**recorder.arrays(),
              **{f"final_{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}}

    # Variables sharded across processes: no whole copy on the chief.
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    layout = keras.distribution.LayoutMap(mesh)
    layout["conv.*kernel"] = (None, None, None, "model")
    keras.distribution.set_distribution(keras.distribution.ModelParallel(
        layout_map=layout, batch_dim_name="batch", auto_shard_dataset=False))
    sharded = keras.models.clone_model(reference)
    sharded.set_weights(reference.get_weights())
    sharded.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    second = Recorder(args.out / "sharded_logs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = sharded.fit(X, Y, epochs=1, batch_size=8, callbacks=[second.callback],
                              verbose=0)
    result.update(
        sharded_spec=list(sharded.get_layer("conv1").kernel.value.sharding.spec),
        sharded_warnings=gradcam_warnings(caught),
        sharded_computed=len(second.heatmaps),
        sharded_losses=[float(v) for v in history.history["loss"]],
    )
    write_result(args.out, result, **arrays)
    bound_the_exit()
    # Process 0 runs the coordination service: every process gets here before any shuts its
    # side down (shutdown itself is a barrier too, bounded by JAX's shutdown timeout).
    multihost_utils.sync_global_devices("gradcam-callbacks tests: done")
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
