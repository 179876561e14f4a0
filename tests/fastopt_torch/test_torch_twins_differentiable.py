"""differentiable=True param groups: a fused kernel is not differentiable, so such a group is stepped by
torch.optim's own implementation (sharing the twin's state, which has torch's format): the update is then
part of autograd's graph exactly as with torch.optim (gradients flow through it to what the parameters
were computed from), other groups of the same twin still go through the fused kernels, and GradScaler's
fused unscaling, which torch's differentiable path does not take, is refused by name."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402

CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=1e-2, momentum=0.8, centered=True)),
    # (not amsgrad: torch 2.13's own differentiable amsgrad fails backward() after a few steps, modifying in
    # place a tensor its graph saved)
    ("Adam", dict(lr=1e-2, weight_decay=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
]
IDS = [name for name, _ in CASES]


def unrolled(module, name, kwargs, steps=4):
    """Parameters computed from leaves (non-leaf tensors, as torch allows with differentiable=True), `steps`
    updates, then d(sum of the final parameters squared)/d(leaves): the hypergradient through the updates."""
    g = torch.Generator().manual_seed(11)
    leaves = [torch.randn(s, dtype=torch.float64, generator=g).requires_grad_() for s in [(3, 4), (5,)]]
    params = [2.0 * leaf for leaf in leaves]
    opt = getattr(module, name)(params, differentiable=True, **kwargs)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=torch.float64, generator=g)
        opt.step()
    sum((p ** 2).sum() for p in params).backward()
    return [p.detach() for p in params], [leaf.grad for leaf in leaves], opt


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_differentiable_groups_are_stepped_as_torch_steps_them(name, kwargs):
    ours, our_grads, opt = unrolled(ft, name, kwargs)
    theirs, their_grads, ref = unrolled(torch.optim, name, kwargs)
    for a, b in zip(ours + our_grads, theirs + their_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert all(g is not None and bool(g.abs().sum() > 0) for g in our_grads)
    # The state is torch's, in the twin's state dict.
    for p_state, q_state in zip(opt.state.values(), ref.state.values()):
        assert set(p_state) == set(q_state)


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_a_twin_mixes_differentiable_and_fused_groups(name, kwargs):
    # torch takes non-leaf parameters when its defaults say differentiable=True; a group that says
    # differentiable=False then goes through the twin's fused kernel (its values as torch's, outside the graph).
    def build(module):
        g = torch.Generator().manual_seed(12)
        leaves = [torch.randn(6, dtype=torch.float64, generator=g).requires_grad_(),
                  torch.randn(4, dtype=torch.float64, generator=g).requires_grad_()]
        fused, diff = [leaves[0] * 1.0], [leaves[1] * 1.5]
        opt = getattr(module, name)([{"params": fused, "differentiable": False}, {"params": diff}],
                                    differentiable=True, **kwargs)
        for _ in range(3):
            for p in fused + diff:
                p.grad = torch.randn(p.shape, dtype=torch.float64, generator=g)
            opt.step()
        return fused[0].detach(), diff[0].detach()

    for a, b in zip(build(ft), build(torch.optim)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_grad_scaler_fused_unscaling_is_refused_for_a_differentiable_group():
    leaf = torch.randn(4, dtype=torch.float64, requires_grad=True)
    p = leaf * 1.0
    opt = ft.Adam([p], lr=1e-2, differentiable=True)
    p.grad = torch.ones(4, dtype=torch.float64)
    before = p.detach().clone()
    opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.tensor(0.0)  # what GradScaler.step sets
    with pytest.raises(RuntimeError, match=r"param group 0 is differentiable=True, which torch.optim.*scaler\.unscale_"):
        opt.step()
    assert torch.equal(p.detach(), before) and not opt.state
