"""One rank of the distributed test (tests/fastopt_torch/test_torch_distributed.py starts two of these).

    python torch_dist_worker.py RANK WORLD PORT SEED OUT_DIR

Each run trains the shared MLP under DistributedDataParallel, every rank on its half of each batch, with a
fastopt twin as the optimizer, plain or as ZeroRedundancyOptimizer's optimizer_class; the rank saves its
final parameters to OUT_DIR/rank{RANK}.pt. With WORLD=1 (as the test calls `train` in-process) the same code
is the single-process run on the whole batch.
"""

from __future__ import annotations

import datetime
import sys

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import fastopt.torch as ft
from torch_mlp import loss_of, make_batches, make_mlp

STEPS, BATCH, DTYPE = 20, 16, torch.float64

# run name -> (twin, hyperparameters, wrapped in ZeroRedundancyOptimizer?)
RUNS = {
    "ddp_adamw": ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True), False),
    "ddp_sgd": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), False),
    "zero_adamw": ("AdamW", dict(lr=1e-2, weight_decay=0.1), True),
}


def make_optimizer(params, optimizer_class, hyper, zero):
    if zero:
        return ZeroRedundancyOptimizer(params, optimizer_class=optimizer_class, **hyper)
    return optimizer_class(params, **hyper)


def train(run, seed, rank, world, optimizer_class=None):
    """Trains the MLP for STEPS steps and returns its parameters. world > 1: under DDP, on this rank's
    slice of each batch; world == 1: on the whole batch, with `optimizer_class` (default: the twin)."""
    name, hyper, zero = RUNS[run]
    model = make_mlp(seed, DTYPE)
    optimizer_class = optimizer_class or getattr(ft, name)
    if world > 1:
        module = DistributedDataParallel(model)
        opt = make_optimizer(module.parameters(), optimizer_class, hyper, zero)
        local = opt.optim if zero else opt
        assert type(local) is optimizer_class, f"{run}: the step runs {type(local)}, not {optimizer_class}"
    else:
        module = model
        opt = optimizer_class(model.parameters(), **hyper)
    share = BATCH // world
    for x, y in make_batches(seed, STEPS, BATCH, DTYPE):
        mine = slice(rank * share, (rank + 1) * share)
        opt.zero_grad()
        # The mean over this rank's half; DDP averages the gradients over the ranks, which gives the
        # gradient of the mean over the whole batch.
        loss_of(module, x[mine], y[mine]).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def main(rank, world, port, seed, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {run: train(run, seed, rank, world) for run in RUNS}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, port, seed = (int(a) for a in sys.argv[1:5])
    main(rank, world, port, seed, sys.argv[5])
