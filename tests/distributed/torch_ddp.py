"""Rank k of 2 (RANK and WORLD_SIZE set by the parent, as torchrun sets them) with
torch.distributed (gloo, 127.0.0.1) and DistributedDataParallel: Keras 3's
fit has no multi-process mode on the torch backend, so this is the custom loop of Keras'
"distributed training with PyTorch" guide, driving GradCamCallback's hooks by hand.
Run by tests/test_distributed.py."""

from __future__ import annotations

import os
from datetime import timedelta

os.environ["KERAS_BACKEND"] = "torch"

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from models import small_cnn  # noqa: E402

from distributed.common import (  # noqa: E402
    EPOCHS,
    EXIT_S,
    Recorder,
    X,
    Y,
    arguments,
    bound_the_exit,
    identity,
    write_result,
)


def main() -> None:
    args = arguments("port")
    before = identity()  # not initialised yet: the library must read RANK / WORLD_SIZE
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank,
                            world_size=int(os.environ["WORLD_SIZE"]),
                            timeout=timedelta(seconds=120))
    model = small_cnn()
    trainer = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    recorder = Recorder(args.out / "logs")
    cam = recorder.callback
    cam.set_model(model)
    cam.on_train_begin()
    x = torch.as_tensor(X[16 * rank:16 * (rank + 1)])
    y = torch.as_tensor(Y[16 * rank:16 * (rank + 1)], dtype=torch.long)
    for epoch in range(EPOCHS):
        cam.on_epoch_begin(epoch)
        for start in range(0, len(x), 8):
            optimizer.zero_grad()
            probabilities = trainer(x[start:start + 8], training=True)
            loss = torch.nn.functional.nll_loss(torch.log(probabilities), y[start:start + 8])
            loss.backward()  # DDP all-reduces the gradients here
            optimizer.step()
        cam.on_epoch_end(epoch)
    cam.on_train_end()
    write_result(args.out, {**identity(), "before_init": before},
                 **recorder.arrays(),
                 **{f"final_{i}": w for i, w in enumerate(model.get_weights())})
    bound_the_exit()
    del trainer  # DDP holds the group: let it go before the group is torn down
    leave_group()


def leave_group() -> None:
    """Tear the group down once every rank has got here, and never wait forever.

    Rank 0 still computes and writes its last images when the others have finished their
    steps; no rank may destroy its side of the group (and exit, closing rank 0's store and
    the gloo connections) while another still has it in use. gloo's monitored barrier waits
    at most ``EXIT_S / 3`` and then names the ranks that did not arrive.
    """
    dist.monitored_barrier(timeout=timedelta(seconds=EXIT_S / 3), wait_all_ranks=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
