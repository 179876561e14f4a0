"""torch's own optimizer database against the fastopt.torch twins (issue 16).

torch.testing._internal.common_optimizers is what torch's test/test_optim.py runs: per optimizer, a list of
constructor arguments (its OptimizerInputs) and of inputs torch refuses, with the exception type and the
words it refuses them with (its ErrorOptimizerInputs). It ships with torch, so it is read from the installed
torch, never copied: every twin whose torch class is in the database is run here with torch's own cases.

- Each error case: the twin raises (or warns) with torch's exception type and a message torch's regular
  expression finds, at construction or at the step as torch does, except the deliberate differences below.
- Each input: the twin and torch.optim (its for-loop implementation) step the same small model (torch's
  _test_derived_optimizers model and a 0-d parameter, one step without gradients) seven times in float64;
  parameters and state agree to 1e-10.

Needs torch and expecttest (which torch's testing modules import): skipped, saying so, without them.
"""

from __future__ import annotations

import re
import warnings
from copy import deepcopy

import pytest

torch = pytest.importorskip("torch")
common = pytest.importorskip("torch.testing._internal.common_optimizers",
                             reason="torch's testing modules need expecttest (pip install expecttest)")
import fastopt.torch as ft  # noqa: E402

INFOS = [info for info in common.optim_db if hasattr(ft, info.optim_cls.__name__)]
_TWIN_HAS_NO_FOREACH = ("torch's foreach implementation takes no tensor lr or betas without capturable; the twins "
                        "have no foreach implementation and take a tensor lr and betas on every path")
# (class name, error regex) -> why the twin deliberately does not raise it
DIFFERENCES = {
    (name, regex): _TWIN_HAS_NO_FOREACH
    for name in ("Adam", "AdamW")
    for regex in ("lr as a Tensor is not supported for capturable=False and foreach=True",
                  r"betas\[0\] as a Tensor is not supported for capturable=False and foreach=True",
                  r"betas\[1\] as a Tensor is not supported for capturable=False and foreach=True")
}
# (class name, input description) -> why the twin's numbers differ from torch's beyond the tolerance
PARITY_DIFFERENCES = {
    ("Muon", "Tensor lr"): "torch's Muon scales a float32 tensor lr in float32 (its adjusted lr is rounded to "
                           "float32); the twin scales it in float64 (relative differences about 1e-7)",
}


def _name(info) -> str:
    return info.optim_cls.__name__


def error_cases():
    for info in INFOS:
        if info.optim_error_inputs_func is None:
            continue
        for dtype in (torch.float32, torch.float64):
            for k, case in enumerate(info.optim_error_inputs_func(device="cpu", dtype=dtype)):
                yield pytest.param(info, dtype, k, id=f"{_name(info)}-{str(dtype)[6:]}-{k}-{case.error_type.__name__}")


def _run_error_case(twin, case):
    given = case.optimizer_error_input
    if case.error_on == common.OptimizerErrorEnum.CONSTRUCTION_ERROR:
        twin(given.params, **given.kwargs)
    else:
        optimizer = twin(given.params, **given.kwargs)  # (a step error must not be raised here, as in torch)
        optimizer.step()


@pytest.mark.parametrize("info,dtype,k", list(error_cases()))
def test_torch_error_cases(info, dtype, k):
    case = info.optim_error_inputs_func(device="cpu", dtype=dtype)[k]
    why = DIFFERENCES.get((_name(info), case.error_regex))
    if why:
        pytest.skip(why)
    twin = getattr(ft, _name(info))
    if issubclass(case.error_type, Warning):
        with pytest.warns(case.error_type, match=case.error_regex):
            _run_error_case(twin, case)
    else:
        with pytest.raises(case.error_type) as raised:
            _run_error_case(twin, case)
        assert re.search(case.error_regex, str(raised.value)), (case.error_regex, str(raised.value))


def parity_cases():
    for info in INFOS:
        for k, given in enumerate(info.optim_inputs_func(device="cpu", dtype=torch.float64)):
            yield pytest.param(info, k, id=f"{_name(info)}-{k}-{given.desc}")


def _train(cls, kwargs, info):
    """torch's _test_derived_optimizers: a small model in float64 (and a 0-d parameter), seven steps, the
    fourth without gradients."""
    torch.manual_seed(1)
    dtype = torch.float64
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1),
                                torch.nn.Sigmoid()).to(dtype)
    data = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=dtype).reshape(3, 2)
    params = list(model.parameters())
    if _name(info) == "Muon":
        params = [p for p in params if p.dim() == 2]  # (Muon takes matrices only)
    else:
        scalar = torch.rand((), dtype=dtype, requires_grad=True)  # (torch's has torch.empty's bits: not comparable)
        scalar.grad = torch.rand_like(scalar)
        params.append(scalar)
    optimizer = cls(params, **kwargs)
    for i in range(7):
        optimizer.zero_grad()
        if i != 3:
            model(data).sum().backward()
        if info.step_requires_closure:
            optimizer.step(lambda: model(data).sum())
        else:
            optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("info,k", list(parity_cases()))
def test_steps_equal_torch_on_torch_inputs(info, k):
    given = info.optim_inputs_func(device="cpu", dtype=torch.float64)[k]
    why = PARITY_DIFFERENCES.get((_name(info), given.desc))
    if why:
        pytest.skip(why)
    kwargs = deepcopy(given.kwargs)
    if kwargs.get("capturable"):
        pytest.skip("capturable is for CUDA tensors (torch's test skips it on the CPU too)")
    theirs = dict(kwargs, foreach=False) if "foreach" in info.supported_impls else kwargs
    want_params, want_opt = _train(info.optim_cls, theirs, info)
    got_params, got_opt = _train(getattr(ft, _name(info)), deepcopy(kwargs), info)
    for i, (want, got) in enumerate(zip(want_params, got_params)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"params[{i}]: {m}")
        for key, value in want_opt.state[want].items():
            if torch.is_tensor(value):
                torch.testing.assert_close(got_opt.state[got][key].to(value.dtype), value, rtol=1e-10, atol=1e-12,
                                           msg=lambda m: f"state[{i}][{key!r}]: {m}")
            else:
                assert got_opt.state[got][key] == value, (i, key)


def test_the_database_reaches_the_twins():
    """The database holds the five classic optimizers and their cases (a renamed or emptied database must
    not pass by running nothing)."""
    names = {_name(info) for info in INFOS}
    assert {"SGD", "Adagrad", "RMSprop", "Adam", "AdamW"} <= names
    assert len(list(error_cases())) >= 100 and len(list(parity_cases())) >= 50
