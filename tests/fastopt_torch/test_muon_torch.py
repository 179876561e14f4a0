"""fastopt.torch.Muon against torch.optim.Muon: 40 steps with random hyperparameters and mixed shapes (the same
bfloat16 Newton-Schulz ops as torch; the fused elementwise passes differ from torch's lerp in the last bits),
its float32 iteration against the NumPy reference, state_dicts both ways, and torch's refusals."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not hasattr(torch.optim, "Muon"):
    pytest.skip("torch.optim.Muon needs torch >= 2.9", allow_module_level=True)

import fastopt.torch  # noqa: E402
from fastopt import references  # noqa: E402

STEPS = 40
SHAPES = [(7, 3), (3, 7), (5, 5), (1, 9), (6, 1), (64, 32), (17, 40)]


def draw_hyper(rng):
    return dict(lr=float(rng.uniform(1e-3, 0.05)), weight_decay=float(rng.choice([0.0, rng.uniform(0.01, 0.2)])),
                momentum=float(rng.uniform(0.8, 0.99)), nesterov=bool(rng.integers(2)),
                ns_steps=int(rng.integers(3, 7)),
                adjust_lr_fn=[None, "original", "match_rms_adamw"][int(rng.integers(3))])


def _pair(dtype, seed, **twin_options):
    rng = np.random.default_rng(seed)
    hyper = draw_hyper(rng)
    start = [torch.from_numpy(rng.standard_normal(s)).to(dtype) for s in SHAPES]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    return rng, hyper, ours, theirs, fastopt.torch.Muon(ours, **hyper, **twin_options), torch.optim.Muon(theirs, **hyper)


def _step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_twin_matches_torch(dtype, seed):
    rng, hyper, ours, theirs, opt, ref = _pair(dtype, seed)
    for _ in range(STEPS):
        grads = [torch.from_numpy(rng.standard_normal(s)).to(dtype) for s in SHAPES]
        _step(opt, ours, grads)
        _step(ref, theirs, grads)
    # The bfloat16 iteration sees the same input up to the fused passes' last bits (torch rounds
    # through lerp); one bfloat16 rounding flipped moves O by ~2^-8 of an entry, and lr*O is the step.
    for i, (p, q) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-3, atol=1e-3 * hyper["lr"] * 4,
                                   err_msg=f"params[{i}] {hyper}")
        np.testing.assert_allclose(opt.state[p]["momentum_buffer"].numpy(), ref.state[q]["momentum_buffer"].numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert set(opt.state[ours[0]]) == set(ref.state[theirs[0]]) == {"momentum_buffer"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_twin_float32_iteration_matches_reference(dtype):
    """(float32 parameters: the iteration's dtype is theirs, and a tall matrix's result a transposed view)"""
    rng = np.random.default_rng(7)
    hyper = draw_hyper(rng)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    opt = fastopt.torch.Muon(ours, **hyper, ns_dtype=torch.float32)
    ref = [a.copy() for a in start]
    states = [references.muon_init_state(a) for a in ref]
    for t in range(1, STEPS + 1):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        _step(opt, ours, [torch.from_numpy(g) for g in grads])
        references.muon_step(ref, grads, states, step=t, **hyper)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    for p, q in zip(ours, ref):
        np.testing.assert_allclose(p.detach().numpy(), q, **tol)


@pytest.mark.parametrize("direction", ["torch_to_twin", "twin_to_torch"])
def test_state_dict_both_ways(direction):
    """Three steps in one, the state_dict into the other, three more: the same numbers as six in torch alone
    (within the bf16 tolerance of the comparison above: the first three steps' buffers came from one side)."""
    rng, hyper, ours, theirs, opt, ref = _pair(torch.float32, 11)
    grads = [[torch.from_numpy(rng.standard_normal(s)).float() for s in SHAPES] for _ in range(6)]
    alone = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    solo = torch.optim.Muon(alone, **hyper)
    for g in grads:
        _step(solo, alone, g)
    first, first_params, second, second_params = (ref, theirs, opt, ours) if direction == "torch_to_twin" else \
        (opt, ours, ref, theirs)
    for g in grads[:3]:
        _step(first, first_params, g)
    with torch.no_grad():
        for p, q in zip(second_params, first_params):
            p.copy_(q)
    second.load_state_dict(first.state_dict())
    for p, q in zip(second_params, first_params):
        assert second.state[p]["momentum_buffer"].dtype == p.dtype
        torch.testing.assert_close(second.state[p]["momentum_buffer"], first.state[q]["momentum_buffer"],
                                   rtol=0, atol=0)
    for g in grads[3:]:
        _step(second, second_params, g)
    for p, q in zip(second_params, alone):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-3, atol=1e-3 * hyper["lr"] * 4)


def test_twin_takes_torch_wording():
    p = torch.nn.Parameter(torch.zeros(3, 2))
    for kwargs, match in ((dict(lr=-1.0), "Learning rate should be >= 0 but is: -1.0"),
                          (dict(momentum=-0.1), "momentum should be >= 0 but is: -0.1"),
                          (dict(weight_decay=-1), "weight decay should be >= 0 but is: -1"),
                          (dict(adjust_lr_fn="x"), "Adjust learning rate function x is not supported")):
        with pytest.raises(ValueError, match=match):
            torch.optim.Muon([p], **kwargs)
        with pytest.raises(ValueError, match=match):
            fastopt.torch.Muon([p], **kwargs)
    for cls in (torch.optim.Muon, fastopt.torch.Muon):
        with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
            cls([p, torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="Number of steps must be less than 100"):
        fastopt.torch.Muon([p], ns_steps=100)
    with pytest.raises(TypeError, match="ns_dtype"):
        fastopt.torch.Muon([p], ns_dtype="bf16")


def test_twin_bad_step_writes_nothing():
    """A group edited into a bad state is refused at step, before anything changes."""
    ps = [torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(2, 3))]
    opt = fastopt.torch.Muon([{"params": ps[:1]}, {"params": ps[1:]}])
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    saved = [p.detach().clone() for p in ps], [opt.state[p]["momentum_buffer"].clone() for p in ps]
    opt.param_groups[1]["ns_coefficients"] = (1.0, 2.0)
    with pytest.raises(ValueError, match="ns_coefficients"):
        opt.step()
    for p, before, buf in zip(ps, *saved):
        torch.testing.assert_close(p.detach(), before, rtol=0, atol=0)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], buf, rtol=0, atol=0)
