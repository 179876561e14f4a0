"""The twins' repeated step: what a full step (FusedOptimizer.step's checked path) found out, kept so that the
next steps skip the per-tensor Python work that made a twin slower than torch's fused step.

A full step checks every tensor, plans the kernel calls and turns each tensor into a NumPy view of its memory
(about 15 us per parameter, most of it `Tensor.numpy()` and the checks). In a training loop nothing of that
changes from one step to the next except the gradients (new tensors after zero_grad(set_to_none=True)) and
the hyperparameters a scheduler writes. A StepPlan keeps the views of the parameters and their state and,
at each step, proves that they still are what the full step checked, per tensor at a fraction of the cost:

- the same param_groups (the same dicts, the same parameter objects in the same order, gradients present
  for exactly the same parameters), the same state dicts holding the same tensor objects, and every kept
  tensor still at the address and of the size it had (so `p.data = ...`, `set_()` or a replaced state
  tensor is seen, never written through an outdated view; a view of the same memory in another shape is
  the same elementwise update);
- the group's options: the numbers a scheduler changes (`_free_hyper`: lr, betas, ...) are checked again
  when they change, as the full step checks them; any other change (amsgrad, momentum, ...) may change
  which state exists, so it sends the step back to the full path, which plans again;
- each gradient: a dense contiguous CPU tensor of its parameter's dtype and shape (then its view);
- the step counts, read through views of the 0-d `step` tensors: all equal, a whole count in range.

Anything else (a CUDA, DTensor, complex, half or non-contiguous parameter, GradScaler's unscaling, a
differentiable group, sparse gradients, several calls in one group, torch.compile tracing) is not planned:
the full step runs, as before. Whenever a check fails the step goes to the full path, which raises the
named error or plans again; nothing is written before every check of the step has passed, and a step of
several kernel calls first runs each changed group's hyperparameters through its kernel on empty arrays
and checks that no gradient shares memory with another operand of the step, as the full step does.
"""

from __future__ import annotations

from operator import attrgetter, is_
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from fastopt import _hyper

_PLANNED_DTYPES = (torch.float32, torch.float64)
_PLAIN_TYPES = frozenset((torch.Tensor, torch.nn.Parameter))
# torch's own methods and attributes, for map() over whole lists
_data_ptr, _numel, _is_contiguous, _numpy = (torch.Tensor.data_ptr, torch.Tensor.numel, torch.Tensor.is_contiguous,
                                             torch.Tensor.numpy)
_dtype, _shape = attrgetter("dtype"), attrgetter("shape")


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

    __slots__ = ("k", "group", "params", "mask", "options", "members", "shapes", "dtypes", "nbytes", "dtype", "states",
                 "values", "param_views", "state_views", "step_views", "kept", "addresses", "kept_sizes",
                 "written", "spans", "counted", "step_keyed", "key", "stand_in")


class StepPlan:
    """See the module docstring. build() makes one after a full step (or returns None); run() does a step
    and returns True, or returns False, having changed nothing, when the full path must run."""

    def __init__(self, groups: List[_GroupPlan], state: Any):
        self.groups = groups
        self.state = state  # (the optimizer's state mapping: load_state_dict replaces it)
        self.calls = [g for g in groups if g.members]

    # ------------------------------------------------------------------ building
    @staticmethod
    def build(opt, calls) -> Optional["StepPlan"]:
        if not getattr(type(opt), "_step_plan_ok", False) or torch.compiler.is_compiling():
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
            if group.get("differentiable") or _holds_tensor(plan.options.values()) or not opt._plannable(group):
                return None
            plan.mask = [p.grad is not None for p in plan.params]
            with_grad = [p for p, has in zip(plan.params, plan.mask) if has]
            members = by_group.get(k, [])
            if len(with_grad) != len(members) or not all(map(is_, with_grad, members)):
                return None  # (gradients the full step left to torch: sparse ones)
            plan.members = []
            if members and not StepPlan._plan_call(opt, plan, members):
                return None
            plans.append(plan)
        return StepPlan(plans, opt.state)

    @staticmethod
    def _plan_call(opt, plan: _GroupPlan, params: List[torch.Tensor]) -> bool:
        from fastopt.torch._optimizer import FusedOptimizer, StepOutOfRange

        dtype = params[0].dtype
        if dtype not in _PLANNED_DTYPES:
            return False
        states, values = [], []
        for p in params:
            if not (type(p) in _PLAIN_TYPES and _plain_cpu(p.detach(), dtype) and _plain_cpu(p.grad, dtype)
                    and not p.grad.requires_grad):
                return False
            state = opt.state.get(p)
            items = list(state.items()) if state else []
            for name, value in items:
                if name == "step":
                    if not (type(value) is torch.Tensor and value.is_cpu and value.dim() == 0
                            and value.dtype in _PLANNED_DTYPES and not value.requires_grad):
                        return False
                elif value is not None and not (_plain_cpu(value, dtype) and value.shape == p.shape
                                                and not value.requires_grad):
                    return False
            states.append(state)
            values += [value for _, value in items]
        entries = [dict(state) if state else {} for state in states]
        plan.counted = all("step" in items for items in entries)
        if not plan.counted and any("step" in items for items in entries):
            return False
        if plan.counted and type(opt)._advance is not FusedOptimizer._advance:
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
        plan.members, plan.dtype, plan.states, plan.values = params, dtype, states, values
        plan.shapes = [p.shape for p in params]
        plan.dtypes = [dtype] * len(params)
        plan.nbytes = [p.numel() * p.element_size() for p in params]
        # Views of everything the call writes or reads besides the gradients, and what each tensor must
        # still be at the next step: the parameters, each state tensor, the step counts.
        plan.param_views = [p.detach().numpy() for p in params]
        plan.state_views, plan.step_views = [], []
        plan.written = [p for p in params]
        steps = []
        for items in entries:
            views = {}
            for name, value in items.items():
                if name == "step":
                    plan.step_views.append(value.numpy())
                    steps.append(value)
                elif value is not None:
                    views[name] = value.numpy()
                    plan.written.append(value)
                else:
                    views[name] = None
            plan.state_views.append(views)
        plan.kept = plan.written + steps
        plan.addresses = [t.data_ptr() for t in plan.kept]
        plan.kept_sizes = [t.numel() for t in plan.kept]
        plan.spans = [(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in plan.written if t.numel()]
        # An empty call of the same kind: a scheduler's new hyperparameters checked by the kernel before
        # any call of a step of several writes (as the full step's rehearsal).
        plan.stand_in = (np.empty(0, _numpy_dtype(dtype)), {name: (None if view is None else np.empty(0, view.dtype))
                                                         for name, view in plan.state_views[0].items()})
        return True

    # ------------------------------------------------------------------ stepping
    def run(self, opt) -> bool:
        if torch.compiler.is_compiling() or opt.state is not self.state or len(opt.param_groups) != len(self.groups) \
                or getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None:
            return False
        several = len(self.calls) > 1
        work, changed = [], []
        for group, plan in zip(opt.param_groups, self.groups):
            if group is not plan.group:
                return False
            params = group["params"]
            if len(params) != len(plan.params) or not all(map(is_, params, plan.params)):
                return False
            grads = [p.grad for p in params]
            if [g is not None for g in grads] != plan.mask:
                return False
            options = _options(group)
            fresh = options != plan.options
            if fresh:
                if options.keys() != plan.options.keys() or _holds_tensor(options.values()) or any(
                        options[key] != plan.options[key] for key in options if key not in opt._free_hyper):
                    return False  # (an option that may change which state exists: the full path plans again)
                opt._check_options(group, plan.k)  # (raises as the full step would)
                changed.append((plan, options))
            if not plan.members:
                continue
            call = self._check_call(opt, plan, [g for g, has in zip(grads, plan.mask) if has])
            if call is None:
                return False
            work.append((plan, fresh) + call)
        if several:
            for plan, fresh, _, _, key, _ in work:
                if fresh:
                    self._rehearse(opt, plan, key)
            if not self._grads_apart(work):
                return False
        for plan, _, _, grad_views, key, count in work:
            with _hyper.named(f"param group {plan.k}"):
                opt._run(plan.group, plan.param_views, grad_views, plan.state_views, key)
            if plan.counted:
                new = float(count + 1)
                for view in plan.step_views:
                    view[()] = new
            torch.autograd.graph.increment_version(plan.written)
        for plan, options in changed:
            plan.options = options
        return True

    def _check_call(self, opt, plan: _GroupPlan, grads: list):
        """(gradients, their views, the call's key, the step count before it) when the call's tensors are
        as planned, else None. (Written as whole-list operations, map over torch's own methods: a Python
        loop's own cost per parameter would be most of the step's.)"""
        states = list(map(opt.state.get, plan.members))
        if not all(map(is_, states, plan.states)):
            return None
        values = [value for state in states if state for value in state.values()]
        if len(values) != len(plan.values) or not all(map(is_, values, plan.values)):
            return None
        if list(map(_data_ptr, plan.kept)) != plan.addresses or list(map(_numel, plan.kept)) != plan.kept_sizes:
            return None
        if not _PLAIN_TYPES.issuperset(map(type, grads)) or list(map(_dtype, grads)) != plan.dtypes \
                or list(map(_shape, grads)) != plan.shapes or not all(map(_is_contiguous, grads)):
            return None
        try:
            # (numpy() raises for a CUDA, sparse, conjugated or negated tensor, or one that requires grad:
            # the full path then names it)
            views = list(map(_numpy, grads))
        except (RuntimeError, TypeError):
            return None
        count = None
        if plan.counted:
            counts = list(map(float, plan.step_views))
            count = counts[0]
            if min(counts) != count or max(counts) != count or not (0 <= count <= _hyper.MAX_STEP_COUNT) \
                    or count != int(count):
                return None
            count = int(count)
        key = count + 1 if plan.step_keyed else plan.key
        return grads, views, key, count

    @staticmethod
    def _rehearse(opt, plan: _GroupPlan, key) -> None:
        empty, state = plan.stand_in
        with _hyper.named(f"param group {plan.k}"):
            opt._run(plan.group, [empty], [empty], [dict(state)], key)

    @staticmethod
    def _grads_apart(work) -> bool:
        """Whether no gradient of a step of several calls shares memory with another operand of the step (each
        kernel call checks its own operands; the full path names an overlap)."""
        spans = [span for plan, *_ in work for span in plan.spans]
        for plan, _, grads, _, _, _ in work:
            spans += [(start, start + n) for start, n in zip((g.data_ptr() for g in grads), plan.nbytes) if n]
        spans.sort()
        return all(start >= prev_end for (_, prev_end), (start, _) in zip(spans, spans[1:]))


def _numpy_dtype(dtype: torch.dtype):
    return np.float32 if dtype is torch.float32 else np.float64
