"""DTensor parameters (torch.distributed.tensor, as FSDP2's fully_shard makes them): the twins update
their local shards.

An optimizer update is elementwise, so updating each rank's local shard of a parameter with the local
shards of its gradient and state tensors is, exactly, the update of the whole tensor, provided all of
them are laid out alike: the same device mesh and the same placements. A Partial placement is refused:
its local tensors hold addends of the values, which an elementwise update cannot take apart.

The state tensors are DTensors laid out as their parameter (state_tensor's full_like/empty_like of a
DTensor keeps its mesh and placements), as torch.optim's zeros_like makes them, so the state_dict holds
DTensors like torch's and torch.distributed.checkpoint.state_dict's get/set_optimizer_state_dict work
with the twins; the step count stays a plain tensor, as torch keeps it.

A step asks once per param group whether the group holds a DTensor (holds_dtensor: one C-level pass over
the parameters' types, about 4 us for 148 parameters; no Python work per tensor), so plain tensors keep
their path unchanged. fastopt never imports torch.distributed itself: DTensor is looked up in sys.modules
(none can exist before its module is loaded; torch.optim.Optimizer's constructor loads it anyway).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Tuple

import torch


class Shards(list):
    """The members [(index, param), ...] of a kernel call from a param group that holds DTensors: the step
    hands the kernel their local shards (local_operands, local)."""


def dtensor_type() -> Optional[type]:
    """torch's DTensor class once its module is loaded, else None (then no DTensor can exist). Read from
    sys.modules: fastopt never imports torch.distributed itself."""
    module = sys.modules.get("torch.distributed.tensor._api")
    return getattr(module, "DTensor", None)


def holds_dtensor(params: List[torch.Tensor]) -> bool:
    """Whether any of `params` is a DTensor: one C-level pass over their types, then a check per distinct type."""
    cls = dtensor_type()
    return cls is not None and any(issubclass(kind, cls) for kind in set(map(type, params)))


def local(t: Any) -> Any:
    """t's local shard when t is a DTensor (the tensor itself, not a copy: an update of it is an update of
    t's data on this rank), else t."""
    cls = dtensor_type()
    if cls is not None and isinstance(t, cls):
        with torch.no_grad():  # (to_local is differentiable under grad mode: a view then, not the shard)
            return t.to_local()
    return t


def _layout(t: Any) -> str:
    return f"placements {tuple(t.placements)} on {t.device_mesh}"


def check_alike(t: Any, name: str, p: torch.Tensor, param_name: str) -> None:
    """Raises unless `t` (named `name`), a gradient or state tensor of parameter `p` (named `param_name`),
    is laid out as `p`: both DTensors of one mesh and placements (not Partial), or both not DTensors."""
    cls = dtensor_type()
    if cls is None:  # (no DTensor exists)
        return
    if not isinstance(p, cls):
        if isinstance(t, cls):
            raise TypeError(f"{name} is a DTensor ({_layout(t)}) but {param_name} is a plain tensor; fastopt "
                            "updates a parameter with operands of its own kind")
        return
    if not isinstance(t, cls):
        raise TypeError(f"{name} is a plain {type(t).__name__} but {param_name} is a DTensor ({_layout(p)}); "
                        "fastopt updates the local shards of a DTensor parameter, its gradient and its state, "
                        "which must all be DTensors laid out alike")
    if t.device_mesh is not p.device_mesh and t.device_mesh != p.device_mesh:
        raise ValueError(f"{name} is a DTensor on {t.device_mesh} but {param_name} is on {p.device_mesh}; "
                         "fastopt updates local shards, which must be laid out alike (the same mesh and "
                         "placements)")
    if tuple(t.placements) != tuple(p.placements):
        raise ValueError(f"{name} has placements {tuple(t.placements)} but {param_name} has "
                         f"{tuple(p.placements)}; fastopt updates local shards, which must be laid out alike "
                         "(redistribute it to the parameter's placements)")


def check_param(p: torch.Tensor, name: str) -> None:
    """Raises for a DTensor parameter with a Partial placement (its shards are addends, not values)."""
    partial = [pl for pl in p.placements if pl.is_partial()]
    if partial:
        raise ValueError(f"{name} is a DTensor with placements {tuple(p.placements)}: a Partial placement holds "
                         "addends of the values on each rank, which an elementwise update cannot take; "
                         "redistribute it to Shard or Replicate placements")


def local_operands(p: torch.Tensor, state: Any, i: int, plain: Tuple[str, ...] = ("step",)
                   ) -> Tuple[torch.Tensor, torch.Tensor, Any]:
    """Checks that parameter `p` (params[i], in a group holding DTensors), its gradient and its state
    tensors are laid out alike (check_alike) and returns their local shards: (param, grad, state), the
    state a dict of the same keys (or `state` itself when it is not a dict: the caller's check names it).
    The entries `plain` (the step count, and numbers such as NAdam's mu_product), plain tensors as torch
    keeps them, stay as they are."""
    name = f"params[{i}]"
    grad = p.grad
    cls = dtensor_type()
    if isinstance(p, cls):
        check_param(p, name)
    check_alike(grad, f"{name}.grad", p, name)
    if not isinstance(state, dict):
        return local(p), local(grad), state
    shards: Dict[str, Any] = {}
    for key, value in state.items():
        if key not in plain and torch.is_tensor(value):
            check_alike(value, f"state[{i}]['{key}']", p, name)
            value = local(value)
        shards[key] = value
    return local(p), local(grad), shards


def local_states(states: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The states of a kernel call with their DTensors replaced by local shards (new dicts: the stored
    states keep their DTensors)."""
    return [{key: local(value) for key, value in state.items()} for state in states]
