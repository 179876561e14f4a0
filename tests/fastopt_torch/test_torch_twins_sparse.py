"""Sparse gradients (torch.nn.Embedding(sparse=True)) with the twins of the torch.optim optimizers that take
them, SGD and Adagrad: those parameters are stepped by torch.optim's own implementation (sharing the twin's
state), the dense ones of the same group by the fused kernel, and the result equals torch.optim's."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.0)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
]


def train(module, name, kwargs, steps=6):
    torch.manual_seed(21)
    emb = torch.nn.Embedding(12, 4, sparse=True).double()
    head = torch.nn.Linear(4, 3).double()
    opt = getattr(module, name)(list(emb.parameters()) + list(head.parameters()), **kwargs)
    g = torch.Generator().manual_seed(22)
    for _ in range(steps):
        ids = torch.randint(0, 12, (8,), generator=g)
        y = torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(emb(ids)), y).backward()
        assert emb.weight.grad.is_sparse
        opt.step()
    return [p.detach() for p in list(emb.parameters()) + list(head.parameters())]


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_sparse_gradients_are_stepped_as_torch_steps_them(name, kwargs):
    ours, theirs = train(ft, name, kwargs), train(torch.optim, name, kwargs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
