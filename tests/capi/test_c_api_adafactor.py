"""The C ABI's Adafactor entries (fastopt_adafactor_f32/_f64) through ctypes: the same bits as the Python
function fastopt.adafactor_ on the same arrays over several steps (vectors, matrices, a batch of matrices,
scalars and empty tensors, eps1 given or the dtype's epsilon), and bad input (a NULL pointer, a negative
size, an ndim out of range, each hyperparameter's rule, overlapping arrays) returns the right status and a
message naming the argument, and writes nothing."""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

import fastopt
from fastopt import capi

LIB = capi.load()
SUFFIX = {np.float32: "f32", np.float64: "f64"}
STATUS = {name: code for code, name in capi.STATUS.items()}
# (shape): a scalar, a vector with a SIMD tail, a matrix, a batch of matrices, empty ones (a matrix with no
# columns still has row state, written NaN as torch's mean over nothing), a long row (several column tiles)
SHAPES = [(), (7,), (5, 9), (2, 3, 4), (0,), (4, 0), (0, 3), (3, 2100)]
HYPER = dict(lr=2e-2, beta2_decay=-0.7, eps1=None, eps2=1e-3, d=1.0, weight_decay=0.01, maximize=False)


def factored(shape):
    return len(shape) >= 2


def make_state(rng, dtype):
    """params, grads and torch's state shapes for SHAPES: row_vars / col_vars / variances (None where unused)."""
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    rows = [np.zeros(s[:-1] + (1,), dtype) if factored(s) else None for s in SHAPES]
    cols = [np.zeros(s[:-2] + (1, s[-1]), dtype) if factored(s) else None for s in SHAPES]
    variances = [None if factored(s) else np.zeros(s, dtype) for s in SHAPES]
    return params, rows, cols, variances


def pointers(arrays, dtype):
    """A C array of pointers to each array's data (NULL for None)."""
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    ptr = ctypes.POINTER(scalar)
    return (ptr * len(arrays))(*[a.ctypes.data_as(ptr) if a is not None else ptr() for a in arrays])


def c_call(dtype, params, grads, rows, cols, variances, step, shapes=None, **changes):
    """fastopt_adafactor_<suffix> over the lists; returns the status."""
    hyper = dict(HYPER, **changes)
    shapes = SHAPES if shapes is None else shapes
    ndims = (ctypes.c_int32 * len(shapes))(*[len(s) for s in shapes])
    flat = [n for s in shapes for n in s]
    sizes = (ctypes.c_int64 * max(len(flat), 1))(*flat)
    eps1 = math.nan if hyper["eps1"] is None else hyper["eps1"]
    entry = getattr(LIB, f"fastopt_adafactor_{SUFFIX[dtype]}")
    return entry(len(shapes), ndims, sizes, pointers(params, dtype), pointers(grads, dtype), pointers(rows, dtype),
                 pointers(cols, dtype), pointers(variances, dtype), step, hyper["lr"], hyper["beta2_decay"], eps1,
                 hyper["eps2"], hyper["d"], hyper["weight_decay"], int(hyper["maximize"]))


def same_bits(a, b):
    return a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("changes", [{}, dict(eps1=1e-30, maximize=True, d=1.5, weight_decay=0.0)],
                         ids=["eps1-none", "eps1-given"])
def test_steps_give_the_python_functions_bits(dtype, changes):
    rng = np.random.default_rng(3)
    c_params, c_rows, c_cols, c_vars = make_state(rng, dtype)
    py = [[None if a is None else a.copy() for a in lst] for lst in (c_params, c_rows, c_cols, c_vars)]
    for step in range(1, 6):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        assert c_call(dtype, c_params, grads, c_rows, c_cols, c_vars, step, **changes) == 0, LIB.fastopt_last_error()
        fastopt.adafactor_(py[0], grads, py[1], py[2], py[3], step=step, **dict(HYPER, **changes))
        for name, mine, theirs in zip(("params", "row_vars", "col_vars", "variances"),
                                      (c_params, c_rows, c_cols, c_vars), py):
            for i, (a, b) in enumerate(zip(mine, theirs)):
                assert (a is None) == (b is None)
                assert a is None or same_bits(a, b), f"step {step}: {name}[{i}] differs from fastopt.adafactor_'s"
    start = make_state(np.random.default_rng(3), dtype)[0]
    assert all(not np.array_equal(p, p0) for p, p0 in zip(c_params, start) if p.size)


def refused(dtype, status, message, shapes=None, break_it=lambda state: None, **changes):
    """A call made bad by `break_it` (or `changes`): the status, the message, nothing written."""
    rng = np.random.default_rng(5)
    params, rows, cols, variances = make_state(rng, dtype)
    grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    state = dict(params=params, grads=grads, rows=rows, cols=cols, variances=variances)
    break_it(state)
    before = {k: [None if a is None else a.copy() for a in v] for k, v in state.items()}
    got = c_call(dtype, state["params"], state["grads"], state["rows"], state["cols"], state["variances"], 3,
                 shapes=shapes, **changes)
    assert capi.STATUS.get(got) == status, (got, LIB.fastopt_last_error())
    assert message in LIB.fastopt_last_error().decode()
    for k, arrays in state.items():
        for a, b in zip(arrays, before[k]):
            assert a is None or same_bits(a, b), f"a refused call wrote {k}"


@pytest.mark.parametrize("changes, message", [
    (dict(lr=-1.0), "lr must be >= 0"),
    (dict(beta2_decay=0.5), "beta2_decay must be <= 0"),
    (dict(eps1=-1e-3), "eps1 must be >= 0"),
    (dict(eps2=math.nan), "eps2"),
    (dict(d=0.5), "d must be >= 1"),
    (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
], ids=["lr", "beta2_decay", "eps1", "eps2", "d", "weight_decay"])
def test_a_bad_hyperparameter_is_refused_by_name(changes, message):
    refused(np.float32, "FASTOPT_ERROR_HYPERPARAMETER", message, **changes)


def test_a_missing_state_is_refused_with_the_tensor_it_belongs_to():
    def no_col_var(state):
        state["cols"][2] = None
    refused(np.float64, "FASTOPT_ERROR_NULL_POINTER", "col_vars[2] is NULL (tensor 2 has ndim >= 2", break_it=no_col_var)

    def no_variance(state):
        state["variances"][1] = None
    refused(np.float64, "FASTOPT_ERROR_NULL_POINTER", "variances[1] is NULL", break_it=no_variance)

    def no_params(state):
        state["params"][3] = None
    refused(np.float32, "FASTOPT_ERROR_NULL_POINTER", "params[3] is NULL", break_it=no_params)


def test_a_bad_shape_is_refused():
    negative = list(SHAPES)
    negative[2] = (5, -9)
    refused(np.float32, "FASTOPT_ERROR_SIZE", "shapes[2] (dimension 1 of tensor 2) must be >= 0", shapes=negative)
    too_many = list(SHAPES)
    too_many[1] = (1,) * 65
    refused(np.float32, "FASTOPT_ERROR_SIZE", "ndims[1] must be in [0, 64], got 65", shapes=too_many)
    huge = list(SHAPES)
    huge[2] = (2**40, 2**40)
    refused(np.float32, "FASTOPT_ERROR_SIZE", "tensor 2 has more elements than memory can hold", shapes=huge)


def test_a_state_sharing_memory_with_a_parameter_is_refused():
    def shared(state):
        state["rows"][2] = state["params"][2][:, :1]  # (5, 1): the first 5 elements of params[2]
    refused(np.float64, "FASTOPT_ERROR_OVERLAP", "overlaps", break_it=shared)
    message = LIB.fastopt_last_error().decode()  # (the two start at one address: either may be named first)
    assert {message.split(" overlaps ")[0], message.split(" overlaps ")[1].split(";")[0]} == {"params[2]", "row_vars[2]"}


def test_gradients_may_share_memory_and_an_empty_call_is_fine():
    rng = np.random.default_rng(9)
    params, rows, cols, variances = make_state(rng, np.float64)
    shared = np.ones(2100 * 3)
    grads = [shared[: int(np.prod(s))].reshape(s) for s in SHAPES]  # every gradient a view of one buffer
    assert c_call(np.float64, params, grads, rows, cols, variances, 1) == 0, LIB.fastopt_last_error()
    entry = LIB.fastopt_adafactor_f32
    assert entry(0, None, None, None, None, None, None, None, 1, 1e-2, -0.8, math.nan, 1e-3, 1.0, 0.0, 0) == 0
    assert entry(-1, None, None, None, None, None, None, None, 1, 1e-2, -0.8, math.nan, 1e-3, 1.0, 0.0, 0) == \
        STATUS["FASTOPT_ERROR_SIZE"]
    assert entry(1, None, None, None, None, None, None, None, 0, 1e-2, -0.8, math.nan, 1e-3, 1.0, 0.0, 0) == \
        STATUS["FASTOPT_ERROR_HYPERPARAMETER"]
    assert "step must be >= 1" in LIB.fastopt_last_error().decode()
