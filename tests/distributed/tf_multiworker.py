"""A worker under tf.distribute.MultiWorkerMirroredStrategy, its cluster (on 127.0.0.1) and
task given by the TF_CONFIG the parent sets, as a cluster manager would: fit with
GradCamCallback. Keras 3's fit fails under this strategy (see tests/test_distributed.py);
the worker records that failure instead of crashing, so the parent can tell it from any
other. Run by tests/test_distributed.py."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from models import small_cnn  # noqa: E402

from distributed.common import (  # noqa: E402
    EPOCHS,
    Recorder,
    X,
    Y,
    arguments,
    bound_the_exit,
    identity,
    write_result,
)


def main() -> None:
    args = arguments()
    keras.config.disable_traceback_filtering()  # the parent looks for Keras' own frames
    result = identity()  # before the strategy: TF_CONFIG alone says who writes
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    result["replicas"] = strategy.num_replicas_in_sync
    with strategy.scope():
        model = small_cnn()
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    recorder = Recorder(args.out / "logs")
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    try:
        model.fit(data, epochs=EPOCHS, callbacks=[recorder.callback], verbose=0)
    except Exception as error:  # recorded for the parent, which knows the upstream failure
        result["fit_error"] = f"{type(error).__name__}: {error}"[:300]
        result["fit_frames"] = [f"{Path(f.filename).name}:{f.name}"
                                for f in traceback.extract_tb(error.__traceback__)]
        write_result(args.out, result)
    else:
        write_result(args.out, result, **recorder.arrays(),
                     **{f"final_{i}": w for i, w in enumerate(model.get_weights())})
    bound_the_exit()
    barrier(strategy)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Every worker gets here before any exits: worker 0 leads the cluster's coordination
    service, and a worker whose peer has gone can be stuck or aborted in its own ending.
    An all-reduce over every replica is the barrier."""
    one = strategy.run(lambda: tf.constant(1.0))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, one, axis=None)
    if int(total) != strategy.num_replicas_in_sync:
        raise RuntimeError(f"closing barrier: {float(total)} of "
                           f"{strategy.num_replicas_in_sync} replicas")


if __name__ == "__main__":
    main()
