"""Parameters that are dense but not contiguous (channels_last, transposed, permuted), as torch.optim updates
them: each twin updates them in place (same memory, same strides) with torch.optim's numbers, through a
real model (a channels_last convolution trained by autograd) and through hand-made layouts; operands laid
out unlike their parameter, and tensors with gaps, are refused by name before anything is written."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402

CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-2, momentum=0.8, centered=True)),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
]
IDS = [name for name, _ in CASES]


def layouts(seed):
    """Leaf parameters of several layouts (float64), each with a gradient of its own layout."""
    g = torch.Generator().manual_seed(seed)
    made = {
        "channels_last": torch.randn(6, 5, 3, 4, dtype=torch.float64, generator=g).contiguous(
            memory_format=torch.channels_last),
        "transposed": torch.randn(7, 9, dtype=torch.float64, generator=g).t(),
        "permuted": torch.randn(4, 3, 5, dtype=torch.float64, generator=g).permute(2, 0, 1),
        "size_one_dims": torch.randn(1, 8, 1, 3, dtype=torch.float64, generator=g).transpose(1, 3),
        "contiguous": torch.randn(11, dtype=torch.float64, generator=g),
    }
    return {name: t.detach().requires_grad_() for name, t in made.items()}


def twin_pair(name, kwargs, seed):
    """The same parameters for torch.optim and the twin (clones keep the strides)."""
    ours = layouts(seed)
    theirs = {k: v.detach().clone().requires_grad_() for k, v in ours.items()}
    for k in ours:
        assert theirs[k].stride() == ours[k].stride()
    return ours, theirs, getattr(ft, name)(list(ours.values()), **kwargs), \
        getattr(torch.optim, name)(list(theirs.values()), foreach=False, **kwargs)


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_dense_layouts_are_updated_in_place_with_torchs_numbers(name, kwargs):
    ours, theirs, opt, ref = twin_pair(name, kwargs, seed=7)
    where = {k: (p.data_ptr(), p.stride()) for k, p in ours.items()}
    g = torch.Generator().manual_seed(8)
    for _ in range(12):
        for k in ours:
            grad = torch.randn(ours[k].shape, dtype=torch.float64, generator=g)
            ours[k].grad = torch.empty_like(ours[k]).copy_(grad)  # (empty_like keeps the layout)
            theirs[k].grad = torch.empty_like(theirs[k]).copy_(grad)
        opt.step()
        ref.step()
    for k in ours:
        assert (ours[k].data_ptr(), ours[k].stride()) == where[k], k
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-10, atol=1e-12, msg=k)
        for key, value in ref.state[theirs[k]].items():
            mine = opt.state[ours[k]][key]
            if key != "step":
                assert mine.stride() == ours[k].stride() or ours[k].numel() == 1, (k, key)
            torch.testing.assert_close(mine.to(value.dtype), value, rtol=1e-10, atol=1e-12, msg=f"{k} {key}")


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_a_channels_last_convolution_trains_as_with_torch(name, kwargs):
    def model():
        torch.manual_seed(3)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(8 * 6 * 6, 4)).double()
        return net.to(memory_format=torch.channels_last)

    ours, theirs = model(), model()
    assert not ours[0].weight.is_contiguous()  # (channels_last)
    opt = getattr(ft, name)(ours.parameters(), **kwargs)
    ref = getattr(torch.optim, name)(theirs.parameters(), foreach=False, **kwargs)
    g = torch.Generator().manual_seed(4)
    for _ in range(8):
        x = torch.randn(5, 3, 8, 8, dtype=torch.float64, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 4, (5,), generator=g)
        for net, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            o.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert a.stride() == b.stride()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def snapshot(opt, params):
    return [p.detach().clone() for p in params] + \
        [v.clone() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("fault", ["grad_contiguous", "state_contiguous"])
def test_operands_laid_out_unlike_the_parameter_are_refused_by_name(name, kwargs, fault):
    good = torch.randn(4, 6, dtype=torch.float64).requires_grad_()
    p = torch.randn(6, 4, dtype=torch.float64).t().detach().requires_grad_()  # (4, 6), strides (1, 4)
    params = [good, p]
    opt = getattr(ft, name)(params, **kwargs)
    for q in params:
        q.grad = torch.empty_like(q).normal_()
    opt.step()  # (state made, laid out as each parameter)
    if fault == "grad_contiguous":
        p.grad = p.grad.contiguous()  # torch.optim takes it; an in-place flat update would pair wrong elements
        match = r"params\[1\]\.grad has strides \(6, 1\) but its parameter has \(1, 4\)"
    else:
        state = opt.state[p]
        key = next(k for k, v in state.items() if torch.is_tensor(v) and v.dim() == 2)
        state[key] = state[key].contiguous()
        match = r"state\[1\]\['\w+'\] has strides \(6, 1\) but its parameter has \(1, 4\)"
    before = snapshot(opt, params)
    with pytest.raises(ValueError, match=match):
        opt.step()
    after = snapshot(opt, params)
    assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(after, before))


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_a_parameter_with_gaps_in_memory_is_refused_by_name(name, kwargs):
    good = torch.randn(5, dtype=torch.float64).requires_grad_()
    p = torch.randn(4, 12, dtype=torch.float64)[:, ::2].detach().requires_grad_()  # every other column
    opt = getattr(ft, name)([good, p], **kwargs)
    good.grad, p.grad = torch.randn(5, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    before = snapshot(opt, [good, p])
    with pytest.raises(ValueError, match=r"params\[1\] \(shape \(4, 6\), strides \(12, 2\)\) has gaps"):
        opt.step()
    after = snapshot(opt, [good, p])
    assert all(torch.equal(a, b) for a, b in zip(after, before))
