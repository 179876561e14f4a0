"""Property tests (hypothesis): any valid hyperparameters, any step number and any mid-training
state give the reference's numbers; lr = 0 leaves parameters untouched.

The optimizers described as rules (csrc/include/fastopt/registry.h) get their strategies from what each
kernel declares about its hyperparameters (fastopt._core._rule_registry(): names, rules such as
positive or in [0, 1), defaults), so a newly registered rule is covered here without an edit: finite in,
finite out; a value breaking its declared rule raises ValueError naming it and writes nothing; a list
call equals one call per array; float64 matches the NumPy reference (fastopt/references) over one step
from a random state."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fastopt
from fastopt import _core
from fastopt.rules import PASSES, SPECS
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
# (the optimizers described as rules: their strategies are generated from the registry, further down)


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


# ------------------------------------------------------------------ the optimizers described as rules
# (more examples than above: they are drawn over eight optimizers, and each costs about 2 ms)
# (the optimizers; Muon's two passes, fastopt.rules.PASSES, are parts of one and covered by kernel_cases)
RULES = {info["name"]: info for info in _core._rule_registry() if info["function"] not in PASSES}
SPECS_BY_KERNEL = {spec.kernel: spec for spec in SPECS}

# A valid value for each declared rule (csrc/include/fastopt/rule.h, HyperRule), drawn from the inside of
# its set at the scales optimizers meet. Inside, not up to the edge, where a rule's own checks tie
# arguments together beyond the declaration (check_more): Rprop's etaminus is "positive" and must be
# < 1, its etaplus "at least one" and must be > 1; NAdam's mu_product < 1; LAMB's max_grad_norm > 0.
VALID = {
    "finite": st.floats(-1e3, 1e3),
    "non_negative": st.one_of(st.just(0.0), st.floats(1e-6, 1.0)),
    "positive": st.floats(1e-12, 1.0, exclude_max=True),
    "unit_interval": st.floats(0.0, 1.0, exclude_max=True),
    "closed_unit": st.floats(0.0, 1.0),
    "at_least_one": st.floats(1.0, 10.0, exclude_min=True),
    "flag": st.booleans(),
    "optional_unit": st.one_of(st.none(), st.floats(0.0, 1.0, exclude_max=True)),
    "optional_non_negative": st.one_of(st.none(), st.floats(1e-3, 10.0)),
}
# Values each declared rule refuses (flags are bools: a number there is a TypeError, not covered here).
INVALID = {
    "finite": [math.nan, math.inf, -math.inf],
    "non_negative": [-1e-3, -1.0, math.nan, math.inf],
    "positive": [0.0, -1e-8, math.nan, math.inf],
    "unit_interval": [1.0, 1.5, -0.1, math.nan],
    "closed_unit": [1.0 + 1e-9, 2.0, -0.1, math.nan],
    "at_least_one": [0.5, 0.0, math.nan, math.inf],
    "optional_unit": [1.5, -0.1, math.inf],
    "optional_non_negative": [-1.0, -1e-3, math.inf],
}


def rule_hypers(info):
    """(name, rule, default) of each hyperparameter the rule declares, in argument order."""
    return [(name, rule, default) for name, rule, default, _ in info["hypers"]]


@st.composite
def rule_hyper(draw, info):
    """Every hyperparameter from its declared rule, or at its declared default (the common case)."""
    return {name: draw(VALID[rule] if default is None or rule == "flag" else st.one_of(st.just(default), VALID[rule]))
            for name, rule, default in rule_hypers(info)}


def rule_scalars(name):
    """The hyperparameters that carry per-parameter numbers torch keeps beside the arrays (NAdam's
    mu_product, ASGD's eta and mu: RuleSpec.scalars): None makes the kernel compute them from step."""
    spec = SPECS_BY_KERNEL[RULES[name]["function"]]
    return spec.scalars.keys if spec.scalars is not None else ()


def rule_call(name, params, grads, states, hyper, step, **extra):
    info = RULES[name]
    fn = getattr(fastopt, info["function"])
    return fn(params, grads, *states, **hyper, **({"step": step} if info["takes_step"] else {}), **extra)


def rule_arrays(name, rng, shape, dtype, grad_scale=1.0):
    """params, grads and a plausible state: every state array non-negative (second moments, step sizes
    and accumulators must be; the signed ones, momenta and previous gradients, may be)."""
    n_states = len(RULES[name]["operands"]) - 2
    param = np.asarray(rng.standard_normal(shape), dtype)
    grad = np.asarray(rng.standard_normal(shape) * grad_scale, dtype)
    states = [np.asarray(rng.uniform(0.0, 2.0, shape), dtype) for _ in range(n_states)]
    return param, grad, states


def test_every_rule_has_strategies_and_a_reference():
    """A rule registered in C++ is drawn here: its hyperparameter rules have strategies, its kernel a
    Python description (fastopt.rules) and a reference case (kernel_cases, fastopt/references)."""
    assert RULES, "no rules registered"
    for name, info in RULES.items():
        for hyper, rule, _ in rule_hypers(info):
            assert rule in VALID, f"{name}: {hyper} declares a rule ({rule}) the strategies do not know"
            assert rule == "flag" or rule in INVALID, (name, hyper, rule)
        assert info["function"] in SPECS_BY_KERNEL, f"{name}_ has no RuleSpec in fastopt.rules"
        assert name in CASES_BY_NAME, f"{name} has no kernel case (tests/kernel_cases.py) with its reference"


@settings(max_examples=600, deadline=None)
@given(name=st.sampled_from(sorted(RULES)), data=st.data(), n=st.integers(0, 40),
       dtype=st.sampled_from([np.float32, np.float64]), step=st.integers(1, 1000),
       grad_scale=st.sampled_from([1e-3, 1.0, 1e3]), seed=st.integers(0, 2**31 - 1))
def test_rule_finite_in_finite_out(name, data, n, dtype, step, grad_scale, seed):
    hyper = data.draw(rule_hyper(RULES[name]))
    rng = np.random.default_rng(seed)
    param, grad, states = rule_arrays(name, rng, n, dtype, grad_scale)
    assert rule_call(name, param, grad, states, hyper, step) is False
    for what, array in [("params", param)] + [(op, s) for (op, _), s in zip(RULES[name]["operands"][2:], states)]:
        assert np.isfinite(array).all(), f"{name}_ {hyper} step={step}: {what} not finite"


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(RULES)), data=st.data(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_rule_bad_hyperparameter_is_refused_by_name_and_writes_nothing(name, data, dtype, seed):
    info = RULES[name]
    hyper = data.draw(rule_hyper(info))
    choices = [(h, bad) for h, rule, _ in rule_hypers(info) for bad in INVALID.get(rule, [])]
    if info["takes_step"]:
        choices += [("step", 0), ("step", -3)]
    bad_name, bad_value = data.draw(st.sampled_from(choices))
    step = 5
    if bad_name == "step":
        step = bad_value
    else:
        hyper[bad_name] = bad_value
    rng = np.random.default_rng(seed)
    arrays = [rule_arrays(name, rng, shape, dtype) for shape in [(7,), (3, 4)]]
    params, grads = [a[0] for a in arrays], [a[1] for a in arrays]
    states = [list(s) for s in zip(*[a[2] for a in arrays])]
    before = [a.copy() for a in params + grads + [x for s in states for x in s]]
    with np.testing.assert_raises(ValueError) as raised:
        rule_call(name, params, grads, states, hyper, step)
    assert bad_name in str(raised.exception), str(raised.exception)
    after = params + grads + [x for s in states for x in s]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, after)), f"{name}_ wrote before refusing {bad_name}"


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(RULES)), data=st.data(),
       shapes=st.lists(st.lists(st.integers(0, 9), max_size=3).map(tuple), min_size=1, max_size=4),
       dtype=st.sampled_from([np.float32, np.float64]), step=st.integers(1, 1000), seed=st.integers(0, 2**31 - 1))
def test_rule_list_call_equals_per_array_calls(name, data, shapes, dtype, step, seed):
    info = RULES[name]
    hyper = data.draw(rule_hyper(info))
    if info["tensor_sums"]:
        # Its optional values may reduce over the whole call (LAMB's max_grad_norm clips by the norm of
        # every gradient of the call): off here, so that each tensor's numbers are its own.
        hyper.update({h: None for h, rule, _ in rule_hypers(info) if rule.startswith("optional")})
    rng = np.random.default_rng(seed)
    arrays = [rule_arrays(name, rng, shape, dtype) for shape in shapes]
    together = [(p.copy(), g, [s.copy() for s in st_]) for p, g, st_ in arrays]
    rule_call(name, [a[0] for a in together], [a[1] for a in together],
              [list(s) for s in zip(*[a[2] for a in together])], hyper, step)
    for k, (p, g, st_) in enumerate(arrays):
        rule_call(name, p, g, st_, hyper, step)
        assert p.tobytes() == together[k][0].tobytes(), f"{name}_ params[{k}] differ in a list call"
        for (op, _), alone, listed in zip(info["operands"][2:], st_, together[k][2]):
            assert alone.tobytes() == listed.tobytes(), f"{name}_ {op}[{k}] differ in a list call"


@settings(max_examples=800, deadline=None)
@given(name=st.sampled_from(sorted(RULES)), data=st.data(), n=st.integers(0, 40), step=st.integers(1, 1000),
       seed=st.integers(0, 2**31 - 1))
def test_rule_float64_matches_reference(name, data, n, step, seed):
    """One float64 step from a random state against the NumPy reference (fastopt/references, through
    kernel_cases' table); the per-parameter scalars are computed from step on both sides."""
    case = CASES_BY_NAME[name]
    hyper = data.draw(rule_hyper(RULES[name]))
    for key in rule_scalars(name):
        hyper.pop(key)
    rng = np.random.default_rng(seed)
    param, grad, states = rule_arrays(name, rng, n, np.float64)
    with np.errstate(all="ignore"):
        expected = case.reference(param, grad, *states, step=step, **hyper)
    rule_call(name, param, grad, states, hyper, step)
    np.testing.assert_allclose(param, expected[0], rtol=1e-10, atol=1e-12, err_msg=f"{name}_ params {hyper}")
    for state, new, (op, _) in zip(states, expected[1:], RULES[name]["operands"][2:]):
        np.testing.assert_allclose(state, new, rtol=1e-10, atol=1e-12, err_msg=f"{name}_ {op} {hyper}")
