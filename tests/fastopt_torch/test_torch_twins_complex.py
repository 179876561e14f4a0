"""Complex parameters, as torch.optim updates them (each of its for-loop implementations works on
torch.view_as_real of the parameter, gradient and state, or on complex arithmetic with real scalars, which
is the same per real component): each twin against torch.optim over 15 steps in complex128 (and complex64
at float32's rounding), state in torch's complex format, state_dicts moved both ways, and mixed real and
complex parameters in one group; a lazily conjugated tensor is refused by name."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402

CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.2)),
    ("RMSprop", dict(lr=1e-2, momentum=0.8, centered=True, weight_decay=1e-3)),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, maximize=True)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]
TOLERANCE = {torch.complex128: dict(rtol=1e-10, atol=1e-12), torch.complex64: dict(rtol=1e-5, atol=1e-6)}


def make_params(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    shapes = [(5, 3), (17,), (2, 2, 4)]
    params = [torch.randn(s, dtype=dtype, generator=g).requires_grad_() for s in shapes]
    params.append(torch.randn(9, dtype=real, generator=g).requires_grad_())  # a real one in the same group
    return params


def run(opt, params, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=g)
        opt.step()


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_complex_parameters_follow_torch(name, kwargs, dtype):
    ours, theirs = make_params(dtype, 1), make_params(dtype, 1)
    opt = getattr(ft, name)(ours, **kwargs)
    ref = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    addresses = [p.data_ptr() for p in ours]
    run(opt, ours, 15, seed=2)
    run(ref, theirs, 15, seed=2)
    assert [p.data_ptr() for p in ours] == addresses
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype])
        for key, value in ref.state[b].items():
            mine = opt.state[a][key]
            assert mine.dtype == value.dtype, (key, mine.dtype, value.dtype)
            torch.testing.assert_close(mine, value, **TOLERANCE[dtype])


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_complex_state_dicts_move_between_twin_and_torch(name, kwargs):
    dtype = torch.complex128
    ours, theirs = make_params(dtype, 3), make_params(dtype, 3)
    ref = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    run(ref, theirs, 4, seed=4)
    for a, b in zip(ours, theirs):
        a.data.copy_(b.data)
    opt = getattr(ft, name)(ours, **kwargs)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))  # torch -> twin (a copy: loading shares tensors)
    run(opt, ours, 5, seed=5)
    run(ref, theirs, 5, seed=5)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype])
    back = getattr(torch.optim, name)(make_params(dtype, 3), foreach=False, **kwargs)
    back.load_state_dict(copy.deepcopy(opt.state_dict()))  # twin -> torch
    for key, value in back.state_dict()["state"][0].items():
        torch.testing.assert_close(value, ref.state_dict()["state"][0][key], **TOLERANCE[dtype])


@pytest.mark.parametrize("name,kwargs", CASES[:1] + CASES[4:5], ids=["SGD", "Adam"])
def test_a_conjugated_view_is_refused_by_name(name, kwargs):
    base = torch.randn(6, dtype=torch.complex128)
    p = base.conj().requires_grad_()  # (a view with the conjugate bit: its memory holds base)
    q = torch.randn(4, dtype=torch.complex128).requires_grad_()
    opt = getattr(ft, name)([q, p], **kwargs)
    q.grad, p.grad = torch.randn(4, dtype=torch.complex128), torch.randn(6, dtype=torch.complex128)
    before = (q.detach().clone(), base.clone())
    with pytest.raises(TypeError, match=r"params\[1\] has its conjugate bit set"):
        opt.step()
    assert torch.equal(q.detach(), before[0]) and torch.equal(base, before[1])
