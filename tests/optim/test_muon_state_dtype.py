"""fastopt.optim.Muon with state_dtype= (issue 18): its momentum buffer in bfloat16 (rounded to nearest-even) or 8-bit
blockwise (fastopt.QuantizedState, the signed map; float32 under 4096 elements), through the element-wise passes'
compact loops (muon_momentum_ is a rule: csrc/cpu/rule_bf16_loops.h, rule_int8_loops.h).

The witness for a step is Muon with float32 state set, before the step, to the values the compact buffer reads
back as (ml_dtypes' widening; quant8_reference.dequantize, written from the paper): its params are the compact
optimizer's bit for bit (the Newton-Schulz iteration between the passes sees the same numbers), and its new buffer
rounded to nearest-even (ml_dtypes) or quantised by the reference is the compact optimizer's."""

from __future__ import annotations

import numpy as np
import pytest

from fastopt import QuantizedState, _quantized
from fastopt.optim import Muon
from quant8_reference import dequantize, quantize

ml_dtypes = pytest.importorskip("ml_dtypes")
# (8192 elements: 8-bit with "int8"; 21 and 4095: float32 there)
SHAPES = [(64, 128), (7, 3), (63, 65)]
HYPER = dict(lr=0.02, weight_decay=0.1, momentum=0.9, adjust_lr_fn="match_rms_adamw")


def problem(seed, steps=4):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(steps)]
    return params, grads


def read_back(value):
    if isinstance(value, QuantizedState):
        return dequantize(value.codes, value.absmax, _quantized.SIGNED_MAP)
    return np.asarray(value).astype(np.float32)


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_each_step_is_the_float32_optimizer_between_read_and_write(state_dtype):
    params, grads = problem(1)
    mine = Muon(params, **HYPER, state_dtype=state_dtype)
    wide_params = [p.copy() for p in params]
    wide = Muon(wide_params, **HYPER)
    for step, g in enumerate(grads, start=1):
        if step > 1:
            for i in range(len(params)):
                wide.state[i]["momentum_buffer"][...] = read_back(mine.state[i]["momentum_buffer"])
        wide.step(g)
        mine.step(g)
        assert all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(params, wide_params)), step
        for i, p in enumerate(params):
            value, want = mine.state[i]["momentum_buffer"], wide.state[i]["momentum_buffer"]
            if state_dtype == "bfloat16":
                assert value.dtype == np.dtype(ml_dtypes.bfloat16)
                assert np.array_equal(value.view(np.uint16), want.astype(ml_dtypes.bfloat16).view(np.uint16)), step
            elif p.size >= 4096:
                assert isinstance(value, QuantizedState) and value.signed
                codes, absmax = quantize(want, _quantized.SIGNED_MAP)
                assert np.array_equal(value.codes, codes) and np.array_equal(value.absmax, absmax), (step, i)
            else:
                assert value.dtype == np.float32 and np.array_equal(value, want), (step, i)


def test_int8_state_round_trips_through_state_dict_and_checkpoints(tmp_path):
    params, grads = problem(2, steps=5)
    a = Muon(params, **HYPER, state_dtype="int8")
    for g in grads[:2]:
        a.step(g)
    a.save(tmp_path / "muon.npz")
    b_params, c_params = [p.copy() for p in params], [p.copy() for p in params]
    b, c = Muon(b_params, **HYPER, state_dtype="int8"), Muon(c_params, **HYPER, state_dtype="int8")
    b.load_state_dict(a.state_dict())
    c.load(tmp_path / "muon.npz")
    for g in grads[2:]:
        for opt in (a, b, c):
            opt.step(g)
    for mine, opt in ((b_params, b), (c_params, c)):
        assert all(x.tobytes() == y.tobytes() for x, y in zip(params, mine))
        q = opt.state[0]["momentum_buffer"]
        assert isinstance(q, QuantizedState) and np.array_equal(q.codes, a.state[0]["momentum_buffer"].codes)


def test_memory_and_refusals():
    p = np.zeros((1024, 1024), np.float32)
    opt = Muon([p], state_dtype="int8")
    opt.step([np.ones_like(p)])
    assert opt.state[0]["momentum_buffer"].nbytes / p.size == pytest.approx(1 + 4 / 256)
    with pytest.raises(ValueError, match=r"state_dtype='int8' keeps the state of float32 params; params\[0\] has "
                                         "dtype float64"):
        Muon([np.zeros((64, 128))], state_dtype="int8")
    with pytest.raises(ValueError, match=r"state_dtype must be None .* got 'float16'"):
        Muon([np.zeros((4, 4), np.float32)], state_dtype="float16")
    with pytest.raises(TypeError, match="stochastic_rounding"):
        Muon([np.zeros((4, 4), np.float32)], state_dtype="bfloat16", stochastic_rounding=True)
