"""Autograd's version counter. torch bumps a tensor's version at every in-place op, and backward() refuses a
graph that saved a tensor whose version moved since. fastopt writes through raw pointers, so it bumps the
version of every torch tensor it writes: updating `w.detach()` (the same memory and the same counter as w)
after a forward pass that saved w must make backward() raise, as `w.add_(...)` under no_grad would, instead of
silently differentiating with the new w. Tensors only read (grads, logits) keep their versions, each written
tensor is bumped once per call, and a refused call bumps nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt

torch = pytest.importorskip("torch")

# name: (function, state arrays, keyword arguments that use every state)
KERNELS = {
    "sgd": (fastopt.sgd_, 1, dict(lr=0.1, momentum=0.9, step=1)),
    "adagrad": (fastopt.adagrad_, 1, dict(lr=0.1, step=1)),
    "rmsprop": (fastopt.rmsprop_, 3, dict(lr=0.1, momentum=0.9, centered=True)),
    "adam": (fastopt.adam_, 3, dict(lr=0.1, amsgrad=True, step=1)),
    "adamw": (fastopt.adamw_, 3, dict(lr=0.1, amsgrad=True, step=1)),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_update_of_a_detached_parameter_bumps_its_version(name):
    fn, n_states, kwargs = KERNELS[name]
    ws = [torch.full((4,), 2.0, requires_grad=True), torch.full((2, 3), 3.0, requires_grad=True)]
    loss = sum((w * w).sum() for w in ws)  # saves each w for backward
    grads = [torch.ones_like(w) for w in ws]
    states = [[torch.ones_like(w).detach() for w in ws] for _ in range(n_states)]
    tensors = ws + [s for group in states for s in group]
    before = [t._version for t in tensors]
    read_before = [g._version for g in grads]

    fn([w.detach() for w in ws], grads, *states, **kwargs)

    assert [t._version for t in tensors] == [v + 1 for v in before]  # once each (a 2-d tensor too)
    assert [g._version for g in grads] == read_before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_refused_call_bumps_nothing():
    w = torch.ones(4)
    m, v = torch.zeros(4), torch.zeros(4)
    with pytest.raises(ValueError):
        fastopt.adam_(w, torch.ones(4), m, v, lr=-1.0, step=1)
    with pytest.raises(TypeError):
        fastopt.adam_(w, torch.ones(4), m, torch.zeros(4, dtype=torch.float64), lr=0.1, step=1)
    assert (w._version, m._version, v._version) == (0, 0, 0)
    fastopt.adam_(w, torch.ones(4), m, v, lr=0.1, step=1)
    assert (w._version, m._version, v._version) == (1, 1, 1)


def test_loss_outputs_written_into_tensors_are_bumped():
    logits = torch.randn(3, 5)
    labels = torch.tensor([0, 4, 2])
    out = torch.empty(3, 5)
    fastopt.softmax_cross_entropy(logits, labels, out=out)
    assert out._version == 1 and logits._version == 0

    x = torch.randn(3, 5)
    assert fastopt.softmax(x, out=x) is x and x._version == 1
    separate = torch.empty(3, 5)
    assert fastopt.log_softmax(logits, out=separate) is separate
    assert separate._version == 1 and logits._version == 0

    w = torch.randn(6)
    grad = torch.zeros(6)
    fastopt.penalty(w, l2=0.1, out_grad=grad)
    assert grad._version == 1 and w._version == 0

