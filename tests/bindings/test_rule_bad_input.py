"""Bad input to the optimizers described as rules (fastopt.<name>_ built from csrc/include/fastopt/*.h's
descriptions): a clear exception naming the argument, and nothing written. Driven by the functions'
signatures, so that every registered rule is covered."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import fastopt

RULE_FUNCTIONS = ["nadam_", "radam_", "adamax_", "adadelta_", "asgd_", "rprop_", "lion_"]


def _call_parts(name, n=11, dtype=np.float64, seed=0):
    """(params, grads, states) and the keyword arguments of a valid call."""
    fn = getattr(fastopt, name)
    rng = np.random.default_rng(seed)
    operands = [p for p in inspect.signature(fn).parameters.values()
                if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    arrays = [rng.standard_normal(n).astype(dtype) for _ in operands]
    arrays[3 if len(arrays) > 3 else 2] = np.abs(arrays[3 if len(arrays) > 3 else 2]) + 0.1  # (non-negative state)
    kwargs = {"step": 3} if "step" in inspect.signature(fn).parameters else {}
    return fn, [p.name for p in operands], arrays, kwargs


def _snapshot(arrays):
    return [a.copy() for a in arrays]


def _unchanged(before, arrays):
    return all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, arrays))


@pytest.mark.parametrize("name", RULE_FUNCTIONS)
def test_a_valid_call_updates_the_params(name):
    fn, _, arrays, kwargs = _call_parts(name)
    before = _snapshot(arrays)
    assert fn(*arrays, **kwargs) is False
    assert not np.array_equal(before[0], arrays[0])


@pytest.mark.parametrize("name", RULE_FUNCTIONS)
def test_every_hyperparameter_out_of_range_is_refused_by_name(name):
    fn, operands, arrays, kwargs = _call_parts(name)
    signature = inspect.signature(fn)
    for param in signature.parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY or param.name in ("grad_scale", "found_inf", "stream"):
            continue
        if isinstance(param.default, bool) or param.name in ("skip_nonfinite",):
            bad_values = [2.5]  # not a bool
        elif param.name == "step":
            bad_values = [0, -1]
        elif param.name == "t0":
            bad_values = [float("nan"), float("inf")]
        else:
            bad_values = [float("nan"), -1.0]
        for bad in bad_values:
            before = _snapshot(arrays)
            with pytest.raises((ValueError, TypeError)) as info:
                fn(*arrays, **{**kwargs, param.name: bad})
            assert param.name in str(info.value), (name, param.name, bad, str(info.value))
            assert _unchanged(before, arrays), (name, param.name)


@pytest.mark.parametrize("name", RULE_FUNCTIONS)
def test_bad_arrays_are_refused_by_name(name):
    fn, operands, arrays, kwargs = _call_parts(name)
    for j, operand in enumerate(operands):
        for bad, kind in [(arrays[j][:5].copy(), ValueError),          # wrong shape
                          (arrays[j].astype(np.float32), TypeError),   # wrong dtype
                          (None, (TypeError, ValueError))]:            # missing
            before = _snapshot(arrays)
            call = list(arrays)
            call[j] = bad
            with pytest.raises(kind) as info:
                fn(*call, **kwargs)
            assert operand in str(info.value), (name, operand, str(info.value))
            assert _unchanged(before, arrays)
    # two operands sharing memory
    before = _snapshot(arrays)
    with pytest.raises(ValueError, match="memory"):
        fn(arrays[0], arrays[1], *([arrays[0]] + arrays[3:]), **kwargs)
    assert _unchanged(before, arrays)


def test_rprop_etas_must_bracket_one():
    fn, _, arrays, kwargs = _call_parts("rprop_")
    with pytest.raises(ValueError, match="etaminus"):
        fn(*arrays, etaminus=1.5)
    with pytest.raises(ValueError, match="etaplus"):
        fn(*arrays, etaplus=0.9)


def test_step_must_be_an_integer():
    fn, _, arrays, kwargs = _call_parts("nadam_")
    with pytest.raises(TypeError, match="step"):
        fn(*arrays, step=1.5)


def test_float32_range_is_checked_against_the_params_dtype():
    fn, _, arrays, kwargs = _call_parts("adamax_", dtype=np.float32)
    before = _snapshot(arrays)
    with pytest.raises(ValueError, match="eps"):
        fn(*arrays, eps=1e-50, **kwargs)
    assert _unchanged(before, arrays)
    fn64, _, arrays64, _ = _call_parts("adamax_", dtype=np.float64)
    fn64(*arrays64, eps=1e-50, **kwargs)  # fine in float64


@pytest.mark.parametrize("name", RULE_FUNCTIONS)
def test_skip_nonfinite_writes_nothing(name):
    fn, _, arrays, kwargs = _call_parts(name)
    arrays[1][3] = np.inf
    before = _snapshot(arrays)
    assert fn(*arrays, skip_nonfinite=True, **kwargs) is True
    assert _unchanged(before, arrays)


def test_optional_scalars_default_to_the_step_schedule():
    # nadam_'s mu_product and asgd_'s eta/mu: None computes them from step; passing the same values
    # explicitly gives the same bits
    beta1, momentum_decay, step = 0.9, 4e-3, 4
    mu_product = 1.0
    for i in range(1, step + 1):
        mu_product *= beta1 * (1.0 - 0.5 * 0.96 ** (i * momentum_decay))
    fn, _, a, kwargs = _call_parts("nadam_", seed=5)
    _, _, b, _ = _call_parts("nadam_", seed=5)
    fn(*a, step=step)
    fn(*b, step=step, mu_product=mu_product)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    lr, lambd, alpha, t0 = 0.01, 1e-4, 0.75, 1.0
    fn, _, a, _ = _call_parts("asgd_", seed=6)
    _, _, b, _ = _call_parts("asgd_", seed=6)
    fn(*a, lr=lr, lambd=lambd, alpha=alpha, t0=t0, step=step)
    fn(*b, lr=lr, lambd=lambd, alpha=alpha, t0=t0, step=step, eta=lr / (1 + lambd * lr * (step - 1)) ** alpha,
       mu=1 / max(1, step - 1 - t0))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_nadam_mu_product_from_step_in_any_call_order():
    # nadam_ remembers its last product per thread; any order of steps and hyperparameters must give
    # the product from scratch
    def product(beta1, momentum_decay, step):
        value = 1.0
        for i in range(1, step + 1):
            value *= beta1 * (1.0 - 0.5 * 0.96 ** (i * momentum_decay))
        return value

    for beta1, md, step in [(0.9, 4e-3, 1), (0.9, 4e-3, 2), (0.9, 4e-3, 7), (0.8, 4e-3, 8), (0.8, 4e-3, 3),
                            (0.8, 1e-2, 3), (0.8, 1e-2, 50)]:
        fn, _, a, _ = _call_parts("nadam_", seed=step)
        _, _, b, _ = _call_parts("nadam_", seed=step)
        fn(*a, beta1=beta1, momentum_decay=md, step=step)
        fn(*b, beta1=beta1, momentum_decay=md, step=step, mu_product=product(beta1, md, step))
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), (beta1, md, step)


def test_nadam_step_far_ahead_without_mu_product_is_refused_not_hung():
    # (mu_product from the step multiplies one factor per step: a step 10**12 would take hours)
    fn, _, a, _ = _call_parts("nadam_", seed=9)
    before = _snapshot(a)
    with pytest.raises(ValueError, match="mu_product"):
        fn(*a, beta1=0.999999, step=10**12)
    assert _unchanged(before, a)
    fn(*a, beta1=0.999999, step=10**12, mu_product=0.5)  # given: fine
    assert not _unchanged(before, a)
