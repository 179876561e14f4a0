"""fastopt.optim's class of an optimizer described as a rule (fastopt/rules/): the common Optimizer with
the description's defaults, state and kernel call."""

from __future__ import annotations

import inspect

import numpy as np

from fastopt import _core
from fastopt.optim.optimizer import Optimizer
from fastopt.rules._spec import RuleSpec


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else value


def optimizer_class(spec: RuleSpec) -> type:
    kernel = getattr(_core, spec.kernel)
    names = list(spec.defaults) + list(spec.torch_keywords)

    def __init__(self, params, *args, **kwargs):
        bound = signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        values.pop("params")
        Optimizer.__init__(self, params, {k: _as_tuple(values[k]) for k in names})

    def _init_state(self, state, param, group):
        state["step"] = 0
        for s in spec.state:
            state[s.key] = np.full_like(param, s.fill(group))

    def _update(self, group, params, grads, states, step, grad_scale=1.0):
        arrays = {s.operand: [state[s.key] for state in states] for s in spec.state}
        extra = dict(step=step) if spec.uses_step else {}
        kernel(params, grads, **arrays, **spec.kernel_args(group), **extra, grad_scale=grad_scale)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                  inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v)
                   for k, v in spec.defaults.items()]
    parameters += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v)
                   for k, v in spec.torch_keywords.items()]
    signature = inspect.Signature(parameters)
    __init__.__signature__ = signature
    text = str(signature.replace(parameters=parameters[1:]))[1:-1]
    cls = type(spec.name, (Optimizer,), dict(
        __init__=__init__, _init_state=_init_state, _update=_update, _kernel=staticmethod(kernel),
        _state_keys=("step",) + tuple(s.key for s in spec.state),
        __doc__=f"``{spec.name}({text})``\n\n{spec.doc}", __module__="fastopt.optim"))
    return cls
