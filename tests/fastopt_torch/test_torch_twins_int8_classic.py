"""fastopt.torch.SGD / Adagrad / RMSprop with state_dtype="int8": bitsandbytes' one-state layout (SGD8bit,
Adagrad8bit, RMSprop8bit: `state1`, `absmax1`, `qmap1`, `step`; float32 `state1` under 4096 elements). Steps
equal fastopt.optim's SGD / Adagrad / RMSprop with state_dtype="int8" driven with the same gradients bit for bit
(both keep new state in the map fastopt.optim's SIGNED_MAP_OF names: signed for SGD's momentum buffer, unsigned
for Adagrad's sum and RMSprop's square_avg); the layout; state_dict round trips continuing bit-exactly;
bitsandbytes loading a twin's state (unsigned qmap1 included) and stepping from it as the twin does, and a
bitsandbytes state (signed qmap1) loading into a twin, which keeps that map; the refusals, which change
nothing. (Adam's int8 twin: test_torch_twins_state_dtype.py.)"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.optim  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from int8_twin_runs import copies, dynamic_map, grads_for, make, run, set_grads  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(fastopt, "QuantizedState"),
                                reason="this fastopt has no 8-bit state (fastopt.QuantizedState)")

CASES = {
    "sgd": ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    "sgd_nesterov_max": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    "adagrad": ("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1)),
    "adagrad_from_zero": ("Adagrad", dict(lr=0.05, eps=1e-8)),
    "rmsprop": ("RMSprop", dict(lr=0.01, alpha=0.9, weight_decay=1e-2)),
    "rmsprop_max": ("RMSprop", dict(lr=0.01, maximize=True)),
}
KEY = {"SGD": "momentum_buffer", "Adagrad": "sum", "RMSprop": "square_avg"}  # what state1 holds
SIGNED = {"SGD": True, "Adagrad": False, "RMSprop": False}  # the map of new state (the test's own statement)
BNB = {"SGD": ("SGD8bit", dict(lr=0.05, momentum=0.9)), "Adagrad": ("Adagrad8bit", dict(lr=0.05)),
       "RMSprop": ("RMSprop8bit", dict(lr=0.01, alpha=0.9))}  # (hyperparameters both implement alike)


def dequantised(state):
    """A twin's state1 as float32 (through the map its qmap1 holds)."""
    codes = state["state1"]
    if codes.dtype == torch.float32:
        return codes.clone()
    values = state["qmap1"][codes.long()].flatten() * state["absmax1"].repeat_interleave(256)[:codes.numel()]
    return values.reshape(codes.shape)


def bits(t):
    return t.detach().reshape(-1).contiguous().view(torch.uint8) if t.dtype != torch.uint8 else t


def same_state(a, b):
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert value.dtype == b[key].dtype and value.shape == b[key].shape, key
        assert torch.equal(bits(value), bits(b[key])), key


def twin_of(name, params, hyper, **extra):
    return getattr(ft, name)(params, state_dtype="int8", **hyper, **extra)


# ---------------------------------------------------------------------------------------------- the steps
@pytest.mark.parametrize("case", sorted(CASES))
def test_steps_equal_fastopt_optim_int8_bit_for_bit(case):
    name, hyper = CASES[case]
    params = make()
    arrays = [p.detach().numpy().copy() for p in params]
    # two groups, each mixing 8-bit and float32 state: two kernel calls per group, on both sides
    twin = getattr(ft, name)([{"params": params[:3]}, {"params": params[3:]}], state_dtype="int8", **hyper)
    ref = getattr(fastopt.optim, name)([{"params": arrays[:3]}, {"params": arrays[3:]}], state_dtype="int8",
                                       **hyper)
    for t in range(4):
        set_grads(params, t)
        twin.step()
        ref.step([p.grad.numpy() for p in params])
        for j, (p, a) in enumerate(zip(params, arrays)):
            assert p.detach().numpy().tobytes() == a.tobytes(), (t, j)
            mine, theirs = twin.state[p], ref.state[j][KEY[name]]
            assert mine["step"].item() == t + 1
            if p.numel() >= 4096:
                assert isinstance(theirs, fastopt.QuantizedState) and theirs.signed == SIGNED[name]
                assert mine["state1"].numpy().tobytes() == np.asarray(theirs.codes).tobytes(), (t, j)
                assert mine["absmax1"].numpy().tobytes() == np.asarray(theirs.absmax).tobytes(), (t, j)
            else:
                assert mine["state1"].numpy().tobytes() == np.asarray(theirs).tobytes(), (t, j)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop"])
def test_the_layout_is_bitsandbytes_one_state_layout(name):
    hyper = CASES[name.lower()][1]
    params = make()
    twin = twin_of(name, params, hyper)
    run(twin, params, 2)
    for p in params:
        s = twin.state[p]
        assert s["step"].dtype == torch.float32 and s["step"].item() == 2
        if p.numel() >= 4096:
            assert set(s) == {"step", "state1", "absmax1", "qmap1"}
            assert s["state1"].dtype == torch.uint8 and s["state1"].shape == p.shape
            assert s["absmax1"].dtype == torch.float32 and s["absmax1"].shape == (-(-p.numel() // 256),)
            assert s["qmap1"].dtype == torch.float32 and s["qmap1"].shape == (256,)
            assert torch.equal(s["qmap1"], dynamic_map(SIGNED[name]))
            assert s["qmap1"] is twin.state[params[0]]["qmap1"]  # (one shared tensor, as bitsandbytes)
        else:
            assert set(s) == {"step", "state1"}
            assert s["state1"].dtype == torch.float32 and s["state1"].shape == p.shape
    assert sum(twin.state[p]["state1"].element_size() for p in params[:1]) == 1


def test_small_params_float32_state_equals_float32_twins_bits():
    for name in ("SGD", "Adagrad", "RMSprop"):
        hyper = CASES[name.lower()][1]
        params = make(shapes=[(4095,), (3, 7), (1,)])
        twin_params = copies(params)
        int8, f32 = twin_of(name, params, hyper), getattr(ft, name)(twin_params, **hyper)
        run(int8, params, 3)
        run(f32, twin_params, 3)
        for p, q in zip(params, twin_params):
            assert torch.equal(bits(p), bits(q)), name
            assert torch.equal(bits(int8.state[p]["state1"]), bits(f32.state[q][KEY[name]])), name


def test_adagrad_starts_quantised_from_the_initial_accumulator_value():
    p = torch.nn.Parameter(torch.zeros(5000))
    opt = ft.Adagrad([p], initial_accumulator_value=0.1, state_dtype="int8")
    s = opt.state[p]  # (made in the constructor, as torch's)
    assert s["state1"].dtype == torch.uint8 and s["step"].item() == 0
    torch.testing.assert_close(dequantised(s), torch.full((5000,), 0.1), rtol=0, atol=0)


def test_sgd_without_momentum_keeps_nothing():
    params = make()
    ref = copies(params)
    twin, plain = ft.SGD(params, lr=0.1, state_dtype="int8"), ft.SGD(ref, lr=0.1)
    run(twin, params, 2)
    run(plain, ref, 2)
    assert not twin.state
    assert all(torch.equal(p, q) for p, q in zip(params, ref))


# ---------------------------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_round_trips_continue_bit_exactly(case):
    name, hyper = CASES[case]
    params = make()
    twin = twin_of(name, params, hyper)
    run(twin, params, 2)
    sd = twin.state_dict()
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    for how, loaded in (("torch.save", torch.load(buffer, weights_only=True)), ("deepcopy", copy.deepcopy(sd))):
        others = copies(params)
        other = twin_of(name, others, hyper)
        other.load_state_dict(loaded)
        for p, q in zip(params, others):
            same_state(twin.state[p], other.state[q])
        mine = copies(params)
        again = twin_of(name, mine, hyper)
        again.load_state_dict(copy.deepcopy(sd))
        run(again, mine, 2, start=2)
        run(other, others, 2, start=2)
        for p, q in zip(mine, others):
            assert torch.equal(bits(p), bits(q)), how
            same_state(again.state[p], other.state[q])
    # the original continues as the loaded ones did
    run(twin, params, 2, start=2)
    for p, q in zip(params, mine):
        assert torch.equal(bits(p), bits(q))
        same_state(twin.state[p], again.state[q])


# ---------------------------------------------------------------------------------------------- bitsandbytes
def _bnb():
    return pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop"])
def test_a_twins_state_dict_loads_into_bitsandbytes_and_back_and_both_step_alike(name):
    """bitsandbytes reads qmap1 from the state: from a twin's state (unsigned qmap1 for Adagrad and RMSprop) it
    steps as the twin does, within the 8-bit error, and its state_dict loads back bit for bit."""
    bnb = _bnb()
    cls, hyper = BNB[name]
    shapes = [(64, 80), (7,), (4100,)]
    params = make(shapes)
    twin = twin_of(name, params, hyper)
    run(twin, params, 3)
    theirs_params = copies(params)
    theirs = getattr(bnb.optim, cls)(theirs_params, **hyper)
    # (the state as saved; the param groups bitsandbytes' own: it keeps its hyperparameters under other names,
    # betas=(momentum, dampening) or (alpha, 0), and reads them from the group)
    theirs.load_state_dict({**copy.deepcopy(twin.state_dict()), "param_groups": theirs.state_dict()["param_groups"]})
    back_params = copies(params)
    back = twin_of(name, back_params, hyper)
    back.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for p, q in zip(params, back_params):
        same_state(twin.state[p], back.state[q])
    for p in theirs_params:
        if p.numel() >= 4096:
            assert torch.equal(theirs.state[p]["qmap1"], dynamic_map(SIGNED[name]))
    # one step each from the same state: the same parameters (to float rounding) and states within the 8-bit
    # error (a few codes round the other way); read through the wrong map, bitsandbytes' would be far off
    run(theirs, theirs_params, 1, start=3)
    run(back, back_params, 1, start=3)
    for p, q in zip(theirs_params, back_params):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
        if p.numel() >= 4096:
            assert torch.equal(theirs.state[p]["qmap1"], dynamic_map(SIGNED[name]))
            assert (theirs.state[p]["state1"] != back.state[q]["state1"]).float().mean() < 0.01
        mine, ref = dequantised(back.state[q]), dequantised(theirs.state[p])
        scale = float(mine.abs().max())
        torch.testing.assert_close(mine, ref.float(), rtol=0, atol=0.02 * scale + 1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop"])
def test_bitsandbytes_state_dict_loads_into_a_twin_which_keeps_its_map(name):
    bnb = _bnb()
    cls, hyper = BNB[name]
    params = make([(4100,), (9,)])
    theirs = getattr(bnb.optim, cls)(params, **hyper)
    run(theirs, params, 2)
    twin_params = copies(params)
    twin = twin_of(name, twin_params, hyper)
    twin.load_state_dict(copy.deepcopy(theirs.state_dict()))
    s = twin.state[twin_params[0]]
    assert torch.equal(s["qmap1"], dynamic_map(True))  # (bitsandbytes' one-state optimizers: the signed map)
    assert s["step"].item() == 2 and torch.equal(s["state1"], theirs.state[params[0]]["state1"])
    # the twin continues in the loaded (signed) map: as fastopt's kernel over a signed QuantizedState
    hand = copies(twin_params)
    q = fastopt.QuantizedState(codes=s["state1"].numpy().copy(), absmax=s["absmax1"].numpy().copy(), signed=True)
    run(twin, twin_params, 1, start=2)
    run(theirs, params, 1, start=2)
    g = grads_for([p.shape for p in hand], 2)[0].numpy()
    kernel = {"SGD": fastopt.sgd_, "Adagrad": fastopt.adagrad_, "RMSprop": fastopt.rmsprop_}[name]
    kw = dict(momentum=0.9, step=3) if name == "SGD" else dict(step=3) if name == "Adagrad" else \
        dict(alpha=0.9, step=3)
    if name == "RMSprop":
        kernel([hand[0].detach().numpy()], [g], [q], None, None, lr=hyper["lr"], **kw)
    else:
        kernel([hand[0].detach().numpy()], [g], [q], lr=hyper["lr"], **kw)
    assert torch.equal(twin_params[0].detach(), hand[0].detach())
    assert s["qmap1"] is twin.state[twin_params[0]]["qmap1"] and torch.equal(s["qmap1"], dynamic_map(True))
    assert s["state1"].numpy().tobytes() == q.codes.tobytes() and s["absmax1"].numpy().tobytes() == q.absmax.tobytes()
    for p, r in zip(params, twin_params):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- refusals
def _unchanged(opt, params, before_params, before_state):
    assert all(torch.equal(bits(p), bits(b)) for p, b in zip(params, before_params))
    assert opt.state.keys() == before_state.keys()
    for p, s in before_state.items():
        same_state({k: v for k, v in s.items()}, dict(opt.state[p]))


@pytest.mark.parametrize("option,value", [("momentum", 0.5), ("centered", True)])
def test_rmsprop_options_the_layout_cannot_hold_are_refused_changing_nothing(option, value):
    params = make()
    with pytest.raises(ValueError, match=f"{option}={value!r} is not available with state_dtype='int8'"):
        ft.RMSprop(params, state_dtype="int8", **{option: value})
    opt = ft.RMSprop(params[:3], state_dtype="int8")
    run(opt, params[:3], 1)
    with pytest.raises(ValueError, match=f"{option}={value!r} is not available with state_dtype='int8'"):
        opt.add_param_group({"params": params[3:], option: value})
    assert len(opt.param_groups) == 1  # (the refused group is not kept)
    # a group changed after construction: refused by the step, before anything is written
    before_params = [p.detach().clone() for p in params[:3]]
    before_state = {p: {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    opt.param_groups[0][option] = value
    set_grads(params[:3], 5)
    with pytest.raises(ValueError, match=f"{option}={value!r} is not available with state_dtype='int8'"):
        opt.step()
    _unchanged(opt, params[:3], before_params, before_state)
    # other state_dtypes keep them
    ft.RMSprop(make(), state_dtype="bfloat16", **{option: value})


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop"])
def test_refusals_name_the_option(name):
    hyper = CASES[name.lower()][1]
    with pytest.raises(ValueError, match="stochastic_rounding"):
        twin_of(name, make(), hyper, stochastic_rounding=True)
    with pytest.raises(ValueError, match=r"state_dtype='int8': params\[0\] has dtype torch.float64"):
        twin_of(name, [torch.nn.Parameter(torch.zeros(5000, dtype=torch.float64))], hyper)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop"])
def test_a_state_dict_with_a_map_its_key_cannot_take_is_refused_changing_nothing(name):
    hyper = CASES[name.lower()][1]
    params = make([(4100,), (9,)])
    good = twin_of(name, params, hyper)
    run(good, params, 1)
    twin_params = copies(params)
    twin = twin_of(name, twin_params, hyper)
    run(twin, twin_params, 2)
    before_state = {p: {k: v.clone() for k, v in s.items()} for p, s in twin.state.items()}
    bad_maps = [dynamic_map(True) * 0.5]  # (no map at all)
    if name == "SGD":
        bad_maps.append(dynamic_map(False))  # (the momentum buffer changes sign: signed only)
    for bad in bad_maps:
        sd = copy.deepcopy(good.state_dict())
        sd["state"][0]["qmap1"] = bad
        with pytest.raises(ValueError, match=r"state\[0\]\['qmap1'\] is not the"):
            twin.load_state_dict(sd)
        _unchanged(twin, twin_params, [p.detach().clone() for p in twin_params], before_state)
    # the other map, where the key takes either, loads
    if name != "SGD":
        sd = copy.deepcopy(good.state_dict())
        sd["state"][0]["qmap1"] = dynamic_map(True)
        twin.load_state_dict(sd)
    # a bad map set in the live state is refused by the step, before anything is written
    twin = twin_of(name, twin_params, hyper)
    run(twin, twin_params, 1)
    twin.state[twin_params[0]]["qmap1"] = dynamic_map(True) * 0.5
    before_params = [p.detach().clone() for p in twin_params]
    before_state = {p: {k: v.clone() for k, v in s.items()} for p, s in twin.state.items()}
    set_grads(twin_params, 7)
    with pytest.raises(ValueError, match=r"state\[0\]\['qmap1'\] is not the"):
        twin.step()
    _unchanged(twin, twin_params, before_params, before_state)


def test_a_float_state_is_refused_by_an_int8_twin():
    params = make([(4100,)])
    plain = ft.Adagrad(params)
    run(plain, params, 1)
    twin = ft.Adagrad(copies(params), state_dtype="int8")
    before = {k: v.clone() for k, v in next(iter(twin.state.values())).items()}
    with pytest.raises(ValueError, match="state_dtype"):
        twin.load_state_dict(plain.state_dict())
    same_state(before, next(iter(twin.state.values())))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop"])
def test_cuda_params_are_refused(name):
    hyper = CASES[name.lower()][1]
    with pytest.raises(ValueError, match=r"params\[0\] is on cuda"):
        twin_of(name, [torch.nn.Parameter(torch.zeros(5000, device="cuda"))], hyper)
