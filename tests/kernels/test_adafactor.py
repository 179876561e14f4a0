"""fastopt.adafactor_ against the NumPy reference (fastopt.references.adafactor, itself checked against
torch.optim.Adafactor in test_references_vs_torch.py): float64 to rtol 1e-10 and float32 to float32's
tolerance over 40 steps, on shapes that hit the SIMD tails, the fixed tiles of the row/column sums
(2048 columns, 65536 elements) and the thread split; the same bits for any thread count and instruction
set; bad input refused by name with nothing written."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import fastopt
from fastopt import _core
from adafactor_cases import draw_hyper, make_state
from fastopt.references import adafactor_step

SUPPORTED = fastopt.build_info()["cpu_isas_supported"]

# 1-D and 0-d (a full variance), 1xN and Nx1, a matrix, a batch of matrices, empty ones (their means are
# 0/0 = NaN, as in the reference and torch), a matrix wider than a column tile (2048) with more rows than
# one row block (32 at that width), and a vector over two 65536-element blocks.
SHAPES = [(1,), (7,), (33,), (), (0,), (1, 33), (33, 1), (5, 7), (3, 4, 17), (0, 5), (5, 0), (2, 0, 3),
          (70, 2100), (65537,), (2, 3, 1, 4)]
# Large enough to run on two threads (more than 131072 elements per tensor).
LARGE = [(400, 401), (140003,), (3, 300, 171)]


def grads_for(rng, params, tiny=()):
    grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
    for k in tiny:  # V between eps1**2 and eps1: the clamp of the direction is exercised
        grads[k] *= p_dtype(params[k])(1e-5)
    return grads


def p_dtype(p):
    return p.dtype.type


def run_both(seed, shapes, dtype, steps, tiny=()):
    rng = np.random.default_rng(seed)
    hyper = draw_hyper(rng)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ref_params = copy.deepcopy(params)
    ref_states, _ = make_state(ref_params)
    _, (rows, cols, variances) = make_state(params)
    for step in range(1, steps + 1):
        if step % 10 == 0:
            hyper = draw_hyper(rng)
        grads = grads_for(rng, params, tiny)
        assert fastopt.adafactor_(params, grads, rows, cols, variances, step=step, **hyper) is None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # (the empty shapes' 0/0 means)
            adafactor_step(ref_params, grads, ref_states, step=step, **hyper)
    return params, (rows, cols, variances), ref_params, ref_states


def compare(params, state, ref_params, ref_states, **tol):
    rows, cols, variances = state
    for i, (p, want) in enumerate(zip(params, ref_params)):
        np.testing.assert_allclose(p, want, err_msg=f"param {i}", **tol)
        for name, got in (("row_var", rows[i]), ("col_var", cols[i]), ("variance", variances[i])):
            if name in ref_states[i]:
                assert got.shape == ref_states[i][name].shape
                np.testing.assert_allclose(got, ref_states[i][name], err_msg=f"{name} {i}", **tol)
            else:
                assert got is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_matches_the_reference_over_40_steps(seed):
    params, state, ref_params, ref_states = run_both(seed, SHAPES, np.float64, 40, tiny=(2, 6))
    compare(params, state, ref_params, ref_states, rtol=1e-10, atol=1e-14)
    assert np.isnan(state[1][9]).all()  # (0, 5): the column means are 0/0, as the reference's


def test_float64_large_tensors_on_threads_match_the_reference():
    params, state, ref_params, ref_states = run_both(3, LARGE, np.float64, 5)
    compare(params, state, ref_params, ref_states, rtol=1e-10, atol=1e-14)


def test_float32_matches_the_reference_in_float32():
    params, state, ref_params, ref_states = run_both(4, SHAPES, np.float32, 40, tiny=(2, 6))
    for p in params:
        assert p.dtype == np.float32
    # (absolute: 40 steps of float32 roundings on params of magnitude up to ~5, near zero after a step)
    compare(params, state, ref_params, ref_states, rtol=2e-4, atol=2e-5)


def test_a_list_and_single_tensors_give_the_same_bits():
    # Each tensor is its own: alone (a bare array, no list) or in a list of mixed shapes, the same bits.
    rng = np.random.default_rng(5)
    params = [rng.standard_normal(s) for s in [(70, 2100), (33,), (3, 4, 17)]]
    grads = grads_for(rng, params)
    listed = copy.deepcopy(params)
    _, (rows, cols, variances) = make_state(listed)
    fastopt.adafactor_(listed, grads, rows, cols, variances, step=1)
    for k, p in enumerate(params):
        _, (r, c, v) = make_state([p])
        if p.ndim >= 2:
            fastopt.adafactor_(p, grads[k], r, c, None, step=1)
        else:
            fastopt.adafactor_(p, grads[k], None, None, v, step=1)
        assert p.tobytes() == listed[k].tobytes()


def digest_of_run(dtype):
    rng = np.random.default_rng(21)
    shapes = LARGE + [(70, 2100), (7,), (33, 1), (0, 5)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    _, (rows, cols, variances) = make_state(params)
    hyper = dict(lr=0.3, beta2_decay=-0.8, eps1=None, eps2=1e-3, d=1.05, weight_decay=0.01, maximize=False)
    for step in range(1, 4):
        fastopt.adafactor_(params, grads_for(rng, params), rows, cols, variances, step=step, **hyper)
    return b"".join(a.tobytes() for a in params + [x for x in rows + cols + variances if x is not None])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_for_one_and_two_threads(dtype, restore_settings):
    fastopt.set_num_threads(1)
    one = digest_of_run(dtype)
    fastopt.set_num_threads(2)
    assert fastopt.get_num_threads() == 2
    assert digest_of_run(dtype) == one


@pytest.mark.skipif(len(SUPPORTED) < 2, reason="this CPU supports a single instruction set")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_at_every_instruction_set(dtype, restore_settings):
    results = {}
    for isa in SUPPORTED:
        assert fastopt.set_cpu_isa(isa) == isa
        results[isa] = digest_of_run(dtype)
    assert len(set(results.values())) == 1, [isa for isa in results if results[isa] != results[SUPPORTED[-1]]]


def test_defaults_are_torchs():
    import inspect

    assert str(inspect.signature(_core.adafactor_)) == (
        "(params, grads, row_vars=None, col_vars=None, variances=None, *, step, lr=0.01, beta2_decay=-0.8, "
        "eps1=None, eps2=0.001, d=1.0, weight_decay=0.0, maximize=False, stream=None)")
    rng = np.random.default_rng(10)
    a = [rng.standard_normal((6, 5)), rng.standard_normal(4)]
    b = copy.deepcopy(a)
    grads = grads_for(rng, a)
    _, sa = make_state(a)
    _, sb = make_state(b)
    fastopt.adafactor_(a, grads, *sa, step=3)
    fastopt.adafactor_(b, grads, *sb, step=3, lr=1e-2, beta2_decay=-0.8, eps1=None, eps2=1e-3, d=1.0,
                       weight_decay=0.0, maximize=False)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
