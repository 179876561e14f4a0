"""How many kernel launches an optimizer call takes on the GPU: one for GPT-2 small's 148 tensors where
CUDA 12.1's larger kernel arguments are available (fastopt.cuda.kernel_arg_bytes() == 32764: a CUDA 12.1+
build for sm_70 or newer and a 12.1+ driver), three in the 4 KB of older setups. The launches are counted
with torch's profiler (marked `cuda`); the planning itself is checked on the host by
tests/gpu/cuda_host/simulate.cu.
"""

from __future__ import annotations

import math
import re

import pytest

import fastopt
import fastopt.cuda
from fastopt.bench.workloads import gpt2_small_shapes


def test_no_device_no_argument_space():
    if fastopt.cuda.device_count() > 0:
        pytest.skip("this machine has a CUDA device")
    assert fastopt.cuda.kernel_arg_bytes(0) == 0


def test_a_device_that_does_not_exist_has_none():
    assert fastopt.cuda.kernel_arg_bytes(-1) == 0
    assert fastopt.cuda.kernel_arg_bytes(fastopt.cuda.device_count()) == 0


def expected_bytes() -> int:
    cuda = fastopt.build_info()["cuda"]
    numbers = [int(m.group(1)) for a in cuda["architectures"] for m in [re.fullmatch(r"(?:sm|compute)_([0-9]+)", a)]
               if m]
    large = (cuda["runtime_version"] >= 12010 and cuda["driver_version"] >= 12010 and numbers
             and min(numbers) >= 70 and len(numbers) == len(cuda["architectures"]))
    return 32764 if large else 4096


@pytest.mark.cuda
@pytest.mark.skipif(not fastopt.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of fastopt")
def test_argument_space_on_the_gpu():
    assert fastopt.cuda.kernel_arg_bytes(0) == expected_bytes()


@pytest.mark.cuda
@pytest.mark.skipif(not fastopt.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of fastopt")
@pytest.mark.parametrize("count", [148, 60, 700], ids=["gpt2", "short", "long"])
def test_update_launches_of_a_list(count):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA support here")
    from torch.profiler import ProfilerActivity, profile

    shapes = [shape for _, shape in gpt2_small_shapes()]
    shapes = (shapes * (count // len(shapes) + 1))[:count]
    shapes = [(min(s[0], 64),) + tuple(s[1:2]) for s in shapes]  # small tensors: the count is what matters
    params = [torch.randn(s, device="cuda") for s in shapes]
    grads = [torch.randn(s, device="cuda") for s in shapes]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    fastopt.adamw_(params, grads, m, v, lr=1e-3, step=1)  # warm-up: module load
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fastopt.adamw_(params, grads, m, v, lr=1e-3, step=2)
        torch.cuda.synchronize()
    launches = sum(e.count for e in prof.key_averages() if "update_kernel" in e.key)
    per_launch = 67 if fastopt.cuda.kernel_arg_bytes(0) == 4096 or count <= 67 else 608
    assert launches == math.ceil(count / per_launch), [e.key for e in prof.key_averages()]
