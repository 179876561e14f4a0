"""The twins' repeated step: what a full step (FusedOptimizer.step's checked path) found out, kept so that the
next steps skip the per-tensor work that made a twin slower than torch's fused step.

A full step checks every tensor, plans the kernel calls and turns each tensor into an array of its memory
(about 15 us per parameter, most of it `Tensor.numpy()` and the checks). In a training loop nothing of that
changes from one step to the next except the gradients (new tensors after zero_grad(set_to_none=True)) and
the hyperparameters a scheduler writes. A StepPlan takes the parameters and their state once (the kernels'
arrays, `_core._take_torch`) and, at each step, proves that they still are what the full step checked, in
native code (csrc/python/torch_step_check.cpp: about 1 us per parameter in all, kernel call included):

- the same param_groups (the same dicts, the same parameter objects in the same order, gradients present
  for exactly the same parameters); the optimizer's state mapping holding the same dicts, which hold the
  same objects under the same keys (`_core._StateSnapshot`); every kept tensor still at the address and of
  the size it had (so `p.data = ...`, `set_()` or a replaced state tensor is seen, never written through an
  outdated array; the same memory in another shape is the same elementwise update);
- the group's options: the numbers a scheduler changes (`_free_hyper`: lr, betas, ...) are checked again
  when they change, as the full step checks them; any other change (amsgrad, momentum, ...) may change
  which state exists, so it sends the step back to the full path, which plans again;
- each gradient: a plain dense contiguous CPU tensor of its parameter's dtype and shape, its values as
  stored (no negative bit); one that requires grad (backward(create_graph=True)) is read, as the full step
  and torch.optim read it;
- the step counts, read from the 0-d `step` tensors: all equal, a whole count in range.

Parameters are float32 or float64 with state of their dtype, or float16/bfloat16 with float32 state (the
twins that take them on the CPU: SGD, Adagrad, RMSprop, Adam, AdamW). Anything else (a CUDA, DTensor,
complex or non-contiguous parameter, compact Adam state, GradScaler's unscaling, a differentiable group,
sparse gradients, several calls in one group, torch.compile tracing, an active torch function mode) is not
planned: the full step runs, as before. Whenever a check fails the step goes to the full path, which raises
the named error or plans again; nothing is written before every check of the step has passed, and a step of
several kernel calls first runs each changed group's hyperparameters through its kernel on empty arrays and
checks that no gradient shares memory with a tensor the step writes, as the full step does. Each kernel
call bumps the autograd versions of the tensors it writes.
"""

from __future__ import annotations

from operator import is_
from typing import Any, Dict, List, Optional

import torch

from fastopt import _core, _hyper
from fastopt._overlap import first_shared_write
from fastopt.torch import _arrays
from fastopt.torch._step_counts import StepOutOfRange

_PLANNED_DTYPES = (torch.float32, torch.float64)  # (of step counts; of parameters, with the twins' half ones)
_PLAIN_GRADS = (torch.Tensor, torch.nn.Parameter)
_PLAIN_TYPES = frozenset(_PLAIN_GRADS)
# (a torch function mode could answer the native check's reads of a tensor with Python code: not planned;
# a torch that cannot say is taken to have one)
_function_mode = getattr(torch._C, "_is_torch_function_mode_enabled", lambda: True)


def _holds_tensor(values) -> bool:
    return any(_holds_tensor(v) if isinstance(v, (tuple, list)) else isinstance(v, torch.Tensor) for v in values)


def _options(group: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in group.items() if key != "params"}


def _plain_cpu(t: Any, dtype: torch.dtype) -> bool:
    """A tensor the plan keeps a view of: plain, on the CPU, of `dtype`, contiguous, its values as stored."""
    return (type(t) in _PLAIN_TYPES and t.is_cpu and t.dtype is dtype and t.layout is torch.strided
            and t.is_contiguous() and not t.is_conj() and not t.is_neg())


class _GroupPlan:
    """One param group as planned, and (`members` non-empty) its kernel call over the parameters that have
    a gradient."""

    __slots__ = ("k", "group", "params", "mask", "options", "members", "check", "taken_params",
                 "taken_states", "spans", "counted", "step_keyed", "key", "stand_in")


class PlannedStates:
    """A planned call's state operands, taken once (_core._TakenArrays per state name, None for a name whose
    values are all None): what FusedOptimizer._views gives for this call's states."""

    __slots__ = ("by_name",)

    def __init__(self, by_name: Dict[str, Any]):
        self.by_name = by_name


class StepPlan:
    """See the module docstring. build() makes one after a full step (or returns None); run() does a step
    and returns True, or returns False, having changed nothing, when the full path must run."""

    def __init__(self, groups: List[_GroupPlan], state: Any, snapshot: Any):
        self.groups = groups
        self.state = state  # (the optimizer's state mapping: load_state_dict replaces it)
        self.snapshot = snapshot  # (its contents: _core._StateSnapshot)
        self.calls = [g for g in groups if g.members]

    # ------------------------------------------------------------------ building
    @staticmethod
    def build(opt, calls, counts_advance_by_one: bool) -> Optional["StepPlan"]:
        """The plan of the step just taken through `calls`, or None when the next step must be the full one.
        counts_advance_by_one: the optimizer advances its step counts as torch does (+1 per step), which a
        plan can do natively; otherwise a group with step counts is not planned."""
        if not getattr(type(opt), "_step_plan_ok", False) or torch.compiler.is_compiling() \
                or not isinstance(opt.state, dict):
            return None
        by_group: Dict[int, list] = {}
        for k, group, key, members in calls:
            if k in by_group or type(members) is not list:  # (several calls in a group, or DTensor shards)
                return None
            by_group[k] = [p for _, p in members]
        plans = []
        for k, group in enumerate(opt.param_groups):
            plan = _GroupPlan()
            plan.k, plan.group, plan.params, plan.options = k, group, list(group["params"]), _options(group)
            if group.get("differentiable") or _holds_tensor(plan.options.values()) or not opt._plannable(group) \
                    or type(group["params"]) is not list:
                return None
            plan.mask = [p.grad is not None for p in plan.params]
            with_grad = [p for p, has in zip(plan.params, plan.mask) if has]
            members = by_group.get(k, [])
            if len(with_grad) != len(members) or not all(map(is_, with_grad, members)):
                return None  # (gradients the full step left to torch: sparse ones)
            plan.members = []
            if members:
                if not StepPlan._plan_call(opt, plan, members, counts_advance_by_one):
                    return None
            else:
                plan.check = _core._StepCheck(plan.params, plan.mask, [], _core._take_torch([]), _PLAIN_GRADS)
            plans.append(plan)
        try:
            snapshot = _core._StateSnapshot(opt.state)
        except TypeError:  # (a state that is not a dict of dicts)
            return None
        return StepPlan(plans, opt.state, snapshot)

    @staticmethod
    def _plan_call(opt, plan: _GroupPlan, params: List[torch.Tensor], counts_advance_by_one: bool) -> bool:
        dtype = params[0].dtype
        if not (dtype in _PLANNED_DTYPES or (dtype in _arrays.HALF_DTYPES and opt._cpu_half)):
            return False
        state_dtype = _arrays.state_dtype(dtype)  # (float32 for half params)
        states = []
        for p in params:
            if not (type(p) in _PLAIN_TYPES and _plain_cpu(p.detach(), dtype) and _plain_cpu(p.grad, dtype)):
                return False
            state = opt.state.get(p)
            for name, value in (state.items() if state else ()):
                if name == "step":
                    if not (type(value) is torch.Tensor and value.is_cpu and value.dim() == 0
                            and value.dtype in _PLANNED_DTYPES and not value.requires_grad):
                        return False
                elif value is not None and not (_plain_cpu(value, state_dtype) and value.shape == p.shape
                                                and not value.requires_grad):
                    return False
            states.append(state)
        entries = [dict(state) if state else {} for state in states]
        if any(items.keys() != entries[0].keys() for items in entries):
            return False  # (members with different state: the full path)
        plan.counted = "step" in entries[0]
        if plan.counted and not counts_advance_by_one:
            return False  # (a count this plan would not advance as the optimizer does)
        # The key of the next call (its step number, or what else the optimizer's calls share): the same
        # for every member, or the full path must split the group.
        try:
            keys = {opt._bucket_key(p, state, plan.group) for p, state in zip(params, states)}
        except StepOutOfRange:
            return False
        if len(keys) != 1:
            return False
        plan.key = keys.pop()
        plan.step_keyed = bool(getattr(type(opt), "_step_keyed", False))
        if plan.step_keyed and not (plan.counted and plan.key == int(float(entries[0]["step"])) + 1):
            return False
        # The call's operands besides the gradients, taken once (the parameters through detached aliases: the
        # same memory and version counter), and what each tensor must still be at the next step: the
        # parameters, each state tensor, the step counts.
        written, by_name, steps = list(params), {}, []
        for name in entries[0]:
            values = [items[name] for items in entries]
            if name == "step":
                steps = values
            elif all(value is None for value in values):
                by_name[name] = None
            elif any(value is None for value in values):
                return False
            else:
                by_name[name] = _core._take_torch(values)
                written += values
        plan.members = params
        plan.taken_params = _core._take_torch([p.detach() for p in params])
        plan.taken_states = PlannedStates(by_name)
        plan.check = _core._StepCheck(plan.params, plan.mask, written, _core._take_torch(steps), _PLAIN_GRADS)
        plan.spans = [(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in written if t.numel()]
        # An empty call of the same kind: a scheduler's new hyperparameters checked by the kernel before
        # any call of a step of several writes (as the full step's rehearsal).
        empty, empty_state = torch.empty(0, dtype=dtype), torch.empty(0, dtype=state_dtype)
        plan.stand_in = (empty, {name: (None if taken is None else empty_state) for name, taken in by_name.items()})
        return True

    # ------------------------------------------------------------------ stepping
    def run(self, opt) -> bool:
        if torch.compiler.is_compiling() or _function_mode() or opt.state is not self.state \
                or len(opt.param_groups) != len(self.groups) or not self.snapshot.unchanged(opt.state) \
                or getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None:
            return False
        several = len(self.calls) > 1
        work, changed = [], []
        for group, plan in zip(opt.param_groups, self.groups):
            if group is not plan.group:
                return False
            options = _options(group)
            fresh = options != plan.options
            if fresh:
                if options.keys() != plan.options.keys() or _holds_tensor(options.values()) or any(
                        options[key] != plan.options[key] for key in options if key not in opt._free_hyper):
                    return False  # (an option that may change which state exists: the full path plans again)
                opt._check_options(group, plan.k)  # (raises as the full step would)
                changed.append((plan, options))
            # The same parameters, gradients for the same ones (each a dense CPU tensor of its parameter's
            # dtype and shape), every kept tensor where it was: the gradients taken, or None.
            grads = plan.check.grads(group["params"])
            if grads is None:
                return False
            if not plan.members:
                continue
            count = None
            if plan.counted:
                count = plan.check.count(_hyper.MAX_STEP_COUNT)
                if count is None:
                    return False
            key = count + 1 if plan.step_keyed else plan.key
            work.append((plan, fresh, grads, key, count))
        if several:
            for plan, fresh, _, key, _ in work:
                if fresh:
                    self._rehearse(opt, plan, key)
            if not self._grads_apart(work):
                return False
        # (each call bumps the autograd versions of the tensors it writes)
        for plan, _, grads, key, count in work:
            with _hyper.named(f"param group {plan.k}"):
                opt._run(plan.group, plan.taken_params, grads, plan.taken_states, key)
            if plan.counted:
                plan.check.advance(count + 1)
        for plan, options in changed:
            plan.options = options
        return True

    @staticmethod
    def _rehearse(opt, plan: _GroupPlan, key) -> None:
        empty, state = plan.stand_in
        with _hyper.named(f"param group {plan.k}"):
            opt._run(plan.group, [empty], [empty], [dict(state)], key)

    @staticmethod
    def _grads_apart(work) -> bool:
        """Whether no gradient of a step of several calls shares memory with a tensor the step writes (each
        kernel call checks its own operands; the full path names an overlap). Gradients may share memory
        with one another: they are only read."""
        spans = [(start, end, "", True) for plan, *_ in work for start, end in plan.spans]
        for _, _, grads, _, _ in work:
            spans += [(start, end, "", False) for start, end in grads.spans()]
        return first_shared_write(spans) is None

