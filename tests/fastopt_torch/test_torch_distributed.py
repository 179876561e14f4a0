"""The twins under torch.distributed: two processes (gloo, loopback) train the MLP with
DistributedDataParallel, each on half of every batch, with a fastopt twin as the optimizer and as
ZeroRedundancyOptimizer's optimizer_class; the result equals a single-process run on the whole batch."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch was built without distributed/gloo", allow_module_level=True)

import torch_dist_worker as worker  # noqa: E402

from gloo_ranks import WORLD, run_ranks  # noqa: E402

WORKER = pathlib.Path(worker.__file__).resolve()


def test_ddp_and_zero_with_twins_equal_a_single_process_run(tmp_path):
    seed = int(np.random.SeedSequence().entropy % (2**31))
    print(f"seed={seed}")
    run_ranks(WORKER, seed, tmp_path, timeout=180.0)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    start = worker.make_mlp(seed, worker.DTYPE)
    for run, (name, _, _) in worker.RUNS.items():
        twin_single = worker.train(run, seed, 0, 1)
        torch_single = worker.train(run, seed, 0, 1, optimizer_class=getattr(torch.optim, name))
        for i, (p0, p) in enumerate(zip(start.parameters(), twin_single)):
            assert (p - p0).abs().max() > 1e-3, f"{run}: params[{i}] hardly moved; the test would prove nothing"
        for r, result in enumerate(ranks):
            for i, p in enumerate(result[run]):
                # DDP sums the two half-batch gradients in another order than one full-batch backward:
                # the runs differ by float64 rounding only.
                where = f"{run}: rank {r} params[{i}]"
                torch.testing.assert_close(p, twin_single[i], rtol=1e-10, atol=1e-12, msg=lambda m: f"{where}: {m}")
                torch.testing.assert_close(p, torch_single[i], rtol=1e-10, atol=1e-12, msg=lambda m: f"{where}: {m}")
