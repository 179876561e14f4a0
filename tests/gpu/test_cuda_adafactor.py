"""Adafactor on CUDA (csrc/cuda/adafactor_passes.cuh). Its sums keep the CPU loops' order
(fastopt/adafactor_tiles.h), so a GPU step gives the CPU's bits:

- fastopt.adafactor_ on CUDA tensors, ten steps bit for bit against the CPU kernel, float32 and float64,
  hyperparameters drawn as the CPU tests draw them (new ones at step 6), shapes with several column tiles
  and row blocks, a batch of matrices, one column, vectors of one and of several blocks, a scalar and
  empty tensors;
- stream=: the step is queued on the stream given (gradients written there behind a busy kernel);
- the twin fastopt.torch.Adafactor on CUDA: the bits of the twin on the CPU, and torch.optim.Adafactor's
  numbers on CUDA to float64 rounding, twenty steps;
- refusals: arrays on two devices, half parameters, nothing written.

(The host simulation, fastopt_cuda_simulate, runs the same passes on the CPU against the CPU kernel bit
for bit, without a GPU.)
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from adafactor_cases import draw_hyper, make_state
from cuda_support import CUDA_MARKS, gpu_sleep, to_cuda, torch_with_cuda

pytestmark = CUDA_MARKS

SHAPES = [(100, 2100), (3, 40, 70), (70000, 1), (5, 4099), (37,), (150001,), (), (0,), (0, 5), (6, 0),
          (2, 0, 3)]


@pytest.fixture(scope="module")
def torch():
    return torch_with_cuda()


def on_cuda(torch, arrays):
    return [None if a is None else to_cuda(torch, a) for a in arrays]


def assert_same(torch, got, want, what):
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None
            continue
        np.testing.assert_array_equal(g.cpu().numpy(), w, err_msg=f"{what}[{i}]")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_ten_steps_give_the_cpu_kernels_bits(torch, dtype, seed):
    rng = np.random.default_rng(seed)
    hyper = draw_hyper(rng)
    cpu_params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    gpu_params = on_cuda(torch, cpu_params)
    cpu_state = make_state(cpu_params)[1]
    gpu_state = [on_cuda(torch, arrays) for arrays in cpu_state]
    for step in range(1, 11):
        if step == 6:
            hyper = draw_hyper(rng)
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        fastopt.adafactor_(cpu_params, grads, *cpu_state, step=step, **hyper)
        fastopt.adafactor_(gpu_params, on_cuda(torch, grads), *gpu_state, step=step, **hyper)
    torch.cuda.synchronize()
    assert_same(torch, gpu_params, cpu_params, "params")
    for name, got, want in zip(("row_vars", "col_vars", "variances"), gpu_state, cpu_state):
        assert_same(torch, got, want, name)


def test_the_step_is_queued_on_the_stream_given(torch):
    rng = np.random.default_rng(5)
    shapes = [(300, 500), (1000,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    cpu_params = [a.copy() for a in start]
    cpu_state = make_state(cpu_params)[1]
    fastopt.adafactor_(cpu_params, grads, *cpu_state, step=1)

    side = torch.cuda.Stream()
    params = on_cuda(torch, start)
    state = [on_cuda(torch, arrays) for arrays in make_state(start)[1]]
    gpu_grads = [torch.zeros(s, device="cuda") for s in shapes]
    host_grads = [torch.from_numpy(g).pin_memory() for g in grads]
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        gpu_sleep(torch)  # (the gradients land on `side` well after the host has queued the step)
        for g, h in zip(gpu_grads, host_grads):
            g.copy_(h, non_blocking=True)
    fastopt.adafactor_(params, gpu_grads, *state, step=1, stream=side.cuda_stream)
    side.synchronize()
    assert_same(torch, params, cpu_params, "params")


def twin_pair(torch, dtype, seed):
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(s) for s in [(7,), (), (1, 33), (33, 1), (5, 7), (3, 4, 17), (9, 2100)]]
    return rng, [[torch.tensor(x, dtype=dtype, device=device, requires_grad=True) for x in start]
                 for device in ("cpu", "cuda", "cuda")]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_twin_on_cuda_gives_its_cpu_bits_and_torchs_numbers(torch, seed):
    import fastopt.torch as ft

    rng, (on_cpu, mine, theirs) = twin_pair(torch, torch.float64, seed)
    kwargs = dict(lr=float(rng.uniform(0.2, 0.5)), beta2_decay=-0.7, eps=(None, 1e-3), d=1.0,
                  weight_decay=0.05, maximize=bool(seed))
    twin_cpu, twin_cuda = ft.Adafactor(on_cpu, **kwargs), ft.Adafactor(mine, **kwargs)
    reference = torch.optim.Adafactor(theirs, foreach=False, **kwargs)
    for _ in range(20):
        grads = [rng.standard_normal(tuple(p.shape)) for p in on_cpu]
        for tensors in (on_cpu, mine, theirs):
            for p, g in zip(tensors, grads):
                p.grad = torch.tensor(g, dtype=p.dtype, device=p.device)
        twin_cpu.step()
        twin_cuda.step()
        reference.step()
    for i, (a, b, c) in enumerate(zip(on_cpu, mine, theirs)):
        np.testing.assert_array_equal(b.detach().cpu().numpy(), a.detach().numpy(), err_msg=f"params[{i}]")
        np.testing.assert_allclose(b.detach().cpu().numpy(), c.detach().cpu().numpy(), rtol=1e-9, atol=1e-13,
                                   err_msg=f"params[{i}] against torch.optim.Adafactor")
        for key, value in twin_cpu.state[a].items():
            if key != "step":
                np.testing.assert_array_equal(twin_cuda.state[b][key].cpu().numpy(), value.numpy(),
                                              err_msg=f"state[{i}][{key!r}]")


def test_arrays_on_two_devices_and_half_params_are_refused_with_nothing_written(torch):
    p = torch.ones(3, 4, device="cuda")
    g = torch.ones_like(p)
    rows, cols = torch.zeros(3, 1, device="cuda"), torch.zeros(1, 4)  # (col_vars on the CPU)
    with pytest.raises((TypeError, ValueError), match="col_vars"):
        fastopt.adafactor_([p], [g], [rows], [cols], [None], step=1)
    half = torch.ones(3, 4, device="cuda", dtype=torch.float16)
    half_state = [torch.zeros(3, 1, device="cuda", dtype=torch.float16)], \
        [torch.zeros(1, 4, device="cuda", dtype=torch.float16)], [None]
    with pytest.raises(TypeError, match="params"):
        fastopt.adafactor_([half], [torch.ones_like(half)], *half_state, step=1)
    torch.cuda.synchronize()
    assert bool((p == 1).all()) and bool((rows == 0).all()) and bool((half == 1).all())
