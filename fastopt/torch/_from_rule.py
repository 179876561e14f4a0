"""The torch twin of an optimizer described as a rule (fastopt/rules/): FusedOptimizer with the
description's signature (torch.optim's, where torch has the optimizer), state and kernel call.

An element-wise rule's twin (every rule but LAMB's) also takes the keyword-only ``state_dtype=`` ("float32",
the default; "bfloat16" / torch.bfloat16: every state tensor in bfloat16 on the CPU; "int8": bitsandbytes'
8-bit layout, state1/absmax1/qmap1 (, state2...) holding the rule's states in order), ``stochastic_rounding=``
and ``seed=`` (_compact_twin's CompactState, as SGD's, Adagrad's and RMSprop's twins), and bfloat16 parameters
on the CPU (float32 state, or bfloat16 with state_dtype="bfloat16")."""

from __future__ import annotations

import inspect

import torch
from torch.optim.optimizer import _get_scalar_dtype

from fastopt import _core
from fastopt.optim._from_rule import PRECISION, element_wise
from fastopt.rules._spec import RuleSpec
from fastopt.torch import _arrays
from fastopt.torch import _state_dtype as compact_layout
from fastopt.torch._compact_twin import CompactState, compact_defaults
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
    compact = element_wise(spec)
    keys = tuple(s.key for s in spec.state)
    operands = tuple(s.operand for s in spec.state)
    if compact:
        keyword_only.update(PRECISION)

    def __init__(self, params, *args, **kwargs):
        bound = signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in bound.arguments.items()
                  if k not in ("self", "params")}
        if compact:
            values = compact_defaults(values, self._compact_forms, self._torch_name or spec.name)
        FusedOptimizer.__init__(self, params, values)

    def _new_state(self, p, group):
        state = {"step": new_step(group, p)}
        if scalars is not None:
            # (torch: 0-d tensors of its default scalar dtype, on the parameter's device)
            for key, value in scalars.initial(group).items():
                state[key] = torch.tensor(_host_value(value), dtype=_get_scalar_dtype(), device=p.device)
        fills = [_host_value(s.fill(group)) for s in spec.state]
        if compact and self._form(group) == "int8":  # (bitsandbytes' state1, absmax1, qmap1...: _state_dtype)
            state.update(compact_layout.new_state(p, "int8", keys, fill=fills))
            return state
        for s, fill in zip(spec.state, fills):
            state[s.key] = self._state_zeros(p, group, fill) if compact else _arrays.state_tensor(p, fill)
        return state

    def _bucket_key(self, p, state, group):
        # (the step: read by the rule, or by stochastic rounding, whose bits change with it)
        counted = spec.uses_step or (compact and group.get("stochastic_rounding"))
        step = FusedOptimizer._bucket_key(self, p, state, group) if counted else None
        if scalars is None:
            return step
        numbers = tuple(float(state[k]) for k in scalars.keys) if state else \
            tuple(float(v) for v in scalars.initial(group).values())
        return step, numbers  # (parameters share a kernel call only where their numbers agree)

    def _check_key(self):
        step = 1 if spec.uses_step or compact else None  # (a step for the checking call's rounding, if any)
        return step if scalars is None else (step, ())

    def _run(self, group, params, grads, states, key, grad_scale=1.0, found_inf=None):
        step = key[0] if scalars is not None else key
        if compact and self._form(group) == "int8":
            # two calls: the float32-state members (under bitsandbytes' min_8bit_size) and the quantised ones;
            # the step's checks (_check_state) and the first call's (also when empty) ran before either writes
            parts = [(ps, gs, dict(zip(operands, ops))) for ps, gs, ops in self._int8_parts(params, grads, states)]
        else:
            parts = [(params, grads, {s.operand: self._views(states, s.key) for s in spec.state})]
        hyper = {k: _host_value(v) for k, v in spec.kernel_args(group).items()}
        if "lr" in hyper:
            hyper["lr"] = self._lr(group, params)
        rounding = self._rounding(group, params) if compact else {}
        extra = dict(step=step) if spec.uses_step or rounding else {}
        values = []
        if scalars is not None:
            if states:
                values = [{k: state[k] for k in scalars.keys} for state in states]
                extra.update([scalars.before(group, v, step) for v in values][0])
            else:  # (the checking call on an empty list)
                extra.update(scalars.before(group, dict(scalars.initial(group)), step))
        for ps, gs, arrays in parts:  # (found_inf: the same for every call)
            skipped = kernel(ps, gs, **arrays, **hyper, **extra, **rounding, grad_scale=grad_scale,
                             found_inf=found_inf)
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
    bases = (CompactState, FusedOptimizer) if compact else (FusedOptimizer,)
    precision = dict(_compact_forms=compact_layout.FORMS, _compact_keys=keys, _compact_required=keys,
                     _int8_keys=keys, _cpu_half=(torch.bfloat16,)) if compact else {}
    return type(spec.name, bases, dict(
        __init__=__init__, _new_state=_new_state, _bucket_key=_bucket_key, _check_key=_check_key, _run=_run,
        _state_keys=("step",) + (scalars.keys if scalars else ()) + tuple(s.key for s in spec.state),
        _scalar_state=scalars.keys if scalars else (), _torch_name=spec.torch_name,
        # (the repeated step: a rule's state never depends on its hyperparameters; per-parameter numbers
        # beside the arrays are left to the full path)
        _step_plan_ok=scalars is None, _step_keyed=spec.uses_step, _free_hyper=tuple(spec.defaults), **precision,
        __doc__=f"``{spec.name}({text})``\n\n{spec.doc}" + (f"\n\n{PRECISION_DOC}" if compact else ""),
        __module__="fastopt.torch"))


PRECISION_DOC = """bfloat16 parameters on the CPU are updated in float32 and rounded back (their state float32).
Keyword-only ``state_dtype="bfloat16"`` (or torch.bfloat16; default "float32": torch's state) keeps every state
tensor in bfloat16 on the CPU, for float32 or bfloat16 parameters; ``state_dtype="int8"`` keeps it in 8 bits on the
CPU for float32 parameters (bitsandbytes' layout: ``state1``/``absmax1``/``qmap1`` for the first state, ``state2``...
for the second, in the signed map or, for a state the rule never makes negative, the unsigned one; parameters under
4096 elements keep float32 ``state1``...); ``stochastic_rounding=True`` rounds every
bfloat16 value written stochastically (``seed`` picks the bits, with the step, the tensor and the element). A group
at the defaults keeps torch's param groups and state_dict exactly."""
