"""Every hyperparameter of the stateful optimizers (fastopt.optim) and the torch twins (fastopt.torch) is refused
by name when it is not of its kind: in the constructor, in a group given to it or to add_param_group, and in a
group edited before a step. Non-real numbers too (a Python or NumPy complex, a complex tensor), which float()
would either refuse without the name or silently truncate to the real part.

The hyperparameters are read from the constructors' signatures, so one added later is covered as well.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

from fastopt import optim

NAMES = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]
BOOLS = {"amsgrad", "maximize", "nesterov", "centered", "capturable", "differentiable", "decoupled_weight_decay"}
OPTIONAL_BOOLS = {"foreach", "fused"}

NOT_REAL = [("str", "fast"), ("complex", 1e-3 + 1j), ("numpy complex", np.complex128(1e-3 + 1j)),
            ("numpy complex64", np.complex64(0.5)), ("complex array", np.array(1e-3 + 0j)),
            ("bool", True), ("None", None), ("list", [1e-3]), ("object", object()), ("huge int", 10**400)]
NOT_BOOL = [("str", "no"), ("int", 1), ("None", None), ("float", 0.0)]
NOT_OPTIONAL_BOOL = [("str", "yes"), ("int", 0)]
NOT_PAIR = [("str", "ab"), ("number", 0.9), ("complex element", (0.9, 0.99j)),
            ("numpy complex element", (np.complex128(0.9), 0.999)), ("str element", (0.9, "x"))]


# Options of the whole optimizer, not per-group hyperparameters (Adam/AdamW's state precision:
# tests/optim/test_bf16_optim.py checks their refusals).
OPTIMIZER_OPTIONS = {"state_dtype", "stochastic_rounding", "seed"}


def hyperparameters(cls):
    return [name for name in inspect.signature(cls.__init__).parameters
            if name not in ("self", "params") and name not in OPTIMIZER_OPTIONS]


def bad_values(name):
    if name in BOOLS:
        return NOT_BOOL
    if name in OPTIONAL_BOOLS:
        return NOT_OPTIONAL_BOOL
    if name == "betas":
        return NOT_PAIR
    return NOT_REAL


def cases(module):
    return [pytest.param(cls_name, name, value, id=f"{cls_name}-{name}-{label}")
            for cls_name in NAMES for name in hyperparameters(getattr(module, cls_name))
            for label, value in bad_values(name)]


def refused_by_name(call, name, where=""):
    # TypeError for a value of the wrong kind; ValueError for a wrong-sized pair. Either names the hyperparameter.
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    message = str(info.value)
    assert re.search(re.escape(where) + re.escape(name) + r"(\[\d\])? must be", message), message
    assert "could not convert" not in message and "not supported between" not in message


# ------------------------------------------------------------------------------------ fastopt.optim

def test_every_optim_hyperparameter_is_covered():
    assert {n for cls in NAMES for n in hyperparameters(getattr(optim, cls))} == {
        "lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "lr_decay",
        "initial_accumulator_value", "eps", "alpha", "centered", "betas", "amsgrad"}


@pytest.mark.parametrize("cls_name,name,value", cases(optim))
def test_optim_constructor_names_the_hyperparameter(cls_name, name, value):
    cls = getattr(optim, cls_name)
    refused_by_name(lambda: cls([np.ones(3)], **{name: value}), name)


@pytest.mark.parametrize("cls_name,name,value", cases(optim))
def test_optim_param_group_names_the_group_and_hyperparameter(cls_name, name, value):
    cls = getattr(optim, cls_name)
    refused_by_name(lambda: cls([{"params": [np.ones(3)]}, {"params": [np.ones(2)], name: value}]), name,
                    "param group 1: ")
    opt = cls([np.ones(3)])
    refused_by_name(lambda: opt.add_param_group({"params": [np.ones(2)], name: value}), name, "param group 1: ")
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls_name,name,value", cases(optim))
def test_optim_edited_group_names_the_group_and_hyperparameter_at_step(cls_name, name, value):
    p = np.ones(3)
    opt = getattr(optim, cls_name)([{"params": [np.ones(2)]}, {"params": [p]}])
    opt.param_groups[1][name] = value
    refused_by_name(lambda: opt.step([np.ones(2), np.ones(3)]), name, "param group 1: ")
    assert (p == 1).all() and opt.state == {}


@pytest.mark.parametrize("value", [5, 1.5, None])
def test_optim_params_and_grads_that_are_not_iterable_are_named(value):
    with pytest.raises(TypeError, match="params must be an array, a list of arrays or a list of param group"):
        optim.Adam(value)
    with pytest.raises(TypeError, match="param group 1: params must be an array or a list of arrays"):
        optim.Adam([{"params": [np.ones(2)]}, {"params": value}])
    opt = optim.Adam([np.ones(2)])
    with pytest.raises(TypeError, match="grads must be a list of arrays"):
        opt.step(value)


def test_optim_names_the_twin_for_torch_tensors():
    """issue 15, item 7: fastopt.optim.Adam([torch tensors]) says which optimizer takes torch tensors."""
    torch = pytest.importorskip("torch")
    for params in ([torch.ones(3)], torch.ones(3), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).parameters()):
        with pytest.raises(TypeError, match="for torch tensors use fastopt.torch.AdamW"):
            optim.AdamW(params)
    opt = optim.SGD([np.ones(3)])
    with pytest.raises(TypeError, match=re.escape("grads[0] must be a numpy.ndarray") + ".*fastopt.torch.SGD"):
        opt.step([torch.ones(3)])


def test_optim_schedule_returning_a_complex_number_is_refused():
    with pytest.raises(TypeError, match="the lr schedule returned complex128"):
        optim.SGD([np.ones(2)], lr=lambda k: np.complex128(0.1 + 1j))
    p = np.ones(2)
    opt = optim.SGD([p], lr=lambda k: 0.1 if k == 0 else np.complex128(0.1 + 1j))
    opt.step([np.ones(2)])
    before = p.copy()
    with pytest.raises(TypeError, match="the lr schedule returned complex128.* at step 1"):
        opt.step([np.ones(2)])
    assert p.tobytes() == before.tobytes() and opt.schedule_steps == [1]


def test_optim_grad_scale_complex_is_refused():
    opt = optim.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(TypeError, match="grad_scale must be a real number"):
        opt.step([np.ones(2)], grad_scale=np.complex128(2.0))


# ------------------------------------------------------------------------------------ the torch twins

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402


def twin_param(n=3):
    return torch.nn.Parameter(torch.ones(n))


def test_every_twin_hyperparameter_is_covered():
    assert {n for cls in NAMES for n in hyperparameters(getattr(ft, cls))} == {
        "lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "lr_decay",
        "initial_accumulator_value", "eps", "alpha", "centered", "betas", "amsgrad", "foreach", "capturable",
        "differentiable", "fused", "decoupled_weight_decay"}


@pytest.mark.parametrize("cls_name,name,value", cases(ft))
def test_twin_constructor_names_the_hyperparameter(cls_name, name, value):
    """The issue's case: lr="fast" said "could not convert string to float" without the name."""
    cls = getattr(ft, cls_name)
    refused_by_name(lambda: cls([twin_param()], **{name: value}), name)


@pytest.mark.parametrize("cls_name,name,value", cases(ft))
def test_twin_add_param_group_names_the_group_and_hyperparameter(cls_name, name, value):
    opt = getattr(ft, cls_name)([twin_param()])
    added = twin_param(2)
    refused_by_name(lambda: opt.add_param_group({"params": [added], name: value}), name, "param group 1: ")
    # The refused group is not kept (as torch keeps none it refuses): its parameter can be added again.
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [added]})
    assert opt.param_groups[1]["params"] == [added]


@pytest.mark.parametrize("cls_name,name,value", cases(ft))
def test_twin_edited_group_names_the_group_and_hyperparameter_at_step(cls_name, name, value):
    first, second = twin_param(2), twin_param()
    opt = getattr(ft, cls_name)([{"params": [first]}, {"params": [second]}])
    for p in (first, second):
        p.grad = torch.ones_like(p)
    opt.param_groups[1][name] = value
    refused_by_name(opt.step, name, "param group 1: ")
    assert bool((first == 1).all()) and bool((second == 1).all())


@pytest.mark.parametrize("value,error", [(torch.tensor(1e-3 + 1j), TypeError), (torch.tensor(True), TypeError),
                                         (torch.tensor([1e-3, 1e-3]), ValueError)])
def test_twin_tensor_lr_and_betas_must_be_one_real_element(value, error):
    with pytest.raises(error, match="lr must be a real number"):
        ft.Adam([twin_param()], lr=value)
    with pytest.raises(error, match=re.escape("betas[0] must be a real number")):
        ft.Adam([twin_param()], betas=(value, 0.999))


def test_twin_real_tensor_lr_is_still_accepted():
    p = twin_param()
    opt = ft.Adam([p], lr=torch.tensor(0.1), betas=(torch.tensor(0.9), torch.tensor(0.999)))
    p.grad = torch.ones_like(p)
    opt.step()
    assert bool((p < 1).all())
