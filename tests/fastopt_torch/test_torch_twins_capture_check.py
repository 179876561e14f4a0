"""The twins' CUDA-graph capture health check and GradScaler's found_inf, the parts that run without a GPU.

- A step being captured in a CUDA graph must be capturable in every param group, as torch.optim's capture
  health check requires (torch.cuda.is_current_stream_capturing()): a non-capturable step would bake the
  host's step number and lr into the graph, so every replay repeated one bias correction and the step count
  stopped. Here the capture is simulated (torch.cuda.is_available and is_current_stream_capturing patched),
  on CPU parameters: the twin must refuse before it looks at anything, leaving every tensor as it was.
  (tests/gpu/test_torch_twins_cuda.py captures for real.)
- GradScaler's found_inf reaches the kernels as `found_inf=` (fastopt.adam_ and the others): on CPU arrays
  it is read on the host, and a set one skips the call after every argument was checked.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from torch_mlp import loss_of, make_batches, make_mlp  # noqa: E402

TWINS = [("SGD", dict(lr=0.1, momentum=0.9)), ("Adagrad", dict(lr=0.1)), ("RMSprop", dict(lr=1e-2)),
         ("Adam", dict(lr=1e-2)), ("AdamW", dict(lr=1e-2, amsgrad=True))]


def start_capture(monkeypatch):
    """From now on, as if the current CUDA stream were being captured into a graph."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)


def trained_twin(name, hyper, steps=2):
    model = make_mlp(3, torch.float32)
    opt = getattr(ft, name)(model.parameters(), **hyper)
    for x, y in make_batches(3, steps, 8, torch.float32):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    opt.zero_grad()
    x, y = make_batches(4, 1, 8, torch.float32)[0]
    loss_of(model, x, y).backward()
    return model, opt


@pytest.mark.parametrize("name,hyper", TWINS, ids=[n for n, _ in TWINS])
def test_capture_of_a_non_capturable_step_is_refused(name, hyper, monkeypatch):
    model, opt = trained_twin(name, hyper)
    start_capture(monkeypatch)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    with pytest.raises(RuntimeError, match="capturable is False"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    after = opt.state_dict()
    for key, value in state["state"].items():
        for k, v in value.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(after["state"][key][k])), (key, k)


def test_capture_check_names_the_optimizer_and_needs_every_group(monkeypatch):
    model = make_mlp(3, torch.float32)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = ft.Adam([{"params": weights}, {"params": biases}], lr=1e-2)
    x, y = make_batches(3, 1, 8, torch.float32)[0]
    loss_of(model, x, y).backward()
    start_capture(monkeypatch)
    # A group marked capturable does not excuse another that is not (torch: all groups must be); the
    # check comes first, before the groups' own checks (a CPU group may not be capturable at all).
    opt.param_groups[0]["capturable"] = True
    with pytest.raises(RuntimeError, match="instance of Adam"):
        opt.step()
    assert not opt.state


def test_without_a_capture_the_step_runs(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    model, opt = trained_twin("AdamW", dict(lr=1e-2))
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ---------------------------------------------------------------- found_inf on the host

def adam_arrays(seed=0, n=37):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n), rng.standard_normal(n) * 0.1, np.zeros(n), np.zeros(n)]


SET = [True, 1.0, 2, np.float32(1.0), np.array(1.0), torch.tensor(1.0), torch.tensor([3])]
CLEAR = [False, 0.0, 0, np.float64(0.0), np.array(0.0), torch.tensor(0.0)]


@pytest.mark.parametrize("found", SET, ids=[f"set-{i}" for i in range(len(SET))])
def test_a_set_host_found_inf_skips_the_call(found):
    arrays = adam_arrays()
    before = [a.copy() for a in arrays]
    assert fastopt.adam_(*arrays, lr=1e-2, step=1, found_inf=found) is True
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("found", CLEAR, ids=[f"clear-{i}" for i in range(len(CLEAR))])
def test_a_clear_host_found_inf_changes_nothing(found):
    arrays, plain = adam_arrays(), adam_arrays()
    assert fastopt.adamw_(*arrays, lr=1e-2, step=3, grad_scale=4.0, found_inf=found) is False
    fastopt.adamw_(*plain, lr=1e-2, step=3, grad_scale=4.0)
    for a, b in zip(arrays, plain):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("found", ["yes", [1.0], object()], ids=["str", "list", "object"])
def test_found_inf_of_another_kind_is_refused(found):
    arrays = adam_arrays()
    before = [a.copy() for a in arrays]
    with pytest.raises(TypeError, match="found_inf"):
        fastopt.adam_(*arrays, lr=1e-2, step=1, found_inf=found)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_a_set_found_inf_does_not_excuse_bad_arrays():
    p, g, m, v = adam_arrays()
    with pytest.raises(ValueError, match="exp_avg_sqs"):
        fastopt.adam_(p, g, m, v[:-1], lr=1e-2, step=1, found_inf=True)
    with pytest.raises(ValueError, match="grad_scale"):
        fastopt.sgd_(p, g, lr=0.1, grad_scale=0.0, found_inf=True)


@pytest.mark.parametrize("kernel,extra", [
    (fastopt.sgd_, dict(lr=0.1)), (fastopt.adagrad_, dict(step=2)), (fastopt.rmsprop_, {}),
    (fastopt.adam_, dict(step=2)), (fastopt.adamw_, dict(step=2))], ids=["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_every_update_takes_found_inf(kernel, extra):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(9), rng.standard_normal(9)]
    if kernel is fastopt.adagrad_ or kernel is fastopt.rmsprop_:
        arrays.append(np.abs(rng.standard_normal(9)))
    elif kernel in (fastopt.adam_, fastopt.adamw_):
        arrays += [np.zeros(9), np.zeros(9)]
    before = [a.copy() for a in arrays]
    assert kernel(*arrays, found_inf=1.0, **extra) is True
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_grad_scaler_on_the_cpu_still_skips_poisoned_steps():
    """The twin reads a CPU GradScaler's found_inf on the host, as before the device path existed."""
    model = make_mlp(5, torch.float64)
    opt = ft.Adam(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = make_batches(5, 1, 8, torch.float64)[0]
    scaler.scale(loss_of(model, x, y)).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(opt)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not opt.state  # the skipped first step made no state
