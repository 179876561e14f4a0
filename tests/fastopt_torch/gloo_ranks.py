"""Two ranks of a torch.distributed test started as subprocesses over gloo on the loopback interface, shared by
test_torch_distributed.py (DDP, ZeroRedundancyOptimizer) and test_torch_fsdp2.py (fully_shard)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest

from repo_paths import env_with_helpers

WORLD = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(worker: pathlib.Path, seed: int, out_dir: pathlib.Path, timeout: float):
    """Starts the two ranks of `worker` (argv: rank, world, port, seed, out_dir) and waits for both; kills them on
    a timeout. Returns (ok, log)."""
    env = env_with_helpers(dict(os.environ, OMP_NUM_THREADS="1"))  # (the workers import torch_mlp)
    if os.path.exists("/sys/class/net/lo"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo on loopback
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(worker), str(rank), str(WORLD), str(port), str(seed),
                               str(out_dir)], cwd=worker.parent, env=env, stdout=subprocess.PIPE,
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
        pytest.fail(f"the ranks of {worker.name} did not finish in {timeout} s")
    ok = all(proc.returncode == 0 for proc in procs)
    return ok, "\n".join(f"--- rank {r} (exit {p.returncode})\n{log}" for r, (p, log) in
                         enumerate(zip(procs, logs)))


def run_ranks(worker: pathlib.Path, seed: int, out_dir: pathlib.Path, timeout: float) -> None:
    """launch(), once more if the free port was lost to another process; fails the test with both ranks' logs."""
    ok, log = launch(worker, seed, out_dir, timeout)
    if not ok and "ddress already in use" in log:
        ok, log = launch(worker, seed, out_dir, timeout)
    assert ok, log
