"""8-bit blockwise state (fastopt.QuantizedState, bitsandbytes' layout) for every element-wise rule (issue 18:
"every optimizer that has state"; the rules of csrc/include/fastopt/registry.h, their one loop over 8-bit
state, csrc/cpu/rule_int8_loops.h).

The cases are the kernel table's (kernel_cases.RULE_CASES), so a rule added to the registry is tested here
without an edit. Witnesses, as for the classic four (test_int8_state_classic.py): each step is "read the state
back (quant8_reference.dequantize), fastopt's float32 kernel on float32 copies, quantise the new state
(quant8_reference.quantize)", bit for bit; each rule's NumPy reference (fastopt/references) in float64 for the
numbers. The map of each state operand comes from the rule's description (non_negative: either map, the
unsigned one by default; the others the signed one), and the description itself is checked against the
references: a state declared non-negative never goes negative, the others do."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import _quantized
from isa_sweep import assert_same_everywhere
from kernel_cases import RULE_CASES, draw_hyper, kernel_kwargs
from quant8_reference import dequantize, quantize

S, U = _quantized.SIGNED_MAP, _quantized.UNSIGNED_MAP
REGISTRY = {r["function"]: r for r in fastopt._core._rule_registry()}
INT8 = [c for c in RULE_CASES if REGISTRY[c.kernel.__name__]["int8_state"]]
CONFIGS = [(c, config) for c in INT8 for config in c.configs]
IDS = [f"{c.name}-{config}" for c, config in CONFIGS]
SIZES = [1, 255, 256, 1000, 300007]  # (300007: past the threading threshold, a ragged last block)


def non_negative(case):
    return set(REGISTRY[case.kernel.__name__]["non_negative"])


def signed_of(case, state, maps):
    """The map a state operand takes: "own" (unsigned for a non-negative state) or "signed" (for all)."""
    return maps == "signed" or state not in non_negative(case)


def qmap(signed):
    return S if signed else U


def start_values(case, state, hyper, n, rng):
    """float32 starting state, nonzero so that the first step reads it: around the case's initial value,
    never negative where the rule says so."""
    noise = rng.standard_normal(n).astype(np.float32) * np.float32(0.1)
    base = np.float32(case.initial_state(state, hyper))
    return base + (np.abs(noise) if state in non_negative(case) else noise)


def run(case, hyper, params, grads, state, step, **extra):
    kw = dict(kernel_kwargs(case, hyper), **extra)
    if case.takes_step:
        kw["step"] = step
    return case.kernel(params, grads, *state, **kw)


def quantized_start(case, hyper, n, rng, maps="own"):
    """(QuantizedState per state operand or None, reference (codes, absmax) per operand or None)."""
    used = case.used_states(hyper)
    states, codes = [], []
    for s in case.states:
        if s not in used:
            states.append(None)
            codes.append(None)
            continue
        signed = signed_of(case, s, maps)
        c, a = quantize(start_values(case, s, hyper, n, rng), qmap(signed))
        states.append(fastopt.QuantizedState(c.copy(), a.copy(), signed))
        codes.append((c, a))
    return states, codes


def test_every_element_wise_rule_with_state_takes_8bit_state():
    # the registry's own answer, against what a rule is: LAMB (per-tensor sums) and Muon's apply pass
    # (no state) are the only ones without
    without = {name for name, r in REGISTRY.items() if not r["int8_state"]}
    assert without == {name for name, r in REGISTRY.items() if r["tensor_sums"] or len(r["operands"]) == 2}
    assert {c.kernel.__name__ for c in INT8} == set(REGISTRY) - without


@pytest.mark.parametrize("case,config", CONFIGS, ids=IDS)
def test_the_states_declared_non_negative_are_those_the_reference_keeps_non_negative(case, config):
    # The declaration picks the map: a state wrongly declared non-negative would lose its sign to the
    # unsigned map. Over a few steps of the float64 reference from zero-mean data, each declared state stays
    # >= 0 and every other one goes negative somewhere.
    rng = np.random.default_rng(3)
    hyper = draw_hyper(case, config, rng)
    used = case.used_states(hyper)
    n = 2000
    p = rng.standard_normal(n)
    state = [np.full(n, case.initial_state(s, hyper), np.float64) for s in used]
    seen_negative = {s: False for s in used}
    for step in range(1, 6):
        out = case.reference(p, rng.standard_normal(n), *state, step=step, **kernel_kwargs(case, hyper))
        p, state = out[0], list(out[1:])
        for s, x in zip(used, state):
            seen_negative[s] |= bool((x < 0).any())
    for s in used:
        assert seen_negative[s] == (s not in non_negative(case)), s


# each case with its own maps, and those with a non-negative state also with the signed map for all (either
# map is taken there)
MAPPED = [(c, config, maps) for c, config in CONFIGS for maps in ("own", "signed")
          if maps == "own" or non_negative(c) & set(c.states)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case,config,maps", MAPPED, ids=[f"{c.name}-{config}-{maps}" for c, config, maps in MAPPED])
def test_each_step_is_the_float32_kernel_between_read_and_quantise(case, config, n, maps):
    rng = np.random.default_rng(n)
    hyper = draw_hyper(case, config, rng)
    p = rng.standard_normal(n).astype(np.float32)
    witness_p = p.copy()
    states, codes = quantized_start(case, hyper, n, rng, maps)
    signs = [signed_of(case, s, maps) for s in case.states]
    for step in range(1, 5):
        g = rng.standard_normal(n).astype(np.float32)
        floats = [dequantize(*x, qmap(sg)) if x is not None else None for x, sg in zip(codes, signs)]
        assert run(case, hyper, witness_p, g.copy(), floats, step) is False
        assert np.all(np.isfinite(witness_p)), step
        codes = [quantize(f, qmap(sg)) if f is not None else None for f, sg in zip(floats, signs)]
        assert run(case, hyper, p, g, states, step) is False
        assert np.array_equal(p.view(np.uint32), witness_p.view(np.uint32)), step
        for s, want, name in zip(states, codes, case.states):
            if s is not None:
                assert np.array_equal(s.absmax, want[1]), (step, name, "absmax")
                assert np.array_equal(s.codes, want[0]), (step, name, "codes")


@pytest.mark.parametrize("case,config", CONFIGS, ids=IDS)
def test_one_step_against_the_float64_reference(case, config):
    # From the same read-back state, the float64 reference's step: params within float32 rounding, and the new
    # state's codes the reference's quantisation of its state or a neighbour (a value on a decision bound may
    # fall either way between float32 and float64 arithmetic).
    rng = np.random.default_rng(4)
    hyper = draw_hyper(case, config, rng)
    n = 5003
    p = rng.standard_normal(n).astype(np.float32)
    states, codes = quantized_start(case, hyper, n, rng)
    used = [(s, c, signed_of(case, name, "own")) for s, c, name in zip(states, codes, case.states) if s is not None]
    for step in range(1, 4):
        g = rng.standard_normal(n).astype(np.float32)
        read = [dequantize(s.codes, s.absmax, qmap(sg)).astype(np.float64) for s, _, sg in used]
        expected = case.reference(p.astype(np.float64), g.astype(np.float64), *read, step=step,
                                  **kernel_kwargs(case, hyper))
        run(case, hyper, p, g, states, step)
        scale = max(1.0, float(np.abs(expected[0]).max()))
        assert np.allclose(p, expected[0], rtol=1e-5, atol=1e-6 * scale), step
        for (s, _, sg), want in zip(used, expected[1:]):
            want_codes, want_absmax = quantize(want.astype(np.float32), qmap(sg))
            assert np.allclose(s.absmax, want_absmax, rtol=1e-5, atol=0), step
            assert np.abs(s.codes.astype(int) - want_codes.astype(int)).max() <= 1, step


@pytest.mark.parametrize("case", INT8, ids=[c.name for c in INT8])
def test_same_bits_at_every_thread_count_and_instruction_set(case):
    config = list(case.configs)[-1]
    hyper = draw_hyper(case, config, np.random.default_rng(5))
    n = 300007

    def once():
        rng = np.random.default_rng(6)
        p = rng.standard_normal(n).astype(np.float32)
        states, _ = quantized_start(case, hyper, n, rng)
        for step in (1, 2):
            run(case, hyper, p, rng.standard_normal(n).astype(np.float32), states, step)
        return p.tobytes() + b"".join(s.codes.tobytes() + s.absmax.tobytes() for s in states if s is not None)

    assert_same_everywhere(once)


def _snapshot(p, states):
    return [p.copy()] + [x.copy() for s in states if s is not None for x in (s.codes, s.absmax)]


def _unchanged(before, p, states):
    after = _snapshot(p, states)
    return all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after))


@pytest.mark.parametrize("case", INT8, ids=[c.name for c in INT8])
def test_found_inf_and_nonfinite_gradients_write_nothing(case):
    rng = np.random.default_rng(7)
    hyper = draw_hyper(case, list(case.configs)[0], rng)
    n = 1000
    p = rng.standard_normal(n).astype(np.float32)
    states, _ = quantized_start(case, hyper, n, rng)
    g = rng.standard_normal(n).astype(np.float32)
    before = _snapshot(p, states)
    assert run(case, hyper, p, g, states, 1, found_inf=1.0) is True
    assert _unchanged(before, p, states)
    g[17] = np.inf
    assert run(case, hyper, p, g, states, 1, skip_nonfinite=True) is True
    assert _unchanged(before, p, states)
    # and grad_scale unscales: the same bits as the unscaled gradient
    g[17] = 0.5
    p2, states2 = p.copy(), [None if s is None else fastopt.QuantizedState(s.codes.copy(), s.absmax.copy(), s.signed)
                             for s in states]
    run(case, hyper, p, g * np.float32(4.0), states, 1, grad_scale=4.0)
    run(case, hyper, p2, g, states2, 1)
    assert np.array_equal(p, p2)


def _case(name):
    return next(c for c in INT8 if c.name == name)


def test_bad_input_is_refused_by_name_with_nothing_written():
    case = _case("nadam")
    rng = np.random.default_rng(8)
    hyper = draw_hyper(case, "plain", rng)
    n = 1000
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    states, _ = quantized_start(case, hyper, n, rng)
    m, v = states
    before = _snapshot(p, states)
    unsigned_m = fastopt.QuantizedState(m.codes.copy(), m.absmax.copy(), False)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] is an unsigned QuantizedState.*signed map"):
        run(case, hyper, p, g, [unsigned_m, v], 1)
    with pytest.raises(TypeError, match=r"exp_avg_sqs\[0\] is a numpy.ndarray"):
        run(case, hyper, p, g, [m, np.zeros(n, np.float32)], 1)
    with pytest.raises(ValueError, match="stochastic_rounding=True rounds bfloat16 values"):
        run(case, hyper, p, g, states, 1, stochastic_rounding=True)
    with pytest.raises(TypeError, match=r"params\[0\] has dtype float64; with 8-bit state params and grads are "
                                        "float32"):
        run(case, hyper, p.astype(np.float64), g, states, 1)
    short = fastopt.QuantizedState(v.codes.copy(), v.absmax[:-1].copy(), False)
    with pytest.raises(ValueError, match=r"exp_avg_sqs\[0\].absmax has shape"):
        run(case, hyper, p, g, [m, short], 1)
    with pytest.raises(ValueError, match="grad_scale"):
        run(case, hyper, p, g, states, 1, grad_scale=-1.0)
    assert _unchanged(before, p, states)
    # the rules without an 8-bit loop refuse it by name
    lamb = next(c for c in RULE_CASES if c.name == "lamb")
    with pytest.raises(TypeError, match=r"lamb_\(\) takes no fastopt.QuantizedState: its per-tensor sums"):
        fastopt.lamb_(p, g, m, v, step=1)
    assert _unchanged(before, p, states)
    assert lamb.kernel is fastopt.lamb_
