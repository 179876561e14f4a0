"""bfloat16 storage for every element-wise rule (issue 18: "every optimizer that has state"; the rules of
csrc/include/fastopt/registry.h, each its one generic loop, csrc/cpu/rule_bf16_loops.h): bfloat16 state with
float32 or bfloat16 params, bfloat16 params with float32 state, round-to-nearest-even or stochastic.

The cases are the kernel table's (kernel_cases.RULE_CASES: every registered rule, its configurations and its
random hyperparameters), so a rule added to the registry is tested here without an edit. Witnesses, as for
the classic four's (test_bf16_state_classic.py): fastopt's float32 kernel fed the widened values (the update
between load and store is the float32 kernel's, bit for bit), then ml_dtypes' round-to-nearest-even or the
stochastic rounding of bf16_reference.py (written from the definitions); each rule's NumPy reference
(fastopt/references, from torch's documented algorithms and the papers) in float64 for the numbers."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
import bf16_reference as ref
from kernel_cases import RULE_CASES, draw_hyper, kernel_kwargs
from isa_sweep import assert_same_everywhere

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16

SIZES = [0, 1, 7, 33, 1000, 300007]  # (300007: past the threading threshold, odd tails)
#: the rules with a loop over bfloat16 storage: all but those with per-tensor sums (LAMB's norms)
SUMS = {r["function"] for r in fastopt._core._rule_registry() if r["tensor_sums"]}
ELEMENT_WISE = [c for c in RULE_CASES if c.kernel.__name__ not in SUMS]
CONFIGS = [(c, config) for c in ELEMENT_WISE for config in c.configs]
IDS = [f"{c.name}-{config}" for c, config in CONFIGS]
#: (params, state) storage: every pairing with something bfloat16
FORMS = [(np.float32, BF16), (BF16, np.float32), (BF16, BF16)]
FORM_IDS = ["f32-params-bf16-state", "bf16-params-f32-state", "bf16-all"]


def bits(a) -> np.ndarray:
    return np.asarray(a).view(np.uint16)


def f32(a) -> np.ndarray:
    return np.asarray(a).astype(np.float32)


def fresh(case, hyper, rng, sizes, param_dtype, state_dtype):
    """params, grads of the params' storage; the state lists in kernel order (None: unused)."""
    params = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in sizes]
    used = case.used_states(hyper)
    state = [[np.full(n, case.initial_state(s, hyper), np.float32).astype(state_dtype) for n in sizes]
             if s in used else None for s in case.states]
    return params, state


def grads_of(rng, sizes, dtype):
    return [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in sizes]


def run(case, hyper, params, grads, state, step, **extra):
    kw = kernel_kwargs(case, hyper)
    if case.takes_step or extra.get("stochastic_rounding"):
        kw["step"] = step
    return case.kernel(params, grads, *state, **kw, **extra)


def widened(state):
    return [[f32(a) for a in s] if s is not None else None for s in state]


def _skip_stateless(case, state_dtype):
    if not case.states and state_dtype is BF16:
        pytest.skip(f"{case.name} keeps no state")


# ---------------------------------------------------------------- round-to-nearest-even

@pytest.mark.parametrize("param_dtype,state_dtype", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("case,config", CONFIGS, ids=IDS)
def test_bf16_storage_is_the_float32_kernel_then_round_to_nearest_even(case, config, param_dtype, state_dtype):
    _skip_stateless(case, state_dtype)
    rng = np.random.default_rng(1)
    hyper = draw_hyper(case, config, rng)
    params, state = fresh(case, hyper, rng, SIZES, param_dtype, state_dtype)
    for step in range(1, 4):
        grads = grads_of(rng, SIZES, param_dtype)
        wp, ws = [f32(p) for p in params], widened(state)
        run(case, hyper, wp, [f32(g) for g in grads], ws, step)
        assert run(case, hyper, params, grads, state, step) is False
        for k in range(len(SIZES)):
            if param_dtype is np.float32:
                assert np.array_equal(params[k].view(np.uint32), wp[k].view(np.uint32)), (step, k)
            else:
                assert np.array_equal(bits(params[k]), ref.round_nearest_even(wp[k])), (step, k)
            for got, want in zip(state, ws):
                if got is None:
                    continue
                if state_dtype is np.float32:
                    assert np.array_equal(got[k].view(np.uint32), want[k].view(np.uint32)), (step, k)
                else:
                    assert np.array_equal(bits(got[k]), ref.round_nearest_even(want[k])), (step, k)


@pytest.mark.parametrize("case,config", CONFIGS, ids=IDS)
def test_bf16_state_against_the_float64_reference(case, config):
    # One step from bfloat16 state: the float32 arithmetic's result rounded to bfloat16 (relative 2**-8)
    # against the reference's float64 step from the same (widened) values.
    _skip_stateless(case, BF16)
    rng = np.random.default_rng(2)
    hyper = draw_hyper(case, config, rng)
    n = 5003
    params, state = fresh(case, hyper, rng, [n], np.float32, BF16)
    for step in range(1, 4):
        g = grads_of(rng, [n], np.float32)
        used = [s[0] for s in state if s is not None]
        expected = case.reference(params[0].astype(np.float64), g[0].astype(np.float64),
                                  *[f32(s).astype(np.float64) for s in used], step=step, **kernel_kwargs(case, hyper))
        run(case, hyper, params, g, state, step)
        scale = max(1.0, float(np.abs(expected[0]).max()))
        assert np.allclose(params[0], expected[0], rtol=1e-4, atol=1e-5 * scale), step
        for got, want in zip(used, expected[1:]):
            assert np.allclose(f32(got), want, rtol=2**-8 + 1e-4, atol=1e-30), step


def test_bf16_params_with_float32_state_from_torch_give_the_numpy_bits():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    n = 777
    p = rng.standard_normal(n).astype(np.float32).astype(BF16)
    m = np.zeros(n, np.float32)
    tp, tm = torch.tensor(f32(p)).to(torch.bfloat16), torch.zeros(n)
    for step in (1, 2, 3):
        g = rng.standard_normal(n).astype(np.float32).astype(BF16)
        fastopt.lion_(p, g, m, lr=0.01, weight_decay=0.1, step=step, stochastic_rounding=True, seed=5)
        fastopt.lion_(tp, torch.tensor(f32(g)).to(torch.bfloat16), tm, lr=0.01, weight_decay=0.1, step=step,
                      stochastic_rounding=True, seed=5)
    assert np.array_equal(tp.view(torch.int16).numpy().view(np.uint16), bits(p))
    assert np.array_equal(tm.numpy(), m)


# ---------------------------------------------------------------- stochastic rounding

@pytest.mark.parametrize("param_dtype,state_dtype", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("case", ELEMENT_WISE, ids=[c.name for c in ELEMENT_WISE])
def test_stochastic_rounding_matches_the_numpy_reference(case, param_dtype, state_dtype):
    _skip_stateless(case, state_dtype)
    rng = np.random.default_rng(4)
    config = list(case.configs)[-1]
    hyper = draw_hyper(case, config, rng)
    sizes = [1000, 0, 300007]
    params, state = fresh(case, hyper, rng, sizes, param_dtype, state_dtype)
    seed = 2**64 - 7
    for step in (1, 2, 3):
        grads = grads_of(rng, sizes, param_dtype)
        wp, ws = [f32(p) for p in params], widened(state)
        run(case, hyper, wp, [f32(g) for g in grads], ws, step)
        run(case, hyper, params, grads, state, step, stochastic_rounding=True, seed=seed)
        ref.assert_rounded_stochastically(params, wp, param_dtype, state, ws, state_dtype, seed, step, sizes)


def test_stochastic_rounding_is_reproducible_and_changes_with_seed_and_step():
    n = 50000

    def one(seed, step, state_dtype=BF16):
        p = np.zeros(n, np.float32)
        m = np.full(n, 0.3, np.float32).astype(BF16).astype(state_dtype)
        extra = dict(stochastic_rounding=True, seed=seed) if state_dtype is BF16 else {}
        fastopt.adamax_(p, np.full(n, 1.2345678, np.float32), m, np.zeros(n, state_dtype), lr=0.1, step=step,
                        **extra)
        return m

    assert np.array_equal(bits(one(9, 1)), bits(one(9, 1)))
    assert not np.array_equal(bits(one(9, 1)), bits(one(10, 1)))
    assert not np.array_equal(bits(one(9, 1)), bits(one(9, 2)))
    # unbiased: the mean of the rounded exp_avg within 3 sigma of the float32 kernel's value, which lies
    # between the two bfloat16 values drawn
    exact = np.float64(one(9, 1, np.float32)[0])
    values = f32(one(9, 1)).astype(np.float64)
    lo, hi = np.unique(values)
    assert lo < exact < hi
    q = (exact - lo) / (hi - lo)
    assert abs(values.mean() - exact) < 3 * (hi - lo) * np.sqrt(q * (1 - q) / n)


def _digest_run(stochastic):
    rng = np.random.default_rng(6)
    sizes = [300007, 7, 131072 + 5]
    out = []
    for case in ELEMENT_WISE:
        hyper = draw_hyper(case, list(case.configs)[-1], rng)
        forms = FORMS if stochastic else [(np.float32, BF16), (BF16, BF16)]
        for param_dtype, state_dtype in forms:
            if not case.states and param_dtype is not BF16:
                continue  # (stateless: only bfloat16 params are bfloat16 storage)
            params, state = fresh(case, hyper, rng, sizes, param_dtype, state_dtype)
            for step in (1, 2):
                extra = dict(stochastic_rounding=True, seed=11) if stochastic else {}
                run(case, hyper, params, grads_of(rng, sizes, param_dtype), state, step, **extra)
            arrays = params + [a for s in state if s is not None for a in s]
            out.append(b"".join(np.asarray(a).tobytes() for a in arrays))
    return b"".join(out)


@pytest.mark.parametrize("stochastic", [False, True])
def test_same_bits_for_every_thread_count_and_instruction_set(stochastic):
    assert_same_everywhere(lambda: _digest_run(stochastic))


def test_skip_nonfinite_writes_nothing_and_grad_scale_unscales():
    rng = np.random.default_rng(7)
    n = 1001
    p = rng.standard_normal(n).astype(np.float32).astype(BF16)
    m, v = np.zeros(n, BF16), np.zeros(n, BF16)
    g = rng.standard_normal(n).astype(np.float32).astype(BF16)
    bad = g.copy()
    bad[500] = np.inf
    before = [bits(a).copy() for a in (p, m, v)]
    assert fastopt.nadam_(p, bad, m, v, step=1, skip_nonfinite=True) is True
    assert all(np.array_equal(bits(a), b) for a, b in zip((p, m, v), before))
    # grad_scale: the scaled gradient divided on the fly gives the unscaled call's bits (4 is exact)
    q, mq, vq = p.copy(), m.copy(), v.copy()
    fastopt.nadam_(p, g, m, v, step=1)
    fastopt.nadam_(q, (f32(g) * 4).astype(BF16), mq, vq, step=1, grad_scale=4.0)
    assert all(np.array_equal(bits(a), bits(b)) for a, b in ((p, q), (m, mq), (v, vq)))


# ---------------------------------------------------------------- bad input: a clear error, nothing written

def _snapshot(*groups):
    return [np.asarray(a).tobytes() for group in groups for a in group]


@pytest.mark.parametrize("case", ["lamb_bf16_state", "lamb_bf16_params", "lamb_rounding", "sr_without_step",
                                  "sr_float32", "mixed_state", "float64_params", "float16_params",
                                  "grads_dtype", "shape", "seed_negative", "step_none"])
def test_bad_input_raises_and_writes_nothing(case):
    rng = np.random.default_rng(8)
    p = [rng.standard_normal(5).astype(np.float32), rng.standard_normal(6).astype(np.float32)]
    g = [np.ones(5, np.float32), np.ones(6, np.float32)]
    m = [np.full(5, 0.5, np.float32).astype(BF16), np.full(6, 0.5, np.float32).astype(BF16)]
    v = [np.ones(5, BF16), np.ones(6, BF16)]
    kernel, kwargs = fastopt.radam_, dict(step=3)
    error, words = TypeError, None
    if case.startswith("lamb"):
        kernel = fastopt.lamb_
        if case == "lamb_bf16_params":
            p, g, m, v = [a.astype(BF16) for a in p], [a.astype(BF16) for a in g], \
                [a.astype(np.float32) for a in m], [a.astype(np.float32) for a in v]
        elif case == "lamb_rounding":
            m, v = [a.astype(np.float32) for a in m], [a.astype(np.float32) for a in v]
            kwargs = dict(step=3, stochastic_rounding=True)
        words = r"lamb_\(\) takes float32 or float64 arrays only: its per-tensor sums"
    elif case == "sr_without_step":  # (Adadelta reads no step; the rounding needs one)
        kernel, kwargs = fastopt.adadelta_, dict(stochastic_rounding=True)
        words = r"adadelta_\(stochastic_rounding=True\) needs step"
    elif case == "sr_float32":
        m, v = [a.astype(np.float32) for a in m], [a.astype(np.float32) for a in v]
        kwargs = dict(step=3, stochastic_rounding=True)
        error, words = ValueError, "stochastic_rounding=True, but nothing this call writes is bfloat16"
    elif case == "mixed_state":
        v = [a.astype(np.float32) for a in v]
        words = r"exp_avg_sqs\[0\] has dtype float32 but exp_avgs\[0\] has bfloat16"
    elif case == "float64_params":
        p, g = [a.astype(np.float64) for a in p], [a.astype(np.float64) for a in g]
        words = r"params\[0\] has dtype float64; bfloat16 optimizer state goes with float32 or bfloat16 params"
    elif case == "float16_params":
        p, g = [a.astype(np.float16) for a in p], [a.astype(np.float16) for a in g]
        m, v = [a.astype(np.float32) for a in m], [a.astype(np.float32) for a in v]
        words = r"params\[0\] has dtype float16; .*whose CPU kernels take bfloat16"
    elif case == "grads_dtype":
        p = [a.astype(BF16) for a in p]
        words = r"grads\[0\] has dtype float32 but params\[0\] has bfloat16"
    elif case == "shape":
        m[1] = np.zeros(7, BF16)
        error, words = ValueError, r"exp_avgs\[1\] has shape \(7,\) but params\[1\] has shape \(6,\)"
    elif case == "seed_negative":
        kwargs = dict(step=3, stochastic_rounding=True, seed=-1)
        error, words = ValueError, r"seed must be an int with 0 <= seed < 2\*\*64"
    elif case == "step_none":  # (RAdam reads its step: None is no step, as before)
        kwargs = dict(step=None)
        words = "step must be an int"
    before = _snapshot(p, m, v)
    with pytest.raises(error, match=words):
        kernel(p, g, m, v, **kwargs)
    assert _snapshot(p, m, v) == before
