"""The torch twins under torch.amp.GradScaler: loss scaling and skipped steps.

A twin declares `_step_supports_amp_scaling`, so GradScaler does not unscale the gradients itself; it
hands the twin the scale and found_inf, and the kernel divides the gradients by the scale on the fly
(fastopt's grad_scale) or, when a gradient held a NaN or Inf, the twin skips the step. The result must
equal torch.optim's for-loop optimizers under the same GradScaler, which unscale the gradients in place
first: the scales are powers of two, so dividing and multiplying by the inverse give the same bits.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastopt.torch as ft  # noqa: E402
from torch_mlp import loss_of, make_batches, make_mlp  # noqa: E402

CASES = [("SGD", dict(lr=0.05, momentum=0.9)), ("Adagrad", dict(lr=0.05)), ("RMSprop", dict(lr=1e-3)),
         ("Adam", dict(lr=1e-2)), ("AdamW", dict(lr=1e-2, amsgrad=True))]
POISONED = {7, 8, 15}  # steps whose gradients get an Inf (or a NaN): the scaler must skip them


def train(model, opt, batches, record_grads=None):
    # growth_interval=4: the scale also grows during the run, so both directions of its update happen
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=4)
    scales = []
    for t, (x, y) in enumerate(batches):
        opt.zero_grad()
        scaler.scale(loss_of(model, x, y)).backward()
        if t in POISONED:
            first = next(model.parameters())
            first.grad[0, 0] = float("nan") if t == 8 else float("inf")
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        if record_grads is not None:
            record_grads.append([p.grad.detach().clone() for p in model.parameters()])
        if t in POISONED:
            assert all(torch.equal(b, p) for b, p in zip(before, model.parameters())), f"step {t} was not skipped"
        scales.append(scaler.get_scale())
        scaler.update()
    return scales


@pytest.mark.parametrize("name,hyper", CASES, ids=[c[0] for c in CASES])
def test_grad_scaler_gives_torchs_result(name, hyper):
    seed = int(np.random.SeedSequence().entropy % (2**31))
    print(f"seed={seed}")
    dtype = torch.float64
    model = make_mlp(seed, dtype)
    twin_model = copy.deepcopy(model)
    start = copy.deepcopy(model)
    theirs = getattr(torch.optim, name)(model.parameters(), foreach=False, **hyper)
    ours = getattr(ft, name)(twin_model.parameters(), **hyper)
    batches = make_batches(seed, 24, 32, dtype)

    twin_grads = []
    their_scales = train(model, theirs, batches)
    our_scales = train(twin_model, ours, batches, record_grads=twin_grads)

    assert our_scales == their_scales
    assert min(our_scales) < max(our_scales), "the scale never changed: the test exercised nothing"
    for p, q in zip(model.parameters(), twin_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-14)
    moved = max((p - p0).abs().max().item() for p, p0 in zip(model.parameters(), start.parameters()))
    assert moved > 1e-3
    # The fused path was taken: GradScaler left the twin's gradients scaled (a torch.optim optimizer
    # gets them unscaled in place), so they are thousands of times the true gradients.
    assert max(g.abs().max().item() for g in twin_grads[0]) > 100 * max(
        p.grad.abs().max().item() for p in model.parameters())


def test_skipped_step_leaves_state_and_step_counts_alone():
    model = make_mlp(0, torch.float32)
    opt = ft.AdamW(model.parameters(), lr=1e-2)
    x, y = make_batches(0, 1, 8, torch.float32)[0]
    loss_of(model, x, y).backward()
    opt.step()
    state_before = copy.deepcopy(opt.state_dict())
    params_before = [p.detach().clone() for p in model.parameters()]
    opt.found_inf = torch.tensor(1.0)  # what GradScaler sets when a gradient was not finite
    opt.grad_scale = torch.tensor(1024.0)
    try:
        opt.step()
    finally:
        del opt.found_inf, opt.grad_scale
    after = opt.state_dict()
    for i, s in state_before["state"].items():
        for key, value in s.items():
            assert torch.equal(after["state"][i][key], value), (i, key)
    assert all(torch.equal(b, p) for b, p in zip(params_before, model.parameters()))
