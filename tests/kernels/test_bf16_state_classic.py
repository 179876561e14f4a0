"""bfloat16 state for SGD, Adagrad and RMSprop on the CPU (issue 18: "every optimizer that has state"):
the functional sgd_/adagrad_/rmsprop_ with bfloat16 state arrays (float32 or bfloat16 params), bfloat16
params with float32 state rounded stochastically, and fastopt.optim's state_dtype= / stochastic_rounding=.

Witnesses, as for Adam's (test_bf16_state.py): fastopt's float32 kernel fed the widened values (the update
between load and store is the float32 kernel's, bit for bit), then ml_dtypes' own round-to-nearest-even or
the stochastic rounding of bf16_reference.py (written from the definitions); fastopt.reference in float64
for the numbers themselves."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
import bf16_reference as ref
from fastopt import reference
from isa_sweep import assert_same_everywhere

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16

SIZES = [0, 1, 7, 33, 1000, 300007]  # (300007: past the threading threshold, odd tails)

# Each case: the kernel, its state operands in kernel order (None: not in use), and its hyperparameters.
CASES = {
    "sgd_momentum": (fastopt.sgd_, ("momentum_buffers",), dict(lr=0.05, momentum=0.9, dampening=0.1,
                                                               weight_decay=1e-2)),
    "sgd_nesterov_max": (fastopt.sgd_, ("momentum_buffers",), dict(lr=0.05, momentum=0.9, nesterov=True,
                                                                   maximize=True, grad_scale=4.0)),
    "adagrad": (fastopt.adagrad_, ("state_sums",), dict(lr=0.05, lr_decay=0.01, weight_decay=1e-3)),
    "rmsprop": (fastopt.rmsprop_, ("square_avgs", None, None), dict(lr=0.01, weight_decay=1e-2)),
    "rmsprop_centered_momentum": (fastopt.rmsprop_, ("square_avgs", "momentum_buffers", "grad_avgs"),
                                  dict(lr=0.01, momentum=0.9, centered=True, grad_scale=0.5)),
    "rmsprop_centered": (fastopt.rmsprop_, ("square_avgs", None, "grad_avgs"), dict(lr=0.01, centered=True,
                                                                                  maximize=True)),
}


def bits(a) -> np.ndarray:
    return np.asarray(a).view(np.uint16)


def f32(a) -> np.ndarray:
    return np.asarray(a).astype(np.float32)


def bf16(x) -> np.ndarray:
    return np.asarray(x, np.float32).astype(BF16)


def initial_state(name, operand, n):
    # Adagrad's sum starts positive (initial_accumulator_value), RMSprop's square_avg must stay >= grad_avg**2
    if operand == "state_sums":
        return np.full(n, 0.1, np.float32)
    return np.zeros(n, np.float32)


def run(case, params, grads, state, step, **extra):
    kernel, operands, hyper = CASES[case]
    kw = dict(hyper, step=step, **extra)
    lists = [state[j] if name is not None else None for j, name in enumerate(operands)]
    return kernel(params, grads, *lists, **kw)


def fresh(case, rng, sizes, param_dtype, state_dtype):
    _, operands, _ = CASES[case]
    params = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in sizes]
    state = [[initial_state(case, name, n).astype(state_dtype) for n in sizes] if name else None
             for name in operands]
    return params, state


def widened(state):
    return [[f32(a) for a in s] if s is not None else None for s in state]


# ---------------------------------------------------------------- round-to-nearest-even

@pytest.mark.parametrize("param_dtype", [np.float32, BF16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bf16_state_is_the_float32_kernel_then_round_to_nearest_even(case, param_dtype):
    rng = np.random.default_rng(1)
    params, state = fresh(case, rng, SIZES, param_dtype, BF16)
    for step in range(1, 5):
        grads = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in SIZES]
        wp, ws = [f32(p) for p in params], widened(state)
        run(case, wp, [f32(g) for g in grads], ws, step)
        assert run(case, params, grads, state, step) is False
        for k in range(len(SIZES)):
            if param_dtype is np.float32:
                assert np.array_equal(params[k].view(np.uint32), wp[k].view(np.uint32)), (step, k)
            else:
                assert np.array_equal(bits(params[k]), ref.round_nearest_even(wp[k])), (step, k)
            for got, want in zip(state, ws):
                if got is not None:
                    assert np.array_equal(bits(got[k]), bits(want[k].astype(BF16))), (step, k)


def _reference_step(case, p, g, state, step):
    """One step of fastopt.reference in float64 from the float64 values of p, g and the state."""
    kernel, operands, hyper = CASES[case]
    hyper = dict(hyper)
    g = g / hyper.pop("grad_scale", 1.0)
    s = [np.asarray(a, np.float64) if a is not None else None for a in state]
    if kernel is fastopt.sgd_:
        p, buf = reference.sgd(p, g, s[0], step=step, **hyper)
        return p, [buf]
    if kernel is fastopt.adagrad_:
        p, total = reference.adagrad(p, g, s[0], step=step, **hyper)
        return p, [total]
    p, sq, buf, ga = reference.rmsprop(p, g, *s, **hyper)
    return p, [sq, buf, ga]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bf16_state_against_the_float64_reference(case):
    rng = np.random.default_rng(2)
    n = 5003
    params, state = fresh(case, rng, [n], np.float32, BF16)
    for step in range(1, 6):
        g = rng.standard_normal(n).astype(np.float32)
        ep, es = _reference_step(case, params[0].astype(np.float64), g.astype(np.float64),
                                 [f32(s[0]) if s is not None else None for s in state], step)
        run(case, params, [g], state, step)
        # the stored state is the float64 value rounded to bfloat16 (relative 2**-8) after float32 arithmetic
        for got, want in zip(state, es):
            if got is not None:
                assert np.allclose(f32(got[0]), want, rtol=2**-8 + 1e-5, atol=1e-30), step
        assert np.allclose(params[0], ep, rtol=1e-4, atol=1e-5), step


def test_torch_bf16_state_tensors_give_the_numpy_bits():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    n = 777
    p = rng.standard_normal(n).astype(np.float32)
    b, s = np.zeros(n, BF16), bf16(np.full(n, 0.1))
    tp, tb, ts = torch.tensor(p), torch.zeros(n, dtype=torch.bfloat16), torch.full((n,), 0.1, dtype=torch.bfloat16)
    q, tq = p.copy(), torch.tensor(p)
    for step in (1, 2, 3):
        g = rng.standard_normal(n).astype(np.float32)
        fastopt.sgd_(p, g, b, lr=0.1, momentum=0.9, step=step, stochastic_rounding=True, seed=5)
        fastopt.sgd_(tp, torch.tensor(g), tb, lr=0.1, momentum=0.9, step=step, stochastic_rounding=True, seed=5)
        fastopt.adagrad_(q, g, s, step=step)
        fastopt.adagrad_(tq, torch.tensor(g), ts, step=step)
    assert np.array_equal(tp.numpy(), p) and np.array_equal(tq.numpy(), q)
    assert np.array_equal(tb.view(torch.int16).numpy().view(np.uint16), bits(b))
    assert np.array_equal(ts.view(torch.int16).numpy().view(np.uint16), bits(s))


# ---------------------------------------------------------------- stochastic rounding

#: each case's rounding operand numbers: 0 the params, then its state operands in kernel order
OPERANDS = {"sgd_": 1, "adagrad_": 1}


@pytest.mark.parametrize("param_dtype,state_dtype", [(np.float32, BF16), (BF16, np.float32), (BF16, BF16)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_stochastic_rounding_matches_the_numpy_reference(case, param_dtype, state_dtype):
    rng = np.random.default_rng(4)
    sizes = [1000, 0, 300007]
    params, state = fresh(case, rng, sizes, param_dtype, state_dtype)
    seed = 2**64 - 7
    for step in (1, 2, 3):
        grads = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in sizes]
        wp, ws = [f32(p) for p in params], widened(state)
        run(case, wp, [f32(g) for g in grads], ws, step)
        run(case, params, grads, state, step, stochastic_rounding=True, seed=seed)
        ref.assert_rounded_stochastically(params, wp, param_dtype, state, ws, state_dtype, seed, step, sizes)


def test_stochastic_rounding_of_momentum_is_unbiased_and_reproducible():
    n = 200000

    def one(seed, step):
        p, b = np.zeros(n, np.float32), np.zeros(n, BF16)
        fastopt.sgd_(p, np.full(n, 1.2345678, np.float32), b, lr=0.1, momentum=0.9, dampening=0.5, step=step + 1,
                     stochastic_rounding=True, seed=seed)
        return b

    # step >= 2: buffer = 0.9 * 0 + (1 - 0.5) * g, in float32
    exact = np.float64(np.float32(np.float32(1 - 0.5) * np.float32(1.2345678)))
    values = f32(one(9, 1)).astype(np.float64)
    lo, hi = np.unique(values)
    assert lo < exact < hi
    q = (exact - lo) / (hi - lo)
    assert abs(values.mean() - exact) < 3 * (hi - lo) * np.sqrt(q * (1 - q) / n)
    assert np.array_equal(bits(one(9, 1)), bits(one(9, 1)))
    assert not np.array_equal(bits(one(9, 1)), bits(one(10, 1)))
    assert not np.array_equal(bits(one(9, 1)), bits(one(9, 2)))


def _digest_run(stochastic):
    rng = np.random.default_rng(6)
    sizes = [300007, 7, 131072 + 5]
    out = []
    for case in sorted(CASES):
        for param_dtype, state_dtype in ((np.float32, BF16), (BF16, BF16)) + (((BF16, np.float32),) if stochastic else ()):
            params, state = fresh(case, rng, sizes, param_dtype, state_dtype)
            for step in (1, 2):
                grads = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in sizes]
                extra = dict(stochastic_rounding=True, seed=11) if stochastic else {}
                run(case, params, grads, state, step, **extra)
            arrays = params + [a for s in state if s is not None for a in s]
            out.append(b"".join(np.asarray(a).tobytes() for a in arrays))
    return b"".join(out)


@pytest.mark.parametrize("stochastic", [False, True])
def test_same_bits_for_every_thread_count_and_instruction_set(stochastic):
    assert_same_everywhere(lambda: _digest_run(stochastic))


# ---------------------------------------------------------------- bad input: a clear error, nothing written

def _snapshot(*groups):
    return [np.asarray(a).tobytes() for group in groups if group is not None for a in group]


@pytest.mark.parametrize("case", ["sgd_sr_without_step", "rmsprop_sr_without_step", "rmsprop_step_zero",
                                  "sr_float32", "mixed_operands", "float64_params", "float16_params",
                                  "grads_dtype", "shape", "shared_memory", "seed_negative"])
def test_bad_input_raises_and_writes_nothing(case):
    rng = np.random.default_rng(8)
    p = [rng.standard_normal(5).astype(np.float32), rng.standard_normal(6).astype(np.float32)]
    g = [np.ones(5, np.float32), np.ones(6, np.float32)]
    sq = [bf16(np.ones(5)), bf16(np.ones(6))]
    buf = [bf16(rng.standard_normal(5)), bf16(rng.standard_normal(6))]
    kernel, kwargs = fastopt.rmsprop_, dict(momentum=0.9, step=3)
    error, words = TypeError, None
    if case == "sgd_sr_without_step":  # (SGD without momentum: step is optional, but the rounding needs it)
        p, g = [bf16(a) for a in p], [bf16(a) for a in g]
        kernel, kwargs = fastopt.sgd_, dict(lr=0.1, stochastic_rounding=True)
        words = r"sgd_\(stochastic_rounding=True\) needs step"
    elif case == "rmsprop_sr_without_step":
        kwargs = dict(momentum=0.9, stochastic_rounding=True)
        words = r"rmsprop_\(stochastic_rounding=True\) needs step"
    elif case == "rmsprop_step_zero":
        kwargs = dict(momentum=0.9, step=0, stochastic_rounding=True)
        error, words = ValueError, "step must be >= 1"
    elif case == "sr_float32":
        sq, buf = [f32(a) for a in sq], [f32(a) for a in buf]
        kwargs["stochastic_rounding"] = True
        error, words = ValueError, "stochastic_rounding"
    elif case == "mixed_operands":
        buf = [f32(a) for a in buf]
        words = r"momentum_buffers\[0\] has dtype float32 but square_avgs\[0\] has bfloat16"
    elif case == "float64_params":
        p, g = [a.astype(np.float64) for a in p], [a.astype(np.float64) for a in g]
        words = r"params\[0\] has dtype float64"
    elif case == "float16_params":
        p, g = [a.astype(np.float16) for a in p], [a.astype(np.float16) for a in g]
        words = r"params\[0\] has dtype float16"
    elif case == "grads_dtype":
        g = [bf16(a) for a in g]
        words = r"grads\[0\]"
    elif case == "shape":
        buf[1] = bf16(np.zeros(7))
        error, words = ValueError, r"momentum_buffers\[1\] has shape \(7,\)"
    elif case == "shared_memory":
        both = bf16(np.zeros(11))
        sq, buf = [both[:5], both[5:]], [both[3:8], bf16(np.ones(6))]
        error, words = ValueError, "shares memory"
    elif case == "seed_negative":
        kwargs.update(stochastic_rounding=True, seed=-1)
        error, words = ValueError, "seed"
    state = [None] if kernel is fastopt.sgd_ else [sq, buf]
    before = _snapshot(p, g, *state)
    with pytest.raises(error, match=words):
        kernel(p, g, *state, **kwargs)
    assert _snapshot(p, g, *state) == before


@pytest.mark.parametrize("kernel,state", [("sgd_", 1), ("adagrad_", 1), ("rmsprop_", 1)])
def test_skip_nonfinite_and_found_inf_write_nothing(kernel, state):
    fn = getattr(fastopt, kernel)
    p = bf16([1.0, 2.0, 3.0])
    g = bf16([0.5, np.inf, 1.0])
    s = bf16([0.1, 0.2, 0.3])
    kw = dict(lr=0.1, step=2, momentum=0.9) if kernel == "sgd_" else dict(step=2)
    before = _snapshot([p, g, s])
    assert fn([p], [g], [s], skip_nonfinite=True, **kw) is True
    assert _snapshot([p, g, s]) == before
    g[1] = 2.0
    before = _snapshot([p, g, s])
    assert fn([p], [g], [s], found_inf=1.0, **kw) is True
    assert _snapshot([p, g, s]) == before
    assert fn([p], [g], [s], skip_nonfinite=True, **kw) is False
    assert _snapshot([p, g, s]) != before


# ---------------------------------------------------------------- fastopt.optim's state_dtype=

OPTIMIZERS = {
    "SGD": (fastopt.optim.SGD, dict(lr=0.05, momentum=0.9), ("momentum_buffer",)),
    "Adagrad": (fastopt.optim.Adagrad, dict(lr=0.05, initial_accumulator_value=0.1), ("sum",)),
    "RMSprop": (fastopt.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True),
                ("square_avg", "momentum_buffer", "grad_avg")),
}


def _train(name, steps, param_dtype=np.float32, **options):
    cls, hyper, _ = OPTIMIZERS[name]
    rng = np.random.default_rng(12)
    params = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in (5000, 3)]
    opt = cls(params, **hyper, **options)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(np.float32).astype(param_dtype) for p in params])
    return opt, params


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optim_bf16_state_is_the_functional_update(name):
    opt, params = _train(name, 3, state_dtype="bfloat16")
    _, _, keys = OPTIMIZERS[name]
    for i, p in enumerate(params):
        for key in keys:
            assert opt.state[i][key].dtype == np.dtype(BF16), key
    # the same steps through a float32-state optimizer drift from these by bfloat16 rounding only
    ref_opt, ref_params = _train(name, 3, state_dtype="float32")
    assert ref_opt.state[0][keys[0]].dtype == np.float32
    for a, b in zip(params, ref_params):
        assert np.allclose(a, b, rtol=1e-2, atol=1e-2)
        assert not np.array_equal(a, b)  # (the state's rounding shows in the params)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("param_dtype", [np.float32, BF16])
def test_optim_stochastic_rounding_is_reproducible_and_checkpoints_round_trip(name, param_dtype):
    options = dict(state_dtype="bfloat16", stochastic_rounding=True, seed=3)
    a, pa = _train(name, 4, param_dtype, **options)
    b, pb = _train(name, 4, param_dtype, **options)
    assert all(np.array_equal(bits(x) if param_dtype is BF16 else x, bits(y) if param_dtype is BF16 else y)
               for x, y in zip(pa, pb))
    c, pc = _train(name, 4, param_dtype, state_dtype="bfloat16", stochastic_rounding=True, seed=4)
    assert not all(np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8)) for x, y in zip(pa, pc))
    # a state_dict loaded into a fresh optimizer continues with the same bits
    cls, hyper, _ = OPTIMIZERS[name]
    copies = [p.copy() for p in pa]
    resumed = cls(copies, **hyper, **options)
    resumed.load_state_dict(a.state_dict())
    rng = np.random.default_rng(99)
    grads = [rng.standard_normal(p.shape).astype(np.float32).astype(param_dtype) for p in pa]
    a.step(grads)
    resumed.step(grads)
    for x, y in zip(pa, copies):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
    for i in a.state:
        for key, value in a.state[i].items():
            other = resumed.state[i][key]
            assert (np.asarray(value).tobytes() == np.asarray(other).tobytes()) if isinstance(value, np.ndarray) \
                else value == other, key


def test_sgd_with_stochastic_rounding_counts_steps_and_without_does_not():
    opt, _ = _train("SGD", 3, state_dtype="bfloat16", stochastic_rounding=True)
    assert opt.state[0]["step"] == 3
    plain, _ = _train("SGD", 3, state_dtype="bfloat16")
    assert "step" not in plain.state[0]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optim_refuses_what_it_cannot_keep(name):
    cls, hyper, _ = OPTIMIZERS[name]
    with pytest.raises(ValueError, match=r"state_dtype must be None \(float32 for 16-bit params, else the params' "
                                         r"dtype\) or one of 'float32', 'bfloat16', 'int8', got 'int4'"):
        cls([np.zeros(3, np.float32)], **hyper, state_dtype="int4")
    with pytest.raises(ValueError, match=r"state_dtype='int8' keeps the state of float32 params; params\[0\]"):
        cls([np.zeros(3, np.float64)], **hyper, state_dtype="int8")
    with pytest.raises(ValueError, match="state_dtype='bfloat16' keeps the state of float32 or bfloat16 params"):
        cls([np.zeros(3, np.float64)], **hyper, state_dtype="bfloat16")
    with pytest.raises(ValueError, match="stochastic_rounding=True rounds bfloat16 values"):
        cls([np.zeros(3, np.float32)], **hyper, stochastic_rounding=True)
    # the default keeps float32 state for bfloat16 params, as before
    opt = cls([bf16(np.ones(4))], **hyper)
    opt.step([bf16(np.ones(4))])
    assert all(v.dtype == np.float32 for v in opt.state[0].values() if isinstance(v, np.ndarray))
