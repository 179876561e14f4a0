"""fastopt.optim.Adafactor: the reference's numbers over 40 steps, torch's state layout (keepdim
row_var/col_var, or variance), and state_dicts and checkpoints that resume with the same bits."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fastopt
from fastopt.references import adafactor_init_state, adafactor_step

SHAPES = [(7,), (), (1, 33), (33, 1), (5, 7), (3, 4, 17), (9, 2100)]
HYPER = dict(lr=0.3, beta2_decay=-0.7, eps=(1e-7, 2e-3), d=1.1, weight_decay=0.02, maximize=True)


def reference_keywords(h):
    return dict(lr=h["lr"], beta2_decay=h["beta2_decay"], eps1=h["eps"][0], eps2=h["eps"][1], d=h["d"],
                weight_decay=h["weight_decay"], maximize=h["maximize"])


def test_matches_the_reference_over_40_steps():
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in SHAPES]
    ref = copy.deepcopy(params)
    ref_states = [adafactor_init_state(p) for p in ref]
    opt = fastopt.optim.Adafactor(params, **HYPER)
    for step in range(1, 41):
        grads = [rng.standard_normal(s) for s in SHAPES]
        assert opt.step(grads) is False
        adafactor_step(ref, grads, ref_states, step=step, **reference_keywords(HYPER))
    for i, (p, want) in enumerate(zip(params, ref)):
        np.testing.assert_allclose(p, want, rtol=1e-10, atol=1e-14)
        state = opt.state[i]
        assert state["step"] == 40
        assert sorted(state) == sorted(["step", *ref_states[i]])
        for key, value in ref_states[i].items():
            assert state[key].shape == value.shape
            np.testing.assert_allclose(state[key], value, rtol=1e-10, atol=1e-14)


def test_defaults_are_torchs():
    import inspect

    params = inspect.signature(fastopt.optim.Adafactor).parameters
    assert {k: params[k].default for k in params if k != "params"} == dict(
        lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, maximize=False)
    # eps1 None: the dtype's machine epsilon, as the kernel's default
    rng = np.random.default_rng(1)
    a = [rng.standard_normal(s) for s in SHAPES[:3]]
    b = copy.deepcopy(a)
    grads = [rng.standard_normal(s) for s in SHAPES[:3]]
    fastopt.optim.Adafactor(a).step(grads)
    states = [adafactor_init_state(p) for p in b]
    fastopt.adafactor_(b, grads, [s.get("row_var") for s in states], [s.get("col_var") for s in states],
                       [s.get("variance") for s in states], step=1)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))


def run(opt, params, grads):
    for g in grads:
        opt.step([x.copy() for x in g])
    return b"".join(p.tobytes() for p in params)


def test_state_dict_and_checkpoint_resume_with_the_same_bits(tmp_path):
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(6)]
    opt = fastopt.optim.Adafactor(params, **HYPER)
    run(opt, params, grads[:3])
    saved = opt.state_dict()
    opt.save(tmp_path / "adafactor.npz")
    twin_params = [p.copy() for p in params]
    third_params = [p.copy() for p in params]
    finished = run(opt, params, grads[3:])

    again = fastopt.optim.Adafactor(twin_params, **HYPER)
    again.load_state_dict(copy.deepcopy(saved))
    assert run(again, twin_params, grads[3:]) == finished
    loaded = fastopt.optim.Adafactor(third_params, **HYPER)
    loaded.load(tmp_path / "adafactor.npz")
    assert loaded.param_groups[0]["eps"] == (1e-7, 2e-3)
    assert run(loaded, third_params, grads[3:]) == finished


def test_bad_state_and_hyperparameters_are_refused():
    rng = np.random.default_rng(3)
    params = [rng.standard_normal((4, 6)), rng.standard_normal(5)]
    opt = fastopt.optim.Adafactor(params)
    opt.step([np.ones((4, 6)), np.ones(5)])
    saved = opt.state_dict()
    bad = copy.deepcopy(saved)
    bad["state"][0]["row_var"] = np.zeros((6, 1))
    with pytest.raises(ValueError, match="row_var"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(saved)
    bad["state"][1]["row_var"] = bad["state"][1].pop("variance")[:, None][:1]
    with pytest.raises(ValueError):
        opt.load_state_dict(bad)
    before = [p.copy() for p in params]
    opt.state[0]["col_var"] = np.zeros((1, 5))
    with pytest.raises(ValueError, match=r"state\[0\]\['col_var'\]"):
        opt.step([np.ones((4, 6)), np.ones(5)])
    assert all(np.array_equal(a, b) for a, b in zip(params, before))
    with pytest.raises(ValueError, match="beta2_decay"):
        fastopt.optim.Adafactor(params, beta2_decay=0.1)
    with pytest.raises(TypeError, match="eps"):
        fastopt.optim.Adafactor(params, eps=1e-3)
    with pytest.raises(ValueError, match="eps1"):
        fastopt.optim.Adafactor(params, eps=(-1.0, 1e-3))
    with pytest.raises(ValueError, match="d must be >= 1"):
        fastopt.optim.Adafactor(params, d=0.0)
    with pytest.raises(ValueError, match="grad_scale"):
        fastopt.optim.Adafactor([np.ones(3)]).step([np.ones(3)], grad_scale=2.0)


def test_torch_twin_and_optim_class_agree():
    torch = pytest.importorskip("torch")
    ft = pytest.importorskip("fastopt.torch")
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(s) for s in SHAPES]
    weights = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    twin = ft.Adafactor(weights, **HYPER)
    mine = fastopt.optim.Adafactor(arrays, **HYPER)
    for _ in range(3):
        grads = [rng.standard_normal(s) for s in SHAPES]
        for w, g in zip(weights, grads):
            w.grad = torch.from_numpy(g.copy())
        twin.step()
        mine.step(grads)
    for w, a in zip(weights, arrays):
        assert w.detach().numpy().tobytes() == a.tobytes()
