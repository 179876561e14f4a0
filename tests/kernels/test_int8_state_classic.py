"""8-bit blockwise state (fastopt.QuantizedState, bitsandbytes' layout) for fastopt.sgd_, adagrad_ and
rmsprop_ on the CPU, as test_adam_int8.py tests Adam's.

Witnesses: each step is "read the state back (quant8_reference.dequantize), the float32 kernel on float32
copies, quantise the new state (quant8_reference.quantize)", bit for bit; fastopt.reference in float64 for
the numbers themselves (within the error 8-bit state adds, which a slightly wrong rule exceeds);
bitsandbytes' SGD8bit / Adagrad8bit / RMSprop8bit where it is installed. Then: the same bits for every
thread count and instruction set, grad_scale / found_inf / skip_nonfinite as in the float32 kernels,
torch tensors holding the state, and bad input refused by name with nothing written."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import _quantized, reference
from isa_sweep import assert_same_everywhere
from quant8_reference import dequantize, quantize

S, U = _quantized.SIGNED_MAP, _quantized.UNSIGNED_MAP
SIZES = [1, 255, 256, 1000, 300007]  # (300007: past the threading threshold, a ragged last block)


def qmap(signed):
    return S if signed else U


# Each case: the kernel's name, its state operands in kernel order ((name, signed) or None: not in use),
# and its hyperparameters.
CASES = {
    "sgd_momentum": ("sgd_", [("momentum_buffers", True)], dict(lr=0.05, momentum=0.9)),
    "sgd_nesterov_wd": ("sgd_", [("momentum_buffers", True)], dict(lr=0.05, momentum=0.9, nesterov=True,
                                                                   weight_decay=1e-2)),
    "sgd_dampening_wd_max": ("sgd_", [("momentum_buffers", True)], dict(lr=0.05, momentum=0.8, dampening=0.3,
                                                                        weight_decay=1e-2, maximize=True,
                                                                        grad_scale=4.0)),
    "adagrad_unsigned": ("adagrad_", [("state_sums", False)], dict(lr=0.05, lr_decay=0.01, weight_decay=1e-3)),
    "adagrad_signed_max": ("adagrad_", [("state_sums", True)], dict(lr=0.05, lr_decay=0.1, maximize=True,
                                                                    grad_scale=0.5)),
    "rmsprop_unsigned": ("rmsprop_", [("square_avgs", False), None, None], dict(lr=0.01)),
    "rmsprop_signed_wd": ("rmsprop_", [("square_avgs", True), None, None], dict(lr=0.01, alpha=0.9,
                                                                                weight_decay=1e-2)),
    "rmsprop_momentum": ("rmsprop_", [("square_avgs", False), ("momentum_buffers", True), None],
                         dict(lr=0.01, momentum=0.9, weight_decay=1e-2)),
    "rmsprop_centered": ("rmsprop_", [("square_avgs", False), None, ("grad_avgs", True)],
                         dict(lr=0.01, centered=True, maximize=True)),
    "rmsprop_centered_momentum": ("rmsprop_", [("square_avgs", True), ("momentum_buffers", True),
                                               ("grad_avgs", True)],
                                  dict(lr=0.01, momentum=0.9, centered=True, grad_scale=0.5)),
}


def initial_values(name, n, rng):
    """float32 starting state: nonzero, so that the first step reads it (except SGD's, whose step 1 must not:
    large garbage there); square averages >= 1 above grad averages' squares, so centered RMSprop stays real."""
    if name == "momentum_buffers":
        return (rng.standard_normal(n) * 0.1).astype(np.float32)
    if name == "state_sums":
        return np.abs(rng.standard_normal(n)).astype(np.float32)
    if name == "square_avgs":
        return (1.0 + np.abs(rng.standard_normal(n))).astype(np.float32)
    return (rng.standard_normal(n) * 0.1).astype(np.float32)  # grad_avgs


def run(case, params, grads, state, step, **extra):
    """One call of the case's kernel; state: one entry per operand (None where not in use)."""
    kernel, operands, hyper = CASES[case]
    kw = dict(hyper, **extra)
    if kernel != "rmsprop_":  # (rmsprop_ takes step too, but only stochastic rounding needs it)
        kw["step"] = step
    return getattr(fastopt, kernel)(params, grads, *state, **kw)


def quantized_start(case, n, rng, garbage_sgd=True):
    """(QuantizedState per operand or None, reference (codes, absmax) per operand or None)."""
    kernel, operands, _ = CASES[case]
    states, codes = [], []
    for op in operands:
        if op is None:
            states.append(None)
            codes.append(None)
            continue
        name, signed = op
        x = initial_values(name, n, rng)
        if kernel == "sgd_" and garbage_sgd:
            x = x * np.float32(1e4)  # step 1 overwrites the buffer with the gradient: none of this may show
        c, a = quantize(x, qmap(signed))
        states.append(fastopt.QuantizedState(c.copy(), a.copy(), signed))
        codes.append((c, a))
    return states, codes


def grad(rng, n):
    return (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 2)).astype(np.float32)


# ---------------------------------------------------------------- the float32 kernel between read and quantise

@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_step_is_the_float32_kernel_between_read_and_quantise(case, n):
    rng = np.random.default_rng(n)
    _, operands, _ = CASES[case]
    p = rng.standard_normal(n).astype(np.float32)
    witness_p = p.copy()
    states, codes = quantized_start(case, n, rng)
    for step in range(1, 5):
        g = grad(rng, n)
        # the witness: dequantise (reference), the float32 kernel on float32 arrays, quantise (reference)
        floats = [dequantize(*x, qmap(op[1])) if op else None for x, op in zip(codes, operands)]
        assert run(case, witness_p, g.copy(), floats, step) is False
        assert np.all(np.isfinite(witness_p)), step  # (the problem stays finite: the bits below mean something)
        codes = [quantize(f, qmap(op[1])) if op else None for f, op in zip(floats, operands)]
        assert run(case, p, g, states, step) is False
        assert np.array_equal(p.view(np.uint32), witness_p.view(np.uint32)), step
        for s, want, op in zip(states, codes, operands):
            if op is not None:
                assert np.array_equal(s.absmax, want[1]), (step, op[0], "absmax")
                assert np.array_equal(s.codes, want[0]), (step, op[0], "codes")


def test_sgd_step_one_does_not_read_the_buffer():
    """torch's first momentum step: buffer = gradient. Any starting buffer gives the same bits."""
    n = 1000
    rng = np.random.default_rng(5)
    p0, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    results = []
    for start in (fastopt.QuantizedState.zeros(n, True),
                  fastopt.QuantizedState(rng.integers(0, 256, n, dtype=np.uint8),
                                         np.full(_quantized.blocks(n), 1e6, np.float32), True),
                  fastopt.QuantizedState(np.zeros(n, np.uint8), np.full(_quantized.blocks(n), np.nan, np.float32),
                                         True)):
        p = p0.copy()
        fastopt.sgd_(p, g, start, lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01, step=1)
        results.append((p, start.codes, start.absmax))
    for p, c, a in results[1:]:
        assert np.array_equal(p, results[0][0]) and np.array_equal(c, results[0][1])
        assert np.array_equal(a, results[0][2])
    # and the buffer is the float32 kernel's (the gradient plus weight decay), quantised
    witness_p, buf = p0.copy(), np.full(n, np.nan, np.float32)
    fastopt.sgd_(witness_p, g, buf, lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01, step=1)
    c, a = quantize(buf, S)
    assert np.array_equal(results[0][0], witness_p)
    assert np.array_equal(results[0][1], c) and np.array_equal(results[0][2], a)
    # step 2 does read it: a different buffer gives different params
    p_a, p_b = p0.copy(), p0.copy()
    fastopt.sgd_(p_a, g, fastopt.QuantizedState.quantize(np.ones(n, np.float32)), lr=0.1, momentum=0.9, step=2)
    fastopt.sgd_(p_b, g, fastopt.QuantizedState.quantize(-np.ones(n, np.float32)), lr=0.1, momentum=0.9, step=2)
    assert not np.array_equal(p_a, p_b)


# ---------------------------------------------------------------- close to the exact float64 rule

# each: the case's kernel and hyperparameters, and a slightly wrong variant (the float64 rule's distance to
# it bounds what the 8-bit run may be off by)
EXACT = {
    "sgd": ("sgd_", "momentum_buffers", dict(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=1e-2),
            dict(momentum=0.88)),
    "sgd_nesterov": ("sgd_", "momentum_buffers", dict(lr=0.01, momentum=0.9, nesterov=True),
                     dict(momentum=0.88)),
    "adagrad": ("adagrad_", "state_sums", dict(lr=0.05, lr_decay=0.01, weight_decay=1e-2), dict(lr_decay=0.02)),
    "rmsprop": ("rmsprop_", "square_avgs", dict(lr=0.01, alpha=0.99, weight_decay=1e-2), dict(alpha=0.985)),
    "rmsprop_centered_momentum": ("rmsprop_", "square_avgs", dict(lr=0.001, alpha=0.99, momentum=0.9,
                                                                  centered=True), dict(momentum=0.88)),
}


def _exact_run(kind, start, grads, hyper):
    """30 steps of fastopt.reference in float64 (torch.optim's rules), state kept exactly."""
    kernel = EXACT[kind][0]
    p = start.astype(np.float64)
    n = p.size
    buf, total, sq, mom, ga = None, np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if kernel == "sgd_":
            p, buf = reference.sgd(p, g, buf, step=t, **hyper)
            state = buf
        elif kernel == "adagrad_":
            p, total = reference.adagrad(p, g, total, step=t, **hyper)
            state = total
        else:
            p, sq, mom2, ga2 = reference.rmsprop(p, g, sq, mom if hyper.get("momentum") else None,
                                                 ga if hyper.get("centered") else None, **hyper)
            mom = mom2 if mom2 is not None else mom
            ga = ga2 if ga2 is not None else ga
            state = sq
    return p, state


@pytest.mark.parametrize("kind, signed", [(k, s) for k in sorted(EXACT) for s in (False, True)
                                          if s or not k.startswith("sgd")])  # (a momentum buffer is signed)
def test_close_to_the_exact_float64_rule(kind, signed):
    kernel, main_state, hyper, wrong = EXACT[kind]
    n = 20_000
    rng = np.random.default_rng(7)
    start = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(30)]
    p = start.copy()
    state = {main_state: fastopt.QuantizedState.zeros(n, signed)}
    if kernel == "rmsprop_":
        state["momentum_buffers"] = fastopt.QuantizedState.zeros(n, True) if hyper.get("momentum") else None
        state["grad_avgs"] = fastopt.QuantizedState.zeros(n, True) if hyper.get("centered") else None
    for t, g in enumerate(grads, start=1):
        kw = dict(hyper) if kernel == "rmsprop_" else dict(hyper, step=t)
        assert getattr(fastopt, kernel)(p, g, *state.values(), **kw) is False
    exact, exact_state = _exact_run(kind, start, grads, hyper)
    off, _ = _exact_run(kind, start, grads, dict(hyper, **wrong))
    moved = np.median(np.abs(exact - start))
    err = np.median(np.abs(p - exact))
    wrong_err = np.median(np.abs(off - exact))
    # the 8-bit run: within a small part of how far the params moved (2% measured at most), and well inside
    # the distance to a slightly wrong rule (a fifth of it at most measured)
    assert err < 0.04 * moved, (err, moved)
    assert err < 0.3 * wrong_err, (err, wrong_err)
    # the state read back, relative to its block's absmax: each step's rounding moves it by at most half a
    # code gap (the unsigned map's largest gap is 0.007 of absmax; the signed map, which spends half its codes
    # on negative values a non-negative state never takes, 0.014), and Adagrad's sum keeps all 30 roundings:
    # measured at most 3% (unsigned) and 6% (signed), a median of 0.5% and 1%
    back = state[main_state].dequantize()
    diff = np.abs(back - exact_state) / np.repeat(state[main_state].absmax, 256)[:n]
    assert diff.max() < (0.1 if signed else 0.05), diff.max()
    assert np.median(diff) < (0.02 if signed else 0.01), np.median(diff)


# ---------------------------------------------------------------- bitsandbytes' 8-bit twins

BNB = {
    "SGD8bit": ("sgd_", dict(lr=1e-2, momentum=0.9, weight_decay=1e-2), dict(lr=1e-2, momentum=0.9,
                                                                          weight_decay=1e-2)),
    "Adagrad8bit": ("adagrad_", dict(lr=1e-2, weight_decay=1e-2, eps=1e-10), dict(lr=1e-2, weight_decay=1e-2,
                                                                                eps=1e-10)),
    "RMSprop8bit": ("rmsprop_", dict(lr=1e-3, alpha=0.99, eps=1e-8, weight_decay=1e-2),
                    dict(lr=1e-3, alpha=0.99, eps=1e-8, weight_decay=1e-2)),
}


@pytest.mark.parametrize("name", sorted(BNB))
def test_bitsandbytes_8bit_twin_lands_close(name):
    """bitsandbytes' CPU path (backends/cpu/ops.py, _optimizer_update_8bit_blockwise_cpu) is the same
    scheme: dequantise with its signed dynamic map (Optimizer1State's "dynamic" map, for every one-state
    optimizer), torch's rule in float32 (SGD: buf = momentum * buf + (g + wd * p), the gradient on step 1,
    i.e. torch's with dampening 0 and no Nesterov; Adagrad: lr_decay 0; RMSprop: not centered, and its
    momentum is ignored on the CPU, so 0), quantise blockwise. The bits differ: its CPU quantiser is not
    exactly nearest (see test_quant8), and it arranges the float32 arithmetic differently, so one code here
    and there differs and the runs drift apart slowly. Parameters and state agree within a small part of
    how far they moved / of each block's absmax."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    kernel, ours, theirs = BNB[name]
    n = 8192 + 77  # (>= min_8bit_size 4096, a ragged last block)
    rng = np.random.default_rng(11)
    start = rng.standard_normal(n).astype(np.float32)
    p = start.copy()
    state = fastopt.QuantizedState.zeros(n, True)  # bitsandbytes' map for one-state optimizers is the signed one
    tp = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = getattr(bnb.optim, name)([tp], **theirs)
    for t in range(1, 9):
        g = rng.standard_normal(n).astype(np.float32)
        if kernel == "rmsprop_":
            fastopt.rmsprop_(p, g, state, **ours)
        else:
            getattr(fastopt, kernel)(p, g, state, step=t, **ours)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    st = opt.state[tp]
    assert st["state1"].dtype == torch.uint8  # (its 8-bit path, not its float32 fallback)
    assert np.array_equal(st["qmap1"].numpy(), S)
    theirs_p = tp.detach().numpy()
    # measured (8 steps, seed 11): parameters 2e-4 of the mean move apart on average, 4% of the largest move
    # at most; the states' absmax within 4e-4 relative, 98.7-99.7% of the codes the same, read back within
    # 2.3% of absmax
    moved = np.abs(p - start)
    assert moved.mean() > 0
    assert np.abs(p - theirs_p).mean() < 0.003 * moved.mean(), np.abs(p - theirs_p).mean() / moved.mean()
    assert np.abs(p - theirs_p).max() < 0.15 * moved.max(), np.abs(p - theirs_p).max() / moved.max()
    np.testing.assert_allclose(state.absmax, st["absmax1"].numpy(), rtol=5e-3)
    assert np.mean(state.codes == st["state1"].numpy()) > 0.95
    their_state = dequantize(st["state1"].numpy(), st["absmax1"].numpy(), S)
    diff = np.abs(state.dequantize() - their_state) / np.repeat(state.absmax, 256)[:n]
    assert diff.max() < 0.05 and diff.mean() < 0.002, (diff.max(), diff.mean())


# ---------------------------------------------------------------- threads and instruction sets

def _digest_run():
    rng = np.random.default_rng(6)
    sizes = [300007, 7, 131072 + 5]
    out = []
    for case in sorted(CASES):
        _, operands, _ = CASES[case]
        params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        state = [[fastopt.QuantizedState.quantize(initial_values(op[0], n, rng), op[1]) for n in sizes]
                 if op else None for op in operands]
        for step in (1, 2):
            assert run(case, params, [grad(rng, n) for n in sizes], state, step) is False
        arrays = params + [x for s in state if s is not None for q in s for x in (q.codes, q.absmax)]
        out.append(b"".join(np.asarray(a).tobytes() for a in arrays))
    return b"".join(out)


def test_same_bits_for_every_thread_count_and_instruction_set():
    assert len(_digest_run()) > 0
    assert_same_everywhere(_digest_run)


# ---------------------------------------------------------------- grad_scale, found_inf, skip_nonfinite

NONFINITE_SIZES = [13, 1, 300007]


def _setup(case, seed=0, sizes=NONFINITE_SIZES, torch_state=False):
    rng = np.random.default_rng(seed)
    _, operands, _ = CASES[case]
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    state = []
    for op in operands:
        if op is None:
            state.append(None)
            continue
        qs = [fastopt.QuantizedState.quantize(initial_values(op[0], n, rng), op[1]) for n in sizes]
        if torch_state:
            torch = pytest.importorskip("torch")
            qs = [fastopt.QuantizedState(torch.from_numpy(q.codes), torch.from_numpy(q.absmax), q.signed) for q in qs]
        state.append(qs)
    return params, grads, state


def _bytes(params, grads, state):
    out = [np.asarray(a).tobytes() for a in list(params) + list(grads)]
    for s in state:
        if s is not None:
            for q in s:
                out += [np.asarray(q.codes).tobytes(), np.asarray(q.absmax).tobytes()]
    return out


@pytest.mark.parametrize("where", [(0, 0), (2, 150_001), (2, -1), (1, 0)])
@pytest.mark.parametrize("case", ["sgd_dampening_wd_max", "adagrad_unsigned", "rmsprop_centered_momentum"])
def test_nonfinite_grad_with_skip_nonfinite_writes_nothing(case, where):
    params, grads, state = _setup(case)
    grads[where[0]][where[1]] = np.nan if where[1] else np.inf
    before = _bytes(params, grads, state)
    assert run(case, params, grads, state, 2, skip_nonfinite=True) is True
    assert _bytes(params, grads, state) == before
    assert run(case, params, grads, state, 2, skip_nonfinite=True, grad_scale=4.0) is True
    assert _bytes(params, grads, state) == before


@pytest.mark.parametrize("case", ["sgd_momentum", "adagrad_signed_max", "rmsprop_momentum"])
def test_found_inf_and_unscaled_overflow_write_nothing(case):
    params, grads, state = _setup(case)
    before = _bytes(params, grads, state)
    assert run(case, params, grads, state, 2, found_inf=1.0) is True
    assert _bytes(params, grads, state) == before
    # finite as given, Inf once divided by grad_scale 0.5: counted as non-finite
    grads[0][3] = np.float32(3e38)
    before = _bytes(params, grads, state)
    assert run(case, params, grads, state, 2, skip_nonfinite=True, grad_scale=0.5) is True
    assert _bytes(params, grads, state) == before
    assert run(case, params, grads, state, 2, skip_nonfinite=True, grad_scale=1.0) is False  # the control
    assert _bytes(params, grads, state) != before


@pytest.mark.parametrize("case", ["sgd_nesterov_wd", "adagrad_unsigned", "rmsprop_centered"])
def test_finite_skip_nonfinite_found_inf_zero_and_grad_scale_are_the_plain_call(case):
    params, grads, state = _setup(case)
    twins = [_setup(case) for _ in range(3)]
    assert run(case, params, grads, state, 2) is False
    assert run(case, twins[0][0], twins[0][1], twins[0][2], 2, skip_nonfinite=True) is False
    assert run(case, twins[1][0], twins[1][1], twins[1][2], 2, found_inf=0.0) is False
    # scaled grads with grad_scale: the bits of the unscaled grads (a power of two: the division is exact)
    scaled = [g * np.float32(8.0) for g in twins[2][1]]
    assert run(case, twins[2][0], scaled, twins[2][2], 2, grad_scale=8.0) is False
    want = _bytes(params, [], state)
    for p, _, s in twins:
        assert _bytes(p, [], s) == want


# ---------------------------------------------------------------- torch tensors

@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_tensors_give_the_numpy_bits(case):
    torch = pytest.importorskip("torch")
    sizes = [300, 5000]
    params, _, state = _setup(case, seed=3, sizes=sizes)
    tparams, _, tstate = _setup(case, seed=3, sizes=sizes, torch_state=True)
    tparams = [torch.from_numpy(p) for p in tparams]
    rng = np.random.default_rng(4)
    for step in (1, 2, 3):
        grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        assert run(case, params, grads, state, step) is False
        assert run(case, tparams, [torch.from_numpy(g.copy()) for g in grads], tstate, step) is False
    for p, tp in zip(params, tparams):
        assert np.array_equal(p, tp.numpy())
    for s, ts in zip(state, tstate):
        if s is not None:
            for q, tq in zip(s, ts):
                assert isinstance(tq.codes, torch.Tensor)
                assert np.array_equal(q.codes, tq.codes.numpy()) and np.array_equal(q.absmax, tq.absmax.numpy())


def test_two_dimensional_params_are_blocked_flat():
    """codes of the param's shape (17, 301): blocks of 256 run across rows, as over the flat array."""
    rng = np.random.default_rng(9)
    p = rng.standard_normal((17, 301)).astype(np.float32)
    flat = p.ravel().copy()
    b2, b1 = fastopt.QuantizedState.zeros((17, 301), True), fastopt.QuantizedState.zeros(17 * 301, True)
    assert b2.absmax.shape == (_quantized.blocks(17 * 301),)
    for step in (1, 2):
        g = rng.standard_normal((17, 301)).astype(np.float32)
        fastopt.sgd_(p, g, b2, lr=0.1, momentum=0.9, step=step)
        fastopt.sgd_(flat, g.ravel().copy(), b1, lr=0.1, momentum=0.9, step=step)
    assert np.array_equal(p.ravel(), flat)
    assert np.array_equal(b2.codes.ravel(), b1.codes) and np.array_equal(b2.absmax, b1.absmax)


# ---------------------------------------------------------------- bad input: by name, nothing written

N = 600  # three blocks


def _q(signed=True, n=N, positive=None):
    """A QuantizedState of random values: non-negative ones (a sum, a square average) when unsigned or asked."""
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    return fastopt.QuantizedState.quantize(x * x if (positive or not signed) else x, signed)


def _bf16(a):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16)


def _bad(kind):
    """(kernel, params, grads, state operands, kwargs, error, message) of one refusal."""
    p, g = np.ones(N, np.float32), np.full(N, 0.5, np.float32)
    sgd = dict(lr=0.1, momentum=0.9, step=2)
    if kind == "sgd_float64_params":
        return "sgd_", p.astype(np.float64), g.astype(np.float64), [_q()], sgd, TypeError, r"params\[0\]"
    if kind == "adagrad_bf16_params":
        return "adagrad_", _bf16(p), _bf16(g), [_q(False)], dict(step=2), TypeError, r"params\[0\]"
    if kind == "rmsprop_float64_params":
        return ("rmsprop_", [p.astype(np.float64)], [g.astype(np.float64)], [[_q(False)], None, None], {},
                TypeError, r"params\[0\]")
    if kind == "sgd_bf16_grads":
        return "sgd_", p, _bf16(g), [_q()], sgd, TypeError, r"grads\[0\]"
    if kind == "sgd_unsigned_buffer":
        return "sgd_", p, g, [_q(False)], sgd, ValueError, r"momentum_buffers\[0\].*signed"
    if kind == "rmsprop_unsigned_momentum":
        return ("rmsprop_", p, g, [_q(False), _q(False), None], dict(momentum=0.9), ValueError,
                r"momentum_buffers\[0\].*signed")
    if kind == "rmsprop_unsigned_grad_avg":
        return ("rmsprop_", p, g, [_q(True, positive=True), None, _q(False)], dict(centered=True), ValueError,
                r"grad_avgs\[0\].*signed")
    if kind == "adagrad_mixed_signedness":
        return ("adagrad_", [p, p.copy()], [g, g.copy()], [[_q(True), _q(False)]], dict(step=2),
                (TypeError, ValueError), r"state_sums.*signed")
    if kind == "sgd_codes_shape":
        return ("sgd_", p, g, [fastopt.QuantizedState(np.zeros(N + 1, np.uint8), np.zeros(3, np.float32), True)],
                sgd, ValueError, r"momentum_buffers\[0\]\.codes")
    if kind == "sgd_absmax_blocks":
        return ("sgd_", p, g, [fastopt.QuantizedState(np.zeros(N, np.uint8), np.zeros(2, np.float32), True)],
                sgd, ValueError, r"momentum_buffers\[0\]\.absmax")
    if kind == "rmsprop_absmax_blocks":
        return ("rmsprop_", p, g, [fastopt.QuantizedState(np.zeros(N, np.uint8), np.zeros(4, np.float32), False),
                                   None, None], {}, ValueError, r"square_avgs\[0\]\.absmax")
    if kind == "adagrad_codes_dtype":
        return ("adagrad_", p, g, [fastopt.QuantizedState(np.zeros(N, np.int8), np.zeros(3, np.float32), False)],
                dict(step=2), TypeError, r"state_sums\[0\]\.codes")
    if kind == "adagrad_absmax_dtype":
        return ("adagrad_", p, g, [fastopt.QuantizedState(np.zeros(N, np.uint8), np.zeros(3, np.float64), False)],
                dict(step=2), TypeError, r"state_sums\[0\]\.absmax")
    if kind == "sgd_mixed_in_one_argument":
        return ("sgd_", [p, p.copy()], [g, g.copy()], [[_q(), np.zeros(N, np.float32)]], sgd, TypeError,
                r"momentum_buffers\[1\]")
    if kind == "rmsprop_mixed_quantized_first":
        return ("rmsprop_", p, g, [_q(False), np.zeros(N, np.float32), None], dict(momentum=0.9), TypeError,
                r"momentum_buffers")
    if kind == "rmsprop_mixed_float_first":
        # (either argument may be the one named: the first state argument decides which form is expected)
        return ("rmsprop_", p, g, [np.ones(N, np.float32), _q(True), None], dict(momentum=0.9), TypeError,
                r"momentum_buffers|square_avgs\[0\]")
    if kind == "rmsprop_mixed_grad_avgs":
        return ("rmsprop_", p, g, [_q(False), None, np.zeros(N, np.float32)], dict(centered=True), TypeError,
                r"grad_avgs")
    if kind == "rmsprop_shared_codes":
        sq = _q(False)
        return ("rmsprop_", p, g, [sq, None, fastopt.QuantizedState(sq.codes, np.zeros(3, np.float32), True)],
                dict(centered=True), ValueError, "shares memory")
    if kind == "sgd_same_state_twice":
        b = _q()
        return "sgd_", [p, p.copy()], [g, g.copy()], [[b, b]], sgd, ValueError, "shares memory"
    if kind == "adagrad_shared_absmax":
        a, b = _q(False), _q(False)
        return ("adagrad_", [p, p.copy()], [g, g.copy()], [[a, fastopt.QuantizedState(b.codes, a.absmax, False)]],
                dict(step=2), ValueError, "shares memory")
    for kernel in ("sgd_", "adagrad_", "rmsprop_"):
        if kind == kernel + "stochastic_rounding":
            state = {"sgd_": [_q()], "adagrad_": [_q(False)], "rmsprop_": [_q(False), None, None]}[kernel]
            return kernel, p, g, state, dict(sgd if kernel == "sgd_" else dict(step=2), stochastic_rounding=True,
                                             seed=1), ValueError, "stochastic_rounding"
    raise AssertionError(kind)


BAD = ["sgd_float64_params", "adagrad_bf16_params", "rmsprop_float64_params", "sgd_bf16_grads",
       "sgd_unsigned_buffer", "rmsprop_unsigned_momentum", "rmsprop_unsigned_grad_avg", "adagrad_mixed_signedness",
       "sgd_codes_shape", "sgd_absmax_blocks", "rmsprop_absmax_blocks", "adagrad_codes_dtype",
       "adagrad_absmax_dtype", "sgd_mixed_in_one_argument", "rmsprop_mixed_quantized_first",
       "rmsprop_mixed_float_first", "rmsprop_mixed_grad_avgs", "rmsprop_shared_codes", "sgd_same_state_twice",
       "adagrad_shared_absmax", "sgd_stochastic_rounding", "adagrad_stochastic_rounding",
       "rmsprop_stochastic_rounding"]


def _all_bytes(*things):
    out = []
    for x in things:
        if x is None:
            continue
        if isinstance(x, (list, tuple)):
            out += _all_bytes(*x)
        elif isinstance(x, fastopt.QuantizedState):
            out += [np.asarray(x.codes).tobytes(), np.asarray(x.absmax).tobytes()]
        else:
            out.append(np.asarray(x).tobytes())
    return out


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_refused_by_name_and_nothing_written(kind):
    kernel, params, grads, state, kwargs, error, message = _bad(kind)
    before = _all_bytes(params, grads, state)
    with pytest.raises(error, match=message):
        getattr(fastopt, kernel)(params, grads, *state, **kwargs)
    assert _all_bytes(params, grads, state) == before


def test_the_good_twins_of_the_refusals_run():
    """The controls: the refused calls' shapes and forms, put right, go through (so the refusals above are
    for the reason they name)."""
    p, g = np.ones(N, np.float32), np.full(N, 0.5, np.float32)
    b = _q()
    before = b.codes.copy()
    assert fastopt.sgd_(p, g, b, lr=0.1, momentum=0.9, step=2) is False
    assert not np.all(p == 1) and not np.array_equal(b.codes, before)
    assert fastopt.adagrad_([p, p.copy()], [g, g.copy()], [_q(True, positive=True), _q(True, positive=True)],
                            step=2) is False
    assert fastopt.adagrad_([p, p.copy()], [g, g.copy()], [_q(False), _q(False)], step=2) is False
    assert fastopt.rmsprop_(p, g, _q(False), _q(True), fastopt.QuantizedState.zeros(N, True), momentum=0.9,
                            centered=True) is False
    assert fastopt.rmsprop_(p, g, _q(True, positive=True), None, None) is False
    assert np.all(np.isfinite(p))
