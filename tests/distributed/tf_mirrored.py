"""One process, two logical CPUs, tf.distribute.MirroredStrategy: fit with GradCamCallback,
then explain_predictions inside the strategy's scope. Run by tests/test_distributed.py."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf  # noqa: E402 - the logical devices must exist before TF initialises

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

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


def main() -> None:
    args = arguments()
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    with strategy.scope():
        model = small_cnn()
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    single = small_cnn(seed=3)  # built outside the scope: plain variables
    recorder = Recorder(args.out / "logs")
    model.fit(X, Y, epochs=EPOCHS, batch_size=8, callbacks=[recorder.callback], verbose=0)
    single.set_weights(model.get_weights())
    with strategy.scope():
        in_scope = heatmaps(gc.explain_predictions(model, X[:PROBES]))
        single_in_scope = heatmaps(gc.explain_predictions(single, X[:PROBES]))
    write_result(
        args.out,
        {**identity(), "replicas": strategy.num_replicas_in_sync,
         "variable_type": type(model.trainable_variables[0].value).__name__},
        **recorder.arrays(), in_scope=in_scope, single_in_scope=single_in_scope,
        **{f"final_{i}": w for i, w in enumerate(model.get_weights())},
    )


if __name__ == "__main__":
    main()
