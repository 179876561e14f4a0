"""fastopt.torch's twins against torch.optim's for-loop implementation (foreach=False): a small MLP trained
100 steps from the same seed, state_dicts moved both ways mid-training, LR schedulers, closures, zero_grad,
param groups and torch's state format."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402
from torch_mlp import fresh_seed, groups, loss_of, make_batches, make_mlp  # noqa: E402

# (name, hyperparameters): every option of each optimizer appears at least once.
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1, maximize=True)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, centered=True)),
    ("RMSprop", dict(lr=1e-3, momentum=0.8, centered=True, weight_decay=1e-3, maximize=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, betas=(0.85, 0.995), weight_decay=0.1, amsgrad=True)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]

# float64: both sides compute the same formulas in double; they differ only in operation order (torch uses
# lerp/addcdiv), so after 100 steps the parameters agree far inside 1e-10. float32: each step rounds at
# ~6e-8 relative in a different order; 100 steps of training compound it (Adam divides by sqrt(v), which
# magnifies small differences where v is small), measured at a few 1e-6 at most, so 1e-5 relative (with an
# absolute floor for entries that pass near zero) is "equal to rounding" with a margin, and any wrong
# formula, missed flag or skipped step shows as 1e-3 or more.
TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}
# The state in float32 is looser: centered RMSprop's momentum buffer accumulates g / (sqrt(sq - ga^2) + eps),
# where sq - ga^2 cancels, so a last-bit difference in it (torch may fuse a multiply-add, fastopt never
# does) grows to ~7e-5 relative in about 1 element of 100 after 100 steps (measured over 40 seeds).
# A formula error still shows as 1e-2 or more.
STATE_TOLERANCE = {torch.float64: TOLERANCE[torch.float64], torch.float32: dict(rtol=5e-4, atol=1e-5)}


def make_pair(name, hyper, seed, dtype, **extra):
    model = make_mlp(seed, dtype)
    twin_model = copy.deepcopy(model)
    theirs = getattr(torch.optim, name)(groups(model, hyper["lr"]), foreach=False, **hyper, **extra)
    ours = getattr(ft, name)(groups(twin_model, hyper["lr"]), **hyper, **extra)
    return model, theirs, twin_model, ours


def train(model, opt, batches, sign=1.0, scheduler=None):
    for x, y in batches:
        opt.zero_grad()
        loss_of(model, x, y, sign).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def assert_same_params(model, twin_model, dtype, moved_from=None):
    for (name, p), q in zip(model.named_parameters(), twin_model.parameters()):
        torch.testing.assert_close(q, p, msg=lambda m: f"{name}: {m}", **TOLERANCE[dtype])
    if moved_from is not None:  # the run trained: a comparison of two unmoved models would prove nothing
        moved = max((p - p0).abs().max().item() for p, p0 in zip(model.parameters(), moved_from.parameters()))
        assert moved > 1e-3, f"parameters moved only {moved}"


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_mlp_100_steps_matches_torch(name, hyper, dtype):
    seed = fresh_seed()
    model, theirs, twin_model, ours = make_pair(name, hyper, seed, dtype)
    start = copy.deepcopy(model)
    batches = make_batches(seed, 100, 32, dtype)
    sign = -1.0 if hyper.get("maximize") else 1.0
    train(model, theirs, batches, sign)
    train(twin_model, ours, batches, sign)
    assert_same_params(model, twin_model, dtype, moved_from=start)
    # The state agrees too, key for key, in torch's format.
    assert_same_state(theirs.state_dict(), ours.state_dict(), dtype)


def assert_same_state(sd_torch, sd_twin, dtype):
    assert sd_torch["state"].keys() == sd_twin["state"].keys()
    for i, s in sd_torch["state"].items():
        t = sd_twin["state"][i]
        assert s.keys() == t.keys(), f"state[{i}]"
        for key, value in s.items():
            assert t[key].dtype == value.dtype and t[key].shape == value.shape, f"state[{i}][{key!r}]"
            if key == "step":
                assert t[key].item() == value.item()
            else:
                torch.testing.assert_close(t[key], value, **STATE_TOLERANCE[dtype])
    for g_torch, g_twin in zip(sd_torch["param_groups"], sd_twin["param_groups"]):
        assert g_torch.keys() == g_twin.keys()
        assert {k: v for k, v in g_torch.items() if k != "foreach"} == \
            {k: v for k, v in g_twin.items() if k != "foreach"}


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
@pytest.mark.parametrize("direction", ["torch_to_twin", "twin_to_torch"])
def test_state_dict_moves_mid_training(name, hyper, direction):
    """Train 30 steps with one, move model and optimizer state to the other, train 30 more: the same as
    training 60 steps with one of them."""
    seed, dtype = fresh_seed(), torch.float64
    batches = make_batches(seed, 60, 16, dtype)
    sign = -1.0 if hyper.get("maximize") else 1.0
    model, theirs, twin_model, ours = make_pair(name, hyper, seed, dtype)
    reference = copy.deepcopy(model)
    ref_opt = getattr(torch.optim, name)(groups(reference, hyper["lr"]), foreach=False, **hyper)
    train(reference, ref_opt, batches, sign)

    first, second = (model, theirs), (twin_model, ours)
    if direction == "twin_to_torch":
        first, second = second, first
    train(*first, batches[:30], sign)
    second[0].load_state_dict(first[0].state_dict())
    second[1].load_state_dict(first[1].state_dict())
    train(*second, batches[30:], sign)
    assert_same_params(reference, second[0], dtype)
    assert_same_state(ref_opt.state_dict(), second[1].state_dict(), dtype)


def test_state_format_is_torchs():
    """Keys, step dtype and group entries exactly as torch.optim makes them (also before any step, where
    Adagrad already has state)."""
    model = make_mlp(0, torch.float32)
    for name in ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]:
        theirs = getattr(torch.optim, name)(model.parameters(), lr=0.1)
        ours = getattr(ft, name)(model.parameters(), lr=0.1)
        assert theirs.state_dict()["param_groups"] == ours.state_dict()["param_groups"], name
        assert theirs.state_dict()["state"].keys() == ours.state_dict()["state"].keys(), name
        assert isinstance(ours, torch.optim.Optimizer)


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_step_dtype_follows_default_dtype(float64_default):
    model = make_mlp(0, torch.float64)
    x, y = make_batches(0, 1, 4, torch.float64)[0]
    for name in ["Adagrad", "RMSprop", "Adam", "AdamW"]:
        theirs = getattr(torch.optim, name)(model.parameters())
        ours = getattr(ft, name)(model.parameters())
        for opt in (theirs, ours):
            opt.zero_grad()
            loss_of(model, x, y).backward()
            opt.step()
        assert ours.state_dict()["state"][0]["step"].dtype == theirs.state_dict()["state"][0]["step"].dtype \
            == torch.float64, name


@pytest.mark.parametrize("sched", ["StepLR", "CosineAnnealingLR", "OneCycleLR"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_lr_schedulers_drive_the_twin(name, sched):
    seed, dtype, steps = fresh_seed(), torch.float64, 40
    # RMSprop at 0.05-0.1 (OneCycle's peak) with momentum trains chaotically on this MLP: torch's fused
    # multiply-add in `p.add_(buf, alpha=-lr)` against fastopt's separate rounding (1 ulp) then grows past
    # 1e-10 in about 8% of seeds. At RMSprop's usual rates (torch's default is 1e-2) it stays at rounding.
    lr = 5e-3 if name == "RMSprop" else 0.05
    hyper = dict(lr=lr, momentum=0.9) if name in ("SGD", "RMSprop") else dict(lr=lr)
    model, theirs, twin_model, ours = make_pair(name, hyper, seed, dtype)
    batches = make_batches(seed, steps, 16, dtype)

    def make_scheduler(opt):
        if sched == "StepLR":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
        if sched == "CosineAnnealingLR":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        # OneCycleLR also cycles SGD/RMSprop's momentum and Adam's beta1 in the groups.
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[2 * lr, lr], total_steps=steps,
                                                   cycle_momentum=name != "Adagrad")

    theirs_sched, ours_sched = make_scheduler(theirs), make_scheduler(ours)
    train(model, theirs, batches, scheduler=theirs_sched)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        train(twin_model, ours, batches, scheduler=ours_sched)
    assert ours_sched.get_last_lr() == theirs_sched.get_last_lr()
    assert ours_sched.get_last_lr() != [hyper["lr"], hyper["lr"] / 2]
    assert_same_params(model, twin_model, dtype)


def test_closure_is_evaluated_with_grad_and_its_loss_returned():
    seed, dtype = fresh_seed(), torch.float64
    model, theirs, twin_model, ours = make_pair("Adam", dict(lr=1e-2), seed, dtype)
    for x, y in make_batches(seed, 10, 8, dtype):
        losses = []
        for m, opt in ((model, theirs), (twin_model, ours)):
            def closure(m=m, opt=opt):
                opt.zero_grad()
                loss = loss_of(m, x, y)
                loss.backward()
                return loss
            with torch.no_grad():  # step must enable grad for the closure itself
                losses.append(opt.step(closure))
        assert losses[1].requires_grad  # computed under enable_grad although step ran under no_grad
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=0)
    assert_same_params(model, twin_model, dtype)
    assert ours.step() is None


def test_zero_grad_and_params_without_grad():
    seed, dtype = fresh_seed(), torch.float64
    model, theirs, twin_model, ours = make_pair("AdamW", dict(lr=1e-2), seed, dtype)
    x, y = make_batches(seed, 1, 8, dtype)[0]
    loss_of(twin_model, x, y).backward()
    ours.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in twin_model.parameters())
    ours.zero_grad()
    assert all(p.grad is None for p in twin_model.parameters())
    before = [p.clone() for p in twin_model.parameters()]
    ours.step()  # no gradients: nothing changes, no state appears (as torch)
    assert all(torch.equal(p, b) for p, b in zip(twin_model.parameters(), before))
    assert ours.state_dict()["state"] == {}

    # Some parameters without gradients for a while: their step counts fall behind, so one group needs
    # kernel calls with different step numbers.
    frozen = [model[2].weight, twin_model[2].weight]
    for step, (x, y) in enumerate(make_batches(seed, 20, 8, dtype)):
        for m, opt, f in ((model, theirs, frozen[0]), (twin_model, ours, frozen[1])):
            opt.zero_grad()
            loss_of(m, x, y).backward()
            if step < 5:
                f.grad = None
            opt.step()
    assert ours.state[frozen[1]]["step"].item() == 15 and ours.state[twin_model[0].weight]["step"].item() == 20
    assert_same_params(model, twin_model, dtype)


def test_mixed_dtypes_in_one_group():
    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(5, generator=g, dtype=torch.float64), torch.randn(7, generator=g).float(),
               torch.randn(3, generator=g, dtype=torch.float64)]
    ps = [torch.nn.Parameter(t.clone()) for t in tensors]
    qs = [torch.nn.Parameter(t.clone()) for t in tensors]
    theirs = torch.optim.Adam(ps, lr=0.01, foreach=False)
    ours = ft.Adam(qs, lr=0.01)
    for _ in range(10):
        grads = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in tensors]
        for p, q, gr in zip(ps, qs, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        theirs.step()
        ours.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(q, p, **TOLERANCE[p.dtype])


def test_update_lands_in_the_tensors_memory_and_autograd_sees_it():
    p = torch.nn.Parameter(torch.randn(10, dtype=torch.float64))
    address = p.data_ptr()
    opt = ft.SGD([p], lr=0.1, momentum=0.9)
    y = (p * p).sum()          # saves p for backward
    y.backward(retain_graph=True)
    before = p.detach().clone()
    opt.step()
    assert p.data_ptr() == address and not torch.equal(p.detach(), before)
    buffer = opt.state[p]["momentum_buffer"]
    torch.testing.assert_close(buffer, 2 * before)  # first step: the buffer is the gradient
    from fastopt.torch import _arrays
    for t in (p, p.grad, buffer):  # the kernels get the tensors' own memory, never a copy
        assert _arrays.views([t])[0].ctypes.data == t.data_ptr()
    # The kernel wrote p behind autograd's back; the version bump makes autograd refuse the stale graph.
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


@pytest.mark.parametrize("option", [dict(capturable=True), dict(fused=True, foreach=True)])
def test_options_fastopt_cannot_honour_are_refused(option):
    model = make_mlp(0, torch.float32)
    for name in ["Adam", "AdamW", "RMSprop", "SGD", "Adagrad"]:
        try:
            getattr(torch.optim, name)(model.parameters(), **option)
        except TypeError:
            continue  # torch's own optimizer has no such option
        except (RuntimeError, ValueError):
            pass      # torch refuses it too (fused and foreach together)
        with pytest.raises(ValueError, match="param group 0"):
            getattr(ft, name)(model.parameters(), **option)


def test_options_that_change_nothing_are_accepted():
    """foreach chooses torch's implementation; fastopt always updates a group per call. fused is what
    fastopt is. Both give the same numbers as torch's for-loop."""
    seed, dtype = fresh_seed(), torch.float64
    model, theirs, twin_model, ours = make_pair("AdamW", dict(lr=1e-2), seed, dtype)
    ours.param_groups[0]["foreach"] = True
    ours.param_groups[1]["fused"] = True
    batches = make_batches(seed, 10, 8, dtype)
    train(model, theirs, batches)
    train(twin_model, ours, batches)
    assert_same_params(model, twin_model, dtype)


def test_tensor_lr_and_bad_hyperparameters():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = ft.Adam([p], lr=torch.tensor(0.5))
    p.grad = torch.ones(4, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((4,), 0.5, dtype=torch.float64))
    for name, bad in [("SGD", dict(lr=-1.0)), ("Adam", dict(betas=(1.0, 0.9))), ("RMSprop", dict(alpha=-0.5)),
                      ("SGD", dict(lr=0.1, nesterov=True)), ("Adagrad", dict(initial_accumulator_value=-1))]:
        with pytest.raises(ValueError):
            getattr(ft, name)([p], **bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_parameters_load_float32_state(dtype):
    """fastopt keeps float32 state for float16/bfloat16 parameters (its CUDA kernels require it; torch's
    fused optimizers keep the parameter's dtype). load_state_dict gives them float32 state from any saved
    dtype without rounding through the half dtype, and leaves float32/float64 parameters to torch's casts.
    (Loading needs no GPU; stepping half parameters does: tests/gpu/test_torch_twins_cuda.py.)"""
    g = torch.Generator().manual_seed(0)
    half = torch.nn.Parameter(torch.randn(8, generator=g).to(dtype))
    single = torch.nn.Parameter(torch.randn(3, generator=g))
    opt = ft.Adam([half, single], lr=1e-3)
    exact = torch.randn(8, generator=g)  # float32 values that the half dtype cannot hold
    assert not torch.equal(exact.to(dtype).float(), exact)
    groups = copy.deepcopy(opt.state_dict()["param_groups"])
    seen = []
    opt.register_load_state_dict_pre_hook(lambda o, sd: seen.append(type(sd["state"][0]["exp_avg"])))
    for saved in (exact, exact.double(), exact.to(dtype)):  # a twin's, a float64 one, torch fused's
        opt.load_state_dict({"state": {0: {"step": torch.tensor(3.0), "exp_avg": saved.clone(),
                                           "exp_avg_sq": saved.abs()},
                                       1: {"step": torch.tensor(3.0), "exp_avg": torch.ones(3, dtype=torch.float64),
                                           "exp_avg_sq": torch.ones(3, dtype=torch.float64)}},
                             "param_groups": groups})
        state = opt.state[half]
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
        assert torch.equal(state["exp_avg"], saved.float()) and torch.equal(state["exp_avg_sq"], saved.abs().float())
        assert state["step"].item() == 3.0
        assert opt.state[single]["exp_avg"].dtype == torch.float32  # torch's cast to the parameter's dtype
    assert seen == [torch.Tensor] * 3, "the user's pre-hook saw what was passed in"
    # The float32 state goes back to torch.optim, which casts it to the parameter's dtype as usual.
    theirs = torch.optim.Adam([torch.nn.Parameter(half.detach().clone()), single], lr=1e-3)
    theirs.load_state_dict(opt.state_dict())
    assert theirs.state_dict()["state"][0]["exp_avg"].dtype == dtype
