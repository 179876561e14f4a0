"""fastopt.torch.Adam and AdamW: torch.optim.Adam / AdamW with fastopt's fused kernels.

State per parameter, as torch 2.13 keeps it: `step` (0-d float tensor; on the parameter's device when
capturable), `exp_avg`, `exp_avg_sq` and, with amsgrad, `max_exp_avg_sq` (float32 for float16/bfloat16
parameters on CUDA). Adam's `decoupled_weight_decay=True` is AdamW (fastopt.adamw_); AdamW always is.
"""

from __future__ import annotations

from fastopt._core import adam_, adamw_
from fastopt.torch import _arrays
from fastopt.torch._optimizer import FusedOptimizer, new_step, scalar


class Adam(FusedOptimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *, foreach=None,
    maximize=False, capturable=False, differentiable=False, fused=None, decoupled_weight_decay=False)``"""

    _torch_name = "Adam"  # torch.optim's class: it steps differentiable=True groups

    _state_keys = ("step", "exp_avg", "exp_avg_sq")
    _lazy_state = ("max_exp_avg_sq",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _new_state(self, p, group):
        return {"step": new_step(group, p), "exp_avg": _arrays.state_tensor(p), "exp_avg_sq": _arrays.state_tensor(p)}

    def _prepare(self, group, params, states):
        if group["amsgrad"]:
            self._ensure(params, states, "max_exp_avg_sq")

    def _run(self, group, params, grads, states, step, grad_scale=1.0, found_inf=None):
        kernel = adamw_ if group["decoupled_weight_decay"] else adam_
        beta1, beta2 = group["betas"]
        kernel(params, grads, self._views(states, "exp_avg"), self._views(states, "exp_avg_sq"),
               self._views(states, "max_exp_avg_sq") if group["amsgrad"] else None,
               lr=self._lr(group, params), beta1=scalar(beta1), beta2=scalar(beta2), eps=scalar(group["eps"]),
               weight_decay=scalar(group["weight_decay"]), amsgrad=bool(group["amsgrad"]),
               maximize=bool(group["maximize"]), step=step, grad_scale=grad_scale, found_inf=found_inf)


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
    maximize=False, foreach=None, capturable=False, differentiable=False, fused=None)``

    As Adam, with the weight decay decoupled: ``p *= 1 - lr * weight_decay`` before the Adam step."""

    _torch_name = "AdamW"  # torch.optim's class: it steps differentiable=True groups

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # as torch's AdamW: a loaded torch.optim.Adam group stays AdamW
            group["decoupled_weight_decay"] = True
