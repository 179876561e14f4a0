"""Base class of the stateful optimizers: param groups, per-parameter state, state_dict.

Parameters are NumPy arrays updated in place. State is kept per parameter, keyed by the parameter's
position across all groups (0, 1, 2, ... in group order), as torch.optim's state_dict numbers them.
A step hands each group to its fused kernel in as few native calls as possible: one per
(dtype, step number) bucket, which is a single call in the usual case.

A group's ``lr`` may be a number or a schedule: any callable of the 0-based step returning the lr,
such as the objects of ``fastopt.schedules``. Each group counts the ``step()`` calls it has taken
part in; its (k + 1)-th step uses ``lr(k)``, as a torch scheduler stepped once per optimizer step
does. The counts are saved in ``state_dict()["schedule_steps"]`` and restored with it.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from fastopt._core import _found_nonfinite
from fastopt._overlap import check_disjoint
from fastopt.optim.checkpoint import load_checkpoint, save_checkpoint

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_param(p: Any, where: str) -> None:
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{where} must be a numpy.ndarray, got {type(p).__name__}")
    if p.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{where} has dtype {p.dtype}; fastopt optimizes float32 or float64 arrays")
    if not p.flags.c_contiguous:
        raise ValueError(f"{where} is not C-contiguous")
    if not p.flags.writeable:
        raise ValueError(f"{where} is read-only")


def _check_grad_scale(grad_scale: Any, params: List[np.ndarray]) -> float:
    """grad_scale as a float: finite and > 0, also in float32 when a parameter is float32."""
    if isinstance(grad_scale, (bool, np.bool_, str, bytes)):  # (float() would parse a string)
        raise TypeError(f"grad_scale must be a real number, got {type(grad_scale).__name__}")
    try:
        value = float(grad_scale)
    except Exception as error:
        raise TypeError(f"grad_scale must be a real number, got {type(grad_scale).__name__}") from error
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"grad_scale must be > 0, got {value}")
    if any(p.dtype == np.float32 for p in params):
        # The kernels' rule for float32 arithmetic (hyper_rules.h): a normal float32 number.
        float32 = np.finfo(np.float32)
        if not float(float32.tiny) <= value <= float(float32.max):
            raise ValueError(f"grad_scale must be between {float32.tiny} and {float32.max} (a normal float32) "
                             f"for float32 parameters, got {value}")
    return value


class Optimizer:
    """Common machinery; subclasses define the hyperparameters, the state and the kernel call."""

    # State entries created later than _init_state, when first needed (checkpoints accept them).
    _lazy_state: Tuple[str, ...] = ()

    def __init__(self, params: Iterable, defaults: Dict[str, Any]):
        self.defaults = dict(defaults)
        self.param_groups: List[Dict[str, Any]] = []
        self.state: Dict[int, Dict[str, Any]] = {}
        self.schedule_steps: List[int] = []  # per group: steps taken, the argument of a schedule lr
        if isinstance(params, np.ndarray):
            params = [params]
        params = list(params)
        if params and isinstance(params[0], dict):
            for group in params:
                self.add_param_group(group)
        else:
            self.add_param_group({"params": params})

    # ------------------------------------------------------------------ groups
    def add_param_group(self, group: Dict[str, Any]) -> None:
        """Adds a group of parameters with its own hyperparameters (defaults fill the rest)."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a param group must be a dict with a 'params' entry")
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, np.ndarray) else list(params)
        first = sum(len(g["params"]) for g in self.param_groups)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for j, p in enumerate(params):
            _check_param(p, f"params[{first + j}]")
            if id(p) in seen:
                raise ValueError(f"params[{first + j}] appears more than once in the optimizer")
            seen.add(id(p))
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} for {type(self).__name__}")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        self._check_group(self._effective(group, 0))
        self.param_groups.append(group)
        self.schedule_steps.append(0)

    def _effective(self, group: Dict[str, Any], schedule_step: int) -> Dict[str, Any]:
        """The group with a schedule lr replaced by its value at `schedule_step`."""
        lr = group["lr"]
        if not callable(lr):
            return group
        value = lr(schedule_step)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)  # NumPy scalars
            except (TypeError, ValueError):
                raise TypeError(f"the lr schedule returned {value!r} at step {schedule_step}, not a number") from None
        return dict(group, lr=float(value))

    def _check_group(self, group: Dict[str, Any]) -> None:
        """Checks a group's hyperparameters by running its kernel on empty arrays, one call per dtype
        among the group's params (the kernel's own checks, so they exist in one place: with a dtype
        they include the range of its arithmetic, which refuses eps=1e-50 for float32 params, say);
        on an empty list when the group has no params."""
        dtypes = {p.dtype for p in group["params"] if isinstance(p, np.ndarray) and p.dtype in _FLOAT_DTYPES}
        if not dtypes:
            self._update(group, [], [], [], self._check_key())
        for dtype in sorted(dtypes, key=str):
            probe, state = np.empty(0, dtype), {}
            self._init_state(state, probe, group)
            self._update(group, [probe], [np.empty(0, dtype)], [state], self._check_key())

    # ------------------------------------------------------------------ stepping
    def step(self, grads: Sequence[Optional[np.ndarray]], *, grad_scale: float = 1.0,
             skip_nonfinite: bool = False) -> bool:
        """One update of every parameter, in place. `grads` lists one gradient per parameter in
        the order of the groups (None skips that parameter, as a missing .grad does in torch).

        Everything is checked before anything changes: a refused step leaves the parameters, the
        state and the step counts as they were, even when it spans several groups or dtypes.

        grad_scale: the gradients are divided by it on the fly (loss scaling). skip_nonfinite: when
        any gradient / grad_scale holds a NaN or Inf, the whole step is skipped: no parameter, state
        or step count changes. Returns found_inf: True when the step was skipped for that reason,
        else False (always False without skip_nonfinite)."""
        if isinstance(grads, np.ndarray):
            grads = [grads]
        grads = list(grads)
        params = self._all_params()
        if len(grads) != len(params):
            raise ValueError(f"grads holds {len(grads)} arrays but the optimizer has {len(params)} parameters")
        self._check_grads(params, grads)
        self._check_no_shared_memory(params, grads)
        # Hyperparameters may have been edited since the last step; schedules are evaluated here.
        groups = [self._effective(g, k) for g, k in zip(self.param_groups, self.schedule_steps)]
        for group in groups:
            self._check_group(group)
        grad_scale = _check_grad_scale(grad_scale, params)
        if not isinstance(skip_nonfinite, (bool, np.bool_)):
            raise TypeError(f"skip_nonfinite must be a bool, got {type(skip_nonfinite).__name__}")
        # One pre-pass over every gradient of the step, before any of its kernel calls (there may be
        # several: one per group and dtype), so that a skipped step writes nothing at all.
        if skip_nonfinite and _found_nonfinite([g for g in grads if g is not None], grad_scale=grad_scale):
            return True

        index = 0
        for group in groups:
            buckets: Dict[Any, List[int]] = {}
            for i, p in enumerate(group["params"], start=index):
                if grads[i] is None:
                    continue
                state = self.state.setdefault(i, {})
                if not state:
                    self._init_state(state, p, group)
                key = (p.dtype.char, self._advance(state))
                buckets.setdefault(key, []).append(i)
            for (_, step_key), members in buckets.items():
                self._update(group, [params[i] for i in members], [grads[i] for i in members],
                             [self.state[i] for i in members], step_key, grad_scale=grad_scale)
            index += len(group["params"])
        self.schedule_steps = [k + 1 for k in self.schedule_steps]
        return False

    def _check_grads(self, params: List[np.ndarray], grads: List[Optional[np.ndarray]]) -> None:
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{i}] must be a numpy.ndarray or None, got {type(g).__name__}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{i}] has dtype {g.dtype} but params[{i}] has {p.dtype}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape} but params[{i}] has shape {p.shape}")
            if not g.flags.c_contiguous:
                raise ValueError(f"grads[{i}] is not C-contiguous")
            if not (p.flags.writeable and p.flags.c_contiguous):
                raise ValueError(f"params[{i}] is no longer a writeable C-contiguous array")

    def _check_no_shared_memory(self, params: List[np.ndarray], grads: List[Optional[np.ndarray]]) -> None:
        """The kernels refuse arrays that share memory, but one step may make several kernel calls
        (one per group and dtype), so the whole step is checked here first. All arrays are
        C-contiguous by now, so each occupies exactly [data, data + nbytes)."""
        spans = []
        for i, (p, g) in enumerate(zip(params, grads)):
            named = [(p, f"params[{i}]")]
            if g is not None:
                named.append((g, f"grads[{i}]"))
                named += [(a, f"state[{i}]['{k}']") for k, a in self.state.get(i, {}).items()
                          if isinstance(a, np.ndarray)]
            for array, name in named:
                if array.nbytes:
                    start = array.__array_interface__["data"][0]
                    spans.append((start, start + array.nbytes, name))
        check_disjoint(spans, "array")

    def _all_params(self) -> List[np.ndarray]:
        return [p for g in self.param_groups for p in g["params"]]

    def _param_at(self, index: int) -> np.ndarray:
        for group in self.param_groups:
            if index < len(group["params"]):
                return group["params"][index]
            index -= len(group["params"])
        raise IndexError(index)

    # ------------------------------------------------------------------ subclass hooks
    def _init_state(self, state: Dict[str, Any], param: np.ndarray, group: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _advance(self, state: Dict[str, Any]) -> Any:
        """Counts this step in `state`; returns what the kernel call needs to know of it (the step
        number), which also buckets parameters that can share one call."""
        state["step"] = state.get("step", 0) + 1
        return state["step"]

    def _check_key(self) -> Any:
        """A valid `_advance` result, used to validate hyperparameters without any parameter."""
        return 1

    def _update(self, group, params, grads, states, step_key, grad_scale=1.0) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> Dict[str, Any]:
        """A deep copy of the state and hyperparameters; parameters appear as their positions."""
        groups, index = [], 0
        for group in self.param_groups:
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                 for i, s in self.state.items()}
        return {"state": state, "param_groups": groups, "schedule_steps": list(self.schedule_steps)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a state_dict() of an optimizer over parameters of the same shapes and dtypes;
        training then continues bit-identically."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, the optimizer has "
                             f"{len(self.param_groups)}")
        for k, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"param group {k} has {len(saved['params'])} params in the "
                                 f"state_dict and {len(group['params'])} in the optimizer")
        # (a state_dict of an older fastopt, or one edited by hand, may lack the counts)
        schedule_steps = list(state_dict.get("schedule_steps", [0] * len(groups)))
        if len(schedule_steps) != len(groups) or any(not isinstance(k, int) or k < 0 for k in schedule_steps):
            raise ValueError(f"state_dict['schedule_steps'] must hold one count >= 0 per param group, "
                             f"got {schedule_steps!r}")
        # Map the saved positions onto ours, check every array, and only then replace anything.
        position = {old: new for saved, group_start in zip(groups, self._group_starts())
                    for new, old in enumerate(saved["params"], start=group_start)}
        new_state: Dict[int, Dict[str, Any]] = {}
        for old, saved_state in state_dict["state"].items():
            if old not in position:
                raise ValueError(f"state_dict has state for parameter {old}, which no group lists")
            i = position[old]
            p = self._param_at(i)
            restored = {}
            for key, value in saved_state.items():
                if isinstance(value, np.ndarray):
                    if value.shape != p.shape:
                        raise ValueError(f"state[{old}]['{key}'] has shape {value.shape} but "
                                         f"params[{i}] has shape {p.shape}")
                    value = np.array(value, dtype=p.dtype, order="C", copy=True)
                restored[key] = value
            new_state[i] = restored
        for saved, group in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = copy.deepcopy(value)
        self.state = new_state
        self.schedule_steps = schedule_steps

    def save(self, path) -> None:
        """Writes the state and hyperparameters to the .npz file `path` (fastopt.optim.checkpoint).
        The parameters are not included: save them yourself to resume a run."""
        save_checkpoint(self, path)

    def load(self, path) -> None:
        """Restores save(path): a resumed run is bit-identical to an uninterrupted one. A truncated,
        corrupted or mismatched file raises ValueError and leaves this optimizer unchanged."""
        load_checkpoint(self, path)

    def _group_starts(self) -> List[int]:
        starts, index = [], 0
        for group in self.param_groups:
            starts.append(index)
            index += len(group["params"])
        return starts

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for k, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
