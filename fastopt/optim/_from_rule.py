"""fastopt.optim's class of an optimizer described as a rule (fastopt/rules/): the common Optimizer with
the description's defaults, state and kernel call."""

from __future__ import annotations

import inspect

import numpy as np

from fastopt import _core
from fastopt.optim.optimizer import Optimizer
from fastopt.rules._spec import RuleSpec

#: torch options that mean nothing for NumPy arrays (the classes here take torch's hyperparameters only)
TORCH_ONLY = ("foreach", "capturable", "differentiable", "fused")


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else value


def optimizer_class(spec: RuleSpec) -> type:
    kernel = getattr(_core, spec.kernel)
    arguments = {k: v for k, v in {**spec.defaults, **spec.torch_keywords}.items() if k not in TORCH_ONLY}
    arguments.setdefault("maximize", False)
    scalars = spec.scalars

    def __init__(self, params, *args, **kwargs):
        bound = signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        Optimizer.__init__(self, params, {k: _as_tuple(bound.arguments[k]) for k in arguments})

    def _init_state(self, state, param, group):
        state["step"] = 0
        if scalars is not None:
            state.update(scalars.initial(group))
        for s in spec.state:
            state[s.key] = np.full_like(param, s.fill(group))

    def _next_key(self, state):
        step = int(state["step"]) + 1
        if scalars is None:
            return step
        # (the numbers are part of the key: parameters share a kernel call only where they agree)
        return step, tuple(float(state[k]) for k in scalars.keys)

    def _count(self, state, key):
        state["step"] = key if scalars is None else key[0]

    def _check_key(self):
        return 1 if scalars is None else (1, ())

    def _update(self, group, params, grads, states, key, grad_scale=1.0):
        arrays = {s.operand: [state[s.key] for state in states] for s in spec.state}
        step = key if scalars is None else key[0]
        extra = dict(step=step) if spec.uses_step else {}
        values = []
        if scalars is not None and states:
            values = [{k: state[k] for k in scalars.keys} for state in states]
            extra.update([scalars.before(group, v, step) for v in values][0])
        kernel(params, grads, **arrays, **spec.kernel_args(group), **extra, grad_scale=grad_scale)
        for state, v in zip(states, values):
            scalars.after(group, v, step)
            state.update({k: float(x) for k, x in v.items()})

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                  inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v)
                   for k, v in arguments.items()]
    signature = inspect.Signature(parameters)
    __init__.__signature__ = signature
    text = str(signature.replace(parameters=parameters[1:]))[1:-1]
    return type(spec.name, (Optimizer,), dict(
        __init__=__init__, _init_state=_init_state, _next_key=_next_key, _count=_count, _check_key=_check_key,
        _update=_update, _kernel=staticmethod(kernel),
        _state_keys=("step",) + (scalars.keys if scalars else ()) + tuple(s.key for s in spec.state),
        _scalar_state=scalars.keys if scalars else (),
        __doc__=f"``{spec.name}({text})``\n\n{spec.doc}", __module__="fastopt.optim"))
