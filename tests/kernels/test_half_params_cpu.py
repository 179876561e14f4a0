"""float16 and bfloat16 parameters on the CPU: sgd_, adagrad_, rmsprop_, adam_ and adamw_ read half params
and grads, do the math in float32 with float32 optimizer state, and write the params back rounded to nearest
even (csrc/cpu/storage.h, csrc/include/fastopt/fp16.h).

The float16 conversions are checked against NumPy's (IEEE round-to-nearest-even): widening on every bit
pattern, narrowing on float32 values that include the ties, the overflow threshold and the subnormals.
Each optimizer is checked one step at a time against fastopt.reference in float64, started from the
kernel's own params and state, so that a rounding flip of one step cannot grow into the next.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
import fastopt.reference as ref

try:
    import torch
except ImportError:  # (bfloat16 arrays come from torch; float16 ones from NumPy)
    torch = None

DTYPES = ["float16", pytest.param("bfloat16", marks=pytest.mark.skipif(torch is None, reason="needs torch"))]


def half_array(values: np.ndarray, dtype: str):
    """values rounded to `dtype` (NumPy float16, or a torch bfloat16 tensor, RNE both)."""
    if dtype == "float16":
        return values.astype(np.float16)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(torch.bfloat16)


def as_f64(a) -> np.ndarray:
    return a.to(torch.float64).numpy() if torch is not None and isinstance(a, torch.Tensor) else a.astype(np.float64)


def bits(a) -> np.ndarray:
    """The 16-bit patterns of a half array, as int32 (adjacent values of one sign differ by 1)."""
    if torch is not None and isinstance(a, torch.Tensor):
        return a.view(torch.int16).numpy().astype(np.int32)
    return a.view(np.int16).astype(np.int32)


# ---------------------------------------------------------------- the float16 conversions


def test_every_float16_value_survives_a_step_that_changes_nothing():
    # lr * 0 gradient: each finite pattern is widened and narrowed back unchanged (+-0 included), NaN stays
    # NaN. (+-Inf are left out: weight_decay * p with weight_decay = 0 is NaN there, in every dtype.)
    p = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    p = p[~np.isinf(p)].copy()
    before = p.copy()
    fastopt.sgd_(p, np.zeros_like(p), lr=0.5)
    nan = np.isnan(before)
    assert np.array_equal(p.view(np.uint16)[~nan], before.view(np.uint16)[~nan])
    assert np.isnan(p[nan]).all()


@pytest.mark.parametrize("lr", [2.0 ** k for k in range(-30, 12, 3)] + [0.1, 3e-4, 7.0])
def test_float16_rounding_matches_numpy(lr):
    # p - lr * g in float32 (exactly what NumPy computes for float32 operands), then rounded: the sums of
    # halves of different exponents have more than 11 significant bits, so ties, carries into the
    # exponent, subnormal results and overflow to Inf all occur over the sweep of lr.
    rng = np.random.default_rng(int(np.log2(lr) * 10) % 1000)
    p = np.clip(rng.standard_normal(200_000) * rng.choice([1e-7, 1e-3, 1.0, 300.0, 3e4], 200_000), -6e4, 6e4)
    p = p.astype(np.float16)  # (finite: see the test above)
    g = (rng.standard_normal(200_000) * rng.choice([1e-6, 1.0, 1e3], 200_000)).astype(np.float16)
    with np.errstate(over="ignore"):  # (overflow to Inf is one of the cases)
        expected = (p.astype(np.float32) + np.float32(-lr) * g.astype(np.float32)).astype(np.float16)
    fastopt.sgd_(p, g, lr=lr)
    assert np.array_equal(p.view(np.uint16), expected.view(np.uint16))


def float32_values_to_round():
    """Positive float32 values around every rounding boundary float16 has: the midpoints between
    neighbours (ties), one float32 ulp either side, the overflow threshold and the subnormal range."""
    halves = np.arange(1, 0x7C00, 7, dtype=np.uint16).view(np.float16).astype(np.float32)
    nxt = np.nextafter(halves.astype(np.float16), np.float16(np.inf)).astype(np.float32)
    mid = (halves.astype(np.float64) + nxt.astype(np.float64)) / 2  # exact in float32 (12 significant bits)
    mid = mid.astype(np.float32)
    special = np.array([65504, 65519.996, 65520, 65536, 1e9, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25,
                        2.0 ** -26, 1e-30, 2.0 ** -14, 2.0 ** -14 - 2.0 ** -25], np.float32)
    return np.concatenate([mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(np.inf)), special])


def test_float16_rounding_of_chosen_float32_values():
    # With p = 0, g = 1 and maximize=True the step writes exactly float32(lr), rounded: one call per value.
    values = float32_values_to_round()
    rng = np.random.default_rng(3)
    values = values[rng.permutation(values.size)[:3000]]
    got = np.empty(values.size, np.float16)
    for i, v in enumerate(values):
        p = np.zeros(1, np.float16)
        fastopt.sgd_(p, np.ones(1, np.float16), lr=float(v), maximize=True)
        got[i] = p[0]
    with np.errstate(over="ignore"):  # (overflow to Inf is one of the cases)
        expected = values.astype(np.float16)
    assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))


# ---------------------------------------------------------------- the optimizers, one step at a time

CASES = {
    "sgd": dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False),
    "sgd-nesterov": dict(lr=0.05, momentum=0.8, weight_decay=0.0, nesterov=True, maximize=True),
    "adagrad": dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, eps=1e-10),
    "rmsprop": dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.01, momentum=0.5, centered=True),
    "adam": dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=True),
    "adamw": dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=0.1, amsgrad=False),
}
STATE = {"sgd": ["momentum_buffers"], "adagrad": ["state_sums"],
         "rmsprop": ["square_avgs", "momentum_buffers", "grad_avgs"],
         "adam": ["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"], "adamw": ["exp_avgs", "exp_avg_sqs"]}


def reference_step(name, p, g, state, hyper, step):
    """fastopt.reference's step in float64 from float64 params, grads and state: (param, [state...])."""
    kind = name.split("-")[0]
    if kind == "sgd":
        new_p, buf = ref.sgd(p, g, None if step == 1 else state[0], step=step, **hyper)
        return new_p, [buf]
    if kind == "adagrad":
        new_p, s = ref.adagrad(p, g, state[0], step=step, **hyper)
        return new_p, [s]
    if kind == "rmsprop":
        new_p, sq, buf, ga = ref.rmsprop(p, g, *state, **hyper)
        return new_p, [sq, buf, ga]
    fn = ref.adam if kind == "adam" else ref.adamw
    out = fn(p, g, *state[:2], state[2] if len(state) > 2 else None, step=step, **hyper)
    return out[0], [x for x in out[1:] if x is not None]


def kernel_step(name, params, grads, state, hyper, step):
    kind = name.split("-")[0]
    keys = STATE[kind]
    kwargs = dict(hyper)
    if kind == "sgd":
        fastopt.sgd_(params, grads, state[0], step=step, **kwargs)
    elif kind == "adagrad":
        fastopt.adagrad_(params, grads, state[0], step=step, **kwargs)
    elif kind == "rmsprop":
        fastopt.rmsprop_(params, grads, *state, **kwargs)
    else:
        getattr(fastopt, kind + "_")(params, grads, *state, step=step, **kwargs)
    assert len(state) == len(keys)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_each_step_against_the_reference(name, dtype):
    rng = np.random.default_rng(7)
    n = 4000
    params = half_array(rng.standard_normal(n), dtype)
    kind = name.split("-")[0]
    state = [np.zeros(n, np.float32) for _ in STATE[kind]]
    hyper = CASES[name]
    flips = 0
    for step in range(1, 6):
        grads = half_array(rng.standard_normal(n), dtype)
        start_p, start_state = as_f64(params), [s.astype(np.float64) for s in state]
        expected_p, expected_state = reference_step(name, start_p, as_f64(grads), start_state, hyper, step)
        before = params.clone() if torch is not None and isinstance(params, torch.Tensor) else params.copy()
        kernel_step(name, params, grads, state, hyper, step)
        # State: float32 math against float64.
        for got, want in zip(state, expected_state):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
        # Params: the float64 result rounded, or (where float32 and float64 land either side of a rounding
        # boundary) its neighbour; such flips are rare.
        want = half_array(expected_p, dtype)
        diff = np.abs(bits(params) - bits(want))
        assert diff.max() <= 1, (step, np.flatnonzero(diff > 1)[:5])
        flips += int((diff == 1).sum())
        assert not np.array_equal(bits(params), bits(before)), "the step wrote nothing"
    assert flips <= 0.01 * n * 5, flips


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_instruction_set_and_thread_count_writes_the_same_bits(dtype):
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(300_007) * 3
    g0 = rng.standard_normal(300_007)
    before_threads, before_isa = fastopt.get_num_threads(), fastopt.build_info()["cpu_isa"]
    results = {}
    try:
        for threads in (1, 2):
            fastopt.set_num_threads(threads)
            for isa in fastopt.build_info()["cpu_isas_supported"]:
                fastopt.set_cpu_isa(isa)
                p, g = half_array(p0, dtype), half_array(g0, dtype)
                m, v = np.zeros(p0.size, np.float32), np.zeros(p0.size, np.float32)
                buf = np.zeros(p0.size, np.float32)
                for step in (1, 2):
                    fastopt.adamw_(p, g, m, v, lr=0.01, step=step)
                    fastopt.sgd_(p, g, buf, lr=0.01, momentum=0.9, nesterov=True, step=step)
                results[(threads, isa)] = (bits(p).tobytes(), m.tobytes(), v.tobytes(), buf.tobytes())
    finally:
        fastopt.set_num_threads(before_threads)
        fastopt.set_cpu_isa(before_isa)
    first = next(iter(results.values()))
    assert all(r == first for r in results.values()), [k for k, r in results.items() if r != first]


def test_nan_payloads_are_written_alike_by_every_instruction_set():
    # avx2/avx512 convert float16 with the CPU's F16C instructions, the baseline with integer operations:
    # both keep a NaN's sign and top payload bits and set its quiet bit, for every NaN pattern.
    nans = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    nans = nans[((nans & 0x7C00) == 0x7C00) & ((nans & 0x3FF) != 0)]
    before_isa = fastopt.build_info()["cpu_isa"]
    results = {}
    try:
        for isa in fastopt.build_info()["cpu_isas_supported"]:
            fastopt.set_cpu_isa(isa)
            p = nans.view(np.float16).copy()
            fastopt.sgd_(p, np.ones_like(p), lr=0.5)
            results[isa] = p.view(np.uint16).copy()
    finally:
        fastopt.set_cpu_isa(before_isa)
    first = next(iter(results.values()))
    assert np.isnan(first.view(np.float16)).all()
    assert ((first & 0x0200) != 0).all() and np.array_equal(first & 0x81FF, nans & 0x81FF)
    for isa, got in results.items():
        assert np.array_equal(got, first), isa


def test_half_params_take_float32_state_only():
    p = np.ones(4, np.float16)
    with pytest.raises(TypeError, match=r"momentum_buffers\[0\] has dtype float16 but params\[0\] has float16; "
                                        r"its optimizer state must be float32"):
        fastopt.sgd_(p, np.ones(4, np.float16), np.zeros(4, np.float16), lr=0.1, momentum=0.9, step=1)
    assert np.array_equal(p, np.ones(4, np.float16))
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float32 but params\[0\] has float16"):
        fastopt.adagrad_(p, np.ones(4, np.float32), np.zeros(4, np.float32), lr=0.1, step=1)
    assert np.array_equal(p, np.ones(4, np.float16))


def test_skip_nonfinite_reads_half_gradients():
    p = np.ones(8, np.float16)
    g = np.ones(8, np.float16)
    g[5] = np.inf
    m, v = np.zeros(8, np.float32), np.zeros(8, np.float32)
    assert fastopt.adam_(p, g, m, v, lr=0.1, step=1, skip_nonfinite=True) is True
    assert np.array_equal(p, np.ones(8, np.float16)) and not m.any() and not v.any()
    # a finite half gradient that overflows float16 once unscaled is still finite in float32: not skipped
    g[5] = np.float16(60000)
    assert fastopt.adam_(p, g, m, v, lr=0.1, step=1, skip_nonfinite=True, grad_scale=0.5) is False
    assert not np.array_equal(p, np.ones(8, np.float16))
