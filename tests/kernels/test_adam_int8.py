"""fastopt.adam_ / adamw_ with 8-bit blockwise state (fastopt.QuantizedState): each step is "read the
state back, the float32 kernel's update, quantise the new state" (the float32 kernel itself and the NumPy
reference of quantisation as witnesses), the same bits for every thread count and instruction set, close
to exact float64 Adam and to bitsandbytes' AdamW8bit, and bad input refused with nothing written."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import _quantized
from quant8_reference import dequantize, quantize

S, U = _quantized.SIGNED_MAP, _quantized.UNSIGNED_MAP
SIZES = [1, 255, 256, 1000, 300007]


def problem(n, seed, amsgrad=False):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) * np.float32(10.0 ** rng.integers(-3, 2)) for _ in range(4)]
    states = [fastopt.QuantizedState.zeros(n, True), fastopt.QuantizedState.zeros(n, False)]
    if amsgrad:
        states.append(fastopt.QuantizedState.zeros(n, False))
    return p, grads, states


def kwargs_of(decoupled, amsgrad, maximize=False):
    return dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, amsgrad=amsgrad, maximize=maximize)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("decoupled, amsgrad, maximize", [(True, False, False), (False, True, False),
                                                           (True, True, True)])
def test_each_step_is_the_float32_kernel_between_read_and_quantise(n, decoupled, amsgrad, maximize):
    kernel = fastopt.adamw_ if decoupled else fastopt.adam_
    kw = kwargs_of(decoupled, amsgrad, maximize)
    p, grads, states = problem(n, n, amsgrad)
    witness_p = p.copy()
    codes = [(s.codes.copy(), s.absmax.copy()) for s in states]
    maps = [S, U, U][:len(states)]
    for step, g in enumerate(grads, start=1):
        kernel(p, g, states[0], states[1], states[2] if amsgrad else None, step=step, **kw)
        # the witness: dequantise (reference), the float32 kernel, quantise (reference)
        floats = [dequantize(c, a, m) for (c, a), m in zip(codes, maps)]
        kernel(witness_p, g, floats[0], floats[1], floats[2] if amsgrad else None, step=step, **kw)
        codes = [quantize(f, m) for f, m in zip(floats, maps)]
        assert np.array_equal(p, witness_p), step
        for s, (c, a) in zip(states, codes):
            assert np.array_equal(s.absmax, a) and np.array_equal(s.codes, c), step


def test_close_to_exact_adamw():
    """Over 30 steps the 8-bit run stays within the quantisation error of float64 AdamW."""
    n = 20_000
    p, _, (m8, v8) = problem(n, 7)
    rng = np.random.default_rng(8)
    exact = p.astype(np.float64)
    m = np.zeros(n)
    v = np.zeros(n)
    lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 0.01
    for t in range(1, 31):
        g = rng.standard_normal(n).astype(np.float32)
        fastopt.adamw_(p, g, m8, v8, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd, step=t)
        exact *= 1 - lr * wd
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g.astype(np.float64) ** 2
        exact -= lr / (1 - b1 ** t) * m / (np.sqrt(v / (1 - b2 ** t)) + eps)
    moved = np.abs(exact - np.random.default_rng(7).standard_normal(n).astype(np.float32))
    assert np.median(np.abs(p - exact)) < 0.05 * np.median(moved)
    # the first moment: each step adds at most half a code gap (0.7% of the block's absmax near the top)
    np.testing.assert_allclose(m8.dequantize(), m, atol=0.04 * np.abs(m).max())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_same_bits_for_every_thread_count_and_isa(threads):
    isa, before = fastopt.build_info()["cpu_isa"], fastopt.get_num_threads()
    try:
        results = []
        for chosen in fastopt.build_info()["cpu_isas_supported"]:
            fastopt.set_cpu_isa(chosen)
            fastopt.set_num_threads(threads)
            p, grads, states = problem(300007, 3, amsgrad=True)
            for step, g in enumerate(grads, start=1):
                fastopt.adam_(p, g, *states, step=step, **kwargs_of(False, True))
            results.append((p, [(s.codes, s.absmax) for s in states]))
        fastopt.set_num_threads(1)
        p1, grads, states1 = problem(300007, 3, amsgrad=True)
        for step, g in enumerate(grads, start=1):
            fastopt.adam_(p1, g, *states1, step=step, **kwargs_of(False, True))
        for p, st in results:
            assert np.array_equal(p, p1)
            for (c, a), s in zip(st, states1):
                assert np.array_equal(c, s.codes) and np.array_equal(a, s.absmax)
    finally:
        fastopt.set_cpu_isa(isa)
        fastopt.set_num_threads(before)


def test_lists_torch_tensors_and_skip_nonfinite():
    torch = pytest.importorskip("torch")
    sizes = [300, 5000]
    ps = [np.ones(n, np.float32) for n in sizes]
    gs = [np.full(n, 0.5, np.float32) for n in sizes]
    ms = [fastopt.QuantizedState(torch.from_numpy(fastopt.QuantizedState.zeros(n, True).codes),
                                 torch.zeros(_quantized.blocks(n)), True) for n in sizes]
    vs = [fastopt.QuantizedState.zeros(n, False) for n in sizes]
    fastopt.adamw_(ps, gs, ms, vs, lr=0.1, step=1)
    assert all(np.all(p < 1) for p in ps) and float(ms[1].absmax[0]) == pytest.approx(0.05)
    before = [p.copy() for p in ps], [m.codes.clone() for m in ms]
    gs[1][7] = np.nan
    assert fastopt.adamw_(ps, gs, ms, vs, lr=0.1, step=2, skip_nonfinite=True) is True
    assert all(np.array_equal(a, b) for a, b in zip(ps, before[0]))
    assert all(torch.equal(m.codes, c) for m, c in zip(ms, before[1]))


def test_bitsandbytes_adamw8bit_lands_close():
    """bitsandbytes.optim.AdamW8bit (its CPU path) from the same start: the parameters after 10 steps agree
    to a small part of how far they moved (bitsandbytes arranges the same formula differently, and its
    quantiser is not exactly nearest: see test_quant8)."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    n = 8192
    rng = np.random.default_rng(4)
    start = rng.standard_normal(n).astype(np.float32)
    p = start.copy()
    m, v = fastopt.QuantizedState.zeros(n, True), fastopt.QuantizedState.zeros(n, False)
    tp = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = bnb.optim.AdamW8bit([tp], lr=1e-2, weight_decay=0.01)
    for t in range(1, 11):
        g = rng.standard_normal(n).astype(np.float32)
        fastopt.adamw_(p, g, m, v, lr=1e-2, weight_decay=0.01, step=t)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    moved = np.abs(p - start).mean()
    assert np.abs(p - tp.detach().numpy()).mean() < 0.02 * moved


def _call(**change):
    n = 600
    args = dict(params=np.ones(n, np.float32), grads=np.ones(n, np.float32),
                exp_avgs=fastopt.QuantizedState.zeros(n, True), exp_avg_sqs=fastopt.QuantizedState.zeros(n, False))
    args.update(change)
    return args


@pytest.mark.parametrize("change, error, message", [
    (dict(exp_avg_sqs=fastopt.QuantizedState.zeros(600, True)), ValueError, r"exp_avg_sqs\[0\] is a signed"),
    (dict(exp_avgs=fastopt.QuantizedState.zeros(600, False)), ValueError, r"exp_avgs\[0\] is a unsigned|first moments"),
    (dict(exp_avg_sqs=np.zeros(600, np.float32)), TypeError, r"exp_avg_sqs\[0\] is a numpy.ndarray"),
    (dict(exp_avgs=fastopt.QuantizedState(np.zeros(600, np.int8), np.zeros(3, np.float32), True)), TypeError, "uint8"),
    (dict(exp_avgs=fastopt.QuantizedState(np.zeros(601, np.uint8), np.zeros(3, np.float32), True)), ValueError, "shape"),
    (dict(exp_avgs=fastopt.QuantizedState(np.zeros(600, np.uint8), np.zeros(2, np.float32), True)), ValueError, "blocks of 256"),
    (dict(exp_avgs=fastopt.QuantizedState(np.zeros(600, np.uint8), np.zeros(3, np.float64), True)), TypeError, "absmax is float32"),
    (dict(params=np.ones(600, np.float64), grads=np.ones(600, np.float64)), TypeError, r"params\[0\] has dtype float64"),
    (dict(grads=np.ones(599, np.float32)), ValueError, r"grads\[0\] has shape"),
])
def test_bad_input_is_refused_and_nothing_written(change, error, message):
    args = _call(**change)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else (v.codes.copy(), v.absmax.copy())) for k, v in args.items()}
    with pytest.raises(error, match=message):
        fastopt.adamw_(args["params"], args["grads"], args["exp_avgs"], args["exp_avg_sqs"], step=1)
    for k, v in args.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, before[k])
        else:
            assert np.array_equal(v.codes, before[k][0]) and np.array_equal(v.absmax, before[k][1])


def test_mixed_forms_shared_memory_amsgrad_and_rounding_are_refused():
    a = _call()
    m2 = fastopt.QuantizedState.zeros(600, True)
    with pytest.raises(TypeError, match=r"exp_avgs\[1\] is a numpy.ndarray"):
        fastopt.adamw_([a["params"], np.ones(600, np.float32)], [a["grads"], np.ones(600, np.float32)],
                       [m2, np.zeros(600, np.float32)], [a["exp_avg_sqs"], fastopt.QuantizedState.zeros(600, False)],
                       step=1)
    shared = fastopt.QuantizedState(a["exp_avgs"].codes, a["exp_avg_sqs"].absmax, False)
    with pytest.raises(ValueError, match=r"exp_avg_sqs.absmax\[0\] shares memory with exp_avgs.absmax\[0\]|exp_avgs.codes\[0\]"):
        fastopt.adamw_(a["params"], a["grads"], a["exp_avgs"], shared, step=1)
    with pytest.raises(ValueError, match="max_exp_avg_sqs is required"):
        fastopt.adamw_(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], amsgrad=True, step=1)
    with pytest.raises(ValueError, match="stochastic_rounding"):
        fastopt.adamw_(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], step=1, stochastic_rounding=True)
    assert np.all(a["params"] == 1) and np.all(a["exp_avgs"].absmax == 0)
