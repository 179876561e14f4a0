"""fastopt.optim's SGD, Adagrad, RMSprop, Adam and AdamW over float16 (NumPy's) and bfloat16 (ml_dtypes')
parameters (issue 16): the update in float32 with float32 state, as the kernels do it (their bits against the
float64 reference are tested in test_half_params_cpu.py). Here: each class's steps equal the functional
calls on state the test keeps itself; the state's dtype; skip_nonfinite and grad_scale over half gradients;
lists that mix dtypes; checkpoints; and the refusals, each changing nothing."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import optim

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
DTYPES = [F16, BF16]
IDS = ["float16", "bfloat16"]


def problem(dtype, seed=0, sizes=(5, 777), steps=4):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in sizes]
    grads = [[rng.standard_normal(n).astype(np.float32).astype(dtype) for n in sizes] for _ in range(steps)]
    return params, grads


def bits(a):
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a.view(np.uint32)


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(bits(a), bits(b))


# Each optimizer: its options, and the functional steps over state kept here (float32 arrays, as the
# kernels take for half params), called as the documented functions are.
def sgd_steps(params, grads, o):
    bufs = [np.zeros(p.shape, F32) for p in params]
    for k, g in enumerate(grads):
        fastopt.sgd_(params, g, bufs, lr=o["lr"], momentum=o["momentum"], dampening=o["dampening"],
                     weight_decay=o["weight_decay"], nesterov=o["nesterov"], step=k + 1)
    return {"momentum_buffer": bufs}


def adagrad_steps(params, grads, o):
    sums = [np.full(p.shape, o["initial_accumulator_value"], F32) for p in params]
    for k, g in enumerate(grads):
        fastopt.adagrad_(params, g, sums, lr=o["lr"], lr_decay=o["lr_decay"], weight_decay=o["weight_decay"],
                         eps=o["eps"], step=k + 1)
    return {"sum": sums}


def rmsprop_steps(params, grads, o):
    sq, buf, avg = ([np.zeros(p.shape, F32) for p in params] for _ in range(3))
    for g in grads:
        fastopt.rmsprop_(params, g, sq, buf, avg, lr=o["lr"], alpha=o["alpha"], eps=o["eps"],
                         weight_decay=o["weight_decay"], momentum=o["momentum"], centered=True)
    return {"square_avg": sq, "momentum_buffer": buf, "grad_avg": avg}


def adam_steps(kernel):
    def steps(params, grads, o):
        m, v, x = ([np.zeros(p.shape, F32) for p in params] for _ in range(3))
        for k, g in enumerate(grads):
            kernel(params, g, m, v, x, lr=o["lr"], beta1=o["betas"][0], beta2=o["betas"][1],
                   weight_decay=o["weight_decay"], amsgrad=True,
                   step=k + 1)
        return {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": x}
    return steps


CASES = {
    "SGD": (dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2, nesterov=False), sgd_steps),
    "Adagrad": (dict(lr=0.05, lr_decay=1e-3, weight_decay=1e-2, initial_accumulator_value=0.1, eps=1e-10),
                adagrad_steps),
    "RMSprop": (dict(lr=1e-2, alpha=0.9, eps=1e-8, weight_decay=1e-2, momentum=0.5, centered=True), rmsprop_steps),
    "Adam": (dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True), adam_steps(fastopt.adam_)),
    "AdamW": (dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True), adam_steps(fastopt.adamw_)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_steps_equal_the_functional_calls_with_float32_state(name, dtype):
    options, steps = CASES[name]
    params, grads = problem(dtype)
    mine = [p.copy() for p in params]
    kwargs = dict(options, state_dtype="float32") if name.startswith("Adam") and dtype == BF16 else options
    opt = getattr(optim, name)(mine, **kwargs)
    for g in grads:
        opt.step(g)
    want = steps(params, grads, options)
    for i, p in enumerate(params):
        assert same(mine[i], p), f"params[{i}]"
        assert not same(mine[i], problem(dtype)[0][i]), "the steps changed nothing"
        for key, arrays in want.items():
            assert same(opt.state[i][key], arrays[i]), (i, key)
        if "step" in opt.state[i]:
            assert opt.state[i]["step"] == len(grads)


@pytest.mark.parametrize("name,dtype,state_dtype", [
    ("SGD", F16, F32), ("SGD", BF16, F32), ("Adagrad", F16, F32), ("Adagrad", BF16, F32), ("RMSprop", F16, F32),
    ("RMSprop", BF16, F32),
    ("Adam", F16, F32),    # state_dtype=None: float32, the only state the float16 kernels keep
    ("AdamW", BF16, BF16),  # state_dtype=None: the params' dtype, where the kernels keep it (issue 18)
], ids=lambda x: str(x))
def test_default_state_dtype(name, dtype, state_dtype):
    params, grads = problem(dtype, sizes=(6,), steps=1)
    opt = getattr(optim, name)(params, **CASES[name][0])
    opt.step(grads[0])
    arrays = [v for v in opt.state[0].values() if isinstance(v, np.ndarray)]
    assert arrays and all(a.dtype == state_dtype and a.shape == (6,) for a in arrays)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_skip_nonfinite_reads_half_gradients_and_writes_nothing(name, dtype):
    params, grads = problem(dtype, seed=1)
    opt = getattr(optim, name)(params, **CASES[name][0])
    opt.step(grads[0])
    before = [p.copy() for p in params], {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                                          for i, s in opt.state.items()}
    for bad in (np.inf, -np.inf, np.nan):
        g = [a.copy() for a in grads[1]]
        g[1][400] = bad
        assert opt.step(g, skip_nonfinite=True) is True
        assert all(same(a, b) for a, b in zip(params, before[0]))
        for i, s in opt.state.items():
            for k, v in s.items():
                assert same(v, before[1][i][k]) if isinstance(v, np.ndarray) else v == before[1][i][k]
    assert opt.step(grads[1], skip_nonfinite=True) is False
    assert not all(same(a, b) for a, b in zip(params, before[0]))


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_grad_scale_is_unscaled_in_float32(dtype):
    """grad_scale divides the half gradients in float32, as the kernels' arithmetic: 2**-20 unscales a
    float16/bfloat16 gradient of 2**110 to 2**130, beyond float32, so the step is skipped; a grad_scale
    beyond float32's range is refused for half params as for float32 ones."""
    params, grads = problem(dtype, sizes=(8,), steps=1)
    before = params[0].copy()
    opt = optim.SGD(params, lr=0.1)
    big = [np.full(8, 2.0**110 if dtype == BF16 else 60000.0, dtype)]
    scale = 2.0**-20 if dtype == BF16 else 2.0**-120
    assert opt.step(big, grad_scale=scale, skip_nonfinite=True) is True and same(params[0], before)
    with pytest.raises(ValueError, match="a normal float32"):
        opt.step(grads[0], grad_scale=1e-300)
    assert same(params[0], before)
    scaled = [(grads[0][0].astype(np.float32) * 4).astype(dtype)]
    opt.step(scaled, grad_scale=4.0)
    alone = before.copy()
    optim.SGD([alone], lr=0.1).step([(scaled[0].astype(np.float32) / 4).astype(dtype)])
    assert same(params[0], alone)  # (x * 4 / 4 is exact in float32, whatever x)


def test_half_and_float_params_in_one_optimizer_step_as_each_alone():
    """float16, bfloat16, float32 and float64 params in one AdamW: one kernel call per dtype, each as in an
    optimizer of its own."""
    lists = {dtype: problem(dtype, seed=2) for dtype in (F16, BF16, F32, np.dtype(np.float64))}
    mixed = [p.copy() for params, _ in lists.values() for p in params]
    opt = optim.AdamW(mixed, lr=1e-2)
    for k in range(4):
        opt.step([g for _, grads in lists.values() for g in grads[k]])
    at = 0
    for dtype, (params, grads) in lists.items():
        alone = [p.copy() for p in params]
        single = optim.AdamW(alone, lr=1e-2)
        for g in grads:
            single.step(g)
        for a, b in zip(mixed[at:at + len(alone)], alone):
            assert same(a, b) if a.itemsize <= 4 else np.array_equal(a, b)
        at += len(alone)
    assert opt.state[0]["exp_avg"].dtype == F32 and opt.state[2]["exp_avg"].dtype == BF16
    # skip_nonfinite's one pre-pass reads every dtype: a NaN among the bfloat16 grads skips the whole step
    before = [p.copy() for p in mixed]
    grads = [g.copy() for _, grads in lists.values() for g in grads[0]]
    grads[3][7] = np.nan
    assert opt.step(grads, skip_nonfinite=True) is True
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(mixed, before))


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam"])
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_checkpoint_round_trip_is_bit_exact(name, dtype, tmp_path):
    params, grads = problem(dtype, seed=3)
    options = CASES[name][0]
    a_params = [p.copy() for p in params]
    a = getattr(optim, name)(a_params, **options)
    for g in grads[:2]:
        a.step(g)
    a.save(tmp_path / "opt.npz")
    b_params = [p.copy() for p in a_params]
    b = getattr(optim, name)(b_params, **options)
    b.load(tmp_path / "opt.npz")
    for g in grads[2:]:
        a.step(g)
        b.step(g)
    assert all(same(x, y) for x, y in zip(a_params, b_params))
    for key, value in a.state[1].items():
        assert same(value, b.state[1][key]) if isinstance(value, np.ndarray) else value == b.state[1][key]


def fingerprint(opt, params):
    return ([bits(p).tobytes() for p in params],
            {i: {k: (bits(v).tobytes() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
             for i, s in opt.state.items()})


@pytest.mark.parametrize("make,error,words", [
    (lambda p: optim.LAMB([p]), TypeError,
     r"params\[0\] has dtype {dt}; fastopt.optim.LAMB optimizes float32 or float64 arrays \(float16 and bfloat16 "
     r"params: fastopt.optim.SGD, Adagrad, RMSprop, Adam and AdamW; bfloat16 params: also NAdam, RAdam, Adamax, "
     r"Adadelta, ASGD, Rprop and Lion\)"),
    (lambda p: optim.AdamW([np.zeros(3, np.float32), p], state_dtype="int8"), ValueError,
     r"state_dtype='int8' keeps the state of float32 params; params\[1\] has dtype {dt}"),
    (lambda p: optim.Adagrad([p], initial_accumulator_value=1e39), ValueError,
     r"initial_accumulator_value must be at most .* for float32 parameters"),
], ids=["rule-optimizer", "int8-state", "accumulator-beyond-float32"])
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_refusals_name_the_argument(make, error, words, dtype):
    with pytest.raises(error, match=words.format(dt=dtype.name)):
        make(np.zeros(3, dtype))


def test_float16_params_take_no_bfloat16_state():
    """state_dtype="bfloat16" rounds moments to bfloat16 for float32 and bfloat16 params; the float16 kernels
    keep float32 state only."""
    with pytest.raises(ValueError, match=r"state_dtype='bfloat16' keeps the state of float32 or bfloat16 params; "
                                         r"params\[0\] has dtype float16"):
        optim.AdamW([np.zeros(3, F16)], state_dtype="bfloat16")


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_state_of_the_params_dtype_is_refused_before_anything_is_written(dtype):
    """A checkpoint from an optimizer that keeps half state (torch.optim keeps the params' dtype) does not
    fit: the entry is named, with the state dtype wanted, and nothing changes."""
    params, grads = problem(dtype, seed=4)
    opt = optim.RMSprop(params, lr=1e-2)
    opt.step(grads[0])
    opt.state[1]["square_avg"] = opt.state[1]["square_avg"].astype(dtype)
    before = fingerprint(opt, params)
    with pytest.raises(ValueError, match=rf"state\[1\]\['square_avg'\] is {dtype.name} \(777,\), but params\[1\] "
                                         rf"is {dtype.name} \(777,\) \(its state: float32\)"):
        opt.step(grads[1])
    assert fingerprint(opt, params) == before


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_grads_of_another_dtype_are_refused_before_anything_is_written(dtype):
    params, grads = problem(dtype, seed=5)
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    opt.step(grads[0])
    before = fingerprint(opt, params)
    with pytest.raises(TypeError, match=rf"grads\[1\] has dtype float32 but params\[1\] has {dtype.name}"):
        opt.step([grads[1][0], grads[1][1].astype(np.float32)])
    assert fingerprint(opt, params) == before
