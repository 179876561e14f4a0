"""Property tests (hypothesis): any valid hyperparameters, any step number and any mid-training
state give the reference's numbers; lr = 0 leaves parameters untouched."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_cases import CASES_BY_NAME

unit = st.floats(0.0, 0.999)
small = st.floats(0.0, 0.5)
lr = st.floats(0.0, 1.0)
eps = st.sampled_from([1e-30, 1e-12, 1e-8, 1e-3])  # eps > 0 is required
flag = st.booleans()

HYPER = {
    "sgd": st.fixed_dictionaries(dict(lr=lr, momentum=unit, dampening=small, weight_decay=small,
                                      maximize=flag)),
    "adagrad": st.fixed_dictionaries(dict(lr=lr, lr_decay=small, weight_decay=small, eps=eps, maximize=flag)),
    "rmsprop": st.fixed_dictionaries(dict(lr=lr, alpha=unit, eps=eps, weight_decay=small, momentum=unit,
                                          centered=flag, maximize=flag)),
    "adam": st.fixed_dictionaries(dict(lr=lr, beta1=unit, beta2=unit, eps=eps, weight_decay=small,
                                       amsgrad=flag, maximize=flag)),
}
HYPER["adamw"] = HYPER["adam"]
# (the optimizers described as rules are covered by test_kernels_vs_reference.py and the torch comparisons;
# property strategies for them are still to write)


def start_state(case, state, rng, n, hyper):
    """A plausible mid-training state: second moments positive, and for centered RMSprop the mean
    gradient small enough that square_avg - grad_avg^2 stays positive."""
    if state in ("exp_avg_sqs", "max_exp_avg_sqs", "state_sums", "square_avgs"):
        return rng.uniform(0.5, 2.0, n)
    if state == "grad_avgs":
        return rng.uniform(-0.5, 0.5, n)
    return rng.standard_normal(n)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(HYPER)), data=st.data(), n=st.integers(0, 40),
       step=st.integers(1, 10_000), seed=st.integers(0, 2**31 - 1))
def test_any_hyperparameters_match_reference(name, data, n, step, seed):
    case = CASES_BY_NAME[name]
    hyper = data.draw(HYPER[name])
    if name == "sgd":
        hyper["nesterov"] = data.draw(flag) and hyper["momentum"] > 0
        if hyper["nesterov"]:
            hyper["dampening"] = 0.0
    if hyper.get("centered"):
        # sqrt(square_avg - grad_avg^2) cancels catastrophically when alpha -> 0 (both terms -> g^2):
        # any two correct implementations then differ in the leading digits.
        hyper["alpha"] = max(hyper["alpha"], 0.1)
    rng = np.random.default_rng(seed)
    used = case.used_states(hyper)
    param = rng.standard_normal(n)
    grad = rng.standard_normal(n)
    states = {s: start_state(case, s, rng, n, hyper) for s in used}
    step_kw = {"step": step} if case.takes_step else {}

    with np.errstate(all="ignore"):  # tiny eps may overflow, in both implementations alike
        expected = case.reference(param, grad, *[states.get(s) for s in case.states], **hyper, **step_kw)
    p = param.copy()
    live = {s: a.copy() for s, a in states.items()}
    case.kernel(p, grad, *[live.get(s) for s in case.states], **hyper, **step_kw)

    # 1e-10: a few ulps, amplified where centered RMSprop takes sqrt(square_avg - grad_avg^2).
    np.testing.assert_allclose(p, expected[0], rtol=1e-10, atol=1e-12)
    for s, new in zip(case.states, expected[1:]):
        if s in used:
            np.testing.assert_allclose(live[s], new, rtol=1e-10, atol=1e-12, err_msg=s)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(HYPER)), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_zero_lr_leaves_parameters_unchanged(name, data, seed):
    case = CASES_BY_NAME[name]
    hyper = data.draw(HYPER[name])
    hyper["lr"] = 0.0
    if name == "sgd":
        hyper["nesterov"] = False
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(9).astype(np.float32)
    before = param.copy()
    states = {s: start_state(case, s, rng, 9, hyper).astype(np.float32) for s in case.used_states(hyper)}
    step_kw = {"step": 3} if case.takes_step else {}
    case.kernel(param, rng.standard_normal(9).astype(np.float32), *[states.get(s) for s in case.states],
                **hyper, **step_kw)
    assert param.tobytes() == before.tobytes()


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(sorted(HYPER)), data=st.data(),
       shapes=st.lists(st.lists(st.integers(0, 6), max_size=3).map(tuple), min_size=0, max_size=3),
       dtype=st.sampled_from([np.float32, np.float64]), step=st.integers(1, 1000),
       grad_scale=st.sampled_from([1.0, 2.0, 0.25, 65536.0, 3.7]), seed=st.integers(0, 2**31 - 1))
def test_random_shapes_dtypes_and_grad_scale_match_reference(name, data, shapes, dtype, step, grad_scale, seed):
    """A list of arrays of random shapes (0-d and empty included) in float32 or float64, with a loss
    scale: each array updates as the reference does on grad / grad_scale."""
    case = CASES_BY_NAME[name]
    hyper = data.draw(HYPER[name])
    if name == "sgd":
        hyper["nesterov"] = False
    if hyper.get("centered"):
        hyper["alpha"] = max(hyper["alpha"], 0.1)
    rng = np.random.default_rng(seed)
    used = case.used_states(hyper)
    params = [np.asarray(rng.standard_normal(s), dtype) for s in shapes]  # (np.asarray: 0-d stays an array)
    grads = [np.asarray(rng.standard_normal(s) * grad_scale, dtype) for s in shapes]
    states = {s: [np.asarray(start_state(case, s, rng, shape, hyper), dtype) for shape in shapes] for s in used}
    step_kw = {"step": step} if case.takes_step else {}
    expected = []
    with np.errstate(all="ignore"):
        for k in range(len(shapes)):
            unscaled = (grads[k] / dtype(grad_scale)).astype(np.float64)  # the division in the array's dtype
            expected.append(case.reference(params[k].astype(np.float64), unscaled,
                                           *[states[s][k].astype(np.float64) if s in used else None
                                             for s in case.states], **hyper, **step_kw))
    found = case.kernel(params, grads, *[states.get(s) for s in case.states], **hyper, **step_kw,
                        grad_scale=grad_scale, skip_nonfinite=True)
    assert found is False
    rtol, atol = (1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-12)
    for k in range(len(shapes)):
        assert params[k].shape == shapes[k] and params[k].dtype == dtype
        np.testing.assert_allclose(params[k], expected[k][0], rtol=rtol, atol=atol)
