"""The NumPy reference (the witness the kernels are tested against) checked against torch.optim's
for-loop implementation (foreach=False): 60 steps in float64, random gradients every step, several
hyperparameter combinations per optimizer. Parameters and every optimizer state must agree to
rounding."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from fastopt import reference

torch = pytest.importorskip("torch")

STEPS = 60
SIZES = [1, 7, 1000]
TOL = dict(rtol=1e-10, atol=1e-12)


# Each optimizer: torch class, reference function, the reference's state arguments in positional
# order paired with torch's state key, and whether the reference takes ``step``.
OPTIMIZERS = {
    "sgd": (lambda: torch.optim.SGD, reference.sgd, [("momentum_buffer", "momentum_buffer")], True),
    "adagrad": (lambda: torch.optim.Adagrad, reference.adagrad, [("state_sum", "sum")], True),
    "rmsprop": (lambda: torch.optim.RMSprop, reference.rmsprop,
                [("square_avg", "square_avg"), ("momentum_buffer", "momentum_buffer"),
                 ("grad_avg", "grad_avg")], False),
    "adam": (lambda: torch.optim.Adam, reference.adam,
             [("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq"),
              ("max_exp_avg_sq", "max_exp_avg_sq")], True),
    "adamw": (lambda: torch.optim.AdamW, reference.adamw,
              [("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq"),
               ("max_exp_avg_sq", "max_exp_avg_sq")], True),
}

CASES = [
    # SGD
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, weight_decay=1e-2)),
    ("sgd", dict(lr=0.03, momentum=0.9)),
    ("sgd", dict(lr=0.03, momentum=0.9, dampening=0.3, weight_decay=5e-3)),
    ("sgd", dict(lr=0.02, momentum=0.8, nesterov=True)),
    ("sgd", dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=1e-3, maximize=True)),
    ("sgd", dict(lr=0.04, momentum=0.7, dampening=0.1, maximize=True)),
    ("sgd", dict(lr=0.04, maximize=True, weight_decay=1e-2)),
    # Adagrad
    ("adagrad", dict(lr=0.05)),
    ("adagrad", dict(lr=0.05, lr_decay=0.05)),
    ("adagrad", dict(lr=0.02, initial_accumulator_value=0.1, eps=1e-6)),
    ("adagrad", dict(lr=0.03, lr_decay=0.01, weight_decay=1e-2, initial_accumulator_value=0.5)),
    ("adagrad", dict(lr=0.03, weight_decay=5e-3, maximize=True)),
    # RMSprop
    ("rmsprop", dict(lr=1e-3)),
    ("rmsprop", dict(lr=5e-3, alpha=0.9, eps=1e-6, weight_decay=1e-2)),
    ("rmsprop", dict(lr=1e-3, momentum=0.9)),
    ("rmsprop", dict(lr=1e-3, centered=True)),
    ("rmsprop", dict(lr=2e-3, alpha=0.95, centered=True, momentum=0.8, weight_decay=1e-3)),
    ("rmsprop", dict(lr=1e-3, centered=True, momentum=0.5, maximize=True)),
    # Adam
    ("adam", dict(lr=1e-3)),
    ("adam", dict(lr=5e-3, beta1=0.8, beta2=0.99, eps=1e-6)),
    ("adam", dict(lr=1e-3, weight_decay=1e-2)),
    ("adam", dict(lr=2e-3, amsgrad=True)),
    ("adam", dict(lr=2e-3, beta1=0.85, beta2=0.95, amsgrad=True, weight_decay=5e-2, maximize=True)),
    ("adam", dict(lr=1e-3, maximize=True)),
    # AdamW
    ("adamw", dict(lr=1e-3)),
    ("adamw", dict(lr=1e-3, weight_decay=0.0)),
    ("adamw", dict(lr=5e-3, beta1=0.8, beta2=0.99, weight_decay=0.1)),
    ("adamw", dict(lr=2e-3, amsgrad=True)),
    ("adamw", dict(lr=2e-3, beta1=0.85, beta2=0.95, amsgrad=True, weight_decay=5e-2, maximize=True)),
]

CASE_IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in hyper.items()) for name, hyper in CASES]


def torch_kwargs(name, hyper):
    """The reference's hyperparameters as torch's constructor takes them."""
    kwargs = dict(hyper)
    if name in ("adam", "adamw"):
        kwargs["betas"] = (kwargs.pop("beta1", 0.9), kwargs.pop("beta2", 0.999))
    return kwargs


def reference_kwargs(name, hyper):
    """The hyperparameters the reference takes (Adagrad's initial_accumulator_value is torch-only:
    the reference's state_sum simply starts at that value)."""
    return {k: v for k, v in hyper.items() if k != "initial_accumulator_value"}


def initial_states(name, hyper, n):
    """The reference's state arrays before the first step (None where a state is unused)."""
    zeros = np.zeros(n)
    if name == "sgd":
        return [None]  # torch creates the momentum buffer (a copy of the gradient) on step 1
    if name == "adagrad":
        return [np.full(n, float(hyper.get("initial_accumulator_value", 0.0)))]
    if name == "rmsprop":
        return [zeros.copy(),
                zeros.copy() if hyper.get("momentum", 0.0) > 0 else None,
                zeros.copy() if hyper.get("centered", False) else None]
    return [zeros.copy(), zeros.copy(), zeros.copy() if hyper.get("amsgrad", False) else None]


@pytest.mark.parametrize("name,hyper", CASES, ids=CASE_IDS)
def test_reference_matches_torch(name, hyper):
    make_torch, ref_fn, state_keys, takes_step = OPTIMIZERS[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}{sorted(hyper.items())}".encode()))

    params = [rng.standard_normal(n) for n in SIZES]
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = make_torch()(tparams, foreach=False, **torch_kwargs(name, hyper))
    kwargs = reference_kwargs(name, hyper)
    states = [initial_states(name, hyper, n) for n in SIZES]
    initial = [p.copy() for p in params]

    for t in range(1, STEPS + 1):
        grads = [rng.standard_normal(n) for n in SIZES]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        opt.step()

        step = {"step": t} if takes_step else {}
        for i in range(len(SIZES)):
            grad_before = grads[i].copy()
            param_before = params[i].copy()
            out = ref_fn(params[i], grads[i], *states[i], **kwargs, **step)
            # The reference is pure: inputs stay untouched.
            np.testing.assert_array_equal(grads[i], grad_before)
            np.testing.assert_array_equal(params[i], param_before)
            params[i], states[i] = out[0], list(out[1:])

    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert p.dtype == np.float64
        np.testing.assert_allclose(p, tp.detach().numpy(), err_msg=f"param[{i}]", **TOL)
        tstate = opt.state[tp]
        for (ref_key, torch_key), ours in zip(state_keys, states[i]):
            if ours is None:
                continue
            np.testing.assert_allclose(ours, tstate[torch_key].numpy(), err_msg=f"{ref_key}[{i}]", **TOL)
        # Every state the reference carries is one torch carries, and vice versa.
        carried = {tk for (_, tk), ours in zip(state_keys, states[i]) if ours is not None}
        torch_carried = set(tstate) - {"step"}
        if name == "rmsprop":
            # torch always allocates RMSprop's optional buffers; compare only those in use.
            torch_carried &= carried
        assert carried == torch_carried
        assert np.any(p != initial[i])  # the run really moved the parameters


def test_momentum_zero_returns_buffer_unchanged():
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(5), rng.standard_normal(5)
    buf = rng.standard_normal(5)
    new_p, new_buf = reference.sgd(p, g, buf, lr=0.1, step=3)
    assert new_buf is buf
    np.testing.assert_allclose(new_p, p - 0.1 * g, rtol=1e-15)
    assert reference.sgd(p, g, lr=0.1)[1] is None


@pytest.mark.parametrize("momentum,dampening", [(0.0, 0.0), (0.9, 0.1), (0.0, 0.5)])
def test_nesterov_requires_momentum_and_zero_dampening(momentum, dampening):
    rng = np.random.default_rng(1)
    p, g = rng.standard_normal(4), rng.standard_normal(4)
    with pytest.raises(ValueError):
        reference.sgd(p, g, None, lr=0.1, momentum=momentum, dampening=dampening, nesterov=True)
    # torch refuses the same combinations.
    with pytest.raises(ValueError):
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(4))], lr=0.1, momentum=momentum,
                        dampening=dampening, nesterov=True)


def test_reference_sgd_momentum_without_step_continues_the_buffer():
    # The reference, like torch, starts the buffer on the step where there is none, and accumulates
    # into a given one: leaving step out never restarts it.
    p, g = np.ones(3), np.full(3, 0.5)
    p1, buf = reference.sgd(p, g, None, lr=0.1, momentum=0.9)
    p2, buf2 = reference.sgd(p1, g, buf, lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(buf, g)
    np.testing.assert_allclose(buf2, 0.9 * g + g)
    np.testing.assert_allclose(p2, p1 - 0.1 * buf2)
