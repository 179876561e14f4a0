"""fastopt.optim.SGD / Adagrad / RMSprop with state_dtype="int8": 8-bit state (fastopt.QuantizedState) for params
of at least 4096 elements and float32 below (bitsandbytes' min_8bit_size), each entry in its map (signed:
momentum_buffer, grad_avg; unsigned: Adagrad's sum, RMSprop's square_avg); steps equal the kernels driven by
hand with QuantizedState bit for bit; state_dict, load_state_dict and checkpoints round-trip bit-exactly; the
memory; training quality; the refusals, which change nothing. (Adam's: test_adam_int8_optim.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import QuantizedState
from fastopt.optim import SGD, Adagrad, RMSprop
import softmax_regression

# (8192 and 5100 elements: 8-bit, the second with a short last block; 4096: 8-bit, exactly min_8bit_size;
# 100, 35 and 4095: float32)
SHAPES = [(64, 128), (100,), (4096,), (7, 5), (300, 17), (4095,)]

CASES = {
    "sgd_momentum": (SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    "sgd_nesterov_max": (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    "adagrad": (Adagrad, dict(lr=0.05, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1)),
    "adagrad_from_zero": (Adagrad, dict(lr=0.05, eps=1e-8)),
    "rmsprop": (RMSprop, dict(lr=0.01, alpha=0.9, weight_decay=1e-2)),
    "rmsprop_centered_momentum": (RMSprop, dict(lr=0.01, momentum=0.5, centered=True, maximize=True)),
}

# The map each entry takes (the test's own statement of it, not read from fastopt)
SIGNED = {"momentum_buffer": True, "grad_avg": True, "sum": False, "square_avg": False}


def keys_of(cls, hyper):
    """The state entries the optimizer keeps, in the kernel's operand order."""
    if cls is SGD:
        return ("momentum_buffer",)
    if cls is Adagrad:
        return ("sum",)
    return ("square_avg",) + ("momentum_buffer",) * (hyper.get("momentum", 0) > 0) + \
        ("grad_avg",) * bool(hyper.get("centered"))


def hand_state(cls, hyper, p):
    """The state a by-hand user makes for params p: 8-bit from 4096 elements up, float32 below."""
    state = {}
    for key in keys_of(cls, hyper):
        start = np.full(p.shape, hyper.get("initial_accumulator_value", 0.0) if key == "sum" else 0.0, np.float32)
        if p.size < 4096:
            state[key] = start
        elif start.any():
            state[key] = QuantizedState.quantize(start, signed=SIGNED[key])
        else:
            state[key] = QuantizedState.zeros(p.shape, signed=SIGNED[key])
    return state


def by_hand(cls, hyper, p, g, state, t):
    """One kernel call over one parameter (t: the 1-based number of the update)."""
    if cls is SGD:
        fastopt.sgd_([p], [g], [state["momentum_buffer"]], step=t, **hyper)
    elif cls is Adagrad:
        hyper = {k: v for k, v in hyper.items() if k != "initial_accumulator_value"}
        fastopt.adagrad_([p], [g], [state["sum"]], step=t, **hyper)
    else:
        operands = [[state[k]] if k in state else None for k in ("square_avg", "momentum_buffer", "grad_avg")]
        fastopt.rmsprop_([p], [g], *operands, step=t, **hyper)


def same(a, b) -> bool:
    """The same form and the same bits."""
    if isinstance(a, QuantizedState) or isinstance(b, QuantizedState):
        return (isinstance(a, QuantizedState) and isinstance(b, QuantizedState) and a.signed == b.signed
                and np.array_equal(a.codes, b.codes) and a.absmax.tobytes() == b.absmax.tobytes())
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def snapshot(opt):
    return {i: {k: (v.copy() if hasattr(v, "copy") else v) for k, v in s.items()} for i, s in opt.state.items()}


def same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(
        a[i].keys() == b[i].keys() and all(same(x, b[i][k]) if hasattr(x, "shape") else x == b[i][k]
                                           for k, x in a[i].items()) for i in a)


def params_and_grads(seed=0, steps=5, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("case", sorted(CASES))
def test_steps_equal_the_kernels_driven_by_hand(case):
    cls, hyper = CASES[case]
    params, grads = params_and_grads()
    # two groups, each mixing 8-bit and float32 state: two kernel calls per group
    opt = cls([{"params": params[:3]}, {"params": params[3:]}], **hyper, state_dtype="int8")
    mine = [p.copy() for p in params]
    states = [hand_state(cls, hyper, p) for p in mine]
    for t, g in enumerate(grads, start=1):
        opt.step(g)
        for j in range(len(mine)):
            by_hand(cls, hyper, mine[j], g[j], states[j], t)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(params, mine)), t
    for j, p in enumerate(params):
        assert set(opt.state[j]) - {"step"} == set(keys_of(cls, hyper))
        for key in keys_of(cls, hyper):
            value = opt.state[j][key]
            assert isinstance(value, QuantizedState) == (p.size >= 4096), (j, key)
            if isinstance(value, QuantizedState):
                assert value.signed == SIGNED[key] and value.shape == p.shape
                assert value.absmax.shape == (-(-p.size // 256),)
            else:
                assert value.dtype == np.float32
            assert same(value, states[j][key]), (j, key)


@pytest.mark.parametrize("case", ["sgd_momentum", "adagrad", "rmsprop_centered_momentum"])
def test_small_params_keep_float32_state_the_same_bits_as_float32s(case):
    cls, hyper = CASES[case]
    params, grads = params_and_grads(1, shapes=[(4095,), (3, 7), (1,)])
    twin = [p.copy() for p in params]
    int8, f32 = cls(params, **hyper, state_dtype="int8"), cls(twin, **hyper, state_dtype="float32")
    for g in grads:
        int8.step(g)
        f32.step(g)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(params, twin))
    assert same_state(snapshot(int8), snapshot(f32))


def test_adagrad_sum_starts_at_the_initial_accumulator_value_exactly():
    p = np.zeros(5000, np.float32)
    opt = Adagrad([p], initial_accumulator_value=0.1, state_dtype="int8")
    opt.step([np.zeros_like(p)])  # (sum += 0: the start, requantized)
    q = opt.state[0]["sum"]
    assert isinstance(q, QuantizedState) and not q.signed
    assert np.array_equal(q.dequantize(), np.full(p.shape, 0.1, np.float32))


def test_sgd_without_momentum_keeps_no_state_and_int8_changes_nothing():
    params, grads = params_and_grads(2, shapes=[(8192,), (10,)])
    twin = [p.copy() for p in params]
    int8, f32 = SGD(params, lr=0.1, state_dtype="int8"), SGD(twin, lr=0.1)
    for g in grads:
        int8.step(g)
        f32.step(g)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(params, twin))
    assert all(s["momentum_buffer"] is None for s in int8.state.values())
    # momentum switched on mid-run: the buffers it starts are 8-bit (signed) for the large param
    int8.param_groups[0]["momentum"] = 0.9
    int8.step(grads[0])
    assert isinstance(int8.state[0]["momentum_buffer"], QuantizedState) and int8.state[0]["momentum_buffer"].signed
    assert isinstance(int8.state[1]["momentum_buffer"], np.ndarray)


def test_rmsprop_buffers_switched_on_mid_run_take_the_form_of_square_avg():
    params, grads = params_and_grads(3, shapes=[(8192,), (10,)])
    opt = RMSprop(params, lr=0.01, state_dtype="int8")
    opt.step(grads[0])
    opt.param_groups[0].update(momentum=0.9, centered=True)
    opt.step(grads[1])
    for key in ("momentum_buffer", "grad_avg"):
        assert isinstance(opt.state[0][key], QuantizedState) and opt.state[0][key].signed, key
        assert isinstance(opt.state[1][key], np.ndarray) and opt.state[1][key].dtype == np.float32, key


@pytest.mark.parametrize("case,entries", [("sgd_momentum", 1), ("adagrad", 1), ("rmsprop_centered_momentum", 3)])
def test_memory_per_parameter(case, entries):
    """Each 8-bit entry: one byte per element and a float32 absmax per 256 (1.016 bytes per element)."""
    cls, hyper = CASES[case]
    p = np.zeros(1 << 20, np.float32)
    opt = cls([p], **hyper, state_dtype="int8")
    opt.step([np.ones_like(p)])
    state_bytes = sum(v.nbytes for k, v in opt.state[0].items() if k != "step")
    assert state_bytes == entries * (p.size + 4 * p.size // 256)
    assert state_bytes / p.size / entries <= 1 + 4 / 256


TRAINING = {
    "momentum": (SGD, dict(lr=0.05, momentum=0.9)),
    "nesterov": (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    "adagrad": (Adagrad, dict(lr=0.05)),
    "rmsprop": (RMSprop, dict(lr=3e-3)),
    "rmsprop_centered_momentum": (RMSprop, dict(lr=2e-3, momentum=0.5, centered=True)),
}


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_training_with_8bit_state_reaches_the_float32_loss(name):
    """Softmax regression (128 features, 64 classes: an 8192-element weight, 8-bit with "int8") on a teacher's
    labels, 300 steps from log(64) = 4.16: the final loss with 8-bit state within 2% of float32 state's."""
    cls, hyper = TRAINING[name]

    def train(state_dtype):
        loss, opt = softmax_regression.train(cls, hyper, state_dtype)
        assert isinstance(next(v for k, v in opt.state[0].items() if k != "step"),
                          QuantizedState if state_dtype == "int8" else np.ndarray)
        return loss

    base, int8 = train("float32"), train("int8")
    assert base < 0.2 and abs(int8 - base) <= 0.02 * base, (base, int8)


def _continue(opt, params, grads):
    for g in grads:
        opt.step(g)
    return [p.copy() for p in params]


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_and_checkpoint_round_trips_are_bit_exact(case, tmp_path):
    cls, hyper = CASES[case]
    params, grads = params_and_grads(4)
    opt = cls(params, **hyper, state_dtype="int8")
    _continue(opt, params, grads[:2])
    saved = opt.state_dict()
    snapshot_params = [p.copy() for p in params]
    key = keys_of(cls, hyper)[0]
    assert isinstance(saved["state"][0][key], QuantizedState)
    assert saved["state"][0][key].codes is not opt.state[0][key].codes  # a copy
    opt.save(tmp_path / "opt.npz")
    expected = _continue(opt, params, grads[2:])
    expected_state = snapshot(opt)
    for restore in ("state_dict", "checkpoint"):
        again = [p.copy() for p in snapshot_params]
        other = cls(again, **hyper, state_dtype="int8")
        if restore == "state_dict":
            other.load_state_dict(saved)
        else:
            other.load(tmp_path / "opt.npz")
        for k in keys_of(cls, hyper):
            q = other.state[0][k]
            assert isinstance(q, QuantizedState) and q.signed == SIGNED[k], (restore, k)
        got = _continue(other, again, grads[2:])
        assert all(a.tobytes() == b.tobytes() for a, b in zip(got, expected)), restore
        assert same_state(snapshot(other), expected_state), restore


@pytest.mark.parametrize("cls", [SGD, Adagrad, RMSprop])
def test_params_and_options_int8_cannot_keep_are_refused(cls):
    with pytest.raises(ValueError, match=r"state_dtype='int8' keeps the state of float32 params; params\[1\] has "
                                         r"dtype float64"):
        cls([np.zeros(5000, np.float32), np.zeros(5000)], lr=0.1, state_dtype="int8")
    with pytest.raises(ValueError, match="stochastic_rounding=True rounds bfloat16 values, but with "
                                         "state_dtype='int8' and no bfloat16 params nothing written is bfloat16"):
        cls([np.zeros(5000, np.float32)], lr=0.1, state_dtype="int8", stochastic_rounding=True)
    # a float64 array put into a group later is refused at the step, before anything is written
    p = np.ones(5000, np.float32)
    opt = cls([p], lr=0.1, state_dtype="int8")
    opt.param_groups[0]["params"].append(np.ones(3))
    with pytest.raises(ValueError, match=r"params\[1\] has dtype float64"):
        opt.step([np.ones_like(p), np.ones(3)])
    assert np.all(p == 1) and opt.state == {}


def _bad_states(cls, hyper, shape):
    """(edit of one parameter's state, error, words) that a state check refuses."""
    key = keys_of(cls, hyper)[0]
    signed = SIGNED[key]
    n = int(np.prod(shape))
    return [
        (lambda s: s.update({key: QuantizedState.zeros(shape, not signed)}), ValueError,
         f"is a {'unsigned' if signed else 'signed'} QuantizedState; {key} takes the "
         f"{'signed' if signed else 'unsigned'} map"),
        (lambda s: s.update({key: QuantizedState(np.zeros(shape, np.uint8), np.zeros(3, np.float32), signed)}),
         ValueError, r"absmax must be a writeable float32 array of shape \(" + str(-(-n // 256)) + r",\)"),
        (lambda s: s.update({key: QuantizedState(np.zeros(n + 1, np.uint8), np.zeros(-(-n // 256), np.float32),
                                                 signed)}), ValueError, "codes must be a writeable C-contiguous uint8"),
        (lambda s: s.update({key: QuantizedState(np.zeros(shape, np.int8), np.zeros(-(-n // 256), np.float32),
                                                 signed)}), ValueError, "codes must be a writeable C-contiguous uint8"),
        (lambda s: s.update({key: QuantizedState(np.zeros(shape, np.uint8), np.zeros(-(-n // 256), np.float64),
                                                 signed)}), ValueError, "absmax must be a writeable float32"),
    ]


@pytest.mark.parametrize("case", ["sgd_momentum", "adagrad", "rmsprop_centered_momentum"])
def test_bad_loaded_state_is_refused_and_changes_nothing(case, tmp_path):
    cls, hyper = CASES[case]
    params, grads = params_and_grads(5, shapes=[(64, 128), (10,)])
    opt = cls(params, **hyper, state_dtype="int8")
    opt.step(grads[0])
    fresh = [p.copy() for p in params]
    for edit, error, words in _bad_states(cls, hyper, params[0].shape):
        saved = opt.state_dict()
        edit(saved["state"][0])
        other = cls(fresh, **hyper, state_dtype="int8")
        other.step(grads[1])
        before, before_params = snapshot(other), [p.copy() for p in fresh]
        with pytest.raises(error, match=words):
            other.load_state_dict(saved)
        assert same_state(snapshot(other), before)
        # the same entry put into the state by hand is refused at the step, before anything is written
        edit(other.state[0])
        with pytest.raises(error, match=words):
            other.step(grads[2])
        assert all(a.tobytes() == b.tobytes() for a, b in zip(fresh, before_params))
        fresh = [p.copy() for p in params]
    # 8-bit state into an optimizer without state_dtype="int8": refused by name, by state_dict and checkpoint
    opt.save(tmp_path / "int8.npz")
    for state_dtype in (None, "float32", "bfloat16"):
        other = cls([p.copy() for p in params], **hyper, state_dtype=state_dtype)
        with pytest.raises((TypeError, ValueError), match="QuantizedState, but this optimizer keeps "
                                                         f"state_dtype={state_dtype!r} state"):
            other.load_state_dict(opt.state_dict())
        with pytest.raises(ValueError, match="QuantizedState"):
            other.load(tmp_path / "int8.npz")
        assert other.state == {}


def test_a_state_mixing_8bit_and_float_entries_is_refused():
    params, grads = params_and_grads(6, shapes=[(8192,)])
    opt = RMSprop(params, lr=0.01, momentum=0.9, state_dtype="int8")
    opt.step(grads[0])
    saved = opt.state_dict()
    saved["state"][0]["momentum_buffer"] = np.zeros(8192, np.float32)
    other = RMSprop([p.copy() for p in params], lr=0.01, momentum=0.9, state_dtype="int8")
    with pytest.raises(ValueError, match=r"state of params\[0\] mixes 8-bit \(fastopt.QuantizedState\) and float"):
        other.load_state_dict(saved)
    assert other.state == {}


@pytest.mark.parametrize("case", ["sgd_momentum", "adagrad", "rmsprop_centered_momentum"])
def test_skipped_nonfinite_step_writes_nothing(case):
    cls, hyper = CASES[case]
    params, grads = params_and_grads(7, shapes=[(8192,), (10,)])
    opt = cls(params, **hyper, state_dtype="int8")
    opt.step(grads[0])
    before, before_params = snapshot(opt), [p.copy() for p in params]
    bad = [g.copy() for g in grads[1]]
    bad[0][100] = np.inf
    assert opt.step(bad, skip_nonfinite=True) is True
    assert same_state(snapshot(opt), before)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(params, before_params))
    assert opt.step(grads[1], skip_nonfinite=True) is False
