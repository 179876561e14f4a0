"""Where the twins keep their step counts, and how calls are grouped by them: torch's 0-d step tensors (their
dtype and device as torch 2.13 makes them), the tokens that stand for counts kept on a device (capturable
CUDA groups, never read by the host), and the error for a stored count the kernels cannot advance. Shared by
FusedOptimizer (fastopt/torch/_optimizer.py) and the repeated step (fastopt/torch/_step_plan.py)."""

from __future__ import annotations

from typing import Any, Dict, Hashable, List

import torch


def step_dtype(group: Dict[str, Any]) -> torch.dtype:
    """The dtype torch 2.13 gives state['step']: float32 when fused, else float64 only under a float64
    default dtype (torch.optim.optimizer._get_scalar_dtype)."""
    if group.get("fused"):
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def device_steps(group: Dict[str, Any], p: torch.Tensor) -> bool:
    """Whether p's step count lives on its device: a capturable group's CUDA parameter."""
    return bool(group.get("capturable")) and p.is_cuda


def new_step(group: Dict[str, Any], p: torch.Tensor) -> torch.Tensor:
    """A zero step count where torch keeps it: on p's device for a capturable CUDA parameter, else on the
    CPU (torch's other placement, fused: the device, is the CPU for the twins: see fastopt/torch/_optimizer.py's docstring)."""
    if device_steps(group, p):
        return torch.zeros((), dtype=step_dtype(group), device=p.device)
    return torch.tensor(0.0, dtype=step_dtype(group))


class StepTokens:
    """Bucket keys for step counts that live on the device (capturable), which the host never reads.

    Each such parameter has a token; parameters share a token only when their device counts are equal:
    parameters loaded with equal counts (read once, at load) or fresh ones share ("value", count), and
    every kernel call that advances a bucket gives all its parameters one new token. A captured call
    does the same, and its replays advance exactly the parameters holding that token (or tokens split
    from it later, which are subsets), so tokens only ever split, and equal tokens mean equal counts.
    """

    FRESH = ("value", 0.0)

    def __init__(self):
        self._tokens: Dict[torch.Tensor, Hashable] = {}

    def key(self, p: torch.Tensor, state: Dict[str, Any]) -> Hashable:
        if not state:
            return ("device", self.FRESH)
        token = self._tokens.get(p)
        if token is None:  # state set from outside (not by a step or a load): read its count once
            token = self._tokens[p] = ("value", float(state["step"].item()))
        return ("device", token)

    def advanced(self, params: List[torch.Tensor]) -> None:
        token = object()
        for p in params:
            self._tokens[p] = token

    def loaded(self, p: torch.Tensor, step: Any) -> None:
        if torch.is_tensor(step) and step.is_cuda:
            self._tokens[p] = ("value", float(step.item()))
        else:
            self._tokens.pop(p, None)


class StepOutOfRange(ValueError):
    """A stored step count (read by _bucket_key) that is not a whole number of steps the kernels can
    advance; the step names it (fastopt._hyper.float_step_count's message)."""

    def __init__(self, count: float):
        super().__init__(f"step count {count}")
        self.count = count


def is_device_key(key: Hashable) -> bool:
    return isinstance(key, tuple) and len(key) == 2 and key[0] == "device"
