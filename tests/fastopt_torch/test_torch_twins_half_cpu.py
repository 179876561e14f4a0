"""fastopt.torch's SGD, Adagrad, RMSprop, Adam and AdamW over float16 and bfloat16 parameters on the CPU:
float32 state, float32 math, the parameter rounded to nearest even once per step.

Each step is compared with torch.optim's own step in float64 (foreach=False), started from the twin's
params and state of that moment, so that a rounding flip cannot compound: the twin's parameter is the
float64 result rounded to the half dtype, or on rare elements its neighbour (float32 against float64
math on either side of a rounding boundary).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402

HYPER = {
    "SGD": dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "Adagrad": dict(lr=0.1, lr_decay=0.01, weight_decay=0.01),
    "RMSprop": dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01),
    "Adam": dict(lr=0.01, amsgrad=True, weight_decay=0.01),
    "AdamW": dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, maximize=True),
}
HALF = [torch.float16, torch.bfloat16]


def as_int(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16).to(torch.int32)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", list(HYPER))
def test_each_step_is_torchs_float64_step_rounded(name, dtype):
    gen = torch.Generator().manual_seed(3)
    p = torch.nn.Parameter(torch.randn(40, 50, generator=gen).to(dtype))
    opt = getattr(ft, name)([p], **HYPER[name])
    flips = 0
    for step in range(1, 5):
        q = torch.nn.Parameter(p.detach().double())
        reference = getattr(torch.optim, name)([q], foreach=False, **HYPER[name])
        if opt.state[p]:
            reference.state[q] = {key: value.double() if key != "step" else value.clone()
                                  for key, value in opt.state[p].items()}
        g = torch.randn(40, 50, generator=gen).to(dtype)
        p.grad, q.grad = g, g.double()
        before = p.detach().clone()
        opt.step()
        reference.step()
        for key, value in opt.state[p].items():
            if key != "step":
                assert value.dtype == torch.float32, key
                torch.testing.assert_close(value.double(), reference.state[q][key], rtol=2e-5, atol=1e-6)
        diff = (as_int(p.detach()) - as_int(q.detach().to(dtype))).abs()
        assert diff.max().item() <= 1, step
        flips += int((diff == 1).sum())
        assert not torch.equal(p.detach(), before)
    assert flips <= 0.01 * p.numel() * 4, flips


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", list(HYPER))
def test_channels_last_half_parameter_is_updated_in_place(name, dtype):
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(2, 3, 4, 5, generator=gen).to(dtype)
    p = torch.nn.Parameter(w.clone().contiguous(memory_format=torch.channels_last))
    c = torch.nn.Parameter(w.clone())
    g = torch.randn(2, 3, 4, 5, generator=gen).to(dtype)
    p.grad, c.grad = g.clone().contiguous(memory_format=torch.channels_last), g.clone()
    address = p.data_ptr()
    a, b = getattr(ft, name)([p], **HYPER[name]), getattr(ft, name)([c], **HYPER[name])
    for _ in range(2):
        a.step()
        b.step()
    assert p.data_ptr() == address and p.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(p.detach(), c.detach()) and not torch.equal(c.detach(), w)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", list(HYPER))
def test_torch_state_of_half_params_loads_as_float32(name, dtype):
    # torch.optim keeps a half parameter's state in its dtype; the twin takes it as float32 (exact: a half
    # value is a float32 value) and trains on from there; its own state_dict loads back into torch.optim.
    gen = torch.Generator().manual_seed(5)
    q = torch.nn.Parameter(torch.randn(30, generator=gen).to(dtype))
    reference = getattr(torch.optim, name)([q], foreach=False, **HYPER[name])
    q.grad = torch.randn(30, generator=gen).to(dtype)
    reference.step()
    p = torch.nn.Parameter(q.detach().clone())
    opt = getattr(ft, name)([p], **HYPER[name])
    opt.load_state_dict(reference.state_dict())
    for key, value in opt.state[p].items():
        if key != "step":
            assert value.dtype == torch.float32
            assert torch.equal(value, reference.state[q][key].float())
    p.grad = q.grad.clone()
    opt.step()
    b = torch.nn.Parameter(p.detach().clone())
    back = getattr(torch.optim, name)([b], **HYPER[name])
    back.load_state_dict(opt.state_dict())
    for key, value in opt.state[p].items():
        if key == "step":
            assert float(back.state[b][key]) == float(value) == 2.0
        else:  # (torch.optim casts state to its parameter's dtype as it loads)
            assert torch.equal(back.state[b][key], value.to(dtype))


def test_optimizers_without_half_cpu_kernels_refuse_half_params():
    # (the element-wise rules' twins take bfloat16 on the CPU, not float16: test_torch_twins_bf16_rules.py;
    # LAMB neither)
    for name, dtype in (("NAdam", torch.float16), ("LAMB", torch.bfloat16), ("LAMB", torch.float16)):
        p = torch.nn.Parameter(torch.ones(4, dtype=dtype))
        p.grad = torch.ones_like(p)
        opt = getattr(ft, name)([p])
        with pytest.raises(TypeError, match=rf"params\[0\] has dtype {dtype}; fastopt updates float32, float64, "
                                            r"complex64 or complex128 tensors on the CPU \(float16 and bfloat16: "
                                            r"fastopt.torch.SGD, Adagrad, RMSprop, Adam and AdamW; bfloat16 also NAdam"):
            opt.step()
        assert torch.equal(p.detach(), torch.ones(4, dtype=dtype))
