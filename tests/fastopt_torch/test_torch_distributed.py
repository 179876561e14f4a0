"""The twins under torch.distributed: two processes (gloo, loopback) train the MLP with
DistributedDataParallel, each on half of every batch, with a fastopt twin as the optimizer and as
ZeroRedundancyOptimizer's optimizer_class; the result equals a single-process run on the whole batch."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch was built without distributed/gloo", allow_module_level=True)

import torch_dist_worker as worker  # noqa: E402

from repo_paths import env_with_helpers  # noqa: E402

WORKER = pathlib.Path(worker.__file__).resolve()
WORLD = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(seed: int, out_dir: pathlib.Path, timeout: float = 180.0):
    """Starts the two ranks and waits for both; kills them on a timeout. Returns (ok, log)."""
    env = env_with_helpers(dict(os.environ, OMP_NUM_THREADS="1"))  # (the worker imports torch_mlp)
    if os.path.exists("/sys/class/net/lo"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo on loopback
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), str(WORLD), str(port), str(seed),
                               str(out_dir)], cwd=WORKER.parent, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in range(WORLD)]
    logs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            logs.append(out)
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.communicate()
        pytest.fail(f"the distributed ranks did not finish in {timeout} s")
    ok = all(proc.returncode == 0 for proc in procs)
    return ok, "\n".join(f"--- rank {r} (exit {p.returncode})\n{log}" for r, (p, log) in
                         enumerate(zip(procs, logs)))


def test_ddp_and_zero_with_twins_equal_a_single_process_run(tmp_path):
    seed = int(np.random.SeedSequence().entropy % (2**31))
    print(f"seed={seed}")
    ok, log = launch(seed, tmp_path)
    if not ok and "ddress already in use" in log:  # lost the free port to another process: once more
        ok, log = launch(seed, tmp_path)
    assert ok, log
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
