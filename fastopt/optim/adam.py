"""Stateful Adam (L2 weight decay) and AdamW (decoupled weight decay) with AMSGrad
(torch.optim.Adam / AdamW's numbers)."""

from __future__ import annotations

import numpy as np

from fastopt._core import adam_, adamw_
from fastopt._quantized import QuantizedState
from fastopt.optim._state_dtype import EightBitState, StatePrecision
from fastopt.optim.optimizer import Optimizer


def _as_tuple(betas):
    """betas as the tuple torch keeps; anything that is not a sequence of values is left for the
    hyperparameter check to name."""
    if isinstance(betas, (tuple, list, np.ndarray)):
        return tuple(betas)
    return betas


class Adam(EightBitState, Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
    state_dtype=None, stochastic_rounding=False, seed=0)``

    Params: float32, float64, float16 or ml_dtypes.bfloat16 arrays (16-bit ones with grads of their dtype;
    each element is updated in float32 and rounded back). State per parameter: ``step``, ``exp_avg``,
    ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq``: arrays of the params' dtype (``state_dtype=None``;
    float32 for float16 params, whose kernels keep float32 state), or float32 arrays (``"float32"``, for
    float32 or 16-bit params), or ml_dtypes.bfloat16 arrays (``"bfloat16"``, for float32 or bfloat16 params), or with
    ``state_dtype="int8"`` fastopt.QuantizedState (8-bit blockwise, bitsandbytes' layout: exp_avg signed, the
    others unsigned) for float32 params of at least 4096 elements, float32 arrays for smaller ones. Every
    bfloat16 value written (params or state) is rounded to nearest-even, or stochastically with
    ``stochastic_rounding=True`` (random bits from ``seed``, the step count, the tensor and the element:
    reproducible, the same for any thread count).
    """

    _kernel = staticmethod(adam_)
    _half_params = ("float16", "bfloat16")
    _state_keys = ("step", "exp_avg", "exp_avg_sq")
    _lazy_state = ("max_exp_avg_sq",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, state_dtype=None, stochastic_rounding=False, seed=0):
        self._precision = StatePrecision(state_dtype, stochastic_rounding, seed)
        super().__init__(params, dict(lr=lr, betas=_as_tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))
        self._precision.check_rounding(self._all_params())

    def _check_param_dtype(self, p, where):
        self._precision.check_param(p, where)

    def _state_dtype(self, param):
        return self._precision.of(param)

    def _init_state(self, state, param, group):
        state["step"] = 0
        state["exp_avg"] = self._new_state(param, "exp_avg")
        state["exp_avg_sq"] = self._new_state(param, "exp_avg_sq")

    def _update(self, group, params, grads, states, step, grad_scale=1.0):
        if group["amsgrad"]:
            for state, p in zip(states, params):
                if "max_exp_avg_sq" not in state:  # (of the form of the moments beside it)
                    quantized = isinstance(state["exp_avg"], QuantizedState)
                    state["max_exp_avg_sq"] = self._new_state(p, "max_exp_avg_sq", quantized)
        for call in self._by_form(params, grads, states, "exp_avg"):
            self._call(group, *call, step, grad_scale)

    def _call(self, group, params, grads, states, step, grad_scale):
        max_sqs = [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else None
        beta1, beta2 = group["betas"]
        self._kernel(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                     max_sqs, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                     weight_decay=group["weight_decay"], amsgrad=group["amsgrad"],
                     maximize=group["maximize"], step=step, grad_scale=grad_scale,
                     **self._precision.kernel_kwargs(params[0].dtype if params else None))


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
    state_dtype=None, stochastic_rounding=False, seed=0)``

    As Adam, but the weight decay is decoupled: ``p *= 1 - lr * weight_decay`` before the Adam step.
    """

    _kernel = staticmethod(adamw_)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False, state_dtype=None, stochastic_rounding=False, seed=0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, state_dtype=state_dtype, stochastic_rounding=stochastic_rounding,
                         seed=seed)
