"""The twins under torch.compile: the update as one torch custom op, so that a compiled step has no graph break.

A twin's eager step reads its tensors through NumPy views and step counts through .item(), which torch.compile
cannot trace (each is a graph break). While torch.compile traces a step, the twin instead hands each param
group to the custom op ``fastopt::twin_step_`` (torch.library.custom_op: the tensors it writes declared as
mutated, a fake implementation for tracing, torch.library.opcheck-clean), whose implementation, run with the
real tensors, is the eager path's own kernel call for that group: the same checks, the same kernel, the same
numbers. The group's options travel as a string (the repr of its plain values) (a constant of the graph, as torch's compiled optimizers
treat them); a tensor ``lr`` travels as a tensor, so a schedule that writes into it does not recompile.

What the traced step leaves to the eager path (a graph break there, as before): a step before every updated
parameter has its state (the first one), GradScaler's unscaling, differentiable=True groups, sparse gradients
and DTensor parameters.
"""

from __future__ import annotations

import ast
import math
from typing import Any, Dict, List, Optional

import torch

from fastopt import _hyper

# fastopt.torch's twin classes by name, filled by fastopt.torch's __init__ (the op's implementation finds the
# class a traced step named).
TWINS: Dict[str, type] = {}


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)  # (a non-finite number: the eager path refuses it by name)
    return isinstance(value, (tuple, list)) and all(_plain(v) for v in value)


def _group_options(group: Dict[str, Any]) -> Optional[tuple]:
    """The group's options but params and a tensor lr, as (key, value) pairs of plain values (their repr, in
    twin_step_'s layout, is a constant of the traced graph, read back with ast.literal_eval); None when an
    option is not a plain value (a tensor beta...): the eager path then."""
    items = []
    for key in sorted(group):
        value = group[key]
        if key == "params" or (key == "lr" and isinstance(value, torch.Tensor)):
            continue
        if not _plain(value):
            return None
        items.append((key, value))
    return tuple(items)


_HAS_CUSTOM_OP = hasattr(torch.library, "custom_op")  # (torch >= 2.4)


def twin_step_(twin: str, params: List[torch.Tensor], grads: List[torch.Tensor], states: List[torch.Tensor],
               lrs: List[Optional[torch.Tensor]], layout: str) -> None:
    """One step of twin class `twin` over its param groups, in place. `layout` (see traced_step) says, per
    group, how many of `params` (with `grads`) it holds, the names of their state entries (each entry's
    tensors next in `states`, one per parameter) and the group's other options; lrs[k] is group k's tensor
    lr, or None when its lr is a number (in its options)."""
    cls = TWINS[twin]
    groups, p_at, s_at = [], 0, 0
    for k, (n, keys, options) in enumerate(ast.literal_eval(layout)):
        group = {key: tuple(value) if isinstance(value, list) else value for key, value in options}
        if lrs[k] is not None:
            group["lr"] = lrs[k]
        group_params = params[p_at:p_at + n]
        group["params"] = group_params
        entries = [states[s_at + j * n:s_at + (j + 1) * n] for j in range(len(keys))]
        group_states = [{key: entries[j][i] for j, key in enumerate(keys)} for i in range(n)]
        groups.append((k, group, group_params, grads[p_at:p_at + n], group_states))
        p_at, s_at = p_at + n, s_at + n * len(keys)
    if p_at != len(params) or p_at != len(grads) or s_at != len(states):
        raise ValueError(f"fastopt::twin_step_: {len(params)} params, {len(grads)} grads and {len(states)} state "
                         f"tensors do not fit the layout {layout}")
    step_groups(cls, groups)


if _HAS_CUSTOM_OP:
    twin_step_ = torch.library.custom_op("fastopt::twin_step_", mutates_args=("params", "states"))(twin_step_)

    @twin_step_.register_fake
    def _(twin, params, grads, states, lrs, layout) -> None:
        return None


def traced_step(opt) -> bool:
    """The step while torch.compile traces it: one twin_step_ for all param groups, and True; or False
    (nothing done) when the eager path must take the step."""
    if not _HAS_CUSTOM_OP or getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None:
        return False
    name = type(opt).__name__
    if TWINS.get(name) is not type(opt):
        return False
    params, grads, flat, lrs, layout = [], [], [], [], []
    for group in opt.param_groups:
        if group.get("differentiable") or not opt._plannable(group):
            return False  # (compact state_dtype: the eager, checked step)
        with_grad = [p for p in group["params"] if p.grad is not None]
        if any(p.grad.is_sparse or not p.is_cpu for p in with_grad):
            return False  # (sparse gradients, and CUDA's device step counts and streams: the eager path)
        states = [opt.state.get(p) or {} for p in with_grad]
        if opt._state_keys and not all(states):
            return False  # (the first step makes the state: eagerly)
        # State an option needs from this step on (amsgrad switched on...) is made by the eager path.
        probe = [dict(s) for s in states]
        opt._prepare(group, with_grad, probe)
        if any(len(a) != len(b) for a, b in zip(probe, states)):
            return False
        keys = tuple(key for key in states[0] if states[0][key] is not None) if states else ()
        if any(tuple(key for key in s if s[key] is not None) != keys for s in states):
            return False
        options = _group_options(group)
        if options is None:
            return False
        params += with_grad
        grads += [p.grad for p in with_grad]
        flat += [s[key] for key in keys for s in states]
        lrs.append(group["lr"] if isinstance(group["lr"], torch.Tensor) else None)
        layout.append((len(with_grad), keys, options))
    torch.ops.fastopt.twin_step_(name, params, grads, flat, lrs, repr(tuple(layout)))
    return True


def step_groups(cls, groups) -> None:
    """twin_step_'s implementation: the eager path's checks of every group's tensors, state and
    hyperparameters (on empty arrays of each dtype, by the kernel), and then each group's kernel call over its
    parameters with a gradient and their existing state, in place. Nothing is written unless every check passed."""
    from fastopt._overlap import check_disjoint
    from fastopt.torch import _arrays

    opt = cls.__new__(cls)  # (an empty twin: _run and the checks read only what they are given...
    opt.defaults = {key: value for key, value in groups[0][1].items() if key != "params"} if groups else {}
    opt.state = {}  # ...and these, for the empty arrays of _check_hyper)
    calls, spans = [], []
    for k, group, params, grads, states in groups:
        if not params:
            continue
        for i, (p, g, state) in enumerate(zip(params, grads, states)):
            _arrays.check_tensor(p, f"params[{i}]", cpu_half=opt._cpu_half)
            _arrays.check_tensor(g, f"params[{i}].grad", like=p, cpu_half=opt._cpu_half)
            if state:
                opt._check_state(i, p, state, group, k)
            spans += [(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size(), name, t is not g) for t, name in
                      [(p, f"params[{i}]"), (g, f"params[{i}].grad")] +
                      [(v, f"state[{i}]['{key}']") for key, v in state.items() if key != "step" and torch.is_tensor(v)]
                      if t.numel()]
        keys = {opt._bucket_key(p, state, group) for p, state in zip(params, states)}
        if len(keys) != 1 or len({p.dtype for p in params}) != 1:
            raise ValueError(f"param group {k}: its parameters have different step counts or dtypes, which a compiled "
                             "step cannot update in one call; step them eagerly (outside torch.compile)")
        with _hyper.named(f"param group {k}"):
            opt._check_hyper(group, [params[0].dtype])
        calls.append((k, group, params, grads, states, keys.pop()))
    check_disjoint(spans, "tensor")
    for k, group, params, grads, states, key in calls:
        with _hyper.named(f"param group {k}"):
            opt._run(group, _arrays.views(params), _arrays.views(grads), states, key)
        opt._advance(states)
