"""The torch twin of an optimizer described as a rule (fastopt/rules/): FusedOptimizer with the
description's signature (torch.optim's, where torch has the optimizer), state and kernel call."""

from __future__ import annotations

import inspect

import torch
from torch.optim.optimizer import _get_scalar_dtype

from fastopt import _core
from fastopt.rules._spec import RuleSpec
from fastopt.torch import _arrays
from fastopt.torch._optimizer import FusedOptimizer, scalar
from fastopt.torch._step_counts import new_step


def _host_value(value):
    """A group's hyperparameter for the kernel: numbers as Python numbers, betas as tuples of them."""
    if isinstance(value, (tuple, list)):
        return tuple(_host_value(v) for v in value)
    if isinstance(value, bool) or value is None:  # (None: an optional value left off, LAMB's max_grad_norm)
        return value
    return scalar(value)


def twin_class(spec: RuleSpec) -> type:
    kernel = getattr(_core, spec.kernel)
    keyword_only = dict(spec.torch_keywords)
    if "maximize" not in spec.defaults:
        keyword_only.setdefault("maximize", False)
    scalars = spec.scalars

    def __init__(self, params, *args, **kwargs):
        bound = signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in bound.arguments.items()
                  if k not in ("self", "params")}
        FusedOptimizer.__init__(self, params, values)

    def _new_state(self, p, group):
        state = {"step": new_step(group, p)}
        if scalars is not None:
            # (torch: 0-d tensors of its default scalar dtype, on the parameter's device)
            for key, value in scalars.initial(group).items():
                state[key] = torch.tensor(_host_value(value), dtype=_get_scalar_dtype(), device=p.device)
        for s in spec.state:
            state[s.key] = _arrays.state_tensor(p, _host_value(s.fill(group)))
        return state

    def _bucket_key(self, p, state, group):
        step = FusedOptimizer._bucket_key(self, p, state, group) if spec.uses_step else None
        if scalars is None:
            return step
        numbers = tuple(float(state[k]) for k in scalars.keys) if state else \
            tuple(float(v) for v in scalars.initial(group).values())
        return step, numbers  # (parameters share a kernel call only where their numbers agree)

    def _check_key(self):
        step = 1 if spec.uses_step else None
        return step if scalars is None else (step, ())

    def _run(self, group, params, grads, states, key, grad_scale=1.0, found_inf=None):
        step = key[0] if scalars is not None else key
        arrays = {s.operand: self._views(states, s.key) for s in spec.state}
        hyper = {k: _host_value(v) for k, v in spec.kernel_args(group).items()}
        if "lr" in hyper:
            hyper["lr"] = self._lr(group, params)
        extra = dict(step=step) if spec.uses_step else {}
        values = []
        if scalars is not None:
            if states:
                values = [{k: state[k] for k in scalars.keys} for state in states]
                extra.update([scalars.before(group, v, step) for v in values][0])
            else:  # (the checking call on an empty list)
                extra.update(scalars.before(group, dict(scalars.initial(group)), step))
        skipped = kernel(params, grads, **arrays, **hyper, **extra, grad_scale=grad_scale, found_inf=found_inf)
        if not values:
            return  # (also a repeated step's call: its states are taken arrays, and it has no scalars)
        for state, v in zip(states, values):
            if not skipped:
                scalars.after(group, v, step)
            state.update(v)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                  inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v)
                   for k, v in spec.defaults.items()]
    parameters += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in keyword_only.items()]
    signature = inspect.Signature(parameters)
    __init__.__signature__ = signature
    text = str(signature.replace(parameters=parameters[1:]))[1:-1]
    return type(spec.name, (FusedOptimizer,), dict(
        __init__=__init__, _new_state=_new_state, _bucket_key=_bucket_key, _check_key=_check_key, _run=_run,
        _state_keys=("step",) + (scalars.keys if scalars else ()) + tuple(s.key for s in spec.state),
        _scalar_state=scalars.keys if scalars else (), _torch_name=spec.torch_name,
        # (the repeated step: a rule's state never depends on its hyperparameters; per-parameter numbers
        # beside the arrays are left to the full path)
        _step_plan_ok=scalars is None, _step_keyed=spec.uses_step, _free_hyper=tuple(spec.defaults),
        __doc__=f"``{spec.name}({text})``\n\n{spec.doc}", __module__="fastopt.torch"))
