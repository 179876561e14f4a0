"""The common step of the torch twins: a torch.optim.Optimizer whose update is one fused fastopt kernel call
per param group (per device, dtype and step number within a group, when those differ), on CPU or CUDA tensors.

torch.optim.Optimizer itself provides param_groups, add_param_group, zero_grad, state_dict/load_state_dict
and the step hooks; the subclasses keep state in torch's exact format (tensor keys and a 0-d `step` tensor),
so a state_dict moves between a twin and its torch.optim original in both directions. The differences:
float16/bfloat16 parameters get float32 state (fastopt's kernels require it; torch's fused optimizers keep
the parameter's dtype), and load_state_dict gives them float32 state whatever was saved; on CUDA, without
capturable, `step` stays a CPU tensor even under fused=True (torch would put it on the device).

A step checks every parameter, gradient, hyperparameter, state entry and step count of every group before any
kernel runs (a step of several calls also runs each CPU call on empty stand-ins of its dtype first), works on
copies of the states and counts a step only after its call, so a refused step leaves the parameters, the state
and the step counts exactly as they were. load_state_dict refuses, before anything is replaced, what would
load but could not step (another optimizer's state, a step count out of range, a bad hyperparameter).

capturable=True (Adam, AdamW, RMSprop, as torch): `step` is a tensor on the parameter's device, advanced there
(`step += 1`, a torch op on the current stream) and read there by the kernel, and a CUDA tensor `lr` is read
on the device too, so that torch.cuda.graph can capture `opt.step()` and its replays count steps and follow
a schedule that writes into the lr tensor. The host never reads those counts; it groups parameters into
kernel calls by tokens that are shared exactly by parameters whose device counts are equal (StepTokens).
A step being captured in a CUDA graph must be capturable in every group (torch's capture health check).

DTensor parameters (FSDP2's fully_shard): a param group that holds one is planned by _plan_shards, which
checks that each parameter, its gradient and its state are laid out alike and checks their local shards,
and the kernels update those shards (see _dtensor); plain groups pay one check of their types per step.

Under torch.amp.GradScaler on CUDA, the loss scale reaches the kernels as a device tensor (never read on
the host); so does found_inf where every call's step counts live on the device (capturable), and the step
then never waits for the device. Elsewhere found_inf is read on the host once per step (see _amp_scaling).
"""

from __future__ import annotations

import inspect
import math
from itertools import chain
from typing import Any, Dict, Hashable, List, Tuple

import torch

from fastopt import _hyper
from fastopt._overlap import check_disjoint
from fastopt.torch import _arrays, _compile, _dtensor
from fastopt.torch._step_counts import StepOutOfRange, StepTokens, device_steps, is_device_key, step_dtype
from fastopt.torch._step_plan import PlannedStates, StepPlan
from fastopt.torch._torch_wording import torch_wording


def scalar(value: Any) -> float:
    """A hyperparameter (checked by check_real) as a Python float (torch allows 1-element tensors for lr
    and betas)."""
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def check_real(value: Any, name: str) -> None:
    """A real hyperparameter of a twin: a real number, or (as torch allows for lr and betas) a one-element
    real tensor. TypeError / ValueError naming it otherwise (a string, a bool, a complex number...)."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number or a one-element real tensor, got a tensor of "
                            f"dtype {value.dtype}")
        if value.numel() != 1:
            raise ValueError(f"{name} must be a real number or a one-element tensor, got a tensor of "
                             f"{value.numel()} elements")
        return
    _hyper.real(value, name)


class _Float32State:
    """A loaded state tensor of a float16/bfloat16 parameter, kept away from torch's load_state_dict, which
    would cast it to the parameter's dtype (rounding float32 state to half); __setstate__ unwraps it to
    float32. Not a tensor, dict or iterable: torch's loader passes it through as it is."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class FusedOptimizer(torch.optim.Optimizer):
    """Base of the twins. Subclasses define:

    - `_new_state(p, group)`: the state of a parameter's first step (torch's keys, fresh tensors);
    - `_bucket_key(p, state, group)`: what a kernel call must share besides device and dtype (the step);
    - `_prepare(group, params, states)`: add state tensors an option needs from this step on (amsgrad...);
    - `_run(group, params, grads, states, step, grad_scale, found_inf)`: the kernel call (arrays for
      params/grads, state dicts; `step` a number, or a device tensor for device step counts; grad_scale a
      number or GradScaler's device tensor, found_inf None or GradScaler's device tensor);
    - `_advance(states)`: count the step in the state (default: `step += 1`).
    """

    # State entries every parameter's state holds once it exists, and those made later when needed;
    # a state_dict whose state lacks the first or holds others is refused at load.
    _state_keys: Tuple[str, ...] = ()
    _lazy_state: Tuple[str, ...] = ()
    _nullable_state: Tuple[str, ...] = ()  # entries that may be None (SGD's momentum buffer)
    _scalar_state: Tuple[str, ...] = ()  # one-element tensors beside the step (NAdam's mu_product, ASGD's eta, mu)
    _cpu_half = False  # whether the kernels take float16/bfloat16 params on the CPU (the classic four)
    _shared_state: Tuple[str, ...] = ()  # read-only tensors parameters may share (the int8 twins' qmap1/qmap2)

    # The repeated step (fastopt/torch/_step_plan.py): whether a plan may step this optimizer, whether its
    # calls' key is the step number (else a constant the plan keeps), and the options a scheduler may
    # change without changing which state exists (the plan checks them again; any other change re-plans).
    _step_plan_ok = True
    _step_keyed = True
    _free_hyper: Tuple[str, ...] = ("lr", "betas", "eps", "weight_decay")

    def _plannable(self, group: Dict[str, Any]) -> bool:
        """Whether the repeated step and torch.compile's traced step may take this group (Adam/AdamW with
        compact state_dtype: no, the checked full step takes it)."""
        return True

    def __init__(self, params, defaults: Dict[str, Any]):
        # The constructor's arguments first, so that a refusal names just the argument ("lr", not
        # "param group 0: lr"): their kinds here, their values by the kernel on an empty list.
        with torch_wording(defaults, self._torch_phrases):
            _hyper.check_hyperparameters(defaults, element=check_real)
            self._run(dict(defaults, params=[]), [], [], [], self._check_key())
        self._check_defaults(defaults)
        super().__init__(params, defaults)

    def _check_defaults(self, defaults: Dict[str, Any]) -> None:
        """The constructor's rules across its arguments, once each has passed its own checks (Adam's betas)."""

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        super().add_param_group(param_group)  # (torch's checks, then the group appended with the defaults)
        self.__dict__["_step_plan"] = None
        group = self.param_groups[-1]
        # Check the options and hyperparameters now, as torch does in its constructors: the kernel
        # validates them itself when called on an empty list, so the rules live in one place. A refused
        # group is taken out again: the optimizer is left as it was, as by torch's own refusals.
        k = len(self.param_groups) - 1
        try:
            with torch_wording(group, self._torch_phrases):
                self._check_options(group, k)
                with _hyper.named(f"param group {k}"):
                    self._check_hyper(group, [p.dtype for p in group["params"]])
        except BaseException:
            self.param_groups.pop()
            raise

    @property
    def _step_tokens(self) -> StepTokens:
        tokens = self.__dict__.get("_tokens")
        if tokens is None:  # (not pickled with the state: rebuilt by __setstate__ from the counts)
            tokens = self.__dict__["_tokens"] = StepTokens()
        return tokens

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # load_state_dict and unpickling come through here: fill keys an older state_dict lacks, turn a
        # numeric step into torch's 0-d tensor where the group keeps it, and give half parameters float32 state.
        super().__setstate__(state)
        self.__dict__.pop("_tokens", None)
        self.__dict__["_step_plan"] = None
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state:
                    self._normalise_state(p, p_state, group)

    def _normalise_state(self, p: torch.Tensor, p_state: Dict[str, Any], group: Dict[str, Any]) -> None:
        half = p.dtype in _arrays.HALF_DTYPES
        for key, value in p_state.items():
            if isinstance(value, _Float32State):
                p_state[key] = value.tensor.to(device=p.device, dtype=torch.float32)
            elif half and key != "step" and torch.is_tensor(value) and value.is_floating_point() \
                    and value.dtype != torch.float32:
                p_state[key] = value.to(device=p.device, dtype=torch.float32)
        if "step" not in p_state:
            return
        step = p_state["step"]
        if not torch.is_tensor(step):
            step = torch.tensor(float(step), dtype=step_dtype(group))
        elif not step.is_floating_point():  # (an integer count: the twin counts in floats, as torch)
            step = step.to(dtype=step_dtype(group))
        if device_steps(group, p):
            step = step.to(device=p.device)
        elif step.device.type != "cpu":
            step = step.to(device="cpu")  # a fused/capturable torch state: the twin counts on the host
        p_state["step"] = step
        self._step_tokens.loaded(p, step)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch.optim.Optimizer.load_state_dict: torch's checks, hooks and casts (state to each parameter's
        device and, for float32/float64 parameters, dtype), except that the state of a float16/bfloat16
        parameter becomes float32, whatever dtype it was saved in (never rounded through the half dtype).
        Before anything is replaced, the state_dict is checked as a step would use it (after the user's
        pre-hooks): hyperparameters of the right kinds and values, the state entries this optimizer keeps
        and step counts in range; a state_dict that does not fit raises ValueError saying what is wrong
        and the optimizer stays as it was (torch would accept it and fail at the next step)."""
        register = getattr(self, "register_load_state_dict_pre_hook", None)
        if register is None:  # torch < 2.1: no hooks to run after
            return super().load_state_dict(self._prepare_load(self, state_dict))
        handle = register(type(self)._prepare_load)  # appended: runs after the user's hooks
        try:
            return super().load_state_dict(state_dict)
        finally:
            handle.remove()

    @staticmethod
    def _prepare_load(self: "FusedOptimizer", state_dict: Dict[str, Any]) -> Dict[str, Any]:
        self._check_loadable(state_dict)
        if any(p.dtype in _arrays.HALF_DTYPES for g in self.param_groups for p in g["params"]):
            return self._hold_float32_state(self, state_dict)
        return state_dict

    def _check_loadable(self, state_dict: Any) -> None:
        """Raises ValueError when `state_dict` would load (torch checks only its layout) but leave this
        optimizer unable to step. A layout torch refuses is left to torch's own message."""
        if not isinstance(state_dict, dict):
            return
        groups, saved_state = state_dict.get("param_groups"), state_dict.get("state")
        if not (isinstance(groups, (list, tuple)) and isinstance(saved_state, dict)
                and len(groups) == len(self.param_groups)
                and all(isinstance(g, dict) and isinstance(g.get("params"), (list, tuple))
                        and len(g["params"]) == len(ours["params"]) for g, ours in zip(groups, self.param_groups))):
            return
        name = type(self).__name__
        for k, (saved, ours) in enumerate(zip(groups, self.param_groups)):
            group = {**self.defaults, **saved, "params": ours["params"]}
            try:
                self._check_options(group, k)
                self._run(group, [], [], [], self._check_key())
            except (TypeError, ValueError) as error:
                raise ValueError(f"state_dict: {error}") from error
        index = {}
        for g, ours in zip(groups, self.param_groups):
            for old, p in zip(g["params"], ours["params"]):
                try:
                    index[old] = (len(index), p)
                except TypeError:  # an unhashable id: torch's message then
                    return
        known = self._state_keys + self._lazy_state
        dtensors = _dtensor.dtensor_type() is not None  # (else neither the state nor the parameters hold any)
        for old, state in saved_state.items():
            i, p = index.get(old, (None, None)) if _hashable(old) else (None, None)
            if p is None or not isinstance(state, dict) or not state:
                continue
            missing = [key for key in self._state_keys if key not in state]
            unknown = [key for key in state if key not in known]
            if missing or unknown:
                fault = f"lacks {missing}" if missing else f"has entries {unknown} that {name} does not keep"
                raise ValueError(f"state_dict: the state of params[{i}] {fault}: {name} keeps {list(known)} (is "
                                 "it the state_dict of another optimizer?)")
            for key, value in state.items():
                where = f"state_dict: state[{i}]['{key}']"
                if key == "step":
                    if torch.is_tensor(value):
                        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
                            raise ValueError(f"{where} is a tensor of shape {tuple(value.shape)} and dtype "
                                             f"{value.dtype}, not a step count")
                        value = value.item()
                    try:
                        _hyper.float_step_count(_hyper.real(value, where), where)
                    except TypeError as error:
                        raise ValueError(str(error)) from None
                elif value is None and key in self._nullable_state:
                    continue
                elif key in self._scalar_state:  # (a number torch keeps per parameter: one element)
                    if torch.is_tensor(value):
                        if value.numel() != 1 or not value.is_floating_point():
                            raise ValueError(f"{where} is a tensor of shape {tuple(value.shape)} and dtype "
                                             f"{value.dtype}, not one floating-point number")
                        value = value.item()
                    try:
                        if not math.isfinite(_hyper.real(value, where)):
                            raise ValueError(f"{where} is {value}, not a finite number")
                    except TypeError as error:
                        raise ValueError(str(error)) from None
                elif not torch.is_tensor(value):
                    raise ValueError(f"{where} is a {type(value).__name__}, not a tensor")
                elif value.shape != p.shape:
                    raise ValueError(f"{where} has shape {tuple(value.shape)} but its parameter has "
                                     f"{tuple(p.shape)}")
                elif not (value.is_floating_point() or (value.is_complex() and p.is_complex())):
                    raise ValueError(f"{where} has dtype {value.dtype}, not a floating-point dtype")
                elif dtensors:  # a DTensor parameter's state must be DTensors laid out as it is (and only then)
                    try:
                        _dtensor.check_alike(value, where, p, f"params[{i}]")
                    except (TypeError, ValueError) as error:
                        raise ValueError(f"{error} (torch.distributed.checkpoint.state_dict's "
                                         "set_optimizer_state_dict loads a full state_dict into DTensors)") from None

    @staticmethod
    def _hold_float32_state(self: "FusedOptimizer", state_dict: Dict[str, Any]) -> Dict[str, Any]:
        """The state_dict with the floating state tensors of half parameters wrapped in _Float32State
        (torch's parameter mapping: saved ids and the optimizer's parameters, in group order)."""
        params = dict(zip(chain.from_iterable(g["params"] for g in state_dict["param_groups"]),
                          chain.from_iterable(g["params"] for g in self.param_groups)))
        held = {}
        for k, value in state_dict["state"].items():
            p = params.get(k)
            if p is not None and p.dtype in _arrays.HALF_DTYPES and isinstance(value, dict):
                value = {key: _Float32State(v) if key != "step" and torch.is_tensor(v) and v.is_floating_point()
                         else v for key, v in value.items()}
            held[k] = value
        return {**state_dict, "state": held}

    # ------------------------------------------------------------------ options
    def _check_options(self, group: Dict[str, Any], k: int) -> None:
        """Options fastopt cannot honour are refused, never ignored. `foreach` changes nothing here
        (a twin always updates a whole group per call); `fused` is what fastopt always is."""
        where = f"param group {k}"
        _hyper.check_hyperparameters({key: group[key] for key in self.defaults if key in group}, f"{where}: ",
                                     element=check_real)
        if group.get("capturable"):
            off = next((p for p in group["params"] if not p.is_cuda), None)
            if off is not None:
                raise ValueError(f"{where}: capturable=True (CUDA graph capture) needs CUDA parameters, but one "
                                 f"is on {off.device}")
        if group.get("fused") and group.get("foreach"):
            raise ValueError(f"{where}: fused and foreach cannot both be True")

    @staticmethod
    def _lr(group: Dict[str, Any], params: list) -> Any:
        """The group's lr for a kernel call over `params`: a CUDA tensor lr goes to a CUDA call as it is
        (read on the device: no wait, and captured graphs see later values); otherwise a Python float.
        For the empty checking call a device lr is 0, as the kernels check it (its value is never read
        on the host)."""
        lr = group["lr"]
        if not isinstance(lr, torch.Tensor):
            return float(lr)
        if lr.is_cuda:
            if not params:
                return 0.0
            if isinstance(params[0], torch.Tensor) and params[0].is_cuda:
                return lr.detach()
        return float(lr.item())

    # ------------------------------------------------------------------ stepping
    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a .grad; `closure` (optional) re-evaluates the model
        under torch.enable_grad() and its loss is returned."""
        loss = None
        if torch.compiler.is_compiling():  # (traced by torch.compile: one custom op per group, see _compile)
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            if _compile.traced_step(self):
                return loss
            # (the first step, which makes the state, or one the traced step leaves to the eager path: run
            # whole outside the graph, so that Dynamo does not trace into it up to the kernel, a C function it
            # cannot trace and warns about)
            self._untraced_step(None)
            return loss
        return self._eager_step(closure)

    def _eager_step(self, closure):
        """step() outside torch.compile: the repeated step when it applies, else the checked full step."""
        loss = None
        self._capture_health_check()
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # The repeated step: everything as the last full step left it but the gradients (and a scheduler's
        # numbers): it steps at a fraction of the full path's cost per parameter, or declines, changing nothing.
        plan = self.__dict__.get("_step_plan")
        if plan is not None:
            if plan.run(self):
                return loss
            self.__dict__["_step_plan"] = None
        calls = self._plan()
        grad_scale, found_inf, skip = self._amp_scaling(calls)
        if skip:
            return loss

        by_torch = self._torch_parts()
        if len(calls) + len(by_torch) > 1:
            # The kernels check each call before writing; across several calls the step is checked here
            # first, so that a late refusal cannot leave the earlier groups updated.
            self._rehearse(calls, grad_scale)
            self._check_no_overlap(calls)
        for k, group, params, why in by_torch:
            self._torch_step(k, group, params, why, grad_scale, found_inf)

        for k, group, key, members in calls:
            params = [p for _, p in members]
            # Copies of the states (fresh ones for new parameters), so that a refused call leaves the
            # stored state as it was: entries _prepare adds are kept only once the update happened.
            states = []
            for p in params:
                state = self.state.get(p)
                states.append(dict(state) if state else self._new_state(p, group))
            self._prepare(group, params, states)
            # A count on the device is read there: the kernel gets this update's number as a tensor.
            step = states[0]["step"] + 1 if is_device_key(key) else key
            call_found_inf = self._for_call(found_inf, params)
            # DTensor parameters (_plan_shards): the kernel updates local shards of the parameters, their
            # gradients and their (stored, DTensor) state; the states' own dicts keep the DTensors.
            sharded = isinstance(members, _dtensor.Shards)
            if sharded:
                kernel_params = [_dtensor.local(p) for p in params]
                kernel_grads = [_dtensor.local(p.grad) for p in params]
                kernel_states = _dtensor.local_states(states)
            else:
                kernel_params, kernel_grads, kernel_states = params, [p.grad for p in params], states
            with _hyper.named(f"param group {k}"):  # (the tensors are checked: a refusal is a hyperparameter's)
                self._run(group, _arrays.views(kernel_params), _arrays.views(kernel_grads), kernel_states, step,
                          grad_scale=self._for_call(grad_scale, params), found_inf=call_found_inf)
            # The update happened: commit the new states and count the step.
            for p, state in zip(params, states):
                if state:  # torch keeps no entry for a parameter without state (SGD without momentum)
                    stored = self.state.get(p)
                    if stored:
                        stored.update(state)  # (the same dict: references to it stay valid)
                    else:
                        self.state[p] = state
            self._advance(states)
            if call_found_inf is not None:  # a skipped step counts nothing: back on the device, as torch's fused
                steps = [s["step"] for s in states if torch.is_tensor(s.get("step"))]
                if steps:
                    torch._foreach_sub_(steps, [call_found_inf] * len(steps))
            if is_device_key(key):
                self._step_tokens.advanced(params)
            _arrays.mark_modified(params + [v for s in states for name, v in s.items()
                                            if name != "step" and torch.is_tensor(v)])
            if sharded:  # (the shards have version counters of their own, which torch's in-place ops bump too)
                _arrays.mark_modified(kernel_params + [v for s in kernel_states for name, v in s.items()
                                                       if name != "step" and torch.is_tensor(v)])
        if not by_torch:
            self.__dict__["_step_plan"] = StepPlan.build(
                self, calls, counts_advance_by_one=type(self)._advance is FusedOptimizer._advance)
        return loss

    _untraced_step = torch.compiler.disable(_eager_step)

    # The torch.optim class of the same algorithm (its name): it steps what the fused kernels cannot.
    _torch_name: str = ""
    # torch's words for its hyperparameter errors (_torch_wording; None: PHRASES, shared by most classes).
    _torch_phrases = None
    # Whether complex parameters are updated (as real pairs, as torch's elementwise optimizers do); torch's
    # Adafactor and Muon refuse them at the step, and so do their twins (_refuse_complex).
    _takes_complex = True

    def _refuse_complex(self, p: torch.Tensor, i: int) -> None:
        if p.is_complex():
            raise RuntimeError(f"{type(self).__name__} does not support complex parameters (params[{i}] is "
                               f"{p.dtype})")

    def _torch_parts(self) -> List[Tuple[int, Dict[str, Any], List[torch.Tensor], str]]:
        """What torch.optim's own implementation steps, as (group index, group, params, why): a
        differentiable=True group whole (a fused kernel is not differentiable), and in other groups the
        parameters whose gradient is sparse (torch's SGD and Adagrad take them; its other optimizers raise
        their own error for them)."""
        parts = []
        for k, group in enumerate(self.param_groups):
            if group.get("differentiable"):
                parts.append((k, group, list(group["params"]), "is differentiable=True"))
                continue
            sparse = [p for p in group["params"] if p.grad is not None and p.grad.layout != torch.strided]
            if sparse:
                parts.append((k, group, sparse, "has sparse gradients"))
        return parts

    def _torch_step(self, k: int, group: Dict[str, Any], params: List[torch.Tensor], why: str, grad_scale: Any,
                    found_inf: Any) -> None:
        """Steps `params` of group k with torch.optim's own implementation: a torch.optim optimizer over
        them, with the group's options, sharing this optimizer's state (the same format), so that the
        update is exactly torch's (and, for a differentiable group, seen by autograd as torch's)."""
        if found_inf is not None or not (isinstance(grad_scale, float) and grad_scale == 1.0):
            raise RuntimeError(f"param group {k} {why}, which torch.optim's own implementation steps; GradScaler's "
                               "fused unscaling does not reach it: call scaler.unscale_(optimizer) before "
                               "scaler.step(optimizer)")
        if not self._torch_name:
            raise TypeError(f"param group {k} {why}: {type(self).__name__} is not in torch.optim, so there is no "
                            "torch implementation to step it, and fastopt's fused kernels take dense, "
                            "non-differentiable updates only")
        cls = getattr(torch.optim, self._torch_name)
        accepted = inspect.signature(cls).parameters
        options = {key: group[key] for key in self.defaults if key in group and key in accepted}
        with _hyper.named(f"param group {k}"):
            twin = cls(params, **options)
        for p in params:  # state torch's constructor made (Adagrad's sums) where this one has none
            if twin.state.get(p) and not self.state.get(p):
                self.state[p] = twin.state[p]
        twin.state = self.state  # (torch reads and writes self.state[p], in the format the twins keep)
        twin.step()

    def _rehearse(self, calls, grad_scale: Any) -> None:
        """Runs each kernel call of a step of several calls first on empty stand-ins of its dtype, so that
        the kernels' rules that depend on the dtype (a hyperparameter or grad_scale out of float32's
        range) refuse before the first call writes anything. CUDA calls are checked on CPU stand-ins of
        their arithmetic (_check_hyper): a device stand-in would queue work (inside a graph capture too)."""
        # A device grad_scale (GradScaler's, on CUDA) is not read back: the rules check a placeholder for it.
        if isinstance(grad_scale, torch.Tensor):
            grad_scale = 1.0 if grad_scale.is_cuda else float(grad_scale.item())
        for k, group, key, members in calls:
            p = members[0][1]
            with _hyper.named(f"param group {k}"):
                if not p.is_cpu:  # (on CPU stand-ins of the call's arithmetic: nothing queued on the device)
                    self._check_hyper(group, [p.dtype], grad_scale)
                    continue
                stand_in = torch.empty(0, dtype=p.dtype)
                state = self._new_state(stand_in, group)
                self._prepare(group, [stand_in], [state])
                self._run(group, _arrays.views([stand_in]), _arrays.views([torch.empty(0, dtype=p.dtype)]),
                          [state], key, grad_scale=grad_scale)

    # torch.amp.GradScaler: with this flag it does not unscale the gradients itself (no extra pass over
    # them) but sets `grad_scale` (the loss scale, or None when the caller already unscaled) and
    # `found_inf` (non-zero when a gradient held a NaN or Inf) on the optimizer before calling step();
    # the kernels then divide by the scale on the fly, as torch's fused optimizers do.
    _step_supports_amp_scaling = True

    def _amp_scaling(self, calls) -> Tuple[Any, Any, bool]:
        """GradScaler's loss scale and found_inf for this step, and whether to skip it on the host:
        (grad_scale, found_inf, skip); (1.0, None, False) outside GradScaler.step().

        On CUDA both are device tensors, and neither is read back when it need not be. The scale goes to
        every CUDA kernel call as it is (the kernels read it). found_inf goes to the kernels too when the
        step counts of every call live on the device (capturable groups): a kernel writes nothing when it
        is set, and the counts are put back on the device afterwards, as torch's fused optimizers do, so
        the step never waits and can be captured in a CUDA graph. Otherwise the counts live on the host
        and must know whether the step happened: found_inf is read once (the stream is synchronised, as
        GradScaler itself does for torch's non-fused optimizers) and a set flag skips the step here."""
        found_inf = getattr(self, "found_inf", None)
        grad_scale = getattr(self, "grad_scale", None)
        if grad_scale is None:
            grad_scale = 1.0
        if found_inf is None:
            return grad_scale, None, False
        if isinstance(found_inf, torch.Tensor) and found_inf.is_cuda and calls and \
                all(device_steps(group, members[0][1]) for _, group, _, members in calls):
            return grad_scale, found_inf, False
        return grad_scale, None, float(found_inf) != 0.0  # as torch's fused optimizers: nothing changes

    @staticmethod
    def _for_call(value: Any, params: List[torch.Tensor]) -> Any:
        """GradScaler's scale or found_inf for a kernel call over `params`: a CUDA tensor goes to a call on
        CUDA as it is (moved to the parameters' device if it lives on another), anything else as a float."""
        if not isinstance(value, torch.Tensor):
            return value
        if value.is_cuda and params[0].is_cuda:
            return value if value.device == params[0].device else value.to(params[0].device, non_blocking=True)
        return float(value.item())

    def _capture_health_check(self) -> None:
        """As torch.optim's: a step captured in a CUDA graph must read its step counts and lr on the device
        (capturable=True in every param group). A non-capturable step would bake the host's step number
        and lr into the graph's kernel arguments, and every replay would repeat one bias correction while
        the counts stood still: refused, with torch's RuntimeError."""
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing() and \
                not all(group.get("capturable") for group in self.param_groups):
            raise RuntimeError(f"Attempting CUDA graph capture of step() for an instance of {type(self).__name__} "
                               "but param_groups' capturable is False (fastopt's twin, as torch.optim: construct "
                               "it with capturable=True, where the optimizer has the option, to capture its step)")

    def _plan(self) -> List[Tuple[int, Dict[str, Any], Hashable, List[Tuple[int, torch.Tensor]]]]:
        """Checks every tensor of the step and groups the parameters into kernel calls:
        [(group index, group, key, [(index, param), ...]), ...], in group order."""
        calls = []
        index = 0
        for k, group in enumerate(self.param_groups):
            self._check_options(group, k)  # group entries may have been edited or loaded since
            if group.get("differentiable"):
                index += len(group["params"])
                continue  # torch's own implementation steps it (_torch_step)
            if _dtensor.holds_dtensor(group["params"]):  # (one C-level pass over the parameters' types)
                calls += self._plan_shards(k, group, index)
                index += len(group["params"])
                continue
            buckets: Dict[Hashable, List[Tuple[int, torch.Tensor]]] = {}
            first = None  # the group's first updated parameter and its index
            for i, p in enumerate(group["params"], start=index):
                if p.grad is None or p.grad.layout != torch.strided:
                    continue  # as torch: a parameter without a gradient is not updated (sparse: _torch_parts)
                _arrays.check_tensor(p, f"params[{i}]", cpu_half=self._cpu_half)
                if not self._takes_complex:
                    self._refuse_complex(p, i)
                if first is None:
                    first = (i, p)
                elif not (p.is_cpu and first[1].is_cpu) and p.device != first[1].device:
                    raise ValueError(f"param group {k} mixes devices: params[{i}] is on {p.device} but "
                                     f"params[{first[0]}] is on {first[1].device}; fastopt updates one device "
                                     "per param group (give each device's parameters a group of their own)")
                _arrays.check_tensor(p.grad, f"params[{i}].grad", like=p, cpu_half=self._cpu_half)
                state = self.state.get(p)
                if state:
                    self._check_state(i, p, state, group, k)
                try:
                    key = self._bucket_key(p, state, group)
                except StepOutOfRange as error:
                    _hyper.float_step_count(error.count, f"state[{i}]['step']")  # raises, naming it
                    raise
                # (one device per group: the dtype and the step key tell the calls apart)
                buckets.setdefault((p.dtype, key), []).append((i, p))
            calls += [(k, group, key, members) for (_, key), members in buckets.items()]
            index += len(group["params"])
        return calls

    def _plan_shards(self, k: int, group: Dict[str, Any], index: int) -> list:
        """_plan for param group k when it holds DTensors (FSDP2's parameters): each parameter, its gradient
        and its state are checked to be laid out alike (_dtensor.local_operands), then checked as _plan checks
        plain tensors, on their local shards, which are what the kernels update. The calls' members are
        _dtensor.Shards, so that the step hands the kernels local shards."""
        buckets: Dict[Hashable, List[Tuple[int, torch.Tensor]]] = {}
        first = None
        for i, p in enumerate(group["params"], start=index):
            if p.grad is None or p.grad.layout != torch.strided:
                continue
            name = f"params[{i}]"
            state = self.state.get(p)
            local_p, local_grad, local_state = _dtensor.local_operands(p, state, i, ("step",) + self._scalar_state)
            _arrays.check_tensor(local_p, name, cpu_half=self._cpu_half)
            if not self._takes_complex:
                self._refuse_complex(local_p, i)
            if first is None:
                first = (i, local_p)
            elif not (local_p.is_cpu and first[1].is_cpu) and local_p.device != first[1].device:
                raise ValueError(f"param group {k} mixes devices: params[{i}] is on {local_p.device} but "
                                 f"params[{first[0]}] is on {first[1].device}; fastopt updates one device "
                                 "per param group (give each device's parameters a group of their own)")
            _arrays.check_tensor(local_grad, f"{name}.grad", like=local_p, cpu_half=self._cpu_half)
            if state:
                self._check_state(i, local_p, local_state, group, k)
            try:
                key = self._bucket_key(p, state, group)
            except StepOutOfRange as error:
                _hyper.float_step_count(error.count, f"state[{i}]['step']")
                raise
            buckets.setdefault((p.dtype, key), _dtensor.Shards()).append((i, p))
        return [(k, group, key, members) for (_, key), members in buckets.items()]

    def _check_hyper(self, group: Dict[str, Any], dtypes: List[torch.dtype], grad_scale: float = 1.0) -> None:
        """Checks the group's hyperparameters with its kernel (the rules live there) on empty CPU tensors, one
        call per arithmetic among `dtypes`: float64, or float32 for float32/float16/bfloat16 parameters; the
        kernel then also checks them against that type's range (eps=1e-50 is 0 in float32, lr=1e39 is inf).
        Without a float dtype, on an empty list. A CUDA lr is not read (the kernel checks a placeholder for
        a device value)."""
        lr = group.get("lr")
        if isinstance(lr, torch.Tensor) and lr.is_cuda:
            group = dict(group, lr=0.0)
        maths = {_arrays.math_dtype(d) for d in dtypes if d.is_floating_point or d.is_complex}
        if not maths:
            self._run(group, [], [], [], self._check_key(), grad_scale=grad_scale)
        for dtype in sorted(maths, key=str):
            probe = torch.empty(0, dtype=dtype)
            states = [self._new_state(probe, group)]
            self._prepare(group, [probe], states)
            self._run(group, _arrays.views([probe]), _arrays.views([torch.empty(0, dtype=dtype)]), states,
                      self._check_key(), grad_scale=grad_scale)

    def _check_state(self, i: int, p: torch.Tensor, state: Any, group: Dict[str, Any], k: int) -> None:
        """Raises unless params[i]'s (non-empty) state is one the step can use: a dict holding the entries
        this optimizer keeps, tensors the kernels take for p (or None where a buffer may be missing) and
        a step count that is a one-element floating-point tensor (on p's device when it lives there; its
        value is checked where it is read, by _bucket_key). Run for every parameter of every step: the
        common case (dense CPU state of p's dtype and shape) builds no message."""
        if not isinstance(state, dict):
            raise TypeError(f"state[{i}] must be a dict, got {type(state).__name__}")
        for name in self._state_keys:
            if name not in state:
                missing = [name for name in self._state_keys if name not in state]
                raise ValueError(f"state[{i}] lacks {missing}: {type(self).__name__} keeps "
                                 f"{list(self._state_keys + self._lazy_state)}")
        plain = p.is_cpu and p.dtype in _arrays.CPU_DTYPES and p.is_contiguous()
        for name, value in state.items():
            if name == "step":
                if not (torch.is_tensor(value) and value.numel() == 1 and value.is_floating_point()):
                    raise TypeError(f"state[{i}]['step'] must be a one-element floating-point tensor (torch's step "
                                    f"count), got {_hyper.describe(value)}")
                if device_steps(group, p) and value.device != p.device:
                    raise ValueError(f"state[{i}]['step'] is on {value.device} but param group {k} is capturable: "
                                     f"its step counts live on the parameters' device, {p.device} (torch.optim "
                                     "refuses this too)")
            elif name in self._scalar_state:
                if not (torch.is_tensor(value) and value.numel() == 1 and value.is_floating_point()):
                    raise TypeError(f"state[{i}]['{name}'] must be a one-element floating-point tensor (torch's "
                                    f"{name}), got {_hyper.describe(value)}")
            elif torch.is_tensor(value):
                # (the common case first: what check_tensor accepts without a message)
                if not (plain and value.is_cpu and value.dtype == p.dtype and value.layout == torch.strided
                        and value.shape == p.shape and value.is_contiguous() and not value.is_neg()
                        and not value.is_conj()):
                    _arrays.check_tensor(value, f"state[{i}]['{name}']", like=p, state=True)
            elif value is not None or name not in self._nullable_state:
                raise TypeError(f"state[{i}]['{name}'] must be a tensor, got {type(value).__name__}")

    def _check_no_overlap(self, calls) -> None:
        """No tensor written in one step may share memory with another of the step, read or written (each
        kernel call checks its own arrays; this covers arrays that meet in different calls)."""
        spans = []
        for _, _, _, members in calls:
            named = []
            for i, p in members:
                named += [(p, f"params[{i}]", True), (p.grad, f"params[{i}].grad", False)]
                named += [(v, f"state[{i}]['{k}']", True) for k, v in (self.state.get(p) or {}).items()
                          if k != "step" and k not in self._shared_state and torch.is_tensor(v)]
            if isinstance(members, _dtensor.Shards):  # (a DTensor's own data_ptr is not its shard's)
                named = [(_dtensor.local(t), name, written) for t, name, written in named]
            for t, name, written in named:
                if t.numel():
                    start = t.data_ptr()
                    spans.append((start, start + t.numel() * t.element_size(), name, written))
        check_disjoint(spans, "tensor")

    # ------------------------------------------------------------------ subclass hooks
    def _new_state(self, p: torch.Tensor, group: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def _bucket_key(self, p: torch.Tensor, state: Dict[str, Any], group: Dict[str, Any]) -> Hashable:
        """The step number of this update (1 for a parameter without state), or for a count on the
        device a token of its (unread) value."""
        if not p.is_cpu and device_steps(group, p):
            return self._step_tokens.key(p, state)
        if not state:
            return 1
        count = state["step"].item()
        if not (0 <= count <= _hyper.MAX_STEP_COUNT and count == int(count)):  # (NaN fails the first test)
            raise StepOutOfRange(count)
        return int(count) + 1

    def _check_key(self) -> Hashable:
        """A valid bucket key, for checking hyperparameters with an empty kernel call."""
        return 1

    def _prepare(self, group, params: List[torch.Tensor], states: List[Dict[str, Any]]) -> None:
        pass

    def _run(self, group, params, grads, states, step, grad_scale: Any = 1.0, found_inf: Any = None) -> None:
        raise NotImplementedError

    def _advance(self, states: List[Dict[str, Any]]) -> None:
        steps = [s["step"] for s in states]
        if steps:
            torch._foreach_add_(steps, 1.0)  # torch's own `step_t += 1`, one call for the group (on the device too)

    @staticmethod
    def _ensure(params, states, key) -> None:
        """Adds a zero state tensor `key` where missing: buffers that appear when an option is switched on
        after the first step (torch would fail with a KeyError there)."""
        for state, p in zip(states, params):
            if key not in state:
                state[key] = _arrays.state_tensor(p)

    @staticmethod
    def _views(states, key):
        if type(states) is PlannedStates:  # (a repeated step's operands, taken once)
            return states.by_name[key]
        return _arrays.views([s[key] for s in states])
