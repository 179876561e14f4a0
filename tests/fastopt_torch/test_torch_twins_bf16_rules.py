"""The twins of the element-wise rules (NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop, Lion; fastopt/torch/_from_rule.py)
with state_dtype="bfloat16", bfloat16 parameters on the CPU and stochastic_rounding (issue 18): torch's state keys
as torch.bfloat16 tensors, updated by the same kernel as fastopt.optim's classes (bit for bit), close to
torch.optim's float32 numbers where torch has the optimizer, through state_dict both ways."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

import fastopt  # noqa: E402
import fastopt.optim  # noqa: E402
import fastopt.torch  # noqa: E402
from fastopt.rules import SPECS  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
SUMS = {r["function"] for r in fastopt._core._rule_registry() if r["tensor_sums"]}
SPEC = {s.name: s for s in SPECS if s.kernel not in SUMS}
NAMES = sorted(SPEC)
HYPER = {"NAdam": dict(lr=1e-2, weight_decay=1e-2), "RAdam": dict(lr=1e-2, betas=(0.9, 0.9)),
         "Adamax": dict(lr=1e-2), "Adadelta": dict(lr=0.5, weight_decay=1e-2), "ASGD": dict(lr=1e-2, t0=2),
         "Rprop": dict(lr=1e-2), "Lion": dict(lr=1e-3, weight_decay=0.1)}
SHAPES = [(64, 33), (7,), (5000,)]
GOLDEN = 0x9E3779B97F4A7C15  # (a twin's kernel seed for param group k: seed * GOLDEN + k, mod 2**64)


def keys_of(name):
    return [s.key for s in SPEC[name].state]


def _params(seed=0, dtype=torch.float32):
    rng = np.random.default_rng(seed)
    return [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s).astype(np.float32)).to(dtype)) for s in SHAPES]


def _grads(step):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _train(opt, params, steps, first=1):
    for t in range(first, first + steps):
        for p, g in zip(params, _grads(t)):
            p.grad = torch.from_numpy(g).to(p.dtype)
        opt.step()


def _bits(t):
    return t.detach().view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.detach().numpy().tobytes()


def _numpy(t):
    """A CPU tensor's values as NumPy (bfloat16 ones as ml_dtypes.bfloat16, bit for bit)."""
    if t.dtype == torch.bfloat16:
        return t.detach().view(torch.int16).numpy().view(BF16)
    return t.detach().numpy()


def test_every_element_wise_twin_is_covered():
    assert set(NAMES) == set(HYPER) and "LAMB" not in NAMES


@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("param_dtype,state_dtype", [(torch.float32, "bfloat16"), (torch.bfloat16, None),
                                                     (torch.bfloat16, torch.bfloat16)],
                         ids=["f32-params-bf16-state", "bf16-params-f32-state", "bf16-all"])
@pytest.mark.parametrize("name", [n for n in NAMES if SPEC[n].scalars is None])
def test_twin_is_fastopt_optim_bit_for_bit(name, param_dtype, state_dtype, stochastic):
    # (NAdam and ASGD keep numbers beside the arrays: torch's 0-d float32 tensors in the twin, Python floats in
    # fastopt.optim, so their constants differ in the last bits whatever the state; the next test covers them)
    seed = 41
    params = _params(dtype=param_dtype)
    twin = getattr(fastopt.torch, name)(params, **HYPER[name], state_dtype=state_dtype,
                                        stochastic_rounding=stochastic, seed=seed)
    arrays = [_numpy(p).copy() for p in _params(dtype=param_dtype)]
    numpy_opt = getattr(fastopt.optim, name)(arrays, **HYPER[name],
                                             state_dtype=None if state_dtype is None else "bfloat16",
                                             stochastic_rounding=stochastic, seed=(seed * GOLDEN) % 2**64)
    for t in range(1, 5):
        grads = _grads(t)
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g).to(param_dtype)
        twin.step()
        numpy_opt.step([_numpy(p.grad).copy() for p in params])
    want_state = torch.float32 if state_dtype is None else torch.bfloat16
    for i, (p, a) in enumerate(zip(params, arrays)):
        assert _numpy(p).tobytes() == a.tobytes()
        for key in keys_of(name):
            state = twin.state[p][key]
            assert state.dtype == want_state and state.shape == p.shape, key
            assert _numpy(state).tobytes() == numpy_opt.state[i][key].tobytes(), key


@pytest.mark.parametrize("name", NAMES)
def test_each_step_is_the_float32_twin_then_rounded_to_nearest(name):
    # the witness: the same twin with float32 state holding the bfloat16 state's values (and the same
    # numbers beside them) before each step; its new state rounded to nearest-even is the bfloat16 twin's
    params, wide_params = _params(), _params()
    twin = getattr(fastopt.torch, name)(params, **HYPER[name], state_dtype="bfloat16")
    wide = getattr(fastopt.torch, name)(wide_params, **HYPER[name])
    for t in range(1, 5):
        for p, w, g in zip(params, wide_params, _grads(t)):
            p.grad, w.grad = torch.from_numpy(g), torch.from_numpy(g.copy())
            with torch.no_grad():
                w.copy_(p)
            if t > 1:  # (in place: a twin's repeated step keeps its state tensors between steps)
                for k, v in twin.state[p].items():
                    wide.state[w][k].copy_(v)
        twin.step()
        wide.step()
        if t == 1 and name == "Rprop":
            continue  # (its step sizes start at lr, which bfloat16 state holds rounded: compared from step 2 on)
        for p, w in zip(params, wide_params):
            assert _bits(p) == _bits(w), t
            for key in keys_of(name):
                assert _bits(twin.state[p][key]) == _bits(wide.state[w][key].to(torch.bfloat16)), (t, key)


@pytest.mark.parametrize("name", [n for n in NAMES if SPEC[n].torch_name])
def test_bf16_state_is_close_to_torch_optim(name):
    params = _params()
    twin = getattr(fastopt.torch, name)(params, **HYPER[name], state_dtype="bfloat16")
    reference = _params()
    torch_opt = getattr(torch.optim, name)(reference, **HYPER[name])
    _train(twin, params, 4)
    _train(torch_opt, reference, 4)
    for p, q in zip(params, reference):
        # the state rounded to bfloat16 at each of 4 steps (at most 2**-9 of the value each time, carried on):
        # within 2**-5 of the value plus the tensor's mean size
        for key in keys_of(name):
            want = torch_opt.state[q][key].numpy()
            got = twin.state[p][key].float().numpy()
            assert np.all(np.abs(got - want) <= 2**-5 * (np.abs(want) + np.abs(want).mean())), key
        theirs = q.detach().numpy()
        assert np.all(np.abs(p.detach().numpy() - theirs) <= 2**-6 * np.abs(theirs).mean())


@pytest.mark.parametrize("name", NAMES)
def test_default_twin_keeps_torchs_groups_and_float32_state(name):
    params = _params()
    twin = getattr(fastopt.torch, name)(params, **HYPER[name])
    _train(twin, params, 2)
    assert not {"state_dtype", "stochastic_rounding", "seed"} & set(twin.param_groups[0])
    assert all(twin.state[params[0]][k].dtype == torch.float32 for k in keys_of(name))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips_bit_exactly_and_loads_both_ways(name):
    options = dict(state_dtype="bfloat16", stochastic_rounding=True, seed=7)
    keys = keys_of(name)
    params = _params()
    twin = getattr(fastopt.torch, name)(params, **HYPER[name], **options)
    _train(twin, params, 3)
    saved = copy.deepcopy(twin.state_dict())  # (as a checkpoint: torch's state_dict shares the state's memory)
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = getattr(fastopt.torch, name)(copies, **HYPER[name], **options)
    resumed.load_state_dict(saved)
    assert all(resumed.state[c][k].dtype == torch.bfloat16 for c in copies for k in keys)
    _train(twin, params, 2, first=4)
    _train(resumed, copies, 2, first=4)
    for p, c in zip(params, copies):
        assert _bits(p) == _bits(c)
        for key in keys:
            assert _bits(twin.state[p][key]) == _bits(resumed.state[c][key]), key
    # a float32 twin's state loads into a bfloat16 twin (rounded to nearest), and back (widened, exactly)
    plain_params = _params()
    plain = getattr(fastopt.torch, name)(plain_params, **HYPER[name])
    _train(plain, plain_params, 2)
    into = getattr(fastopt.torch, name)([torch.nn.Parameter(q.detach().clone()) for q in plain_params],
                                        **HYPER[name], state_dtype="bfloat16")
    into.load_state_dict(plain.state_dict())
    p0 = into.param_groups[0]["params"][0]
    for key in keys:
        assert torch.equal(into.state[p0][key], plain.state[plain_params[0]][key].to(torch.bfloat16)), key
    if SPEC[name].torch_name is None:
        return
    # (a state_dict brings its param groups, state_dtype included: the way back to float32 is torch.optim's class,
    # which casts the state to its parameters' dtype as it loads)
    back = getattr(torch.optim, name)([torch.nn.Parameter(p.detach().clone()) for p in params], **HYPER[name])
    back.load_state_dict(twin.state_dict())
    b0 = back.param_groups[0]["params"][0]
    for key in keys:
        assert back.state[b0][key].dtype == torch.float32
        assert torch.equal(back.state[b0][key], twin.state[params[0]][key].float()), key
    _train(back, back.param_groups[0]["params"], 1, first=6)  # (and steps from it)


@pytest.mark.parametrize("name", NAMES)
def test_refusals_name_the_option(name):
    cls = getattr(fastopt.torch, name)
    with pytest.raises(ValueError, match="state_dtype must be one of 'float32', 'bfloat16', 'int8' .*got 'float16'"):
        cls(_params(), **HYPER[name], state_dtype="float16")
    with pytest.raises(ValueError, match="stochastic_rounding=True rounds bfloat16 values"):
        cls(_params(), **HYPER[name], stochastic_rounding=True)
    with pytest.raises(ValueError, match=r"state_dtype='bfloat16': params\[0\] has dtype torch.float64"):
        cls([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], **HYPER[name], state_dtype="bfloat16")
    with pytest.raises(TypeError, match="state_dtype"):
        fastopt.torch.LAMB(_params(), state_dtype="bfloat16")
