"""fastopt.optim's rule classes (NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop, Lion: every element-wise rule,
fastopt/optim/_from_rule.py) with state_dtype="bfloat16", bfloat16 params and stochastic_rounding (issue 18).

The witness for a step is the same class with float32 state and params set to the widened values before the
step: its result rounded to nearest-even (ml_dtypes) or stochastically (bf16_reference.py, from the
definitions) is the compact optimizer's, bit for bit. It holds for the numbers these classes keep beside the
arrays (NAdam's mu_product, ASGD's eta and mu), which are float in both."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
import bf16_reference as ref
from fastopt import optim
from fastopt.rules import SPECS

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

SUMS = {r["function"] for r in fastopt._core._rule_registry() if r["tensor_sums"]}
NAMES = [s.name for s in SPECS if s.kernel not in SUMS]
#: hyperparameters that move every state (ASGD averages from t0 = 2; Rprop's lr is its first step size)
HYPER = {"NAdam": dict(lr=1e-2, weight_decay=1e-2), "RAdam": dict(lr=1e-2, betas=(0.9, 0.9)),
         "Adamax": dict(lr=1e-2), "Adadelta": dict(lr=0.5, weight_decay=1e-2), "ASGD": dict(lr=1e-2, t0=2),
         "Rprop": dict(lr=1e-2), "Lion": dict(lr=1e-3, weight_decay=0.1)}
SIZES = (5, 777, 4099)


def bits(a) -> np.ndarray:
    return np.asarray(a).view(np.uint16)


def arrays_of(state):
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray) and v.ndim > 0}


def problem(seed, param_dtype, steps=4):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in SIZES]
    grads = [[rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in SIZES] for _ in range(steps)]
    return params, grads


def test_every_element_wise_rule_class_is_covered():
    assert set(NAMES) == set(HYPER) and "LAMB" not in NAMES


@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("param_dtype,state_dtype", [(np.float32, "bfloat16"), (BF16, None), (BF16, "bfloat16")],
                         ids=["f32-params-bf16-state", "bf16-params-f32-state", "bf16-all"])
@pytest.mark.parametrize("name", NAMES)
def test_each_step_is_the_float32_class_then_rounded(name, param_dtype, state_dtype, stochastic):
    cls = getattr(optim, name)
    params, grads = problem(1, param_dtype)
    seed = 12345
    mine = cls(params, **HYPER[name], state_dtype=state_dtype, stochastic_rounding=stochastic, seed=seed)
    wide_params = [p.astype(np.float32) for p in params]
    wide = cls(wide_params, **HYPER[name])
    for step, g in enumerate(grads, start=1):
        for i, p in enumerate(params):
            wide_params[i][...] = p.astype(np.float32)
            if step > 1:  # (the float32 class holds the compact state's values, widened, and its numbers)
                wide.state[i].update({k: (v.astype(np.float32) if isinstance(v, np.ndarray) else v)
                                      for k, v in mine.state[i].items()})
        mine.step(g)
        wide.step([x.astype(np.float32) for x in g])
        if step == 1 and name == "Rprop":
            continue  # (its step sizes start at lr, which bfloat16 state holds rounded: compared from step 2 on)
        for k, p in enumerate(params):
            # rounding operands: 0 the params, then the state arrays in kernel order from 1; tensor k of the call
            written = [(0, p, wide_params[k])]
            keys = [s.key for s in next(sp for sp in SPECS if sp.name == name).state]
            written += [(j + 1, mine.state[k][key], wide.state[k][key]) for j, key in enumerate(keys)]
            for operand, got, want in written:
                if got.dtype == np.float32:
                    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (step, k, operand)
                elif stochastic:
                    expected = ref.round_stochastic(want, ref.random_bits(seed, step, k, operand, want.size))
                    assert np.array_equal(bits(got), expected), (step, k, operand)
                else:
                    assert np.array_equal(bits(got), ref.round_nearest_even(want)), (step, k, operand)
    dtype = np.float32 if state_dtype is None else BF16
    assert all(v.dtype == dtype for s in mine.state.values() for v in arrays_of(s).values())


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_and_checkpoint_round_trips_are_bit_exact(name, tmp_path):
    cls = getattr(optim, name)
    params, grads = problem(2, BF16, steps=5)
    kw = dict(HYPER[name], state_dtype="bfloat16", stochastic_rounding=True, seed=7)
    a = cls(params, **kw)
    for g in grads[:2]:
        a.step(g)
    a.save(tmp_path / "opt.npz")
    b_params, c_params = [p.copy() for p in params], [p.copy() for p in params]
    b, c = cls(b_params, **kw), cls(c_params, **kw)
    b.load_state_dict(a.state_dict())
    c.load(tmp_path / "opt.npz")
    assert all(v.dtype == BF16 for s in c.state.values() for v in arrays_of(s).values())
    for g in grads[2:]:
        for opt in (a, b, c):
            opt.step(g)
    for mine in (b_params, c_params):
        assert all(np.array_equal(bits(x), bits(y)) for x, y in zip(params, mine))
    for opt in (b, c):
        for i in range(len(params)):
            for key, value in arrays_of(a.state[i]).items():
                assert np.array_equal(bits(value), bits(opt.state[i][key])), (key, i)


def test_bfloat16_state_trains_as_float32_state():
    # a least-squares fit over 1000 steps: with bfloat16 state (round to nearest) the final loss is within 1%
    # of the starting loss of float32 state's final loss (Adamax's rounded exp_inf slows its last digits:
    # 4e-3 against 2e-5, from 25), and both train
    rng = np.random.default_rng(3)
    x, w_true = rng.standard_normal((256, 32)).astype(np.float32), rng.standard_normal(32).astype(np.float32)
    y = x @ w_true
    start = float(np.mean(y ** 2))
    for name in NAMES:
        losses = {}
        for state_dtype in ("float32", "bfloat16"):
            w = np.zeros(32, np.float32)
            opt = getattr(optim, name)([w], **HYPER[name], state_dtype=state_dtype)
            for _ in range(1000):
                r = x @ w - y
                opt.step([(x.T @ r / len(y)).astype(np.float32)])
            losses[state_dtype] = float(np.mean((x @ w - y) ** 2))
        assert abs(losses["bfloat16"] - losses["float32"]) <= 0.01 * start, (name, losses)
        assert losses["bfloat16"] < 0.2 * start, (name, losses)  # (it trained)


@pytest.mark.parametrize("make,error,words", [
    (lambda: optim.Lion([np.zeros(3)], state_dtype="int8"), ValueError,
     r"state_dtype='int8' keeps the state of float32 params; params\[0\] has dtype float64"),
    (lambda: optim.NAdam([np.zeros(3, np.float32)], state_dtype="float16"), ValueError,
     r"state_dtype must be None .* or one of 'float32', 'bfloat16', 'int8', got 'float16'"),
    (lambda: optim.Adamax([np.zeros(3, np.float32)], stochastic_rounding=True), ValueError,
     "stochastic_rounding=True rounds bfloat16 values, but with state_dtype=None and no bfloat16 params"),
    (lambda: optim.RAdam([np.zeros(3)], state_dtype="bfloat16"), ValueError,
     r"state_dtype='bfloat16' keeps the state of float32 or bfloat16 params; params\[0\] has dtype float64"),
    (lambda: optim.Rprop([np.zeros(3, np.float32)], seed=-1), ValueError, "seed must be an int"),
    (lambda: optim.LAMB([np.zeros(3, np.float32)], state_dtype="bfloat16"), TypeError, "state_dtype"),
])
def test_refusals_name_the_argument(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_bfloat16_state_with_float32_grads_for_bfloat16_params_writes_nothing():
    params, _ = problem(4, BF16)
    before = [bits(p).copy() for p in params]
    opt = optim.Adadelta(params, state_dtype="bfloat16")
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float32 but params\[0\] has bfloat16"):
        opt.step([np.ones(n, np.float32) for n in SIZES])
    assert all(np.array_equal(bits(p), b) for p, b in zip(params, before))
