"""weight_decay = 0 leaves the gradient alone, as torch.optim does (`if weight_decay != 0: grad = grad +
weight_decay * param`): in sgd_, adagrad_, rmsprop_ and adam_ an infinite parameter stays infinite (0 * inf
would make the gradient, the state and the parameter NaN) and a -0.0 gradient keeps its sign, in every dtype.
Checked against fastopt.reference (written from torch's documented algorithms) and, where installed, against
torch.optim itself."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import reference

# +-inf params, signed zeros (params and grads), and ordinary values: the cases where g + 0 * p differs
PARAMS = [np.inf, -np.inf, np.inf, -0.0, 0.0, -0.0, 0.0, 1.5, -2.0]
GRADS = [1.0, -1.0, -0.0, -0.0, -0.0, 0.0, 0.0, -0.0, 0.5]
HALF = ["float16", "bfloat16"]


def arrays(dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    return np.array(PARAMS, dtype), np.array(GRADS, dtype)


def kernel_step(name, p, g, state_dtype, step):
    """Two steps of the kernel with weight_decay=0 (defaults otherwise; SGD with momentum)."""
    zeros = lambda: np.zeros(p.shape, state_dtype)  # noqa: E731
    if name == "sgd":
        buf = zeros()
        for t in (1, 2):
            fastopt.sgd_([p], [g], [buf], lr=0.1, momentum=0.9, weight_decay=0.0, step=t)
    elif name == "adagrad":
        s = zeros()
        for t in (1, 2):
            fastopt.adagrad_([p], [g], [s], lr=0.1, weight_decay=0.0, step=t)
    elif name == "rmsprop":
        s, b, a = zeros(), zeros(), zeros()
        for _ in (1, 2):
            fastopt.rmsprop_([p], [g], [s], [b], [a], lr=0.1, momentum=0.5, centered=True, weight_decay=0.0)
    else:
        m, v = zeros(), zeros()
        for t in (1, 2):
            fastopt.adam_([p], [g], [m], [v], lr=0.1, weight_decay=0.0, step=t)
    return p


def reference_steps(name, p, g):
    p, g = p.astype(np.float64), g.astype(np.float64)
    zeros = lambda: np.zeros(p.shape)  # noqa: E731
    if name == "sgd":
        buf = None
        for _ in (1, 2):
            p, buf = reference.sgd(p, g, buf, lr=0.1, momentum=0.9, weight_decay=0.0)
    elif name == "adagrad":
        s = zeros()
        for t in (1, 2):
            p, s = reference.adagrad(p, g, s, lr=0.1, weight_decay=0.0, step=t)
    elif name == "rmsprop":
        s, b, a = zeros(), zeros(), zeros()
        for _ in (1, 2):
            p, s, b, a = reference.rmsprop(p, g, s, b, a, lr=0.1, momentum=0.5, centered=True, weight_decay=0.0)
    else:
        m, v = zeros(), zeros()
        for t in (1, 2):
            p, m, v, _ = reference.adam(p, g, m, v, None, lr=0.1, weight_decay=0.0, step=t)
    return p


def kinds(a):
    """Each element's class: nan, +inf, -inf, +0, -0, or finite non-zero (values are compared elsewhere)."""
    a = np.asarray(a, np.float64)
    return [("nan" if np.isnan(x) else "inf" if np.isinf(x) else "zero" if x == 0 else "finite")
            + ("-" if np.signbit(x) else "+") for x in a]


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"] + HALF)
def test_zero_weight_decay_keeps_infinite_params_and_signed_zeros(name, dtype):
    p, g = arrays(dtype)
    state_dtype = np.float32 if dtype in HALF else p.dtype
    got = kernel_step(name, p.copy(), g, state_dtype, 2)
    want = reference_steps(name, p, g)
    assert kinds(got) == kinds(want)
    assert not np.isnan(got.astype(np.float64)).any()
    assert np.isinf(got.astype(np.float64)[:3]).all()


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam"])
def test_zero_weight_decay_against_torch(name):
    torch = pytest.importorskip("torch")
    p, g = arrays("float32")
    got = kernel_step(name, p.copy(), g, np.float32, 2)
    t = torch.tensor(p, requires_grad=True)
    cls, kw = {"sgd": (torch.optim.SGD, dict(momentum=0.9)), "adagrad": (torch.optim.Adagrad, {}),
               "rmsprop": (torch.optim.RMSprop, dict(momentum=0.5, centered=True)), "adam": (torch.optim.Adam, {})}[name]
    opt = cls([t], lr=0.1, weight_decay=0.0, foreach=False, **kw)
    for _ in (1, 2):
        t.grad = torch.tensor(g)
        opt.step()
    want = t.detach().numpy()
    assert kinds(got) == kinds(want)
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-6)


def test_a_nonzero_weight_decay_still_decays():
    p, g = arrays("float32")
    q = p.copy()
    fastopt.sgd_([q], [g], None, lr=0.1, weight_decay=0.5, step=1)
    assert np.isnan(q[:3]).all()  # inf + lr * 0.5 * inf ... as torch: g + wd * p with p = inf
    assert q[7] == np.float32(1.5) - np.float32(0.1) * (np.float32(-0.0) + np.float32(0.5) * np.float32(1.5))
