"""Bad input to fastopt.adafactor_: a clear TypeError/ValueError naming the argument (and the list index),
and nothing written, whatever was wrong and wherever in the list it was."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt


def valid_call(dtype=np.float64):
    """A matrix, a vector and a batch of matrices, with their state; every array distinct."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in [(4, 6), (5,), (2, 3, 4)]]
    grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
    rows = [np.ones((4, 1), dtype), None, np.ones((2, 3, 1), dtype)]
    cols = [np.ones((1, 6), dtype), None, np.ones((2, 1, 4), dtype)]
    variances = [None, np.ones(5, dtype), None]
    return params, grads, rows, cols, variances


def every_array(call):
    return [a for arg in call for a in (arg if isinstance(arg, list) else [arg]) if a is not None]


def refused(call, kwargs, error, match):
    before = [a.copy() for a in every_array(call)]
    with pytest.raises(error, match=match):
        fastopt.adafactor_(*call, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(every_array(call), before))


def test_the_valid_call_writes():
    call = valid_call()
    before = [a.copy() for a in every_array(call)]
    fastopt.adafactor_(*call, step=1)
    after = every_array(call)
    assert all(not np.array_equal(a, b) for a, b in zip(after[:3], before[:3]))  # the params moved


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(step=0), ValueError, "step"),
    (dict(step=1.0), TypeError, "step"),
    (dict(), TypeError, "step"),
    (dict(step=1, lr=-0.1), ValueError, "lr"),
    (dict(step=1, lr=float("nan")), ValueError, "lr"),
    (dict(step=1, beta2_decay=0.5), ValueError, "beta2_decay"),
    (dict(step=1, beta2_decay=float("-inf")), ValueError, "beta2_decay"),
    (dict(step=1, eps1=-1e-8), ValueError, "eps1"),
    (dict(step=1, eps1=float("nan")), ValueError, "eps1"),
    (dict(step=1, eps2=-1.0), ValueError, "eps2"),
    (dict(step=1, d=0.5), ValueError, "d must be >= 1"),
    (dict(step=1, d=float("nan")), ValueError, "d "),
    (dict(step=1, weight_decay=-0.01), ValueError, "weight_decay"),
    (dict(step=1, maximize=2), TypeError, "maximize"),
    (dict(step=1, lr="0.1"), TypeError, "lr"),
    (dict(step=1, betas=(0.9, 0.99)), TypeError, "betas"),
])
def test_bad_hyperparameters(kwargs, error, match):
    refused(valid_call(), kwargs, error, match)


def test_bad_arrays_are_named_with_their_index():
    call = valid_call()
    params, grads, rows, cols, variances = call

    def case(error, match, **change):
        args = dict(params=params, grads=grads, row_vars=rows, col_vars=cols, variances=variances)
        args.update(change)
        before = [a.copy() for a in every_array(call)]
        with pytest.raises(error, match=match):
            fastopt.adafactor_(args["params"], args["grads"], args["row_vars"], args["col_vars"],
                               args["variances"], step=1)
        assert all(np.array_equal(a, b) for a, b in zip(every_array(call), before))

    case(ValueError, r"grads holds 2 arrays but params holds 3", grads=grads[:2])
    case(ValueError, r"row_vars holds 2 entries", row_vars=rows[:2])
    case(ValueError, r"grads\[2\] has shape", grads=grads[:2] + [np.zeros((2, 3, 5))])
    case(TypeError, r"grads\[1\] has dtype float32", grads=[grads[0], grads[1].astype(np.float32), grads[2]])
    case(TypeError, r"params\[1\] has dtype float32 but params\[0\]",
         params=[params[0], params[1].astype(np.float32), params[2]],
         grads=[grads[0], grads[1].astype(np.float32), grads[2]],
         variances=[None, variances[1].astype(np.float32), None])
    case(TypeError, r"params\[0\] has dtype int64", params=[np.zeros((4, 6), np.int64)] + params[1:])
    case(ValueError, r"row_vars\[2\] is required", row_vars=rows[:2] + [None])
    case(ValueError, r"col_vars\[0\] has shape \(6, 1\) but params\[0\] of shape \(4, 6\) needs \(1, 6\)",
         col_vars=[np.ones((6, 1))] + cols[1:])
    case(ValueError, r"row_vars\[2\] has shape", row_vars=rows[:2] + [np.ones((3, 1))])
    case(ValueError, r"variances\[0\] must be None", variances=[np.ones((4, 6))] + variances[1:])
    case(ValueError, r"variances\[1\] is required", variances=None)
    case(ValueError, r"row_vars\[1\] must be None", row_vars=[rows[0], np.ones(5), rows[2]])
    case(TypeError, r"variances\[1\] has dtype float32", variances=[None, np.ones(5, np.float32), None])
    case(TypeError, r"col_vars\[2\] must be an array", col_vars=cols[:2] + ["x"])
    case(TypeError, r"row_vars", row_vars=3.0)
    case(ValueError, r"params\[0\] is not C-contiguous", params=[np.zeros((6, 4)).T] + params[1:],
         grads=[np.zeros((4, 6))] + grads[1:])
    read_only = np.ones(5)
    read_only.flags.writeable = False
    case(ValueError, r"variances\[1\] is read-only", variances=[None, read_only, None])
    case(ValueError, r"col_vars\[0\] shares memory with params\[0\]|params\[0\] shares memory with col_vars\[0\]",
         col_vars=[params[0][:1]] + cols[1:])
    case(ValueError, r"variances\[1\] shares memory with grads\[1\]|grads\[1\] shares memory with variances\[1\]",
         variances=[None, grads[1], None])


def test_a_single_array_takes_single_states():
    p = np.ones((3, 2))
    fastopt.adafactor_(p, np.ones((3, 2)), np.zeros((3, 1)), np.zeros((1, 2)), None, step=1)
    assert (p < 1).all()
    with pytest.raises(ValueError, match="row_vars is one array but params holds 2"):
        fastopt.adafactor_([p, p.copy()], [p.copy(), p.copy()], np.zeros((3, 1)), None, None, step=1)


def test_an_empty_call_does_nothing():
    fastopt.adafactor_([], [], [], [], [], step=1)
    fastopt.adafactor_([], [], step=1)
