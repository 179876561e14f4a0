"""The optimizers described as rules (fastopt/rules/: NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop) against
torch.optim's own for-loop implementation, in float64: fastopt.torch's twin and fastopt.optim's class over 40
steps with fresh random gradients, random hyperparameters, a list of mixed shapes (SIMD tails and a tensor
large enough to be split between threads), every parameter and state entry compared; then the twin's
state_dict loaded into torch's class and torch's into the twin, training on with the same numbers."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt.optim as fo  # noqa: E402
import fastopt.torch as ft  # noqa: E402

SHAPES = [(7,), (3, 5), (33,), (2, 3, 4), (1,), (70001,)]
STEPS = 40
RTOL, ATOL = 1e-10, 1e-12


def _draw(name, rng, case):
    """torch constructor arguments for one case (case 0 plain, then weight decay, maximize ...)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    wd = u(1e-3, 0.1) if case >= 1 else 0.0
    maximize = case == 2
    if name == "NAdam":
        return dict(lr=u(1e-3, 1e-2), betas=(u(0.8, 0.95), u(0.9, 0.999)), eps=1e-8, weight_decay=wd,
                    momentum_decay=u(1e-3, 1e-2), decoupled_weight_decay=case == 3, maximize=maximize)
    if name == "RAdam":
        # beta2 = 0.9 rectifies from step 6 on, 0.999 not within 40 steps: both sides of the switch
        return dict(lr=u(1e-3, 1e-2), betas=(u(0.8, 0.95), 0.9 if case % 2 else 0.999), eps=1e-8, weight_decay=wd,
                    decoupled_weight_decay=case == 3, maximize=maximize)
    if name == "Adamax":
        return dict(lr=u(1e-3, 1e-2), betas=(u(0.8, 0.95), u(0.9, 0.999)), eps=u(1e-8, 1e-6), weight_decay=wd,
                    maximize=maximize)
    if name == "Adadelta":
        return dict(lr=u(0.1, 1.0), rho=u(0.8, 0.95), eps=u(1e-7, 1e-5), weight_decay=wd, maximize=maximize)
    if name == "ASGD":
        # t0 within the run, so that mu leaves 1 and the average starts moving
        return dict(lr=u(1e-3, 1e-2), lambd=u(1e-5, 1e-3), alpha=u(0.5, 0.9), t0=float(rng.integers(5, 30)),
                    weight_decay=wd, maximize=maximize)
    if name == "Rprop":
        return dict(lr=u(1e-3, 1e-2), etas=(u(0.3, 0.7), u(1.1, 1.5)), step_sizes=(u(1e-6, 1e-4), u(0.01, 1.0)),
                    maximize=maximize)
    raise KeyError(name)


NAMES = ["NAdam", "RAdam", "Adamax", "Adadelta", "ASGD", "Rprop"]
CASES = [(name, case) for name in NAMES for case in range(4)]


@pytest.fixture
def float64_default():
    # torch keeps NAdam's mu_product and ASGD's eta/mu in its default dtype: float64 here, so that the
    # comparison is of the algorithms, not of a float32 scalar state
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _compare_state(name, mine, theirs, where):
    assert sorted(mine) == sorted(theirs), f"{name} {where}: state keys {sorted(mine)} vs torch's {sorted(theirs)}"
    for key, value in theirs.items():
        got = mine[key]
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), value.detach().numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name} {where} state {key!r}")


@pytest.mark.parametrize("name,case", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_twin_and_class_match_torch(name, case, float64_default):
    rng = np.random.default_rng(1000 + 10 * NAMES.index(name) + case)
    kwargs = _draw(name, rng, case)
    start = [rng.standard_normal(s) for s in SHAPES]
    theirs = [torch.tensor(x, requires_grad=True) for x in start]
    twins = [torch.tensor(x, requires_grad=True) for x in start]
    arrays = [x.copy() for x in start]
    reference = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    twin = getattr(ft, name)(twins, **kwargs)
    numpy_kwargs = {k: v for k, v in kwargs.items()}
    mine = getattr(fo, name)(arrays, **numpy_kwargs)
    for t in range(1, STEPS + 1):
        grads = [rng.standard_normal(s) for s in SHAPES]
        if name == "Rprop" and t % 3 == 0:
            grads = [-g for g in grads]  # sign flips: the etaminus branch
        for a, b, g in zip(theirs, twins, grads):
            a.grad = torch.tensor(g)
            b.grad = torch.tensor(g)
        reference.step()
        twin.step()
        mine.step([g.copy() for g in grads])
        if t % 10 == 0 or t == 1:
            for i, (a, b, c) in enumerate(zip(theirs, twins, arrays)):
                np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=RTOL, atol=ATOL,
                                           err_msg=f"{name} twin params[{i}] step {t}")
                np.testing.assert_allclose(c, a.detach().numpy(), rtol=RTOL, atol=ATOL,
                                           err_msg=f"{name} fastopt.optim params[{i}] step {t}")
                _compare_state(name, {k: v.detach().numpy() for k, v in twin.state[b].items()}, reference.state[a],
                               f"twin params[{i}] step {t}")
                _compare_state(name, mine.state[i], reference.state[a], f"fastopt.optim params[{i}] step {t}")
    assert any(not np.array_equal(a.detach().numpy(), x) for a, x in zip(theirs, start))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips_with_torch(name, float64_default):
    rng = np.random.default_rng(7 + NAMES.index(name))
    kwargs = _draw(name, rng, 1)
    start = [rng.standard_normal(s) for s in SHAPES[:4]]
    theirs = [torch.tensor(x, requires_grad=True) for x in start]
    twins = [torch.tensor(x, requires_grad=True) for x in start]
    reference = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    twin = getattr(ft, name)(twins, **kwargs)

    def steps(count):
        for _ in range(count):
            grads = [rng.standard_normal(x.shape) for x in start]
            for a, b, g in zip(theirs, twins, grads):
                a.grad = torch.tensor(g)
                b.grad = torch.tensor(g)
            reference.step()
            twin.step()

    steps(5)
    # torch's state into the twin (after the twin ran off on its own), the twin's into a fresh torch
    # (deep copies, as a checkpoint on disk is: a state_dict holds the optimizer's own tensors)
    twin.load_state_dict(copy.deepcopy(reference.state_dict()))
    steps(5)
    fresh = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    fresh.load_state_dict(copy.deepcopy(twin.state_dict()))
    reference = fresh
    steps(5)
    for a, b in zip(theirs, twins):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=RTOL, atol=ATOL)
        _compare_state(name, {k: v.detach().numpy() for k, v in twin.state[b].items()}, reference.state[a], "after")


def test_float32_twins_stay_close_to_torch():
    # torch's default scalar dtype (float32 mu_product, eta, mu): the twin keeps and rounds them the same way
    for name in NAMES:
        rng = np.random.default_rng(3)
        kwargs = _draw(name, rng, 1)
        start = [rng.standard_normal(s).astype(np.float32) for s in SHAPES[:3]]
        theirs = [torch.tensor(x, requires_grad=True) for x in start]
        twins = [torch.tensor(x, requires_grad=True) for x in start]
        reference = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
        twin = getattr(ft, name)(twins, **kwargs)
        for _ in range(20):
            grads = [rng.standard_normal(x.shape).astype(np.float32) for x in start]
            for a, b, g in zip(theirs, twins, grads):
                a.grad = torch.tensor(g)
                b.grad = torch.tensor(g)
            reference.step()
            twin.step()
        for a, b in zip(theirs, twins):
            assert b.dtype == torch.float32
            np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=2e-5, atol=2e-5, err_msg=name)
        for key in ("mu_product", "eta", "mu"):
            if key in reference.state[theirs[0]]:
                assert twin.state[twins[0]][key].dtype == reference.state[theirs[0]][key].dtype
                assert twin.state[twins[0]][key].item() == reference.state[theirs[0]][key].item()


@pytest.mark.parametrize("name", NAMES)
def test_twin_signature_is_torchs(name):
    import inspect

    ours = inspect.signature(getattr(ft, name))
    theirs = inspect.signature(getattr(torch.optim, name))
    # torch's parameters, then fastopt's state precision keywords (keyword-only, defaults: torch's state)
    assert list(ours.parameters)[:len(theirs.parameters)] == list(theirs.parameters)
    extra = list(ours.parameters.values())[len(theirs.parameters):]
    assert [(p.name, p.kind, p.default) for p in extra] == [
        ("state_dtype", inspect.Parameter.KEYWORD_ONLY, None),
        ("stochastic_rounding", inspect.Parameter.KEYWORD_ONLY, False), ("seed", inspect.Parameter.KEYWORD_ONLY, 0)]
    for key, param in theirs.parameters.items():
        assert ours.parameters[key].kind == param.kind, key
        if param.default is not inspect.Parameter.empty:
            assert ours.parameters[key].default == param.default, key
