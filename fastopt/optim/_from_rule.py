"""fastopt.optim's class of an optimizer described as a rule (fastopt/rules/): the common Optimizer with
the description's defaults, state and kernel call.

An element-wise rule (one without per-tensor sums, LAMB's) also takes ``state_dtype=`` (None or "float32":
float32 state, the default for bfloat16 params too; "bfloat16": half the memory; "int8": 8-bit blockwise
state, fastopt.QuantizedState, for float32 params of at least 4096 elements), bfloat16 params, and
``stochastic_rounding=`` / ``seed=`` (every bfloat16 value written rounded stochastically), as SGD, Adagrad
and RMSprop do (_state_dtype.py). The 8-bit map of each state is the description's: unsigned for the states
the rule never makes negative (its ``non_negative`` operands), signed for the others."""

from __future__ import annotations

import inspect

import numpy as np

from fastopt import _core
from fastopt.optim._state_dtype import CompactState
from fastopt.optim.optimizer import Optimizer
from fastopt.rules._spec import RuleSpec

#: torch options that mean nothing for NumPy arrays (the classes here take torch's hyperparameters only)
TORCH_ONLY = ("foreach", "capturable", "differentiable", "fused")


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else value


#: the state precision keywords of an element-wise rule's class (CompactState's)
PRECISION = dict(state_dtype=None, stochastic_rounding=False, seed=0)


def _described(spec: RuleSpec) -> dict:
    return next(r for r in _core._rule_registry() if r["function"] == spec.kernel)


def element_wise(spec: RuleSpec) -> bool:
    """True for a rule whose kernel has a loop over bfloat16 storage (every rule without per-tensor sums)."""
    return not _described(spec)["tensor_sums"]


def signed_maps(spec: RuleSpec) -> dict:
    """state key -> True where its 8-bit form takes the signed map: all but the description's non_negative
    states, which take the unsigned one (its 256 codes all on [0, 1])."""
    non_negative = set(_described(spec)["non_negative"])
    return {s.key: s.operand not in non_negative for s in spec.state}


def optimizer_class(spec: RuleSpec) -> type:
    kernel = getattr(_core, spec.kernel)
    arguments = {k: v for k, v in {**spec.defaults, **spec.torch_keywords}.items() if k not in TORCH_ONLY}
    arguments.setdefault("maximize", False)
    scalars = spec.scalars
    compact = element_wise(spec)
    keywords = {**arguments, **PRECISION} if compact else arguments

    def __init__(self, params, *args, **kwargs):
        bound = signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        if compact:
            self._set_precision(*(bound.arguments[k] for k in PRECISION))
        Optimizer.__init__(self, params, {k: _as_tuple(bound.arguments[k]) for k in arguments})
        if compact:
            self._precision.check_rounding(self._all_params())

    def _init_state(self, state, param, group):
        state["step"] = 0
        if scalars is not None:
            state.update(scalars.initial(group))
        for s in spec.state:
            state[s.key] = self._new_state(param, s.key, fill=s.fill(group)) if compact else \
                np.full(param.shape, s.fill(group), self._state_dtype(param))

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
        step = key if scalars is None else key[0]
        rounding = self._rounding(params) if compact else {}
        # (step: read by the rule, or by stochastic rounding alone, which draws new bits each update)
        extra = dict(step=step) if spec.uses_step or rounding else {}
        values = []
        if scalars is not None and states:
            values = [{k: state[k] for k in scalars.keys} for state in states]
            extra.update([scalars.before(group, v, step) for v in values][0])
        # (with state_dtype="int8", the params with 8-bit state and the small ones with float32 state: a call each)
        forms = self._by_form(params, grads, states, spec.state[0].key) if compact else [(params, grads, states)]
        for ps, gs, ss in forms:
            arrays = {s.operand: [state[s.key] for state in ss] for s in spec.state}
            kernel(ps, gs, **arrays, **spec.kernel_args(group), **extra, **rounding, grad_scale=grad_scale)
        for state, v in zip(states, values):
            scalars.after(group, v, step)
            state.update({k: float(x) for k, x in v.items()})

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                  inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v)
                   for k, v in keywords.items()]
    signature = inspect.Signature(parameters)
    __init__.__signature__ = signature
    text = str(signature.replace(parameters=parameters[1:]))[1:-1]
    doc = spec.doc + ("\n\n" + PRECISION_DOC if compact else "")
    bases = (CompactState, Optimizer) if compact else (Optimizer,)
    return type(spec.name, bases, dict(
        __init__=__init__, _init_state=_init_state, _next_key=_next_key, _count=_count, _check_key=_check_key,
        _update=_update, _kernel=staticmethod(kernel),
        _state_keys=("step",) + (scalars.keys if scalars else ()) + tuple(s.key for s in spec.state),
        _scalar_state=scalars.keys if scalars else (), _half_params=("bfloat16",) if compact else (),
        _signed_map_of=signed_maps(spec),
        __doc__=f"``{spec.name}({text})``\n\n{doc}", __module__="fastopt.optim"))


PRECISION_DOC = """Params: float32, float64 or ml_dtypes.bfloat16 arrays (bfloat16 ones updated in float32 and rounded
back). State: of the params' dtype (``state_dtype=None``; float32 for bfloat16 params), float32 (``"float32"``) or
ml_dtypes.bfloat16 (``"bfloat16"``, for float32 or bfloat16 params: half the memory; the update runs in float32
and rounds back) or fastopt.QuantizedState (``"int8"``: 8-bit blockwise, bitsandbytes' layout, for float32 params
of at least 4096 elements, smaller ones keeping float32 state; the states the rule never makes negative in the
unsigned map, the others in the signed one). Every bfloat16 value written is rounded to nearest-even, or
stochastically with ``stochastic_rounding=True`` (bits from ``seed``, the step count, the tensor and the element)."""
