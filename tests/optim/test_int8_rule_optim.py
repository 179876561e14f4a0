"""fastopt.optim's rule classes (NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop, Lion: every element-wise rule,
fastopt/optim/_from_rule.py) with state_dtype="int8" (issue 18): 8-bit state (fastopt.QuantizedState) for params of
at least 4096 elements and float32 below (bitsandbytes' min_8bit_size), each entry in its map.

The witness for a step is the same class with float32 state set, before the step, to the values the 8-bit state
reads back as (quant8_reference.dequantize, written from the paper): its params are the 8-bit optimizer's bit for
bit, and its new state quantised by the reference is the 8-bit optimizer's codes and absmax. That holds for the
numbers these classes keep beside the arrays too (NAdam's mu_product, ASGD's eta and mu: float in both). Then:
round trips through state_dict and checkpoints, training quality, memory, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import QuantizedState, _quantized, optim
from fastopt.rules import SPECS
from quant8_reference import dequantize, quantize
import softmax_regression

SUMS = {r["function"] for r in fastopt._core._rule_registry() if r["tensor_sums"]}
NAMES = [s.name for s in SPECS if s.kernel not in SUMS]
KEYS = {s.name: tuple(st.key for st in s.state) for s in SPECS}
#: hyperparameters that move every state (ASGD averages from t0 = 2; Rprop's lr is its first step size)
HYPER = {"NAdam": dict(lr=1e-2, weight_decay=1e-2), "RAdam": dict(lr=1e-2, betas=(0.9, 0.9)),
         "Adamax": dict(lr=1e-2), "Adadelta": dict(lr=0.5, weight_decay=1e-2), "ASGD": dict(lr=1e-2, t0=2),
         "Rprop": dict(lr=1e-2), "Lion": dict(lr=1e-3, weight_decay=0.1)}
#: The map each entry takes (the test's own statement of it, not read from fastopt): unsigned for what the
#: optimizer never makes negative (second moments, infinity norms, squared averages, step sizes)
SIGNED = {"exp_avg": True, "exp_avg_sq": False, "exp_inf": False, "square_avg": False, "acc_delta": False,
          "ax": True, "prev": True, "step_size": False}
# (8192 and 5100 elements: 8-bit, the second with a short last block; 4096: 8-bit, exactly min_8bit_size;
# 100, 35 and 4095: float32)
SHAPES = [(64, 128), (100,), (4096,), (7, 5), (300, 17), (4095,)]


def qmap(signed):
    return _quantized.SIGNED_MAP if signed else _quantized.UNSIGNED_MAP


def problem(seed, steps=4, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(steps)]
    return params, grads


def test_every_element_wise_rule_class_is_covered():
    assert set(NAMES) == set(HYPER) and "LAMB" not in NAMES
    assert {k for name in NAMES for k in KEYS[name]} == set(SIGNED)


@pytest.mark.parametrize("name", NAMES)
def test_each_step_is_the_float32_class_between_read_and_quantise(name):
    cls = getattr(optim, name)
    params, grads = problem(1)
    # two groups, each mixing 8-bit and float32 state: two kernel calls per group
    mine = cls([{"params": params[:3]}, {"params": params[3:]}], **HYPER[name], state_dtype="int8")
    wide_params = [p.copy() for p in params]
    wide = cls([{"params": wide_params[:3]}, {"params": wide_params[3:]}], **HYPER[name])
    for step, g in enumerate(grads, start=1):
        if step > 1:  # the float32 class starts from what the 8-bit state reads back as
            for i, p in enumerate(params):
                for key, value in mine.state[i].items():
                    if isinstance(value, QuantizedState):
                        wide.state[i][key][...] = dequantize(value.codes, value.absmax, qmap(SIGNED[key]))
                    elif isinstance(value, np.ndarray):
                        wide.state[i][key][...] = value
                    else:
                        assert wide.state[i][key] == value, (step, key)  # step and the numbers beside the arrays
        wide.step(g)
        mine.step(g)
        assert all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(params, wide_params)), step
        for i, p in enumerate(params):
            assert set(mine.state[i]) == set(wide.state[i])
            for key in KEYS[name]:
                value, want = mine.state[i][key], wide.state[i][key]
                assert isinstance(value, QuantizedState) == (p.size >= 4096), (i, key)
                if isinstance(value, QuantizedState):
                    assert value.signed == SIGNED[key] and value.shape == p.shape
                    codes, absmax = quantize(want, qmap(SIGNED[key]))
                    assert np.array_equal(value.codes, codes) and np.array_equal(value.absmax, absmax), (step, i, key)
                else:
                    assert value.dtype == np.float32 and np.array_equal(value, want), (step, i, key)


def test_rprop_step_sizes_start_at_lr_in_8_bits():
    p = np.zeros(5000, np.float32)
    opt = optim.Rprop([p], lr=0.02, state_dtype="int8")
    opt.step([np.zeros_like(p)])  # (a zero gradient keeps every step size)
    size = opt.state[0]["step_size"]
    assert isinstance(size, QuantizedState) and not size.signed
    assert np.array_equal(size.dequantize(), np.full(5000, 0.02, np.float32))


def test_memory_per_parameter():
    # Adam's two moments in int8: 2 bytes + 2 absmax float32 per 256 = 2.03125 bytes per element
    p = np.zeros((1024, 1024), np.float32)
    opt = optim.NAdam([p], state_dtype="int8")
    opt.step([np.ones_like(p)])
    total = sum(v.nbytes for v in opt.state[0].values() if isinstance(v, QuantizedState))
    assert total / p.size == pytest.approx(2 + 2 * 4 / 256)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_and_checkpoint_round_trips_are_bit_exact(name, tmp_path):
    cls = getattr(optim, name)
    params, grads = problem(2, steps=5)
    a = cls(params, **HYPER[name], state_dtype="int8")
    for g in grads[:2]:
        a.step(g)
    a.save(tmp_path / "opt.npz")
    b_params, c_params = [p.copy() for p in params], [p.copy() for p in params]
    b, c = cls(b_params, **HYPER[name], state_dtype="int8"), cls(c_params, **HYPER[name], state_dtype="int8")
    b.load_state_dict(a.state_dict())
    c.load(tmp_path / "opt.npz")
    for g in grads[2:]:
        for opt in (a, b, c):
            opt.step(g)
    for mine, opt in ((b_params, b), (c_params, c)):
        assert all(x.tobytes() == y.tobytes() for x, y in zip(params, mine))
        for i in range(len(params)):
            for key in KEYS[name]:
                want, got = a.state[i][key], opt.state[i][key]
                assert type(want) is type(got), (key, i)
                if isinstance(want, QuantizedState):
                    assert got.signed == want.signed and np.array_equal(got.codes, want.codes)
                    assert np.array_equal(got.absmax, want.absmax)
                else:
                    assert np.array_equal(got, want)


@pytest.mark.parametrize("name", ["NAdam", "RAdam", "Adamax", "Adadelta", "Lion"])
def test_training_with_8bit_state_reaches_the_float32_loss(name):
    """Softmax regression (128 features, 64 classes: an 8192-element weight, 8-bit with "int8") on a teacher's
    labels, 300 steps from log(64) = 4.16: the final loss with 8-bit state within 3% of float32 state's.
    (ASGD's ax is an average the update never reads, and Rprop's full-batch rule has no use for minibatches.)"""
    cls = getattr(optim, name)
    hyper = {"NAdam": dict(lr=1e-2), "RAdam": dict(lr=3e-2), "Adamax": dict(lr=3e-2), "Adadelta": dict(lr=3.0),
             "Lion": dict(lr=1e-3)}[name]

    def train(state_dtype):
        loss, opt = softmax_regression.train(cls, hyper, state_dtype)
        assert isinstance(opt.state[0][KEYS[name][0]], QuantizedState if state_dtype == "int8" else np.ndarray)
        return loss

    base, int8 = train("float32"), train("int8")
    assert base < 0.3 and abs(int8 - base) <= 0.03 * base, (base, int8)


@pytest.mark.parametrize("name", NAMES)
def test_params_and_options_int8_cannot_keep_are_refused(name):
    cls = getattr(optim, name)
    with pytest.raises(ValueError, match=r"state_dtype='int8' keeps the state of float32 params; params\[1\] has "
                                         r"dtype float64"):
        cls([np.zeros(5000, np.float32), np.zeros(5000)], state_dtype="int8")
    with pytest.raises(ValueError, match="stochastic_rounding=True rounds bfloat16 values, but with "
                                         "state_dtype='int8' and no bfloat16 params nothing written is bfloat16"):
        cls([np.zeros(5000, np.float32)], state_dtype="int8", stochastic_rounding=True)


def test_a_loaded_state_in_the_wrong_map_is_refused_and_changes_nothing():
    p = np.ones(5000, np.float32)
    opt = optim.NAdam([p], state_dtype="int8")
    opt.step([np.ones_like(p)])
    saved = opt.state_dict()
    v = saved["state"][0]["exp_avg_sq"]
    saved["state"][0]["exp_avg_sq"] = QuantizedState(v.codes, v.absmax, True)
    before = p.copy(), opt.state[0]["exp_avg_sq"].codes.copy()
    with pytest.raises(ValueError, match="is a signed QuantizedState; exp_avg_sq takes the unsigned map"):
        opt.load_state_dict(saved)
    assert np.array_equal(p, before[0]) and np.array_equal(opt.state[0]["exp_avg_sq"].codes, before[1])
    # and a float32 optimizer takes no 8-bit state
    other = optim.NAdam([p.copy()])
    with pytest.raises(ValueError, match=r"state_dict: state\[0\]\['exp_avg'\] is a fastopt.QuantizedState, but "
                                         "this optimizer keeps state_dtype=None state"):
        other.load_state_dict(opt.state_dict())
