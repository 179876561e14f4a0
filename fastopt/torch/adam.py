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

from fastopt._core import adam_, adamw_
from fastopt.torch import _arrays
from fastopt.torch import _state_dtype as compact
from fastopt.torch._compact_twin import CompactState, compact_defaults
from fastopt.torch._optimizer import FusedOptimizer, scalar
from fastopt.torch._step_counts import new_step


class Adam(CompactState, FusedOptimizer):
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
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay, state_dtype=state_dtype,
                        stochastic_rounding=stochastic_rounding, seed=seed)
        super().__init__(params, compact_defaults(defaults, self._compact_forms, self._torch_name))

    def _check_defaults(self, defaults):
        betas = defaults["betas"]
        if isinstance(betas[0], torch.Tensor) != isinstance(betas[1], torch.Tensor):
            # (torch's rule and words; unlike torch, ints pass with floats: torch refuses betas=(0, 0.99))
            raise ValueError("betas must be either both floats or both Tensors")

    # ------------------------------------------------------------------ compact state (_compact_twin)
    _compact_forms = compact.FORMS
    _compact_keys = compact.MOMENTS
    _compact_required = compact.MOMENTS[:2]
    _int8_keys = compact.MOMENTS[:2]  # state1: exp_avg, state2: exp_avg_sq

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
                                **self._rounding(group, params))
        # (torch's state: stochastic rounding, when asked for, rounds the bfloat16 params of this call)
        self._kernel(group, params, grads, self._views(states, "exp_avg"), self._views(states, "exp_avg_sq"),
                     self._views(states, "max_exp_avg_sq") if group["amsgrad"] else None, step, grad_scale, found_inf,
                     **self._rounding(group, params))

    def _run_int8(self, group, params, grads, states, step, grad_scale, found_inf):
        """Two kernel calls: the float32-state members (under bitsandbytes' min_8bit_size) and the quantised
        ones (QuantizedState over state1/absmax1 and state2/absmax2). Their checks are the step's (_check_state)
        and the hyperparameters', which the first call (the float one, also when empty) makes for both."""
        for ps, gs, (m, v) in self._int8_parts(params, grads, states):
            self._kernel(group, ps, gs, m, v, None, step, grad_scale, found_inf)

    def _kernel(self, group, params, grads, m, v, vmax, step, grad_scale, found_inf, **extra):
        kernel = adamw_ if group["decoupled_weight_decay"] else adam_
        beta1, beta2 = group["betas"]
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
