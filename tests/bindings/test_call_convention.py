"""The optimizer entry points' own calling convention (csrc/python/fast_call.h).

They bypass pybind11's dispatcher for speed, so everything a Python function does with its arguments
is checked here: the signature inspect reports, positional and keyword passing, defaults, and the
TypeErrors for missing, unknown, repeated or surplus arguments and for scalars of the wrong type,
each naming the function or the argument, and each leaving the arrays untouched.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import fastopt

# name -> (array arguments in positional order, keyword-only hyperparameters with their defaults)
SIGNATURES = {
    "sgd_": (["params", "grads", "momentum_buffers"],
             dict(lr=inspect.Parameter.empty, momentum=0.0, dampening=0.0, weight_decay=0.0,
                  nesterov=False, maximize=False, step=None, stochastic_rounding=False, seed=0, grad_scale=1.0,
                  skip_nonfinite=False, found_inf=None, stream=None)),
    "adagrad_": (["params", "grads", "state_sums"],
                 dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False,
                      step=inspect.Parameter.empty, stochastic_rounding=False, seed=0, grad_scale=1.0,
                      skip_nonfinite=False, found_inf=None, stream=None)),
    "rmsprop_": (["params", "grads", "square_avgs", "momentum_buffers", "grad_avgs"],
                 dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                      maximize=False, step=None, stochastic_rounding=False, seed=0, grad_scale=1.0,
                      skip_nonfinite=False, found_inf=None, stream=None)),
    "adam_": (["params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"],
              dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
                   maximize=False, step=inspect.Parameter.empty, stochastic_rounding=False, seed=0, grad_scale=1.0, skip_nonfinite=False, found_inf=None, stream=None)),
    "adamw_": (["params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"],
               dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=False,
                    maximize=False, step=inspect.Parameter.empty, stochastic_rounding=False, seed=0, grad_scale=1.0, skip_nonfinite=False, found_inf=None, stream=None)),
}
OPTIONAL_STATES = {"momentum_buffers", "grad_avgs", "max_exp_avg_sqs"}
REQUIRED = {"sgd_": dict(lr=0.1), "adagrad_": dict(step=1), "rmsprop_": {}, "adam_": dict(step=1),
            "adamw_": dict(step=1)}


def arrays_for(name, n=5, seed=0):
    rng = np.random.default_rng(seed)
    names, _ = SIGNATURES[name]
    # square averages positive, so that valid calls stay finite
    return [np.abs(rng.standard_normal(n)) + 0.5 for _ in names if _ not in OPTIONAL_STATES]


@pytest.mark.parametrize("name", SIGNATURES)
def test_signature_is_visible_to_inspect(name):
    arrays, keywords = SIGNATURES[name]
    sig = inspect.signature(getattr(fastopt, name))
    assert list(sig.parameters) == arrays + list(keywords)
    for a in arrays:
        param = sig.parameters[a]
        assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert param.default is (None if a in OPTIONAL_STATES else inspect.Parameter.empty)
    for key, default in keywords.items():
        param = sig.parameters[key]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, key
        assert param.default == default if default is not inspect.Parameter.empty else \
            param.default is inspect.Parameter.empty
    assert getattr(fastopt, name).__doc__.startswith("Fused ")


@pytest.mark.parametrize("name", SIGNATURES)
def test_arrays_by_keyword_equal_arrays_by_position(name):
    fn = getattr(fastopt, name)
    names = [a for a in SIGNATURES[name][0] if a not in OPTIONAL_STATES]
    by_position, by_keyword = arrays_for(name), arrays_for(name)
    fn(*by_position, **REQUIRED[name])
    fn(**dict(zip(names, by_keyword)), **REQUIRED[name])
    for a, b in zip(by_position, by_keyword):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(by_position[0], arrays_for(name)[0]), "the call did not update params"


@pytest.mark.parametrize("name", SIGNATURES)
def test_defaults_equal_explicit_values(name):
    fn = getattr(fastopt, name)
    _, keywords = SIGNATURES[name]
    explicit = {k: v for k, v in keywords.items() if v is not inspect.Parameter.empty}
    implicit, spelled_out = arrays_for(name), arrays_for(name)
    fn(*implicit, **REQUIRED[name])
    fn(*spelled_out, **explicit, **REQUIRED[name])
    for a, b in zip(implicit, spelled_out):
        np.testing.assert_array_equal(a, b)


def test_keywords_built_at_run_time_are_matched():
    """Keyword names that are not interned strings (made at run time) still bind by their text."""
    p, g, m, v = arrays_for("adam_", seed=1)
    p2, g2, m2, v2 = arrays_for("adam_", seed=1)
    runtime = {"".join(["l", "r"]): 0.05, "".join(["st", "ep"]): 2}
    fastopt.adam_(p, g, m, v, **runtime)
    fastopt.adam_(p2, g2, m2, v2, lr=0.05, step=2)
    np.testing.assert_array_equal(p, p2)


def test_numpy_scalars_are_accepted():
    a = arrays_for("adam_", seed=2)
    b = arrays_for("adam_", seed=2)
    fastopt.adam_(*a, lr=np.float32(0.25), beta1=np.float64(0.5), amsgrad=np.bool_(False),
                  step=np.int64(3))
    fastopt.adam_(*b, lr=float(np.float32(0.25)), beta1=0.5, amsgrad=False, step=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


BAD_CALLS = [
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, step=1), r"adam_\(\) missing required argument 'exp_avg_sqs'"),
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, v), r"adam_\(\) missing required argument 'step'"),
    ("sgd_", lambda p, g: fastopt.sgd_(p, g), r"sgd_\(\) missing required argument 'lr'"),
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, v, None, 0.1, step=1),
     r"adam_\(\) takes at most 5 positional arguments \(6 given\)"),
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, v, step=1, betas=(0.9, 0.99)),
     r"adam_\(\) got an unexpected keyword argument 'betas'"),
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, v, step=1, grads=g),
     r"adam_\(\) got multiple values for argument 'grads'"),
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, v, step=1.0), r"step must be an int, got float"),
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, v, step="2"), r"step must be an int, got str"),
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, v, step=1, lr="0.1"), r"lr must be a real number, got str"),
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, v, step=1, eps=None), r"eps must be a real number, got NoneType"),
    ("adam_", lambda p, g, m, v: fastopt.adam_(p, g, m, v, step=1, amsgrad=1), r"amsgrad must be a bool, got int"),
    ("sgd_", lambda p, g: fastopt.sgd_(p, g, lr=0.1, nesterov="yes"), r"nesterov must be a bool, got str"),
    ("rmsprop_", lambda p, g, s: fastopt.rmsprop_(p, g, s, centered=None), r"centered must be a bool, got NoneType"),
    ("adagrad_", lambda p, g, s: fastopt.adagrad_(p, g, s, step=[1]), r"step must be an int, got list"),
]


@pytest.mark.parametrize("name,bad_call,message", BAD_CALLS, ids=[m for _, _, m in BAD_CALLS])
def test_bad_calls_are_type_errors_that_change_nothing(name, bad_call, message):
    arrays = arrays_for(name, seed=3)
    before = [a.copy() for a in arrays]
    with pytest.raises(TypeError, match=message):
        bad_call(*arrays)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_step_beyond_64_bits_is_a_value_error():
    p, g, m, v = arrays_for("adam_", seed=4)
    with pytest.raises(ValueError, match="step"):
        fastopt.adam_(p, g, m, v, step=2**70)


def test_sgd_with_momentum_requires_step_and_changes_nothing_without_it():
    # A default step would restart the momentum buffer on every call: five calls would give torch's
    # first step five times over (0.4999999 where torch.optim.SGD reaches -0.3144), without a word.
    p, g, buf = np.ones(4), np.full(4, 0.1), np.zeros(4)
    before = (p.copy(), buf.copy())
    with pytest.raises(TypeError, match=r"sgd_\(\) needs step when momentum != 0"):
        fastopt.sgd_(p, g, buf, lr=0.1, momentum=0.9)
    assert np.array_equal(p, before[0]) and np.array_equal(buf, before[1])


def test_sgd_momentum_over_steps_follows_the_reference():
    rng = np.random.default_rng(5)
    p = rng.standard_normal(9)
    want, buf, want_buf = p.copy(), np.zeros(9), None
    for t in range(1, 6):
        g = rng.standard_normal(9)
        fastopt.sgd_(p, g, buf, lr=0.1, momentum=0.9, step=t)
        want, want_buf = fastopt.reference.sgd(want, g, want_buf, lr=0.1, momentum=0.9)
    np.testing.assert_allclose(p, want, rtol=1e-12, atol=0)


def test_sgd_without_momentum_needs_no_step():
    p = np.ones(3)
    fastopt.sgd_(p, np.ones(3), lr=0.5)
    assert np.array_equal(p, np.full(3, 0.5))
