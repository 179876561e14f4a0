"""Muon: fastopt.muon_ and fastopt.optim.Muon against the NumPy reference (fastopt/references/muon.py, float32
Newton-Schulz), fastopt.torch.Muon against torch.optim.Muon (bfloat16 Newton-Schulz, the same torch ops), state
dicts both ways, and bad input. The fused elementwise passes alone are in the kernel table
(tests/kernel_cases.py: muon_momentum, muon_apply)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fastopt
from fastopt import references

STEPS = 40
# tall, wide, square, 1xN, Nx1, and sizes past a SIMD width
SHAPES = [(7, 3), (3, 7), (5, 5), (1, 9), (6, 1), (64, 32), (17, 40)]


def draw_hyper(rng):
    return dict(lr=float(rng.uniform(1e-3, 0.05)), weight_decay=float(rng.choice([0.0, rng.uniform(0.01, 0.2)])),
                momentum=float(rng.uniform(0.8, 0.99)), nesterov=bool(rng.integers(2)),
                ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=int(rng.integers(3, 7)),
                adjust_lr_fn=[None, "original", "match_rms_adamw"][int(rng.integers(3))],
                maximize=bool(rng.integers(2)))


def _run_against_reference(dtype, seed):
    rng = np.random.default_rng(seed)
    hyper = draw_hyper(rng)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    buffers = [np.zeros_like(p) for p in params]
    ref_params = [p.copy() for p in params]
    ref_states = [references.muon_init_state(p) for p in ref_params]
    for t in range(1, STEPS + 1):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        fastopt.muon_(params, grads, buffers, ns_dtype=np.float32, **hyper)
        references.muon_step(ref_params, [g.copy() for g in grads], ref_states, step=t, **hyper)
    return hyper, params, buffers, ref_params, ref_states


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_muon_matches_reference(dtype, seed):
    hyper, params, buffers, ref_params, ref_states = _run_against_reference(dtype, seed)
    # The same float32 iteration on the same inputs: only the fused passes' last bits may differ (float64
    # arrays: their float64 arithmetic; float32 arrays: float32 throughout, whose differences the
    # iteration can carry to a few ulps of float32).
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=2e-6, atol=2e-7)
    for i, (p, ref, b, state) in enumerate(zip(params, ref_params, buffers, ref_states)):
        assert p.dtype == dtype and b.dtype == dtype
        np.testing.assert_allclose(b, state["momentum_buffer"], err_msg=f"momentum_buffers[{i}] {hyper}", **tol)
        np.testing.assert_allclose(p, ref, err_msg=f"params[{i}] {hyper}", **tol)


def test_muon_float64_iteration_is_the_default_for_float64():
    """ns_dtype=None runs float64 arrays' iteration in float64: closer to a float64 reference iteration than
    the float32 one is (and different from it)."""
    rng = np.random.default_rng(5)
    p = rng.standard_normal((20, 12))
    g = rng.standard_normal((20, 12))
    out = {}
    for name, dtype in (("f64", None), ("f32", np.float32)):
        q, b = p.copy(), np.zeros_like(p)
        fastopt.muon_([q], [g], [b], lr=0.1, ns_dtype=dtype)
        out[name] = q
    # the float64 iteration, written out
    u = 0.05 * g + 0.95 * (0.05 * g)
    x = u.T / np.linalg.norm(u)
    for _ in range(5):
        s = x @ x.T
        x = 3.4445 * x + (-4.7750 * s + 2.0315 * s @ s) @ x
    expected = p * (1 - 0.1 * 0.1) - 0.1 * np.sqrt(20 / 12) * x.T
    np.testing.assert_allclose(out["f64"], expected, rtol=1e-12, atol=1e-14)
    assert not np.array_equal(out["f32"], out["f64"])
    np.testing.assert_allclose(out["f32"], expected, rtol=1e-5, atol=1e-6)


def test_optim_muon_is_muon_():
    """fastopt.optim.Muon gives muon_'s bits, over two param groups, and resumes from its state_dict."""
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    mine = [p.copy() for p in params]
    buffers = [np.zeros_like(p) for p in params]
    opt = fastopt.optim.Muon([{"params": params[:3]}, {"params": params[3:], "lr": 0.02}], lr=0.01,
                             adjust_lr_fn="match_rms_adamw")
    for t in range(6):
        grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        opt.step(grads)
        fastopt.muon_(mine[:3], grads[:3], buffers[:3], lr=0.01, adjust_lr_fn="match_rms_adamw")
        fastopt.muon_(mine[3:], grads[3:], buffers[3:], lr=0.02, adjust_lr_fn="match_rms_adamw")
        if t == 2:
            saved = opt.state_dict()
            saved_params = [p.copy() for p in params]
    for p, q, b, i in zip(params, mine, buffers, range(len(params))):
        np.testing.assert_array_equal(p, q)
        np.testing.assert_array_equal(opt.state[i]["momentum_buffer"], b)
    assert set(opt.state[0]) == {"momentum_buffer"}  # torch's state: no step count
    # resume from the state_dict taken after step 3
    again = [p.copy() for p in saved_params]
    opt2 = fastopt.optim.Muon([{"params": again[:3]}, {"params": again[3:], "lr": 0.02}], lr=0.01,
                              adjust_lr_fn="match_rms_adamw")
    opt2.load_state_dict(saved)
    rng = np.random.default_rng(1)  # (the same gradients again, after the same parameter draws)
    for s in SHAPES:
        rng.standard_normal(s)
    for t in range(6):
        grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        if t > 2:
            opt2.step(grads)
    for p, q in zip(again, params):
        np.testing.assert_array_equal(p, q)


# ---------------------------------------------------------------------------------------- bad input
def _arrays(shapes=((4, 3), (2, 5)), dtype=np.float32):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    buffers = [rng.standard_normal(s).astype(dtype) for s in shapes]
    return params, grads, buffers


BAD = [
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(momentum=-0.5), ValueError, "momentum"),
    (dict(nesterov=1), TypeError, "nesterov"),
    (dict(maximize="yes"), TypeError, "maximize"),
    (dict(ns_coefficients=(1.0, 2.0)), ValueError, "ns_coefficients"),
    (dict(ns_coefficients=(1.0, "b", 2.0)), TypeError, r"ns_coefficients\[1\]"),
    (dict(ns_coefficients=3.0), TypeError, "ns_coefficients"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eps=float("nan")), ValueError, "eps"),
    (dict(ns_steps=100), ValueError, "Number of steps must be less than 100"),
    (dict(ns_steps=-1), ValueError, "ns_steps"),
    (dict(ns_steps=2.0), TypeError, "ns_steps"),
    (dict(adjust_lr_fn="sqrt"), ValueError, "Adjust learning rate function sqrt is not supported"),
    (dict(adjust_lr_fn=3), TypeError, "adjust_lr_fn"),
    (dict(lr=1e39), ValueError, "lr"),  # beyond float32's range
    (dict(ns_dtype=np.float16), ValueError, "ns_dtype"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD, ids=[str(b[0]) for b in BAD])
def test_muon_bad_hyper_writes_nothing(kwargs, error, match):
    params, grads, buffers = _arrays()
    before = copy.deepcopy((params, grads, buffers))
    with pytest.raises(error, match=match):
        fastopt.muon_(params, grads, buffers, **kwargs)
    for now, then in zip(params + grads + buffers, before[0] + before[1] + before[2]):
        np.testing.assert_array_equal(now, then)


def _bad_lists():
    def not_2d(p, g, b):
        p[1], g[1], b[1] = np.zeros(5, np.float32), np.zeros(5, np.float32), np.zeros(5, np.float32)

    def grad_shape(p, g, b):
        g[1] = np.zeros((5, 2), np.float32)

    def grad_dtype(p, g, b):
        g[1] = g[1].astype(np.float64)

    def buffer_dtype(p, g, b):
        b[0] = b[0].astype(np.float64)

    def not_array(p, g, b):
        p[1] = p[1].tolist()

    def readonly(p, g, b):
        p[1].flags.writeable = False

    def strided_buffer(p, g, b):
        b[1] = np.zeros((2, 10), np.float32)[:, ::2]

    def alias(p, g, b):
        b[1] = g[1]

    def short(p, g, b):
        g.pop()

    def int_params(p, g, b):
        p[0], g[0], b[0] = (np.zeros((4, 3), np.int32) for _ in range(3))

    return [(not_2d, ValueError, r"params\[1\] must be 2-D"), (grad_shape, ValueError, r"grads\[1\] has shape"),
            (grad_dtype, TypeError, r"grads\[1\] has dtype"), (buffer_dtype, TypeError, r"momentum_buffers\[0\]"),
            (not_array, TypeError, r"params\[1\]"), (readonly, ValueError, r"params\[1\]"),
            (strided_buffer, ValueError, r"momentum_buffers\[1\]"), (alias, ValueError, "shares memory"),
            (short, ValueError, "one length"), (int_params, TypeError, r"params\[0\]")]


@pytest.mark.parametrize("spoil, error, match", _bad_lists(), ids=[b[0].__name__ for b in _bad_lists()])
def test_muon_bad_arrays_write_nothing(spoil, error, match):
    params, grads, buffers = _arrays()
    spoil(params, grads, buffers)
    before = [np.array(a, copy=True) for a in params + grads + buffers]
    with pytest.raises(error, match=match):
        fastopt.muon_(params, grads, buffers, lr=0.1)
    for now, then in zip(params + grads + buffers, before):
        np.testing.assert_array_equal(np.asarray(now), then)


def test_optim_muon_refuses_non_2d():
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters.*params\[1\]"):
        fastopt.optim.Muon([np.zeros((2, 2)), np.zeros(3)])
    with pytest.raises(ValueError, match="Adjust learning rate function"):
        fastopt.optim.Muon([np.zeros((2, 2))], adjust_lr_fn="nope")
    opt = fastopt.optim.Muon([np.zeros((2, 2))])
    opt.param_groups[0]["params"].append(np.zeros(4))  # (added behind the optimizer's back)
    with pytest.raises(ValueError, match=r"params\[1\]"):
        opt.step([np.ones((2, 2)), np.ones(4)])
    np.testing.assert_array_equal(opt.param_groups[0]["params"][0], 0.0)


def test_muon_empty_matrices():
    """Matrices with no elements (0 x n, n x 0) change nothing and do not stop the others (torch divides by
    zero working out the step of an n x 0 matrix)."""
    rng = np.random.default_rng(3)
    full = rng.standard_normal((4, 3)).astype(np.float32)
    grad = rng.standard_normal((4, 3)).astype(np.float32)
    alone = full.copy()
    fastopt.muon_([alone], [grad], [np.zeros_like(full)], lr=0.1)
    shapes = [(0, 3), (5, 0), (4, 3)]
    params = [np.zeros(s, np.float32) for s in shapes[:2]] + [full.copy()]
    fastopt.muon_(params, [np.zeros(s, np.float32) for s in shapes[:2]] + [grad],
                  [np.zeros(s, np.float32) for s in shapes], lr=0.1)
    np.testing.assert_array_equal(params[2], alone)
    assert not np.array_equal(alone, full)


def test_optim_muon_checkpoint_file(tmp_path):
    """save / load (.npz) keep Muon's tuple and None hyperparameters and its buffers."""
    rng = np.random.default_rng(4)
    params = [rng.standard_normal((4, 3)), rng.standard_normal((2, 6))]
    opt = fastopt.optim.Muon(params, lr=0.1, adjust_lr_fn="match_rms_adamw", ns_coefficients=(3.0, -4.0, 2.0))
    opt.step([np.ones((4, 3)), np.ones((2, 6))])
    opt.save(tmp_path / "muon.npz")
    copies = [p.copy() for p in params]
    other = fastopt.optim.Muon(copies)
    other.load(tmp_path / "muon.npz")
    assert other.param_groups[0]["ns_coefficients"] == (3.0, -4.0, 2.0)
    assert other.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    grads = [rng.standard_normal((4, 3)), rng.standard_normal((2, 6))]
    opt.step(grads)
    other.step(grads)
    for p, q in zip(params, copies):
        np.testing.assert_array_equal(p, q)
