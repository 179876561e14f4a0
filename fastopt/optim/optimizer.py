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

from fastopt import _hyper
from fastopt._core import _found_nonfinite
from fastopt._overlap import check_disjoint
from fastopt._quantized import QuantizedState
from fastopt.optim._state_dtype import is_bfloat16
from fastopt.optim.checkpoint import load_checkpoint, save_checkpoint

_FLOAT32 = np.dtype(np.float32)
_FLOAT_DTYPES = (_FLOAT32, np.dtype(np.float64))


def _foreign_hint(value: Any, owner: str) -> str:
    """For a torch tensor where a NumPy array belongs: where the optimizer that takes it is."""
    if type(value).__module__.split(".")[0] == "torch":
        return (f" (fastopt.optim takes NumPy arrays; for torch tensors use fastopt.torch.{owner}, the twin of "
                f"torch.optim.{owner}, which updates them in place)")
    return ""


def is_half(dtype: Any) -> bool:
    """float16 (NumPy's) or bfloat16 (ml_dtypes'): the 16-bit params whose updates run in float32."""
    return dtype == np.float16 or is_bfloat16(dtype)


def _half_name(dtype: np.dtype) -> str:
    return "bfloat16" if is_bfloat16(dtype) else dtype.name


def _check_param(p: Any, where: str, owner: str = "Adam", half: Tuple[str, ...] = ()) -> None:
    """p as a parameter array; the 16-bit dtypes named in `half` ("float16", "bfloat16") allowed where the
    optimizer's kernels take them."""
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{where} must be a numpy.ndarray, got {type(p).__name__}{_foreign_hint(p, owner)}")
    if isinstance(p, np.ma.MaskedArray):
        raise TypeError(f"{where} is a numpy masked array: its masked entries would be updated too (pass a "
                        "plain array)")
    if p.dtype not in _FLOAT_DTYPES and not (is_half(p.dtype) and _half_name(p.dtype) in half):
        taken = "".join(f", {name}" for name in half)
        hint = (" (float16 and bfloat16 params: fastopt.optim.SGD, Adagrad, RMSprop, Adam and AdamW; bfloat16 "
                "params: also NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop and Lion)" if is_half(p.dtype) else "")
        raise TypeError(f"{where} has dtype {p.dtype}; fastopt.optim.{owner} optimizes float32{taken} or float64 "
                        f"arrays{hint}")
    if not p.flags.c_contiguous:
        raise ValueError(f"{where} is not C-contiguous")
    if not p.flags.writeable:
        raise ValueError(f"{where} is read-only")


def _check_grad_scale(grad_scale: Any, params: List[np.ndarray]) -> float:
    """grad_scale as a float: finite and > 0, also in float32 when a parameter is float32."""
    if grad_scale == 1.0 and type(grad_scale) is float:  # the default: valid in every dtype
        return 1.0
    value = _hyper.real(grad_scale, "grad_scale")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"grad_scale must be > 0, got {value}")
    if any(p.dtype == np.float32 or is_half(p.dtype) for p in params):  # (16-bit params: float32 arithmetic)
        # The kernels' rule for float32 arithmetic (hyper_rules.h): a normal float32 number.
        float32 = np.finfo(np.float32)
        if not float(float32.tiny) <= value <= float(float32.max):
            raise ValueError(f"grad_scale must be between {float32.tiny} and {float32.max} (a normal float32) "
                             f"for float32 arithmetic (float32, float16 and bfloat16 parameters), got {value}")
    return value


def _lr_or_schedule(value: Any, name: str) -> None:
    """A group's lr: a real number, or a schedule (any callable of the step)."""
    if not callable(value):
        _hyper.real(value, name)


class Optimizer:
    """Common machinery; subclasses define the hyperparameters, the state and the kernel call."""

    # State entries: those every parameter's state holds once it exists (_init_state makes them) ...
    _state_keys: Tuple[str, ...] = ()
    # ... those created later, when first needed (checkpoints accept them) ...
    _lazy_state: Tuple[str, ...] = ()
    # ... and those of them that may be None (SGD's momentum buffer before its first momentum step).
    _nullable_state: Tuple[str, ...] = ()
    # ... and numbers kept beside the arrays (NAdam's mu_product, ASGD's eta and mu).
    _scalar_state: Tuple[str, ...] = ()
    # The 16-bit params the kernels take (with grads of the same dtype; the update in float32, the state
    # float32 unless the optimizer keeps compact state): "float16" (NumPy's), "bfloat16" (ml_dtypes').
    _half_params: Tuple[str, ...] = ()

    def __init__(self, params: Iterable, defaults: Dict[str, Any]):
        # The constructor's own arguments are checked first, so their errors name just the argument.
        self._check_group(self._effective(dict(defaults), 0))
        self.defaults = dict(defaults)
        self.param_groups: List[Dict[str, Any]] = []
        self.state: Dict[int, Dict[str, Any]] = {}
        self.schedule_steps: List[int] = []  # per group: steps taken, the argument of a schedule lr
        if isinstance(params, np.ndarray):
            params = [params]
        elif type(params).__module__.split(".")[0] == "torch" and not isinstance(params, (list, tuple)):
            # (a tensor or a module: list() would iterate its rows or fail without saying why)
            raise TypeError(f"params must be NumPy arrays, got {type(params).__name__}"
                            f"{_foreign_hint(params, type(self).__name__)}")
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"params must be an array, a list of arrays or a list of param group dicts, got "
                            f"{type(params).__name__}") from None
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
        k = len(self.param_groups)
        group = dict(group)
        params = group["params"]
        try:
            params = [params] if isinstance(params, np.ndarray) else list(params)
        except TypeError:
            raise TypeError(f"param group {k}: params must be an array or a list of arrays, got "
                            f"{type(params).__name__}") from None
        first = sum(len(g["params"]) for g in self.param_groups)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for j, p in enumerate(params):
            _check_param(p, f"params[{first + j}]", type(self).__name__, self._half_params)
            self._check_param_dtype(p, f"params[{first + j}]")
            if id(p) in seen:
                raise ValueError(f"params[{first + j}] appears more than once in the optimizer")
            seen.add(id(p))
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"param group {k}: unknown hyperparameter(s) {sorted(unknown, key=repr)} for "
                             f"{type(self).__name__}")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        with _hyper.named(f"param group {k}"):
            self._check_group(self._effective(group, 0))
        self.param_groups.append(group)
        self.schedule_steps.append(0)

    def _effective(self, group: Dict[str, Any], schedule_step: int) -> Dict[str, Any]:
        """The group with a schedule lr replaced by its value at `schedule_step`."""
        lr = group["lr"]
        if not callable(lr):
            return group
        value = lr(schedule_step)
        try:
            value = _hyper.real(value, "lr")
        except TypeError:
            raise TypeError(f"the lr schedule returned {_hyper.describe(value)} at step {schedule_step}, not a "
                            "number") from None
        return dict(group, lr=value)

    def _check_group(self, group: Dict[str, Any]) -> None:
        """Checks a group's hyperparameters: the kind of each here (a real number, a bool ...), each
        naming its hyperparameter, then their values by running the kernel on empty arrays, one call per
        dtype among the group's params (the kernel's own rules, so they exist in one place: with a dtype
        they include the range of its arithmetic, which refuses eps=1e-50 for float32 params, say); on an
        empty list when the group has no params."""
        _hyper.check_hyperparameters(group, lr=_lr_or_schedule)
        dtypes = {p.dtype for p in group.get("params", ())
                  if isinstance(p, np.ndarray) and (p.dtype in _FLOAT_DTYPES or is_half(p.dtype))}
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
        try:
            grads = list(grads)
        except TypeError:
            raise TypeError(f"grads must be a list of arrays (None for a parameter without one), got "
                            f"{type(grads).__name__}") from None
        params = self._all_params()
        if len(grads) != len(params):
            raise ValueError(f"grads holds {len(grads)} arrays but the optimizer has {len(params)} parameters")
        # The parameters too: param_groups is the caller's to edit (an array appended to a group's list
        # is checked here, under its index in the whole optimizer).
        for i, p in enumerate(params):
            _check_param(p, f"params[{i}]", type(self).__name__, self._half_params)
            self._check_param_dtype(p, f"params[{i}]")
        self._check_grads(params, grads)
        # Hyperparameters may have been edited since the last step; schedules are evaluated here.
        groups = []
        for k, (group, count) in enumerate(zip(self.param_groups, self.schedule_steps)):
            try:
                effective = self._effective(group, count)
                self._check_group(effective)
            except (TypeError, ValueError) as error:
                raise _hyper.prefixed(error, f"param group {k}")
            groups.append(effective)
        grad_scale = _check_grad_scale(grad_scale, params)
        if not isinstance(skip_nonfinite, (bool, np.bool_)):
            raise TypeError(f"skip_nonfinite must be a bool, got {type(skip_nonfinite).__name__}")
        calls = self._plan(groups, grads)
        self._check_no_shared_memory(params, grads)
        if len(calls) > 1:
            self._rehearse(calls, params, grad_scale)
        # One pre-pass over every gradient of the step, before any of its kernel calls (there may be
        # several: one per group and dtype), so that a skipped step writes nothing at all.
        if skip_nonfinite and _found_nonfinite([g for g in grads if g is not None], grad_scale=grad_scale):
            return True

        for k, group, key, members, states in calls:
            self._update(group, [params[i] for i in members], [grads[i] for i in members], states, key,
                         grad_scale=grad_scale)
            # The update happened: count it and keep the states (new ones, and entries made by _update).
            for i, state in zip(members, states):
                self._count(state, key)
                if self.state.get(i):
                    self.state[i].update(state)
                else:
                    self.state[i] = state
        self.schedule_steps = [k + 1 for k in self.schedule_steps]
        return False

    def _plan(self, groups: List[Dict[str, Any]], grads: List[Optional[np.ndarray]]) -> list:
        """Checks the state of every parameter that has a gradient and groups those parameters into
        kernel calls: [(group index, group, step key, [param index ...], [state ...])], in group order.
        The states are copies (fresh ones for parameters without state): nothing is counted or stored
        before the call that uses them succeeded."""
        calls = []
        index = 0
        for k, group in enumerate(groups):
            buckets: Dict[Any, Tuple[List[int], List[Dict[str, Any]]]] = {}
            for i, p in enumerate(group["params"], start=index):
                if grads[i] is None:
                    continue
                state = self.state.get(i)
                if state:
                    self._check_state(i, p, state)
                    state = dict(state)
                else:
                    state = {}
                    self._init_state(state, p, group)
                key = self._next_key(state)
                members, states = buckets.setdefault((p.dtype.char, key), ([], []))
                members.append(i)
                states.append(state)
            calls += [(k, group, key, members, states) for (_, key), (members, states) in buckets.items()]
            index += len(group["params"])
        return calls

    def _rehearse(self, calls: list, params: List[np.ndarray], grad_scale: float) -> None:
        """Runs each kernel call of a step of several calls on empty stand-ins of its dtype first: the
        kernels' rules that depend on the dtype (a hyperparameter or grad_scale out of float32's
        range) refuse here, before the first call writes anything."""
        for k, group, key, members, _ in calls:
            dtype = params[members[0]].dtype
            stand_in: Dict[str, Any] = {}
            self._init_state(stand_in, np.empty(0, dtype), group)
            with _hyper.named(f"param group {k}"):
                self._update(group, [np.empty(0, dtype)], [np.empty(0, dtype)], [stand_in], key,
                             grad_scale=grad_scale)

    def _check_grads(self, params: List[np.ndarray], grads: List[Optional[np.ndarray]]) -> None:
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{i}] must be a numpy.ndarray or None, got {type(g).__name__}"
                                f"{_foreign_hint(g, type(self).__name__)}")
            if isinstance(g, np.ma.MaskedArray):
                raise TypeError(f"grads[{i}] is a numpy masked array; pass a plain array")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{i}] has dtype {g.dtype} but params[{i}] has {p.dtype}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape} but params[{i}] has shape {p.shape}")
            if not g.flags.c_contiguous:
                raise ValueError(f"grads[{i}] is not C-contiguous")

    def _check_state(self, i: int, p: np.ndarray, state: Any) -> None:
        """Raises TypeError / ValueError naming the entry unless `state` (params[i]'s) is one this
        optimizer's kernels can continue from: its entries (no others), arrays of the parameter's dtype
        and shape, writeable and C-contiguous, and a step count the kernels can advance.
        (Run for every parameter of every step: the common case makes no call and builds no message.)"""
        if type(state) is not dict:
            if not isinstance(state, dict):
                raise TypeError(f"state[{i}] must be a dict, got {type(state).__name__}")
        for key in self._state_keys:
            if key not in state:
                missing = [key for key in self._state_keys if key not in state]
                raise ValueError(f"state of params[{i}] lacks {missing}: {type(self).__name__} keeps "
                                 f"{list(self._state_keys + self._lazy_state)}")
        dtype, shape = self._state_dtype(p), p.shape
        for key, value in state.items():
            if type(value) is np.ndarray:
                if value.dtype == dtype and value.shape == shape and value.flags.c_contiguous \
                        and value.flags.writeable and (key in self._state_keys or key in self._lazy_state):
                    continue
            elif key == "step" and type(value) is int and 0 <= value <= _hyper.MAX_STEP_COUNT:
                continue
            self._check_entry(i, p, key, value)

    def _check_entry(self, i: int, p: np.ndarray, key: Any, value: Any) -> None:
        """_check_state's refusal of one entry (which the fast path did not accept), or nothing."""
        known = self._state_keys + self._lazy_state
        if key not in known:
            raise ValueError(f"state of params[{i}] has an unknown entry {key!r}: {type(self).__name__} "
                             f"keeps {list(known)}")
        where = f"state[{i}][{key!r}]"
        if key == "step":
            _hyper.step_count(value, where)
        elif value is None and key in self._nullable_state:
            return
        elif isinstance(value, QuantizedState):
            self._check_quantized(where, p, key, value)
        elif key in self._scalar_state:
            if not isinstance(value, (float, np.floating)) or not np.isfinite(value):
                raise TypeError(f"{where} must be a finite float (the optimizer's {key}), got {value!r}")
        elif not isinstance(value, np.ndarray) or isinstance(value, np.ma.MaskedArray):
            raise TypeError(f"{where} must be a numpy.ndarray, got {type(value).__name__}")
        elif value.dtype != self._state_dtype(p) or value.shape != p.shape:
            want = "" if self._state_dtype(p) == p.dtype else f" (its state: {self._state_dtype(p)})"
            raise ValueError(f"{where} is {value.dtype} {value.shape}, but params[{i}] is {p.dtype} {p.shape}{want}")
        elif not (value.flags.c_contiguous and value.flags.writeable):
            raise ValueError(f"{where} is not a writeable C-contiguous array")

    def _check_quantized(self, where: str, p: np.ndarray, key: str, value: Any) -> None:
        """A fastopt.QuantizedState entry: only optimizers with 8-bit state (state_dtype="int8": Adam, AdamW, SGD,
        Adagrad, RMSprop and the element-wise rules' classes, through _state_dtype.EightBitState) keep them."""
        raise TypeError(f"{where} is a fastopt.QuantizedState; {type(self).__name__} keeps no 8-bit state")

    def _check_no_shared_memory(self, params: List[np.ndarray], grads: List[Optional[np.ndarray]]) -> None:
        """The kernels refuse arrays that share memory (but for gradients), and one step may make several kernel calls
        (one per group and dtype), so the whole step is checked here first. All arrays are
        C-contiguous by now, so each occupies exactly [data, data + nbytes)."""
        spans = []
        for i, (p, g) in enumerate(zip(params, grads)):
            named = [(p, f"params[{i}]", True)]
            if g is not None:
                named.append((g, f"grads[{i}]", False))
                for k, a in (self.state.get(i) or {}).items():
                    if isinstance(a, np.ndarray):
                        named.append((a, f"state[{i}]['{k}']", True))
                    elif isinstance(a, QuantizedState):
                        named += [(a.codes, f"state[{i}]['{k}'].codes", True),
                                  (a.absmax, f"state[{i}]['{k}'].absmax", True)]
            for array, name, written in named:
                if array.nbytes:
                    start = array.__array_interface__["data"][0]
                    spans.append((start, start + array.nbytes, name, written))
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

    def _next_key(self, state: Dict[str, Any]) -> Any:
        """What the kernel call of this step needs to know of a (checked) state: the number of this
        update. It also buckets parameters that can share one call. Changes nothing."""
        return int(state["step"]) + 1

    def _count(self, state: Dict[str, Any], key: Any) -> None:
        """Records in `state` the update `key` that just happened."""
        state["step"] = key

    def _check_key(self) -> Any:
        """A valid `_next_key` result, used to validate hyperparameters without any parameter."""
        return 1

    def _update(self, group, params, grads, states, step_key, grad_scale=1.0) -> None:
        raise NotImplementedError

    def _check_param_dtype(self, p: np.ndarray, where: str) -> None:
        """ValueError when the optimizer's options refuse params p's dtype (state_dtype=)."""

    def _state_dtype(self, p: np.ndarray) -> np.dtype:
        """The dtype of p's state arrays: p's own, float32 for 16-bit params (their update runs in float32,
        and float16 state would lose small second moments to underflow), unless the optimizer keeps compact
        state (state_dtype=)."""
        return _FLOAT32 if is_half(p.dtype) else p.dtype

    def _state_shape(self, p: np.ndarray, key: str) -> tuple:
        """The shape of state entry `key` of parameter p: p's own (Adafactor's factored state differs)."""
        return p.shape

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> Dict[str, Any]:
        """A deep copy of the state and hyperparameters; parameters appear as their positions."""
        groups, index = [], 0
        for group in self.param_groups:
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        state = {i: {k: (v.copy() if isinstance(v, (np.ndarray, QuantizedState)) else v) for k, v in s.items()}
                 for i, s in self.state.items()}
        return {"state": state, "param_groups": groups, "schedule_steps": list(self.schedule_steps)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a state_dict() of an optimizer of the same class over parameters of the same shapes
        and dtypes; training then continues bit-identically. Everything is checked first (the groups,
        the hyperparameters' names and values, every state entry and step count); a state_dict that does
        not fit raises ValueError saying what is wrong, and the optimizer stays as it was. A group's
        hyperparameter the state_dict lacks keeps the optimizer's value."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict (from state_dict()), got {type(state_dict).__name__}")
        name = type(self).__name__
        groups = state_dict.get("param_groups")
        saved_state = state_dict.get("state")
        if not (isinstance(groups, (list, tuple)) and all(isinstance(g, dict) for g in groups)):
            raise ValueError("state_dict['param_groups'] must be a list of dicts")
        if not isinstance(saved_state, dict):
            raise ValueError("state_dict['state'] must be a dict")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, the optimizer has "
                             f"{len(self.param_groups)}")
        for k, (saved, group) in enumerate(zip(groups, self.param_groups)):
            ids = saved.get("params")
            if not isinstance(ids, (list, tuple)):
                raise ValueError(f"state_dict param group {k} has no 'params' list")
            if len(ids) != len(group["params"]):
                raise ValueError(f"param group {k} has {len(ids)} params in the "
                                 f"state_dict and {len(group['params'])} in the optimizer")
        # Map the saved positions onto ours.
        try:
            position = {old: new for saved, group_start in zip(groups, self._group_starts())
                        for new, old in enumerate(saved["params"], start=group_start)}
        except TypeError as error:  # an unhashable entry
            raise ValueError(f"state_dict's params lists hold something other than parameter ids: {error}") from None
        if len(position) != len(self._all_params()):
            raise ValueError("state_dict lists a parameter id in more than one place")
        # (a state_dict of an older fastopt, or one edited by hand, may lack the counts)
        schedule_steps = state_dict.get("schedule_steps", [0] * len(groups))
        if not isinstance(schedule_steps, (list, tuple)) or len(schedule_steps) != len(groups):
            raise ValueError(f"state_dict['schedule_steps'] must hold one count >= 0 per param group, "
                             f"got {_hyper.describe(schedule_steps)}")
        with _hyper.named("state_dict", as_value_error=True):
            schedule_steps = [_hyper.step_count(count, f"schedule_steps[{k}]")
                              for k, count in enumerate(schedule_steps)]
        # The hyperparameters: names this optimizer has, values its kernels accept.
        new_groups = []
        for k, (saved, group) in enumerate(zip(groups, self.param_groups)):
            hyper = {key: copy.deepcopy(value) for key, value in saved.items() if key != "params"}
            unknown = set(hyper) - set(self.defaults)
            if unknown:
                raise ValueError(f"state_dict param group {k} has hyperparameter(s) {sorted(unknown, key=repr)} "
                                 f"that {name} does not take (is it the state_dict of another optimizer?)")
            with _hyper.named(f"state_dict param group {k}", as_value_error=True):
                self._check_group(self._effective(dict(group, **hyper), schedule_steps[k]))
            new_groups.append(hyper)
        # The state: every entry this optimizer keeps, of its parameter's shape, cast to its dtype.
        new_state: Dict[int, Dict[str, Any]] = {}
        for old, saved in saved_state.items():
            if old not in position:
                raise ValueError(f"state_dict has state for parameter {old!r}, which no group lists")
            i = position[old]
            p = self._param_at(i)
            if not isinstance(saved, dict):
                raise ValueError(f"state_dict['state'][{old!r}] must be a dict, got {type(saved).__name__}")
            restored = {}
            for key, value in saved.items():
                if isinstance(value, np.ndarray):
                    if (value.dtype.kind != "f" and value.dtype != self._state_dtype(p)) \
                            or isinstance(value, np.ma.MaskedArray):
                        raise ValueError(f"state[{old}][{key!r}] is a {type(value).__name__} of dtype {value.dtype}; "
                                         "optimizer state is a plain floating-point array")
                    if value.shape != self._state_shape(p, key):
                        raise ValueError(f"state[{old}][{key!r}] has shape {value.shape} but "
                                         f"params[{i}] of shape {p.shape} needs {self._state_shape(p, key)}")
                    value = np.array(value, dtype=self._state_dtype(p), order="C", copy=True)
                elif isinstance(value, QuantizedState):
                    value = value.copy()
                restored[key] = value
            if restored:
                with _hyper.named("state_dict", as_value_error=True):
                    self._check_state(i, p, restored)
            new_state[i] = restored
        # Everything checked: now replace.
        for hyper, group in zip(new_groups, self.param_groups):
            group.update(hyper)
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
