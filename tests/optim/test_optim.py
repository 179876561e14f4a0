"""The stateful optimizers: state_dict round trip, param groups, skipped parameters, mixed dtypes."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fastopt
from fastopt import optim
from optim_cases import CASE_IDS, OPTIM_CASES

SIZES = [4, 1, 300, 0, 33]


def make_params(rng, dtype=np.float64):
    return [rng.standard_normal(n).astype(dtype) for n in SIZES]


def grads_for(rng, params):
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


@pytest.mark.parametrize("name,hyper", OPTIM_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_state_dict_round_trip_continues_bit_identically(name, hyper, dtype):
    rng = np.random.default_rng(1234)
    params = make_params(rng, dtype)
    opt = getattr(optim, name)([{"params": params[:2]}, {"params": params[2:], "lr": 0.5 * hyper["lr"]}],
                               **hyper)
    for _ in range(20):
        opt.step(grads_for(rng, params))

    saved = opt.state_dict()
    snapshot = copy.deepcopy(saved)
    twin_params = [p.copy() for p in params]
    twin = getattr(optim, name)([{"params": twin_params[:2]}, {"params": twin_params[2:]}], **hyper)
    twin.load_state_dict(saved)
    assert twin.param_groups[1]["lr"] == 0.5 * hyper["lr"]

    for _ in range(20):
        grads = grads_for(rng, params)
        opt.step(grads)
        twin.step(grads)
    for p, q in zip(params, twin_params):
        assert p.tobytes() == q.tobytes()
    # state_dict() is a copy: stepping did not change what was saved.
    for i, state in snapshot["state"].items():
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(saved["state"][i][key], value)


def test_state_dict_layout_matches_torch_names():
    params = make_params(np.random.default_rng(0))
    opt = optim.Adam(params, lr=1e-3, amsgrad=True)
    opt.step(grads_for(np.random.default_rng(1), params))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == list(range(len(SIZES)))
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 1


def test_load_state_dict_refuses_mismatched_shapes_and_changes_nothing():
    rng = np.random.default_rng(5)
    params = make_params(rng)
    opt = optim.AdamW(params)
    opt.step(grads_for(rng, params))
    sd = opt.state_dict()
    other = optim.AdamW([np.zeros(n + 1) for n in SIZES])
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(sd)
    assert other.state == {}
    with pytest.raises(ValueError, match="param groups"):
        optim.AdamW([{"params": params[:1]}, {"params": params[1:]}]).load_state_dict(sd)


def test_optimizer_step_equals_kernel_calls():
    """One optimizer step is exactly the kernel over the group, with the stored step count."""
    rng = np.random.default_rng(7)
    params = make_params(rng, np.float32)
    mirror = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    opt = optim.AdamW(params, lr=3e-3, weight_decay=0.05)
    for t in range(1, 11):
        grads = grads_for(rng, params)
        opt.step(grads)
        fastopt.adamw_(mirror, grads, m, v, lr=3e-3, weight_decay=0.05, step=t)
    for p, q in zip(params, mirror):
        assert p.tobytes() == q.tobytes()


def test_none_grad_skips_parameter_and_its_step_count():
    rng = np.random.default_rng(3)
    params = make_params(rng)
    before = params[1].copy()
    opt = optim.Adam(params, lr=0.1)
    grads = grads_for(rng, params)
    grads[1] = None
    opt.step(grads)
    assert np.array_equal(params[1], before)
    assert 1 not in opt.state
    opt.step(grads_for(rng, params))
    assert opt.state[0]["step"] == 2 and opt.state[1]["step"] == 1


def test_lr_change_between_steps_takes_effect():
    p = np.zeros(3)
    opt = optim.SGD([p], lr=1.0)
    opt.step([np.ones(3)])
    opt.param_groups[0]["lr"] = 0.25
    opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, -1.25)


def test_mixed_dtypes_in_one_group():
    rng = np.random.default_rng(11)
    params = [rng.standard_normal(5).astype(np.float32), rng.standard_normal(6)]
    expected = [p.astype(np.float64) for p in params]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    ref = optim.SGD(expected, lr=0.1, momentum=0.9)
    for _ in range(5):
        grads = grads_for(rng, params)
        opt.step(grads)
        ref.step([g.astype(np.float64) for g in grads])
    np.testing.assert_allclose(params[0], expected[0], rtol=1e-5)
    np.testing.assert_array_equal(params[1], expected[1])


def test_defaults_are_torchs():
    p = [np.zeros(2)]
    assert optim.SGD(p).defaults["lr"] == 1e-3
    assert optim.Adagrad(p).defaults["lr"] == 1e-2 and optim.Adagrad(p).defaults["eps"] == 1e-10
    rms = optim.RMSprop(p).defaults
    assert (rms["lr"], rms["alpha"], rms["eps"]) == (1e-2, 0.99, 1e-8)
    adam = optim.Adam(p).defaults
    assert (adam["lr"], adam["betas"], adam["eps"], adam["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    assert optim.AdamW(p).defaults["weight_decay"] == 1e-2
