"""Bad input to fastopt.torch's twins: refused with an error naming the parameter, BEFORE anything is written.

Each case builds an optimizer over two param groups whose FIRST group is valid and holds state from a few
real steps; the bad tensor is in the last group. A twin that updated the first group before checking the
last would change its parameters or state, and the test compares them bit for bit.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
import fastopt.cuda  # noqa: E402
import fastopt.torch as ft  # noqa: E402

NAMES = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]
HYPER = {"SGD": dict(lr=0.1, momentum=0.9), "Adagrad": dict(lr=0.1), "RMSprop": dict(lr=0.01, centered=True),
         "Adam": dict(lr=0.01, amsgrad=True), "AdamW": dict(lr=0.01)}


def param(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(*shape, generator=g).to(dtype))


def snapshot(opt):
    params = [p.detach().clone() for group in opt.param_groups for p in group["params"]]
    return params, copy.deepcopy(opt.state_dict())


def assert_unchanged(opt, before):
    params, state = snapshot(opt)
    for i, (p, q) in enumerate(zip(params, before[0])):
        if p.device.type == "meta":
            continue  # has no values to compare (and was refused before anything else was looked at)
        assert torch.equal(p, q), f"params[{i}] changed"
    assert state["state"].keys() == before[1]["state"].keys()
    for i, s in state["state"].items():
        for key, value in s.items():
            assert torch.equal(value, before[1]["state"][i][key]), f"state[{i}][{key!r}] changed"


def optimizer_with_history(name, bad_group):
    """Group 0: two valid float64 parameters with 3 steps of state. Group 1: `bad_group`."""
    good = [param(5, seed=1), param(3, 4, seed=2)]
    opt = getattr(ft, name)([{"params": good}], **HYPER[name])
    for step in range(3):
        for p in good:
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(step))
        opt.step()
    opt.add_param_group({"params": bad_group})
    return opt


def refuse(name, bad_params, error, match, setup=None):
    opt = optimizer_with_history(name, bad_params)
    if setup is not None:
        setup(opt)
    before = snapshot(opt)
    with pytest.raises(error, match=match):
        opt.step()
    assert_unchanged(opt, before)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_sparse_gradient(name):
    # torch's SGD and Adagrad take sparse gradients (test_torch_twins_sparse.py); its other optimizers
    # raise RuntimeError, and so do the twins (the same implementation steps them), before anything is written.
    emb = torch.nn.Embedding(10, 3, sparse=True).double()
    emb(torch.tensor([1, 4])).sum().backward()
    assert emb.weight.grad.is_sparse
    refuse(name, [param(2, seed=3), emb.weight], RuntimeError, r"does not support sparse gradients")


# (float16/bfloat16 parameters on the CPU: test_torch_twins_half_cpu.py)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_on_a_device_fastopt_lacks(name):
    # The meta device stands in for CUDA on machines without a GPU: same path, same refusal.
    p = torch.nn.Parameter(torch.empty(4, device="meta", dtype=torch.float64))
    p.grad = torch.empty(4, device="meta", dtype=torch.float64)
    refuse(name, [p], NotImplementedError, r"params\[2\] is on meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_parameter_beside_a_cpu_group(name):
    """A group of CUDA parameters after a CPU group: updated by fastopt's CUDA backend when it has one (the
    CPU group exactly as without it); otherwise refused before anything is written, saying why."""
    p = torch.nn.Parameter(torch.ones(4, device="cuda", dtype=torch.float64))
    p.grad = torch.ones_like(p)
    if not fastopt.cuda.is_compiled():
        refuse(name, [p], NotImplementedError, r"params\[2\] is on cuda:0, but this fastopt was built without CUDA")
    elif not fastopt.cuda.is_available():
        refuse(name, [p], NotImplementedError, r"params\[2\] is on cuda:0, but fastopt's CUDA backend finds no usable")
    else:
        opt = optimizer_with_history(name, [p])
        clean = copy.deepcopy(opt)  # the CPU group without the CUDA one: what the step must do to it
        clean.param_groups.pop()
        for q, r in zip(opt.param_groups[0]["params"], clean.param_groups[0]["params"]):
            r.grad = q.grad.clone()
        opt.step()
        clean.step()
        assert not torch.equal(p.detach(), torch.ones_like(p))
        for q, r in zip(opt.param_groups[0]["params"], clean.param_groups[0]["params"]):
            assert torch.equal(q, r)


@pytest.mark.skipif(fastopt.cuda.is_available(), reason="fastopt runs CUDA tensors here")
def test_cuda_tensor_refusal_says_why():
    """Without a GPU: the twins' device check, fed a stand-in with a CUDA tensor's attributes, refuses it
    naming the reason (the same check the CUDA test above reaches with a real tensor)."""
    from fastopt.torch import _arrays

    class CudaLike:
        layout, is_cpu, is_cuda, dtype = torch.strided, False, True, torch.float32
        device = torch.device("cuda", 0)

    reason = "built without CUDA" if not fastopt.cuda.is_compiled() else "finds no usable device"
    with pytest.raises(NotImplementedError, match=rf"params\[0\] is on cuda:0, but .*{reason}"):
        _arrays.check_tensor(CudaLike(), "params[0]")


@pytest.mark.parametrize("name", NAMES)
def test_gradient_laid_out_unlike_its_parameter(name):
    # A transposed parameter is updated in place (test_torch_twins_layouts.py) when its gradient and
    # state share its layout; a gradient in another order would pair the wrong elements: refused.
    p = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64).t())
    p.grad = torch.ones(4, 6, dtype=torch.float64)
    refuse(name, [p], ValueError, r"params\[2\]\.grad has strides \(6, 1\) but its parameter has \(1, 4\)")
    q = param(4, 6, seed=4)
    q.grad = torch.ones(6, 4, dtype=torch.float64).t()
    refuse(name, [q], ValueError, r"params\[2\]\.grad has strides \(1, 4\) but its parameter has \(6, 1\)")


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameter_edited_into_a_later_group(name):
    p = param(4, seed=3)
    p.grad = torch.ones_like(p)

    def poison(opt):
        opt.param_groups[1]["lr"] = -1.0
    refuse(name, [p], ValueError, "lr", setup=poison)


@pytest.mark.parametrize("name", ["Adagrad", "RMSprop", "Adam", "AdamW", "SGD"])
def test_state_of_the_wrong_shape(name):
    p = param(4, seed=3)
    p.grad = torch.ones_like(p)

    def corrupt(opt):
        key = {"SGD": "momentum_buffer", "Adagrad": "sum", "RMSprop": "square_avg"}.get(name, "exp_avg")
        opt.state[p].update({k: v for k, v in opt.state[opt.param_groups[0]["params"][0]].items()})
        opt.state[p][key] = torch.zeros(5, dtype=torch.float64)
    refuse(name, [p], ValueError, r"state\[2\]\['\w+'\] has shape \(5,\)", setup=corrupt)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_sharing_memory_across_groups(name):
    base = torch.zeros(10, dtype=torch.float64)
    a, b = torch.nn.Parameter(base[:6]), torch.nn.Parameter(base[4:])
    a.grad, b.grad = torch.ones(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    opt = optimizer_with_history(name, [a])
    opt.add_param_group({"params": [b]})
    before = snapshot(opt)
    with pytest.raises(ValueError, match="shares memory"):
        opt.step()
    assert_unchanged(opt, before)
    assert not base.any()


@pytest.mark.parametrize("name", NAMES)
def test_a_valid_step_after_a_refused_one_matches_a_clean_run(name):
    """The refused step left no trace: drop the bad group's gradient and the step equals that of an
    optimizer that never saw the bad input."""
    bad = param(2, seed=3)
    bad.grad = torch.ones(2, 2, dtype=torch.float64)[:, 0]  # (every other element: gaps in memory)
    opt = optimizer_with_history(name, [bad])
    clean = copy.deepcopy(opt)  # copies parameters and state, but not the .grads
    for p, q in zip(opt.param_groups[0]["params"], clean.param_groups[0]["params"]):
        q.grad = p.grad.clone()
    with pytest.raises(ValueError, match="has gaps"):
        opt.step()
    bad.grad = None
    opt.step()
    clean.step()
    for p, q in zip(opt.param_groups[0]["params"], clean.param_groups[0]["params"]):
        assert torch.equal(p, q)
