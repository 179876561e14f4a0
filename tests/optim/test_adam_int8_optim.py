"""fastopt.optim.Adam / AdamW with state_dtype="int8": 8-bit state (fastopt.QuantizedState) for params of
at least 4096 elements and float32 below (bitsandbytes' min_8bit_size); steps equal the functional calls;
state_dict, load_state_dict and checkpoints round-trip bit-exactly; the memory; training quality."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt.optim import Adam, AdamW


def params_and_grads(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(64, 128), (100,), (4096,), (7, 5)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(5)]
    return params, grads


@pytest.mark.parametrize("cls, amsgrad", [(AdamW, False), (Adam, True)])
def test_state_forms_and_steps_equal_the_functional_calls(cls, amsgrad):
    params, grads = params_and_grads()
    opt = cls(params, lr=1e-2, weight_decay=0.05, amsgrad=amsgrad, state_dtype="int8")
    mine = [p.copy() for p in params]
    m = [fastopt.QuantizedState.zeros(p.shape, True) if p.size >= 4096 else np.zeros_like(p) for p in mine]
    v = [fastopt.QuantizedState.zeros(p.shape, False) if p.size >= 4096 else np.zeros_like(p) for p in mine]
    vmax = [fastopt.QuantizedState.zeros(p.shape, False) if p.size >= 4096 else np.zeros_like(p) for p in mine]
    kernel = fastopt.adamw_ if cls is AdamW else fastopt.adam_
    for t, g in enumerate(grads, start=1):
        opt.step(g)
        for j in range(len(mine)):
            kernel(mine[j], g[j], m[j], v[j], vmax[j] if amsgrad else None, lr=1e-2, weight_decay=0.05,
                   amsgrad=amsgrad, step=t)
        assert all(np.array_equal(a, b) for a, b in zip(params, mine))
    for j, p in enumerate(params):
        state = opt.state[j]
        assert isinstance(state["exp_avg"], fastopt.QuantizedState) == (p.size >= 4096)
        if p.size >= 4096:
            assert state["exp_avg"].signed and not state["exp_avg_sq"].signed
            assert np.array_equal(state["exp_avg"].codes, m[j].codes)
            if amsgrad:
                assert not state["max_exp_avg_sq"].signed


def test_memory_per_parameter():
    p = np.zeros(1 << 20, np.float32)
    opt = AdamW([p], state_dtype="int8")
    opt.step([np.ones_like(p)])
    state_bytes = sum(v.nbytes for k, v in opt.state[0].items() if k != "step")
    assert state_bytes / p.size <= 2.04


def _continue(opt, params, grads):
    for g in grads:
        opt.step(g)
    return [p.copy() for p in params]


def test_state_dict_round_trip_is_bit_exact(tmp_path):
    params, grads = params_and_grads(1)
    opt = AdamW(params, lr=1e-2, state_dtype="int8")
    _continue(opt, params, grads[:2])
    saved = opt.state_dict()
    snapshot = [p.copy() for p in params]
    assert isinstance(saved["state"][0]["exp_avg"], fastopt.QuantizedState)
    assert saved["state"][0]["exp_avg"].codes is not opt.state[0]["exp_avg"].codes  # a copy
    opt.save(tmp_path / "opt.npz")
    expected = _continue(opt, params, grads[2:])
    for restore in ("state_dict", "checkpoint"):
        again = [p.copy() for p in snapshot]
        other = AdamW(again, lr=1e-2, state_dtype="int8")
        if restore == "state_dict":
            other.load_state_dict(saved)
        else:
            other.load(tmp_path / "opt.npz")
        q = other.state[0]["exp_avg"]
        assert isinstance(q, fastopt.QuantizedState) and q.signed
        assert all(np.array_equal(a, b) for a, b in zip(_continue(other, again, grads[2:]), expected)), restore


def test_bad_state_and_params_are_refused():
    with pytest.raises(ValueError, match="state_dtype='int8' keeps the state of float32 params"):
        AdamW([np.zeros(5000)], state_dtype="int8")
    params, grads = params_and_grads(2)
    opt = AdamW(params, state_dtype="int8")
    opt.step(grads[0])
    saved = opt.state_dict()
    saved["state"][0]["exp_avg_sq"] = fastopt.QuantizedState.zeros(params[0].shape, True)
    with pytest.raises(ValueError, match="unsigned"):
        AdamW([p.copy() for p in params], state_dtype="int8").load_state_dict(saved)
    float_opt = AdamW([p.copy() for p in params])
    with pytest.raises((TypeError, ValueError), match="QuantizedState"):
        float_opt.load_state_dict(opt.state_dict())
    assert float_opt.state == {}
    saved = opt.state_dict()
    saved["state"][0]["exp_avg"] = fastopt.QuantizedState(np.zeros(params[0].shape, np.uint8),
                                                          np.zeros(3, np.float32), True)
    with pytest.raises(ValueError, match="absmax"):
        AdamW([p.copy() for p in params], state_dtype="int8").load_state_dict(saved)


def test_training_with_8bit_state_reaches_the_float32_loss():
    """Softmax regression (128 features, 64 classes: an 8192-element weight) on a teacher's labels, 300
    AdamW steps: the final loss with 8-bit state within 1% of float32 state's."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((1024, 128)).astype(np.float32)
    y = np.argmax(X @ rng.standard_normal((128, 64)), axis=1)

    def train(state_dtype):
        W = np.zeros((128, 64), np.float32)
        opt = AdamW([W], lr=3e-3, weight_decay=0.0, state_dtype=state_dtype)
        order = np.random.default_rng(6)
        for _ in range(300):
            batch = order.integers(0, len(y), 128)
            loss, dscores = fastopt.softmax_cross_entropy(X[batch] @ W, y[batch])
            opt.step([X[batch].T @ dscores])
        return fastopt.softmax_cross_entropy(X @ W, y)[0]

    base = train("float32")
    assert abs(train("int8") - base) <= 0.01 * base
