"""fastopt.optim.Adam / AdamW over bfloat16 parameters (ml_dtypes.bfloat16 arrays, issue 18): each state
choice (the params' dtype, float32, bfloat16), stochastic rounding of every bfloat16 value written, lists that
mix bfloat16 and float32 params, checkpoints, and the refusals (the rule optimizers, int8 state, stochastic
rounding with nothing bfloat16 to round). The other optimizers' half params: test_half_params_optim.py."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt.optim import LAMB, Adam, AdamW, Lion
from bf16_reference import adam64, widen

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
HYPER = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8)


def problem(seed=0, sizes=(5, 777), dtype=BF16, steps=4):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in sizes]
    grads = [[rng.standard_normal(n).astype(np.float32).astype(dtype) for n in sizes] for _ in range(steps)]
    return params, grads


def run(opt_class, params, grads, **kwargs):
    opt = opt_class(params, **HYPER, **kwargs)
    for g in grads:
        opt.step(g)
    return opt


def bits(a):
    return a.view(np.uint16) if a.dtype == BF16 else a.view(np.uint32)


@pytest.mark.parametrize("opt_class,kernel,decay", [(Adam, fastopt.adam_, 0.0), (AdamW, fastopt.adamw_, 1e-2)])
@pytest.mark.parametrize("state_dtype,state", [(None, BF16), ("bfloat16", BF16), ("float32", np.dtype(np.float32))])
@pytest.mark.parametrize("stochastic", [False, True])
def test_steps_equal_the_functional_update(opt_class, kernel, decay, state_dtype, state, stochastic):
    params, grads = problem()
    mine = [p.copy() for p in params]
    opt = run(opt_class, mine, grads, amsgrad=True, state_dtype=state_dtype, stochastic_rounding=stochastic, seed=11)
    m, v, x = ([np.zeros(p.shape, state) for p in params] for _ in range(3))
    extra = dict(stochastic_rounding=True, seed=11) if stochastic else {}
    for step, g in enumerate(grads, start=1):
        kernel(params, g, m, v, x, lr=HYPER["lr"], amsgrad=True, step=step, weight_decay=decay, **extra)
    for i, p in enumerate(params):
        assert mine[i].dtype == BF16 and np.array_equal(bits(mine[i]), bits(p))
        for key, ref in (("exp_avg", m), ("exp_avg_sq", v), ("max_exp_avg_sq", x)):
            assert opt.state[i][key].dtype == state
            assert np.array_equal(bits(opt.state[i][key]), bits(ref[i])), key


def test_one_step_is_the_reference_rounded_to_bfloat16():
    """Against the float64 reference from the paper's formulas (bf16_reference.adam64) on the widened values:
    each bfloat16 result is one of the two bfloat16 neighbours of the exact one."""
    params, grads = problem(3, sizes=(4096,), steps=1)
    p0, g0 = widen(params[0].view(np.uint16)), widen(grads[0][0].view(np.uint16))
    opt = run(AdamW, params, grads, state_dtype="float32")
    want_p, want_m, want_v = (np.asarray(a, np.float64) for a in adam64(
        p0.astype(np.float64), g0.astype(np.float64), np.zeros(4096), np.zeros(4096), None,
        lr=HYPER["lr"], beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
        decoupled=True, step=1)[:3])
    got = params[0].astype(np.float64)
    ulp = np.spacing(np.abs(params[0].astype(np.float32))).astype(np.float64) * 2.0**16  # bfloat16's: 16 bits fewer
    assert np.all(np.abs(got - want_p) <= ulp)
    np.testing.assert_allclose(opt.state[0]["exp_avg"], want_m, rtol=1e-6)
    np.testing.assert_allclose(opt.state[0]["exp_avg_sq"], want_v, rtol=1e-6)


def test_stochastic_rounding_is_reproducible_and_seeded():
    params, grads = problem(4)
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        mine = [p.copy() for p in params]
        run(AdamW, mine, grads, stochastic_rounding=True, seed=seed)
        runs[name] = mine
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(runs["a"], runs["b"]))
    assert not np.array_equal(bits(runs["a"][1]), bits(runs["c"][1]))


def test_bfloat16_and_float32_params_in_one_optimizer():
    """Each dtype is its own kernel call; stochastic rounding touches only what is bfloat16: the float32
    params (float32 state) step exactly as in an optimizer of their own."""
    low, low_grads = problem(5)
    high, high_grads = problem(5, dtype=np.float32)
    mixed_low, mixed_high = [p.copy() for p in low], [p.copy() for p in high]
    opt = AdamW(mixed_low + mixed_high, **HYPER, stochastic_rounding=True, seed=3)
    for gl, gh in zip(low_grads, high_grads):
        opt.step(gl + gh)
    alone_high = [p.copy() for p in high]
    run(AdamW, alone_high, high_grads)
    assert all(np.array_equal(a, b) for a, b in zip(mixed_high, alone_high))
    assert [opt.state[i]["exp_avg"].dtype for i in range(4)] == [BF16, BF16, np.float32, np.float32]
    # the bfloat16 ones are those of an optimizer over them alone, at tensor indices 0 and 1 of their call
    alone_low = [p.copy() for p in low]
    run(AdamW, alone_low, low_grads, stochastic_rounding=True, seed=3)
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(mixed_low, alone_low))


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    params, grads = problem(6)
    a_params = [p.copy() for p in params]
    a = run(AdamW, a_params, grads[:2], amsgrad=True, stochastic_rounding=True, seed=9)
    a.save(tmp_path / "opt.npz")
    b_params = [p.copy() for p in a_params]
    b = AdamW(b_params, **HYPER, amsgrad=True, stochastic_rounding=True, seed=9)
    b.load(tmp_path / "opt.npz")
    for g in grads[2:]:
        a.step(g)
        b.step(g)
    assert all(np.array_equal(bits(x), bits(y)) for x, y in zip(a_params, b_params))
    assert np.array_equal(bits(a.state[1]["max_exp_avg_sq"]), bits(b.state[1]["max_exp_avg_sq"]))


@pytest.mark.parametrize("make,error,words", [
    (lambda p: LAMB([p], lr=0.1), TypeError,
     r"params\[0\] has dtype bfloat16; fastopt.optim.LAMB optimizes float32 or float64 arrays \(float16 and "
     r"bfloat16 params: fastopt.optim.SGD, Adagrad, RMSprop, Adam and AdamW; bfloat16 params: also NAdam, RAdam, "
     r"Adamax, Adadelta, ASGD, Rprop and Lion\)"),
    (lambda p: Lion([p.astype(np.float16)], lr=0.1), TypeError,
     r"params\[0\] has dtype float16; fastopt.optim.Lion optimizes float32, bfloat16 or float64 arrays"),
    (lambda p: AdamW([np.zeros(3, np.float32), p], state_dtype="int8"), ValueError,
     r"state_dtype='int8' keeps the state of float32 params; params\[1\] has dtype bfloat16"),
    (lambda p: AdamW([np.zeros(3)], state_dtype="float32"), ValueError,
     r"state_dtype='float32' keeps the state of float32, float16 or bfloat16 params; params\[0\] has dtype float64"),
    (lambda p: AdamW([np.zeros(3, np.float32)], stochastic_rounding=True), ValueError,
     "stochastic_rounding=True rounds bfloat16 values, but with state_dtype=None and no bfloat16 params"),
])
def test_refusals_name_the_argument(make, error, words):
    with pytest.raises(error, match=words):
        make(np.zeros(3, BF16))


def test_a_refused_group_changes_nothing():
    opt = AdamW([np.zeros(3, np.float32)], state_dtype="int8")
    with pytest.raises(ValueError, match=r"params\[1\] has dtype bfloat16"):
        opt.add_param_group({"params": [np.zeros(3, BF16)]})
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 1


def test_float32_grads_for_bfloat16_params_are_refused_before_anything_is_written():
    params, _ = problem(7)
    before = [p.copy() for p in params]
    opt = AdamW(params, **HYPER)
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float32 but params\[0\] has bfloat16"):
        opt.step([np.ones(5, np.float32), np.ones(777, BF16)])
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(params, before)) and not opt.state
