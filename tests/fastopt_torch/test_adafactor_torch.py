"""fastopt.torch.Adafactor against torch.optim.Adafactor (its single-tensor loop, foreach=False): the same
parameters and state to float64 rounding over 40 steps, and state_dicts that move both ways."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastopt.torch")

# A vector, a 0-d parameter, 1xN, Nx1, a matrix, a batch of matrices, a wide one (two column tiles).
SHAPES = [(7,), (), (1, 33), (33, 1), (5, 7), (3, 4, 17), (9, 2100)]


def draw(rng):
    return dict(lr=float(rng.uniform(0.2, 0.5)), beta2_decay=float(rng.uniform(-1.0, -0.5)),
                eps=(None if rng.random() < 0.5 else float(10 ** rng.uniform(-8, -7)), float(10 ** rng.uniform(-4, -2))),
                d=float(rng.choice([1.0, rng.uniform(1.0, 1.2)])),
                weight_decay=float(rng.choice([0.0, rng.uniform(0.0, 0.1)])), maximize=bool(rng.integers(2)))


def set_grads(pairs, rng):
    grads = [rng.standard_normal(t.shape) for t in pairs[0]]
    for tensors in pairs:
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g, dtype=t.dtype)


def compare(theirs, mine, opt_theirs, opt_mine, where, rtol=1e-10, atol=1e-14):
    for i, (a, b) in enumerate(zip(theirs, mine)):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"{where} params[{i}]")
        s_theirs, s_mine = opt_theirs.state[a], opt_mine.state[b]
        assert sorted(s_mine) == sorted(s_theirs), f"{where} state keys of params[{i}]"
        for key, value in s_theirs.items():
            assert s_mine[key].shape == value.shape and s_mine[key].dtype == value.dtype
            np.testing.assert_allclose(s_mine[key].numpy(), value.numpy(), rtol=rtol, atol=atol,
                                       err_msg=f"{where} state[{i}][{key!r}]")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_torch_in_float64_over_40_steps(seed):
    rng = np.random.default_rng(seed)
    kwargs = draw(rng)
    start = [rng.standard_normal(s) for s in SHAPES]
    theirs = [torch.tensor(x, requires_grad=True) for x in start]
    mine = [torch.tensor(x, requires_grad=True) for x in start]
    reference = torch.optim.Adafactor(theirs, foreach=False, **kwargs)
    twin = ft.Adafactor(mine, **kwargs)
    for t in range(1, 41):
        set_grads([theirs, mine], rng)
        reference.step()
        twin.step()
        if t in (1, 10, 40):
            compare(theirs, mine, reference, twin, f"step {t}")


def test_matches_torch_in_float32():
    rng = np.random.default_rng(5)
    kwargs = draw(rng)
    start = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    theirs = [torch.tensor(x, requires_grad=True) for x in start]
    mine = [torch.tensor(x, requires_grad=True) for x in start]
    reference = torch.optim.Adafactor(theirs, foreach=False, **kwargs)
    twin = ft.Adafactor(mine, **kwargs)
    for _ in range(20):
        set_grads([theirs, mine], rng)
        reference.step()
        twin.step()
    compare(theirs, mine, reference, twin, "float32", rtol=2e-4, atol=2e-5)


def test_state_dict_round_trips_with_torch():
    rng = np.random.default_rng(7)
    kwargs = draw(rng)
    start = [rng.standard_normal(s) for s in SHAPES]
    theirs = [torch.tensor(x, requires_grad=True) for x in start]
    mine = [torch.tensor(x, requires_grad=True) for x in start]
    reference = torch.optim.Adafactor(theirs, foreach=False, **kwargs)
    twin = ft.Adafactor(mine, **kwargs)

    def steps(count):
        for _ in range(count):
            set_grads([theirs, mine], rng)
            reference.step()
            twin.step()

    steps(4)
    # torch's state into the twin (after the twin ran off on its own), then the twin's into a fresh torch
    for _ in range(2):
        set_grads([mine], rng)
        twin.step()
    for a, b in zip(theirs, mine):
        b.data.copy_(a.data)
    twin.load_state_dict(copy.deepcopy(reference.state_dict()))
    steps(4)
    compare(theirs, mine, reference, twin, "torch -> twin")
    fresh = torch.optim.Adafactor(theirs, foreach=False, **kwargs)
    fresh.load_state_dict(copy.deepcopy(twin.state_dict()))
    reference = fresh
    steps(4)
    compare(theirs, mine, reference, twin, "twin -> torch")
    assert float(twin.state[mine[0]]["step"]) == 12.0


def test_constructor_and_state_checks():
    w = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="beta2_decay"):
        ft.Adafactor([w], beta2_decay=0.5)
    with pytest.raises(ValueError, match="eps1"):
        ft.Adafactor([w], eps=(-1.0, 1e-3))
    with pytest.raises(TypeError, match="eps"):
        ft.Adafactor([w], eps=1e-3)
    with pytest.raises(ValueError, match="d must be >= 1"):
        ft.Adafactor([w], d=0.5)
    opt = ft.Adafactor([w])
    w.grad = torch.ones_like(w)
    opt.step()
    state = opt.state_dict()
    bad = copy.deepcopy(state)
    bad["state"][0]["row_var"] = torch.zeros(4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="row_var"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(state)
    bad["state"][0]["variance"] = bad["state"][0].pop("col_var")
    with pytest.raises(ValueError, match="col_var"):
        opt.load_state_dict(bad)
    before = w.detach().clone()
    opt.state[w]["col_var"] = torch.zeros(1, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"state\[0\]\['col_var'\]"):
        opt.step()
    assert torch.equal(w, before)
