"""Hyperparameters outside the range of the params' arithmetic.

The kernels compute in float32 for float32 params: eps=1e-50 passed `eps > 0` but is 0 in float32 (0 / 0 = NaN
for an element whose gradient and state are 0), and lr=1e39 is inf there (every parameter turned -inf). So with
float32 params every hyperparameter must be finite in float32, and eps and grad_scale normal float32 numbers;
Adam's first step size lr / (1 - beta1) and AdamW's lr * weight_decay must fit as well (in float64 too). The same
values are fine for float64 params. Each refusal names the argument and writes nothing: in the functions, the
losses, the C ABI, fastopt.optim (before any group of a step is updated) and fastopt.torch.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import fastopt
from fastopt import _core, capi, optim
from test_bad_input import BY_NAME, KERNELS, assert_rejected, call, make_args

WITH_EPS = [BY_NAME[n] for n in ("adagrad", "rmsprop", "adam", "adamw")]
# Hyperparameters without an upper bound of their own (betas and alpha have one), with a value beyond float32.
UNBOUNDED = [(k, h, v) for k in KERNELS for h in k.floats if h not in ("beta1", "beta2", "alpha", "eps")
             for v in ((1e39, -1e39) if h == "dampening" else (1e39,))]


@pytest.mark.parametrize("kernel, name, value", UNBOUNDED, ids=[f"{k.name}-{h}-{v:g}" for k, h, v in UNBOUNDED])
def test_float32_refuses_a_hyperparameter_beyond_its_range(kernel, name, value):
    call(kernel, make_args(kernel), **{name: value})  # float64: accepted
    assert_rejected(kernel, make_args(kernel, dtype=np.float32), ValueError,
                    rf"{name} must be at most 3\.40282347e\+38 in magnitude", **{name: value})


@pytest.mark.parametrize("value", [1e-50, 1e-40, 1e39])
@pytest.mark.parametrize("kernel", WITH_EPS, ids=[k.name for k in WITH_EPS])
def test_float32_refuses_an_eps_that_is_not_a_normal_float32(kernel, value):
    if value < 1:
        args = make_args(kernel)
        for a in kernel.states:  # zero state and gradients: where eps alone keeps 0 / 0 away
            for x in args[a]:
                x[...] = 0
        for x in args["grads"]:
            x[...] = 0
        call(kernel, args, eps=value)  # float64: accepted, and nothing turns NaN
        assert not any(np.isnan(x).any() for arrays in args.values() for x in arrays)
    match = r"eps must be at least 1\.17549435e-38" if value < 1 else "eps must be at most"
    assert_rejected(kernel, make_args(kernel, dtype=np.float32), ValueError, match, eps=value)


@pytest.mark.parametrize("kernel", KERNELS, ids=[k.name for k in KERNELS])
def test_float32_refuses_a_subnormal_grad_scale(kernel):
    assert_rejected(kernel, make_args(kernel, dtype=np.float32), ValueError, r"grad_scale must be at least",
                    grad_scale=1e-40)
    with pytest.raises(ValueError, match="grad_scale must be at least"):
        _core._found_nonfinite([np.ones(3, np.float32)], grad_scale=1e-40)


@pytest.mark.parametrize("name", ["adam", "adamw"])
@pytest.mark.parametrize("step", [1, 1000])
def test_adam_first_step_size_must_fit(name, step):
    """lr = 1e38 is a float32, but lr / (1 - beta1) at step 1 is not. Checked for every step, so that a
    verdict does not depend on the step (a stateful optimizer checks its groups once per step)."""
    kernel = BY_NAME[name]
    call(kernel, make_args(kernel), lr=1e38, weight_decay=0.0, step=step)
    assert_rejected(kernel, make_args(kernel, dtype=np.float32), ValueError, "first update's step size",
                    lr=1e38, weight_decay=0.0, step=step)


def test_adamw_decay_factor_must_fit():
    kernel = BY_NAME["adamw"]
    call(kernel, make_args(kernel), lr=1e20, weight_decay=1e20)
    assert_rejected(kernel, make_args(kernel, dtype=np.float32), ValueError, r"lr \* weight_decay must be at most",
                    lr=1e20, weight_decay=1e20)
    assert_rejected(kernel, make_args(kernel), ValueError, r"lr \* weight_decay must be at most 1\.797",
                    lr=1e200, weight_decay=1e200)


def test_loss_scalars_must_fit_float32():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 4)
    for dtype in (np.float64, np.float32):
        logits = rng.standard_normal((4, 5)).astype(dtype)
        w, grad = rng.standard_normal(6).astype(dtype), np.zeros(6, dtype)
        calls = [(lambda: fastopt.softmax_cross_entropy(logits, labels, z_loss=1e39), "z_loss"),
                 (lambda: fastopt.multiclass_svm_loss(logits, labels, margin=1e39), "margin"),
                 (lambda: fastopt.penalty(w, l1=1e39, out_grad=grad), "l1"),
                 (lambda: fastopt.penalty(w, l2=1e39, out_grad=grad), "l2")]
        for run, name in calls:
            if dtype == np.float64:
                run()
                continue
            before = grad.copy()
            with pytest.raises(ValueError, match=f"{name} must be at most"):
                run()
            assert grad.tobytes() == before.tobytes()


def test_c_abi_checks_the_float32_range():
    lib = capi.load()
    for dtype, fn, expected in ((np.float64, lib.fastopt_adam_f64, 0), (np.float32, lib.fastopt_adam_f32, 3)):
        p, g, m, v = (np.zeros(5, dtype) for _ in range(4))
        ptr = lambda a: a.ctypes.data_as(ctypes.POINTER(np.ctypeslib.as_ctypes_type(dtype)))  # noqa: E731
        assert fn(5, ptr(p), ptr(g), ptr(m), ptr(v), None, 1e-3, 0.9, 0.999, 1e-50, 0.0, 0, 0, 1) == expected
        if expected:
            assert lib.fastopt_last_error().decode().startswith("eps must be at least")
        assert not np.isnan(p).any()
    logits, labels, out = np.zeros((2, 3), np.float32), np.zeros(2, np.int64), np.zeros((2, 3), np.float32)
    loss = ctypes.c_double()
    f32 = ctypes.POINTER(ctypes.c_float)
    status = lib.fastopt_softmax_cross_entropy_f32(logits.ctypes.data_as(f32), labels.ctypes.data_as(
        ctypes.POINTER(ctypes.c_int64)), None, 2, 3, -100, 0.0, 0, 1e39, out.ctypes.data_as(f32), None,
        ctypes.byref(loss))
    assert status == 3 and "z_loss must be at most" in lib.fastopt_last_error().decode()


# ------------------------------------------------------------------------------ the optimizer classes

CLASSES = [("SGD", dict(lr=1e39)), ("Adagrad", dict(eps=1e-50)), ("Adagrad", dict(initial_accumulator_value=1e39)),
           ("RMSprop", dict(eps=1e-50)), ("Adam", dict(eps=1e-50)), ("AdamW", dict(lr=1e39))]


@pytest.mark.parametrize("name, hyper", CLASSES, ids=[f"{n}-{next(iter(h))}" for n, h in CLASSES])
def test_optim_classes_check_each_dtype(name, hyper):
    cls = getattr(optim, name)
    cls([np.ones(3)], **hyper)  # float64: accepted
    with pytest.raises(ValueError, match=next(iter(hyper))):
        cls([np.ones(3, np.float32)], **hyper)


def test_optim_step_refuses_before_any_group_is_updated():
    p64, p32 = np.ones(4), np.ones(4, np.float32)
    opt = optim.Adam([{"params": [p64]}, {"params": [p32]}])
    for group in opt.param_groups:
        group["eps"] = 1e-50  # fine for the float64 group, 0 for the float32 one
    with pytest.raises(ValueError, match="eps must be at least"):
        opt.step([np.ones(4), np.ones(4, np.float32)])
    assert (p64 == 1).all() and (p32 == 1).all() and not opt.state


def test_optim_step_refuses_a_subnormal_grad_scale():
    p64, p32 = np.ones(4), np.ones(4, np.float32)
    opt = optim.SGD([{"params": [p64]}, {"params": [p32]}], lr=0.1)
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step([np.ones(4), np.ones(4, np.float32)], grad_scale=1e-40)
    assert (p64 == 1).all() and (p32 == 1).all()


def test_torch_twins_check_each_dtype():
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft

    ft.Adam([torch.zeros(3, dtype=torch.float64, requires_grad=True)], eps=1e-50)
    with pytest.raises(ValueError, match="eps must be at least"):
        ft.Adam([torch.zeros(3, requires_grad=True)], eps=1e-50)

    p64 = torch.ones(4, dtype=torch.float64, requires_grad=True)
    p32 = torch.ones(4, requires_grad=True)
    opt = ft.Adam([{"params": [p64]}, {"params": [p32]}])
    for group in opt.param_groups:
        group["eps"] = 1e-50
    p64.grad, p32.grad = torch.ones_like(p64), torch.ones_like(p32)
    with pytest.raises(ValueError, match="eps must be at least"):
        opt.step()
    assert (p64 == 1).all() and (p32 == 1).all() and not opt.state
