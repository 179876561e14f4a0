"""The common step of the torch twins: a torch.optim.Optimizer whose update is one fused fastopt kernel call
per param group (per dtype and step number within a group, when those differ).

torch.optim.Optimizer itself provides param_groups, add_param_group, zero_grad, state_dict/load_state_dict
and the step hooks; the subclasses keep state in torch's exact format (tensor keys and a 0-d `step` tensor),
so a state_dict moves between a twin and its torch.optim original in both directions.

A step checks every parameter, gradient and state tensor of every group before any kernel runs, so a refused
step leaves the parameters, the state and the step counts exactly as they were.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Tuple

import torch

from fastopt._overlap import check_disjoint
from fastopt.torch import _arrays


def scalar(value: Any) -> float:
    """A hyperparameter as a Python float (torch allows 1-element tensors for lr and betas)."""
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def step_dtype(group: Dict[str, Any]) -> torch.dtype:
    """The dtype torch 2.13 gives state['step']: float32 when fused, else float64 only under a float64
    default dtype (torch.optim.optimizer._get_scalar_dtype)."""
    if group.get("fused"):
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def new_step(group: Dict[str, Any]) -> torch.Tensor:
    # Both torch's CPU placements (fused: the param's device, else "cpu") are the CPU here.
    return torch.tensor(0.0, dtype=step_dtype(group))


class FusedOptimizer(torch.optim.Optimizer):
    """Base of the twins. Subclasses define:

    - `_new_state(p, group)`: the state of a parameter's first step (torch's keys, fresh tensors);
    - `_bucket_key(state, group)`: what a kernel call must share besides the dtype (the step number);
    - `_prepare(group, params, states)`: add state tensors an option needs from this step on (amsgrad...);
    - `_run(group, params, grads, states, key)`: the kernel call (arrays for params/grads, state dicts);
    - `_advance(states)`: count the step in the state (default: `step += 1`).
    """

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        # Check the options and hyperparameters now, as torch does in its constructors: the kernel
        # validates them itself when called on an empty list, so the rules live in one place.
        self._check_options(group, len(self.param_groups) - 1)
        self._run(group, [], [], [], self._check_key())

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # load_state_dict and unpickling come through here: fill keys an older state_dict lacks and turn
        # a numeric step into torch's 0-d tensor.
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = torch.tensor(float(p_state["step"]), dtype=step_dtype(group))

    # ------------------------------------------------------------------ options
    def _check_options(self, group: Dict[str, Any], k: int) -> None:
        """Options fastopt cannot honour are refused, never ignored. `foreach` changes nothing here
        (a twin always updates a whole group per call); `fused` is what fastopt always is."""
        where = f"param group {k}"
        if group.get("differentiable"):
            raise ValueError(f"{where}: differentiable=True is not supported by fastopt's fused kernels")
        if group.get("capturable"):
            raise ValueError(f"{where}: capturable=True (CUDA graph capture) is not supported by fastopt")
        if group.get("fused") and group.get("foreach"):
            raise ValueError(f"{where}: fused and foreach cannot both be True")
        lr = group.get("lr")
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError(f"{where}: a tensor lr must have one element, got {lr.numel()}")

    # ------------------------------------------------------------------ stepping
    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a .grad; `closure` (optional) re-evaluates the model
        under torch.enable_grad() and its loss is returned."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, skip = self._amp_scaling()
        if skip:
            return loss

        calls = self._plan()
        if len(calls) > 1:
            # The kernels check each call before writing; across several calls the step is checked here
            # first, so that a late refusal cannot leave the earlier groups updated.
            for group, _, _ in calls:
                self._run(group, [], [], [], self._check_key())
            self._check_no_overlap(calls)

        for group, key, members in calls:
            params = [p for _, p in members]
            states = [self.state.get(p) or self._new_state(p, group) for p in params]
            self._prepare(group, params, states)
            self._run(group, _arrays.views(params), _arrays.views([p.grad for p in params]), states, key,
                      grad_scale=grad_scale)
            # The update happened: commit the new states and count the step.
            for p, state in zip(params, states):
                if state:  # torch keeps no entry for a parameter without state (SGD without momentum)
                    self.state[p] = state
            self._advance(states)
            _arrays.mark_modified(params + [v for s in states for k, v in s.items()
                                            if k != "step" and torch.is_tensor(v)])
        return loss

    # torch.amp.GradScaler: with this flag it does not unscale the gradients itself (no extra pass over
    # them) but sets `grad_scale` (the loss scale, or None when the caller already unscaled) and
    # `found_inf` (non-zero when a gradient held a NaN or Inf) on the optimizer before calling step();
    # the kernels then divide by the scale on the fly, as torch's fused optimizers do.
    _step_supports_amp_scaling = True

    def _amp_scaling(self) -> Tuple[float, bool]:
        """(the scale to divide the gradients by, whether to skip this step) from GradScaler's attributes;
        (1.0, False) outside GradScaler.step()."""
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf) != 0.0:
            return 1.0, True  # as torch's fused optimizers: nothing changes, step counts included
        grad_scale = getattr(self, "grad_scale", None)
        return (1.0 if grad_scale is None else scalar(grad_scale)), False

    def _plan(self) -> List[Tuple[Dict[str, Any], Hashable, List[Tuple[int, torch.Tensor]]]]:
        """Checks every tensor of the step and groups the parameters into kernel calls:
        [(group, key, [(index, param), ...]), ...], in group order."""
        calls = []
        index = 0
        for k, group in enumerate(self.param_groups):
            self._check_options(group, k)  # group entries may have been edited or loaded since
            buckets: Dict[Hashable, List[Tuple[int, torch.Tensor]]] = {}
            for i, p in enumerate(group["params"], start=index):
                if p.grad is None:
                    continue  # as torch: a parameter without a gradient is not updated
                _arrays.check_tensor(p, f"params[{i}]")
                _arrays.check_tensor(p.grad, f"params[{i}].grad", like=p)
                state = self.state.get(p)
                if state:
                    for name, value in state.items():
                        if name != "step" and torch.is_tensor(value):
                            _arrays.check_tensor(value, f"state[{i}]['{name}']", like=p)
                buckets.setdefault((p.dtype, self._bucket_key(state, group)), []).append((i, p))
            calls += [(group, key, members) for (_, key), members in buckets.items()]
            index += len(group["params"])
        return calls

    def _check_no_overlap(self, calls) -> None:
        """No two tensors written or read in one step may share memory (each kernel call checks its own
        arrays; this covers arrays that meet in different calls)."""
        spans = []
        for _, _, members in calls:
            for i, p in members:
                named = [(p, f"params[{i}]"), (p.grad, f"params[{i}].grad")]
                named += [(v, f"state[{i}]['{k}']") for k, v in (self.state.get(p) or {}).items()
                          if k != "step" and torch.is_tensor(v)]
                for t, name in named:
                    if t.numel():
                        start = t.data_ptr()
                        spans.append((start, start + t.numel() * t.element_size(), name))
        check_disjoint(spans, "tensor")

    # ------------------------------------------------------------------ subclass hooks
    def _new_state(self, p: torch.Tensor, group: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def _bucket_key(self, state: Dict[str, Any], group: Dict[str, Any]) -> Hashable:
        """The step number of this update (1 for a parameter without state)."""
        return int(state["step"].item()) + 1 if state else 1

    def _check_key(self) -> Hashable:
        """A valid bucket key, for checking hyperparameters with an empty kernel call."""
        return 1

    def _prepare(self, group, params: List[torch.Tensor], states: List[Dict[str, Any]]) -> None:
        pass

    def _run(self, group, params, grads, states, key, grad_scale: float = 1.0) -> None:
        raise NotImplementedError

    def _advance(self, states: List[Dict[str, Any]]) -> None:
        steps = [s["step"] for s in states]
        if steps:
            torch._foreach_add_(steps, 1.0)  # torch's own `step_t += 1`, one call for the group

    @staticmethod
    def _ensure(params, states, key) -> None:
        """Adds a zero state tensor `key` where missing: buffers that appear when an option is switched on
        after the first step (torch would fail with a KeyError there)."""
        for state, p in zip(states, params):
            if key not in state:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @staticmethod
    def _views(states, key):
        return _arrays.views([s[key] for s in states])
