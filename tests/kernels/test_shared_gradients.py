"""Gradients are only read, so they may share memory with one another, as torch.optim reads them: two
parameters handed one gradient tensor, or gradients that are overlapping views of one buffer. fastopt.optim
and the torch twins (the full step, the planned repeated step, a compiled step) update as with separate
copies, and as torch.optim does. A gradient sharing memory with a parameter or a state, which a step
writes, stays refused, naming both. (The kernels' own cases: test_bad_input.py, test_c_api*.py.)"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from optim_cases import EVERY_OPTIMIZER

from fastopt import optim

SHAPE = (4, 6)  # (2-D: Muon's and Adafactor's factored path take it too)
N = SHAPE[0] * SHAPE[1]

CASES = EVERY_OPTIMIZER
IDS = [name for name, _ in CASES]


def shared_grads(buf):
    """Three gradients over one buffer of N + 6 elements: the first and third the same view (one gradient
    handed to two parameters), the second overlapping both (shifted by 6 elements)."""
    return [buf[:N].reshape(SHAPE), buf[6:].reshape(SHAPE), buf[:N].reshape(SHAPE)]


# --------------------------------------------------------------------------------------- fastopt.optim


@pytest.mark.parametrize("name, hyper", CASES, ids=IDS)
def test_optim_reads_gradients_that_share_memory(name, hyper):
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(SHAPE) for _ in range(3)]
    shared = getattr(optim, name)([p.copy() for p in start], **hyper)
    apart = getattr(optim, name)([p.copy() for p in start], **hyper)
    for _ in range(4):
        grads = shared_grads(rng.standard_normal(N + 6))
        before = [g.tobytes() for g in grads]
        shared.step(grads)
        apart.step([g.copy() for g in grads])
        assert [g.tobytes() for g in grads] == before  # (read, never written)
    for p, q in zip(shared.param_groups[0]["params"], apart.param_groups[0]["params"]):
        assert p.tobytes() == q.tobytes()


def test_optim_refuses_a_gradient_sharing_memory_with_a_state():
    rng = np.random.default_rng(1)
    opt = optim.SGD([rng.standard_normal(SHAPE) for _ in range(2)], lr=0.1, momentum=0.9)
    opt.step([rng.standard_normal(SHAPE) for _ in range(2)])  # (makes the momentum buffers)
    before = [p.tobytes() for p in opt.param_groups[0]["params"]]
    with pytest.raises(ValueError, match=r"momentum_buffer.*shares memory with grads\[1\]|"
                                         r"grads\[1\] shares memory with .*momentum_buffer"):
        opt.step([rng.standard_normal(SHAPE), opt.state[0]["momentum_buffer"]])
    assert [p.tobytes() for p in opt.param_groups[0]["params"]] == before


# --------------------------------------------------------------------------------------- the torch twins


def _torch_sides(name, hyper, seed=0):
    """(twin, its params) and, where torch.optim has the optimizer, (torch's, its params); float64."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft

    gen = torch.Generator().manual_seed(seed)
    start = [torch.randn(SHAPE, generator=gen, dtype=torch.float64) for _ in range(3)]
    sides = []
    for make in (getattr(ft, name), getattr(torch.optim, name, getattr(ft, name))):  # (Lion, LAMB: a twin)
        params = [torch.nn.Parameter(p.clone()) for p in start]
        torch_foreach = make.__module__.startswith("torch.") and "foreach" in inspect.signature(make).parameters
        extra = dict(foreach=False) if torch_foreach else {}  # (torch's for-loop implementation)
        sides.append((make(params, **hyper, **extra), params))
    return torch, sides


@pytest.mark.parametrize("name, hyper", CASES, ids=IDS)
def test_twins_read_gradients_that_share_memory_as_torch_does(name, hyper):
    torch, ((twin, ours), (peer, theirs)) = _torch_sides(name, hyper)
    gen = torch.Generator().manual_seed(5)
    for _ in range(5):  # (the second step on: the planned repeated step, where the twin has one)
        buf = torch.randn(N + 6, generator=gen, dtype=torch.float64)
        for p, g in zip(ours, shared_grads(buf)):
            p.grad = g
        # torch.optim reads the same sharing gradients; the twin standing in for it (Lion, LAMB) copies
        peer_grads = shared_grads(buf.clone()) if hasattr(torch.optim, name) else [g.clone() for g in shared_grads(buf)]
        for q, g in zip(theirs, peer_grads):
            q.grad = g
        before = buf.clone()
        twin.step()
        peer.step()
        assert torch.equal(buf, before)
    for i, (p, q) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-10, atol=1e-12, msg=lambda m: f"params[{i}]: {m}")


@pytest.mark.parametrize("name, hyper", [c for c in CASES if c[0] in ("SGD", "Adam", "Adagrad")],
                         ids=["SGD", "Adam", "Adagrad"])
def test_twins_refuse_a_gradient_sharing_memory_with_a_state(name, hyper):
    torch, ((twin, ours), _) = _torch_sides(name, hyper)
    for _ in range(3):  # (planned by now)
        for p in ours:
            p.grad = torch.randn(SHAPE, dtype=torch.float64)
        twin.step()
    state = next(v for k, v in twin.state[ours[0]].items() if k != "step" and torch.is_tensor(v) and v.numel() > 1)
    ours[1].grad = state
    before = [p.detach().clone() for p in ours] + [state.clone()]
    with pytest.raises(ValueError, match="shares memory"):
        twin.step()
    assert all(torch.equal(a, b) for a, b in zip(before, [p.detach() for p in ours] + [state]))


@pytest.mark.parametrize("name, hyper", [c for c in CASES if c[0] in ("SGD", "AdamW", "Lion")],
                         ids=["SGD", "AdamW", "Lion"])
def test_a_compiled_twin_step_reads_gradients_that_share_memory(name, hyper):
    torch = pytest.importorskip("torch")
    from fastopt.torch import _compile

    if not _compile._HAS_CUSTOM_OP:
        pytest.skip("torch.library.custom_op needs torch >= 2.4")
    _, ((compiled, ours), _) = _torch_sides(name, hyper)
    _, ((eager, theirs), _) = _torch_sides(name, hyper)
    torch._dynamo.reset()
    step = torch.compile(compiled.step, backend="aot_eager", fullgraph=True)
    gen = torch.Generator().manual_seed(6)
    for k in range(4):
        buf = torch.randn(N + 6, generator=gen, dtype=torch.float64)
        for p, g in zip(ours, shared_grads(buf)):
            p.grad = g
        for q, g in zip(theirs, shared_grads(buf)):
            q.grad = g.clone()
        (compiled.step if k == 0 else step)()  # (the first step makes the state, eagerly)
        eager.step()
    for p, q in zip(ours, theirs):
        assert torch.equal(p.detach(), q.detach())
