"""Loss scaling (grad_scale) and non-finite gradients (skip_nonfinite), functional and classes.

grad_scale: every kernel result equals the NumPy reference run on grad / grad_scale. skip_nonfinite:
a NaN or Inf anywhere in any gradient of the call (first tensor, last element of the last tensor,
the scalar tail past the SIMD width, a chunk handled by another thread) means nothing at all is
written, every array stays bit-identical, and the call returns True; a finite call returns False
and gives the same bits as a call without skip_nonfinite.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import optim
from kernel_cases import CASES, draw_hyper, kernel_kwargs

# sizes: a SIMD tail (13), a size past the threading threshold with a ragged last chunk
SIZES = [13, 1, 131_075]


def setup(case, dtype, seed=0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    config = list(case.configs)[-1]  # the configuration with the most state
    hyper = draw_hyper(case, config, rng)
    used = case.used_states(hyper)
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
    # second moments in [0.5, 2], centered RMSprop's mean gradient small: every update stays finite
    states = {s: [(rng.uniform(-0.5, 0.5, n) if s == "grad_avgs" else rng.uniform(0.5, 2.0, n)).astype(dtype)
                  for n in sizes] for s in used}
    return hyper, params, grads, states


def run(case, hyper, params, grads, states, **extra):
    step = {"step": 3} if case.takes_step else {}
    return case.kernel(params, grads, *[states.get(s) for s in case.states], **kernel_kwargs(case, hyper),
                       **step, **extra)


def all_bytes(params, grads, states):
    return [a.tobytes() for a in params + grads + [x for xs in states.values() for x in xs]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("scale", [1.0, 1024.0, 0.37, 3.0e5])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_grad_scale_equals_reference_on_unscaled_grads(case, scale, dtype):
    hyper, params, grads, states = setup(case, dtype, sizes=[13, 1000])
    step = {"step": 3} if case.takes_step else {}
    expected = []
    for k in range(len(params)):
        unscaled = grads[k] / dtype(scale)  # what the kernel divides by: the scale in the array's dtype
        with np.errstate(all="ignore"):
            expected.append(case.reference(params[k].astype(np.float64), unscaled.astype(np.float64),
                                           *[states[s][k].astype(np.float64) if s in states else None
                                             for s in case.states], **kernel_kwargs(case, hyper), **step))
    found = run(case, hyper, params, grads, states, grad_scale=scale)
    assert found is False
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    for k in range(len(params)):
        np.testing.assert_allclose(params[k], expected[k][0], rtol=rtol, atol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_grad_scale_is_exactly_a_division(case):
    """Scaled grads with grad_scale give the bits of the pre-divided grads without it."""
    hyper, params, grads, states = setup(case, np.float32)
    twin_p, twin_s = [p.copy() for p in params], {s: [x.copy() for x in xs] for s, xs in states.items()}
    run(case, hyper, params, [g * np.float32(8.0) for g in grads], states, grad_scale=8.0)
    run(case, hyper, twin_p, grads, twin_s)
    assert all_bytes(params, [], states) == all_bytes(twin_p, [], twin_s)


POSITIONS = {
    "first-element-first-tensor": (0, 0),
    "last-element-last-tensor": (-1, -1),
    "simd-tail": (0, 12),
    "single-element-tensor": (1, 0),
    "middle-of-threaded-tensor": (2, 70_000),
}
BAD_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


@pytest.mark.parametrize("value", list(BAD_VALUES))
@pytest.mark.parametrize("where", list(POSITIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_nonfinite_grad_writes_nothing_and_returns_true(case, dtype, where, value):
    hyper, params, grads, states = setup(case, dtype)
    tensor, index = POSITIONS[where]
    grads[tensor][index] = BAD_VALUES[value]
    before = all_bytes(params, grads, states)
    assert run(case, hyper, params, grads, states, skip_nonfinite=True) is True
    assert all_bytes(params, grads, states) == before
    assert run(case, hyper, params, grads, states, skip_nonfinite=True, grad_scale=4.0) is True
    assert all_bytes(params, grads, states) == before


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_grad_overflowing_when_unscaled_counts_as_nonfinite(case):
    """found_inf looks at grad / grad_scale, the value the update would use: a finite float32
    gradient divided by a scale below 1 can overflow to Inf."""
    hyper, params, grads, states = setup(case, np.float32)
    grads[0][3] = np.float32(3e38)
    assert run(case, hyper, params, grads, states, skip_nonfinite=True) is False  # finite as given
    hyper, params, grads, states = setup(case, np.float32)
    grads[0][3] = np.float32(3e38)
    before = all_bytes(params, grads, states)
    assert run(case, hyper, params, grads, states, skip_nonfinite=True, grad_scale=0.5) is True
    assert all_bytes(params, grads, states) == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_finite_call_with_skip_nonfinite_is_the_plain_call(case, dtype):
    hyper, params, grads, states = setup(case, dtype)
    twin_p, twin_s = [p.copy() for p in params], {s: [x.copy() for x in xs] for s, xs in states.items()}
    assert run(case, hyper, params, grads, states, skip_nonfinite=True) is False
    assert run(case, hyper, twin_p, grads, twin_s) is False
    assert all_bytes(params, [], states) == all_bytes(twin_p, [], twin_s)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_without_skip_nonfinite_a_nan_goes_through(case):
    """The control: without the flag the update runs (and the NaN reaches its parameter)."""
    hyper, params, grads, states = setup(case, np.float64)
    grads[0][0] = np.nan
    assert run(case, hyper, params, grads, states) is False
    if case.name == "lamb":  # (the tensor's trust ratio comes from its norms: the NaN reaches all of it)
        assert np.isnan(params[0]).all() and np.isfinite(params[1]).all()
        return
    assert np.isnan(params[0][0]) and np.isfinite(params[0][1:]).all()


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_grad_scale_is_a_value_error(case, bad):
    hyper, params, grads, states = setup(case, np.float64, sizes=[5])
    before = all_bytes(params, grads, states)
    with pytest.raises(ValueError, match="grad_scale"):
        run(case, hyper, params, grads, states, grad_scale=bad)
    assert all_bytes(params, grads, states) == before


@pytest.mark.parametrize("bad", [1e39, 1e-50])
def test_grad_scale_outside_float32_range_is_a_value_error(bad):
    case = CASES[-1]
    hyper, params, grads, states = setup(case, np.float32, sizes=[5])
    before = all_bytes(params, grads, states)
    with pytest.raises(ValueError, match="grad_scale"):
        run(case, hyper, params, grads, states, grad_scale=bad)
    assert all_bytes(params, grads, states) == before


@pytest.mark.parametrize("bad", [None, "1", [1.0]])
def test_grad_scale_and_flag_types(bad):
    case = CASES[-1]
    hyper, params, grads, states = setup(case, np.float64, sizes=[5])
    with pytest.raises(TypeError, match="grad_scale"):
        run(case, hyper, params, grads, states, grad_scale=bad)
    with pytest.raises(TypeError, match="skip_nonfinite"):
        run(case, hyper, params, grads, states, skip_nonfinite=bad)


# ------------------------------------------------------------------------------------ the classes

OPTIMIZERS = {"SGD": dict(lr=0.1, momentum=0.9), "Adagrad": dict(lr=0.1), "RMSprop": dict(lr=0.01, centered=True,
              momentum=0.5), "Adam": dict(lr=0.01, amsgrad=True), "AdamW": dict(lr=0.01)}


def make_optimizer(name, seed=0):
    """Two groups and two dtypes: one step is several kernel calls."""
    rng = np.random.default_rng(seed)
    a = [rng.standard_normal(s).astype(np.float32) for s in (7, 70_000)]
    b = [rng.standard_normal(s) for s in (3, 131_075)]
    opt = getattr(optim, name)([{"params": a}, {"params": b, "lr": 0.002}], **OPTIMIZERS[name])
    return opt, a + b


def grads_like(params, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def opt_bytes(opt, params):
    state = [(i, k, v.tobytes() if isinstance(v, np.ndarray) else v) for i, s in sorted(opt.state.items())
             for k, v in sorted(s.items())]
    return [p.tobytes() for p in params], state


@pytest.mark.parametrize("where", [(0, 0), (3, -1), (1, 65_536)], ids=["first", "last", "second-chunk"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_class_step_skips_everything_on_a_nonfinite_grad(name, where):
    opt, params = make_optimizer(name)
    opt.step(grads_like(params, 1))
    before = opt_bytes(opt, params)
    grads = grads_like(params, 2)
    grads[where[0]][where[1]] = np.inf
    assert opt.step(grads, skip_nonfinite=True) is True
    assert opt_bytes(opt, params) == before  # params, state arrays and step counts
    # and the next finite step is the one an optimizer that never saw the bad step takes
    twin, twin_params = make_optimizer(name)
    twin.step(grads_like(twin_params, 1))
    assert opt.step(grads_like(params, 3), skip_nonfinite=True) is False
    twin.step(grads_like(twin_params, 3))
    assert opt_bytes(opt, params) == opt_bytes(twin, twin_params)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_class_skipped_first_step_creates_no_state(name):
    opt, params = make_optimizer(name)
    grads = grads_like(params, 2)
    grads[2][0] = np.nan
    assert opt.step(grads, skip_nonfinite=True) is True
    assert opt.state == {}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_class_grad_scale_equals_prescaled_grads(name):
    opt, params = make_optimizer(name)
    twin, twin_params = make_optimizer(name)
    for seed in (1, 2):
        grads = grads_like(params, seed)
        assert opt.step([g * g.dtype.type(512.0) for g in grads], grad_scale=512.0) is False
        twin.step(grads)
    assert opt_bytes(opt, params) == opt_bytes(twin, twin_params)


@pytest.mark.parametrize("bad,error", [(0.0, ValueError), (-2.0, ValueError), (np.nan, ValueError),
                                       (1e39, ValueError), ("2", TypeError), (True, TypeError)])
def test_class_bad_grad_scale_changes_nothing(bad, error):
    opt, params = make_optimizer("Adam")
    opt.step(grads_like(params, 1))
    before = opt_bytes(opt, params)
    with pytest.raises(error, match="grad_scale"):
        opt.step(grads_like(params, 2), grad_scale=bad)
    assert opt_bytes(opt, params) == before


# A list mixing tensors under a chunk (handed whole to the threads in turn) with tensors cut into one
# range per thread (csrc/cpu/parallel.h, chunks_by_thread): the pre-pass reads each thread's list.
MIXED_SIZES = [100, 70_001, 5, 65_536, 200_003, 1_000, 131_137]


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_nonfinite_grad_is_found_in_any_threads_range(case, threads):
    hyper, params, grads, states = setup(case, np.float32, seed=threads, sizes=MIXED_SIZES)
    before_threads = fastopt.get_num_threads()
    fastopt.set_num_threads(threads)
    try:
        before = all_bytes(params, grads, states)
        for k, n in enumerate(MIXED_SIZES):
            # the ends of every tensor, and each thread's cut in the large ones (about t * n / threads)
            for index in {0, n - 1, *(min(n - 1, t * n // threads + d) for t in range(1, threads) for d in (-1, 0))}:
                good = grads[k][index]
                grads[k][index] = np.nan
                assert run(case, hyper, params, grads, states, skip_nonfinite=True) is True, (k, index)
                grads[k][index] = good
                assert all_bytes(params, grads, states) == before, (k, index)
        assert run(case, hyper, params, grads, states, skip_nonfinite=True) is False
        assert all_bytes(params, grads, states) != before
    finally:
        fastopt.set_num_threads(before_threads)


def compact_adamw_problem(form: str, seed: int):
    """AdamW operands over MIXED_SIZES in one of the compact forms: bfloat16 state (float32 params and grads),
    bfloat16 params, grads and state, or 8-bit state (fastopt.QuantizedState)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32) for n in MIXED_SIZES]
    grads = [rng.standard_normal(n).astype(np.float32) for n in MIXED_SIZES]
    if form == "int8-state":
        return params, grads, [fastopt.QuantizedState.zeros(n, True) for n in MIXED_SIZES], \
            [fastopt.QuantizedState.zeros(n, False) for n in MIXED_SIZES]
    bf16 = pytest.importorskip("ml_dtypes").bfloat16
    if form == "bf16-all":
        params, grads = [p.astype(bf16) for p in params], [g.astype(bf16) for g in grads]
    return params, grads, [np.zeros(n, bf16) for n in MIXED_SIZES], [np.zeros(n, bf16) for n in MIXED_SIZES]


def compact_bytes(*groups):
    out = []
    for group in groups:
        for a in group:
            parts = (a.codes, a.absmax) if isinstance(a, fastopt.QuantizedState) else (a,)
            out += [np.asarray(x).tobytes() for x in parts]
    return out


@pytest.mark.parametrize("grad_scale", [1.0, 4.0])
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("form", ["bf16-state", "bf16-all", "int8-state"])
def test_compact_state_nonfinite_grad_is_found_in_any_threads_range(form, threads, grad_scale):
    params, grads, m, v = compact_adamw_problem(form, seed=threads)
    before_threads = fastopt.get_num_threads()
    fastopt.set_num_threads(threads)
    try:
        before = compact_bytes(params, grads, m, v)
        for k, n in enumerate(MIXED_SIZES):
            for index in {0, n - 1, *(min(n - 1, t * n // threads + d) for t in range(1, threads) for d in (-1, 0))}:
                good = grads[k][index]
                grads[k][index] = np.inf
                assert fastopt.adamw_(params, grads, m, v, lr=1e-3, step=1, skip_nonfinite=True,
                                      grad_scale=grad_scale) is True, (k, index)
                grads[k][index] = good
                assert compact_bytes(params, grads, m, v) == before, (k, index)
        assert fastopt.adamw_(params, grads, m, v, lr=1e-3, step=1, skip_nonfinite=True,
                              grad_scale=grad_scale) is False
        assert compact_bytes(params, grads, m, v) != before
    finally:
        fastopt.set_num_threads(before_threads)
