"""fastopt.torch.Adam and AdamW: torch.optim.Adam / AdamW with fastopt's fused kernels.

State per parameter, as torch 2.13 keeps it: `step` (0-d float tensor; on the parameter's device when
capturable), `exp_avg`, `exp_avg_sq` and, with amsgrad, `max_exp_avg_sq` (float32 for float16/bfloat16
parameters on CUDA). Adam's `decoupled_weight_decay=True` is AdamW (fastopt.adamw_); AdamW always is.

`state_dtype` ("float32" default, "bfloat16", "int8"; also None, torch.float32, torch.bfloat16) and
`stochastic_rounding` (of bfloat16 state, or of bfloat16 params with torch's state; `seed` picks its random bits)
choose compact state on the CPU: see _state_dtype for its layouts
(bfloat16: torch's keys in torch.bfloat16; int8: bitsandbytes' keys, loadable by bitsandbytes' AdamW8bit).
"""

from __future__ import annotations

import torch

from fastopt import _hyper
from fastopt._core import adam_, adamw_
from fastopt.torch import _arrays
from fastopt.torch import _state_dtype as compact
from fastopt.torch._optimizer import FusedOptimizer, scalar
from fastopt.torch._step_counts import new_step


class Adam(FusedOptimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *, foreach=None,
    maximize=False, capturable=False, differentiable=False, fused=None, decoupled_weight_decay=False, state_dtype=None, stochastic_rounding=False,
    seed=0)``"""

    _torch_name = "Adam"  # torch.optim's class: it steps differentiable=True groups

    _cpu_half = True  # (float16/bfloat16 params on the CPU: float32 state, as the twins keep for half params)
    _state_keys = ("step", "exp_avg", "exp_avg_sq")
    _lazy_state = ("max_exp_avg_sq",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, state_dtype=None, stochastic_rounding=False, seed=0):
        state_dtype = compact.normalise(state_dtype)  # (ValueError naming state_dtype)
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay, state_dtype=state_dtype,
                        stochastic_rounding=stochastic_rounding, seed=seed)
        compact.check_options(defaults)
        if state_dtype == "float32" and stochastic_rounding is False and seed == 0:
            # (today's state: the groups hold torch's options only, so the state_dict is torch's exactly; a
            # group without state_dtype has float32 state)
            del defaults["state_dtype"], defaults["stochastic_rounding"], defaults["seed"]
        super().__init__(params, defaults)

    def _check_defaults(self, defaults):
        betas = defaults["betas"]
        if isinstance(betas[0], torch.Tensor) != isinstance(betas[1], torch.Tensor):
            # (torch's rule and words; unlike torch, ints pass with floats: torch refuses betas=(0, 0.99))
            raise ValueError("betas must be either both floats or both Tensors")

    # ------------------------------------------------------------------ compact state (_state_dtype)
    _shared_state = compact.SHARED_KEYS

    @staticmethod
    def _form(group):
        return compact.normalise(group.get("state_dtype"))

    def _check_options(self, group, k):
        super()._check_options(group, k)
        compact.check_options(group, f"param group {k}: ")

    def _plannable(self, group):
        return self._form(group) == "float32" and not group.get("stochastic_rounding")

    def _check_state(self, i, p, state, group, k):
        form = self._form(group)
        if form == "float32" and compact.form_of(state) == "float32":
            return super()._check_state(i, p, state, group, k)
        if not isinstance(state, dict):
            raise TypeError(f"state[{i}] must be a dict, got {type(state).__name__}")
        compact.check_state(f"state[{i}]", p, state, form, bool(group["amsgrad"]))
        step = state.get("step")
        if not (torch.is_tensor(step) and step.numel() == 1 and step.is_floating_point()):
            raise TypeError(f"state[{i}]['step'] must be a one-element floating-point tensor (torch's step count), "
                            f"got {_hyper.describe(step)}")

    def _plan(self):
        calls = super()._plan()
        for k, group, _, members in calls:
            if self._form(group) != "float32":
                for i, p in members:
                    if not p.is_contiguous():
                        raise ValueError(f"params[{i}] is not contiguous; state_dtype={self._form(group)!r} updates "
                                         "contiguous parameters only")
        return calls

    @staticmethod
    def _prepare_load(self, state_dict):
        """FusedOptimizer's, and: bitsandbytes' nested quantisation tensors put back in place, compact state
        checked against each group's state_dtype and kept as it is (torch would cast it to the parameter's
        dtype)."""
        if isinstance(state_dict, dict) and isinstance(state_dict.get("state"), dict):
            state_dict = {**state_dict, "state": {k: compact.unwrap_bnb(v) for k, v in state_dict["state"].items()}}
        held = _hold_compact(self, state_dict)
        if held is None:
            return FusedOptimizer._prepare_load(self, state_dict)
        plain, kept = held
        prepared = FusedOptimizer._prepare_load(self, plain)
        return {**prepared, "state": {**prepared["state"], **kept}}

    def _normalise_state(self, p, p_state, group):
        for key, value in p_state.items():
            if isinstance(value, _Kept):
                p_state[key] = value.tensor.to(device=p.device).contiguous()
        super()._normalise_state(p, p_state, group)
        compact.to_form(p, p_state, self._form(group))

    # ------------------------------------------------------------------ the step
    def _new_state(self, p, group):
        form = self._form(group)
        if form == "float32":
            return {"step": new_step(group, p), "exp_avg": _arrays.state_tensor(p),
                    "exp_avg_sq": _arrays.state_tensor(p)}
        return {"step": new_step(group, p), **compact.new_state(p, form)}

    def _prepare(self, group, params, states):
        if group["amsgrad"]:
            if self._form(group) == "bfloat16":
                for state, p in zip(states, params):
                    if "max_exp_avg_sq" not in state:
                        state["max_exp_avg_sq"] = compact.bf16_zeros(p)
            else:
                self._ensure(params, states, "max_exp_avg_sq")

    def _run(self, group, params, grads, states, step, grad_scale=1.0, found_inf=None):
        form = self._form(group)
        if form == "int8":
            return self._run_int8(group, params, grads, states, step, grad_scale, found_inf)
        if form == "bfloat16":
            m, v, vmax = compact.kernel_operands(states, form, bool(group["amsgrad"]))
            return self._kernel(group, params, grads, m, v, vmax, step, grad_scale, found_inf,
                                stochastic_rounding=bool(group.get("stochastic_rounding")) and bool(params))
        # (torch's state: stochastic rounding, when asked for, rounds the bfloat16 params of this call)
        rounded = bool(group.get("stochastic_rounding")) and bool(params) \
            and str(params[0].dtype) in ("bfloat16", "torch.bfloat16")
        self._kernel(group, params, grads, self._views(states, "exp_avg"), self._views(states, "exp_avg_sq"),
                     self._views(states, "max_exp_avg_sq") if group["amsgrad"] else None, step, grad_scale, found_inf,
                     stochastic_rounding=rounded)

    def _run_int8(self, group, params, grads, states, step, grad_scale, found_inf):
        """Two kernel calls: the float32-state members (under bitsandbytes' min_8bit_size) and the quantised
        ones (QuantizedState over state1/absmax1 and state2/absmax2). Their checks are the step's (_check_state)
        and the hyperparameters', which the first call (the float one, also when empty) makes for both."""
        small, big = compact.int8_split(states) if states else ([], [])
        pick = lambda xs, idx: [xs[i] for i in idx]  # noqa: E731
        sub = pick(states, small)
        self._kernel(group, pick(params, small), pick(grads, small), self._views(sub, "state1"),
                     self._views(sub, "state2"), None, step, grad_scale, found_inf)
        if big:
            m, v = compact.quantised_operands(pick(states, big))
            self._kernel(group, pick(params, big), pick(grads, big), m, v, None, step, grad_scale, found_inf)

    def _kernel(self, group, params, grads, m, v, vmax, step, grad_scale, found_inf, **extra):
        kernel = adamw_ if group["decoupled_weight_decay"] else adam_
        beta1, beta2 = group["betas"]
        if extra.get("stochastic_rounding"):
            # Distinct random bits per param group (the kernel's hash also takes the step, the tensor's index
            # in the call and the element's index): the group's seed spread by the golden ratio, plus its index.
            k = next((k for k, g in enumerate(self.param_groups) if g is group), 0) \
                if hasattr(self, "param_groups") else 0
            extra["seed"] = (int(group.get("seed", 0)) * 0x9E3779B97F4A7C15 + k) % 2**64
        elif "stochastic_rounding" in extra:
            del extra["stochastic_rounding"]
        kernel(params, grads, m, v, vmax,
               lr=self._lr(group, params), beta1=scalar(beta1), beta2=scalar(beta2), eps=scalar(group["eps"]),
               weight_decay=scalar(group["weight_decay"]), amsgrad=bool(group["amsgrad"]),
               maximize=bool(group["maximize"]), step=step, grad_scale=grad_scale, found_inf=found_inf, **extra)


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
    maximize=False, foreach=None, capturable=False, differentiable=False, fused=None, state_dtype=None,
    stochastic_rounding=False, seed=0)``

    As Adam, with the weight decay decoupled: ``p *= 1 - lr * weight_decay`` before the Adam step."""

    _torch_name = "AdamW"  # torch.optim's class: it steps differentiable=True groups

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 state_dtype=None, stochastic_rounding=False, seed=0):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, state_dtype=state_dtype,
                         stochastic_rounding=stochastic_rounding, seed=seed)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # as torch's AdamW: a loaded torch.optim.Adam group stays AdamW
            group["decoupled_weight_decay"] = True


class _Kept:
    """A loaded compact state tensor, kept away from torch's load_state_dict (which casts floating state to the
    parameter's dtype: bfloat16 moments would become float32); _normalise_state unwraps it."""

    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor


def _hold_compact(self, state_dict):
    """(state_dict without its compact states, {saved id: compact state with tensors in _Kept}) after checking
    each compact state against its group's state_dtype (ValueError naming it); None when it holds none or
    does not have torch's layout (torch's own message then)."""
    if not isinstance(state_dict, dict):
        return None
    groups, saved = state_dict.get("param_groups"), state_dict.get("state")
    if not (isinstance(groups, (list, tuple)) and isinstance(saved, dict) and len(groups) == len(self.param_groups)
            and all(isinstance(g, dict) and isinstance(g.get("params"), (list, tuple))
                    and len(g["params"]) == len(ours["params"]) for g, ours in zip(groups, self.param_groups))):
        return None
    where = {}
    for g, ours in zip(groups, self.param_groups):
        group = {**self.defaults, **g}
        for old, p in zip(g["params"], ours["params"]):
            try:
                where[old] = (len(where), p, group)
            except TypeError:
                return None
    kept, plain = {}, {}
    for old, state in saved.items():
        found = where.get(old) if isinstance(old, (int, str)) else None
        if found is None or not isinstance(state, dict) or not state:
            plain[old] = state
            continue
        i, p, group = found
        have = compact.form_of(state)
        try:
            form = compact.normalise(group.get("state_dtype"))
        except ValueError as error:
            raise ValueError(f"state_dict: param group of params[{i}]: {error}") from None
        if have != "int8" and form != "int8":
            # (torch's keys: float32 state loads as torch loads it, and becomes bfloat16 (rounded) in a
            # bfloat16 group; bfloat16 moments in a float32 group become float32, exactly)
            if have == "float32" or form == "float32":
                plain[old] = state
                continue
        try:
            compact.check_state(f"state_dict: state[{i}]", p, state, form, bool(group.get("amsgrad")), check_maps=True)
            if "step" in state:
                step = state["step"]
                count = step.item() if torch.is_tensor(step) and step.numel() == 1 else step
                _hyper.float_step_count(_hyper.real(count, f"state_dict: state[{i}]['step']"),
                                        f"state_dict: state[{i}]['step']")
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None
        plain[old] = {}  # (checked here; the base's checks skip an empty state)
        kept[old] = {key: (_Kept(v) if key != "step" and torch.is_tensor(v) else v) for key, v in state.items()}
    if not kept:
        return None
    return {**state_dict, "state": plain}, kept
