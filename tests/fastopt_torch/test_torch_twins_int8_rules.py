"""The torch twins of the element-wise rules (NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop, Lion) with
state_dtype="int8": bitsandbytes' layout (`state1`, `absmax1`, `qmap1` for the rule's first state, `state2`...
for its second, `step`, and the numbers torch keeps beside: NAdam's mu_product, ASGD's eta and mu; float32
`state1`... under 4096 elements). Steps equal fastopt.optim's classes with state_dtype="int8" driven with the same
gradients (whose steps tests/optim/test_int8_rule_optim.py checks against the reference); state_dict round trips
continue bit-exactly; Lion's state loads into bitsandbytes' Lion8bit and back, and both step alike; the
refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.optim  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from int8_twin_runs import copies, dynamic_map as qmap, grads_for, make, run  # noqa: E402

HYPER = {"NAdam": dict(lr=1e-2, weight_decay=1e-2), "RAdam": dict(lr=1e-2, betas=(0.9, 0.9)),
         "Adamax": dict(lr=1e-2), "Adadelta": dict(lr=0.5, weight_decay=1e-2), "ASGD": dict(lr=1e-2, t0=2),
         "Rprop": dict(lr=1e-2), "Lion": dict(lr=1e-3, weight_decay=0.1)}
#: what state1 (, state2) hold, and whether in the signed map (the test's own statement)
KEYS = {"NAdam": (("exp_avg", True), ("exp_avg_sq", False)), "RAdam": (("exp_avg", True), ("exp_avg_sq", False)),
        "Adamax": (("exp_avg", True), ("exp_inf", False)), "Adadelta": (("square_avg", False), ("acc_delta", False)),
        "ASGD": (("ax", True),), "Rprop": (("prev", True), ("step_size", False)), "Lion": (("exp_avg", True),)}
#: the twins that keep 0-d float32 numbers beside the arrays, where fastopt.optim keeps Python floats: their
#: constants differ in the last bits, so their steps agree to float32 rounding rather than bit for bit
SCALARS = ("NAdam", "ASGD")


def test_every_element_wise_rule_twin_is_covered():
    sums = {r["function"] for r in fastopt._core._rule_registry() if r["tensor_sums"]}
    assert {s.name for s in fastopt.rules.SPECS if s.kernel not in sums} == set(HYPER)


@pytest.mark.parametrize("name", sorted(HYPER))
def test_steps_equal_fastopt_optim_with_int8_state(name):
    params = make()
    twin = getattr(ft, name)(params, **HYPER[name], state_dtype="int8")
    arrays = [p.detach().numpy().copy() for p in params]
    mine = getattr(fastopt.optim, name)(arrays, **HYPER[name], state_dtype="int8")
    for t in range(4):
        run(twin, params, 1, start=t)
        mine.step([g.numpy() for g in grads_for([p.shape for p in params], t)])
        for i, (p, a) in enumerate(zip(params, arrays)):
            if name in SCALARS:
                np.testing.assert_allclose(p.detach().numpy(), a, rtol=1e-5, atol=1e-6)
            else:
                assert p.detach().numpy().tobytes() == a.tobytes(), (t, i)
            for j, (key, signed) in enumerate(KEYS[name], start=1):
                ours, theirs = twin.state[p][f"state{j}"], mine.state[i][key]
                if p.numel() >= 4096:
                    assert ours.dtype == torch.uint8 and theirs.signed == signed
                    differ = (ours.numpy() != theirs.codes).mean()
                    assert differ == 0 if name not in SCALARS else differ < 0.01, (t, i, key, differ)
                else:
                    assert ours.dtype == torch.float32
                    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0 if name not in SCALARS else 1e-5,
                                               atol=0 if name not in SCALARS else 1e-6)


@pytest.mark.parametrize("name", sorted(HYPER))
def test_the_layout_is_bitsandbytes(name):
    params = make()
    twin = getattr(ft, name)(params, **HYPER[name], state_dtype="int8")
    run(twin, params, 2)
    assert twin.param_groups[0]["state_dtype"] == "int8"
    scalars = {"NAdam": {"mu_product"}, "ASGD": {"eta", "mu"}}.get(name, set())
    slots = range(1, len(KEYS[name]) + 1)
    for p in params:
        s = twin.state[p]
        assert s["step"].item() == 2.0
        if p.numel() >= 4096:
            assert set(s) == {"step"} | scalars | {f"{k}{j}" for k in ("state", "absmax", "qmap") for j in slots}
            for j, (_, signed) in enumerate(KEYS[name], start=1):
                assert s[f"state{j}"].shape == p.shape and s[f"absmax{j}"].shape == (-(-p.numel() // 256),)
                assert torch.equal(s[f"qmap{j}"], qmap(signed))
                assert s[f"qmap{j}"] is twin.state[params[0]][f"qmap{j}"]  # (one shared tensor, as bitsandbytes)
        else:
            assert set(s) == {"step"} | scalars | {f"state{j}" for j in slots}
            assert all(s[f"state{j}"].dtype == torch.float32 for j in slots)


@pytest.mark.parametrize("name", sorted(HYPER))
def test_state_dict_round_trips_continue_bit_exactly(name):
    params = make()
    twin = getattr(ft, name)(params, **HYPER[name], state_dtype="int8")
    run(twin, params, 2)
    again_params = copies(params)
    again = getattr(ft, name)(again_params, **HYPER[name], state_dtype="int8")
    again.load_state_dict(copy.deepcopy(twin.state_dict()))
    run(twin, params, 2, start=2)
    run(again, again_params, 2, start=2)
    for p, q in zip(params, again_params):
        assert torch.equal(p, q)
        assert twin.state[p].keys() == again.state[q].keys()
        for key, value in twin.state[p].items():
            assert torch.equal(value, again.state[q][key]), key


def _bnb():
    return pytest.importorskip("bitsandbytes")


def test_lion_state_loads_into_bitsandbytes_lion8bit_and_back_and_both_step_alike():
    """bitsandbytes' Lion8bit keeps the one-state layout (state1 signed, absmax1, qmap1): from a twin's state it
    steps as the twin does (parameters to float rounding, states within the 8-bit error), and its state_dict
    loads back into a twin bit for bit."""
    bnb = _bnb()
    hyper = dict(lr=1e-3, weight_decay=0.1)
    params = make([(64, 80), (7,), (4100,)])
    twin = ft.Lion(params, **hyper, state_dtype="int8")
    run(twin, params, 3)
    theirs_params = copies(params)
    theirs = bnb.optim.Lion8bit(theirs_params, **hyper)
    theirs.load_state_dict({**copy.deepcopy(twin.state_dict()), "param_groups": theirs.state_dict()["param_groups"]})
    run(theirs, theirs_params, 1, start=3)
    run(twin, params, 1, start=3)
    for p, q in zip(params, theirs_params):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
        if p.numel() >= 4096:
            assert torch.equal(theirs.state[q]["qmap1"], qmap(True))
            assert (twin.state[p]["state1"] != theirs.state[q]["state1"]).float().mean() < 0.01
    back_params = copies(theirs_params)
    back = ft.Lion(back_params, **hyper, state_dtype="int8")
    back.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for q, r in zip(theirs_params, back_params):
        assert theirs.state[q].keys() == back.state[r].keys()
        for key, value in theirs.state[q].items():
            assert torch.equal(value, back.state[r][key]), key


def test_refusals_name_the_argument_and_change_nothing():
    with pytest.raises(ValueError, match="stochastic_rounding=True rounds bfloat16 values"):
        ft.Lion(make(), state_dtype="int8", stochastic_rounding=True)
    params = make()
    twin = ft.NAdam(params, state_dtype="int8")
    run(twin, params, 1)
    before = [p.detach().clone() for p in params]
    saved = copy.deepcopy(twin.state_dict())
    saved["state"][0]["qmap2"] = qmap(True).clone()  # (exp_avg_sq takes the unsigned map)
    with pytest.raises(ValueError, match=r"state\[0\]\['qmap2'\] is not the unsigned dynamic map fastopt \(and "
                                         r"bitsandbytes\) quantise exp_avg_sq with"):
        twin.load_state_dict(saved)
    run(twin, params, 0)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    # a float32 twin's state (torch's keys) does not go into an int8 group
    plain = ft.RAdam(copies(params))
    run(plain, list(plain.param_groups[0]["params"]), 1)
    other = ft.RAdam(copies(params), state_dtype="int8")
    with pytest.raises(ValueError, match=r"state\[0\] is in the float32 layout but its param group has "
                                         r"state_dtype='int8'"):
        other.load_state_dict(plain.state_dict())
