"""Stateful Adam (L2 weight decay) and AdamW (decoupled weight decay) with AMSGrad
(torch.optim.Adam / AdamW's numbers)."""

from __future__ import annotations

import numpy as np

from fastopt._core import adam_, adamw_
from fastopt.optim._state_dtype import StatePrecision
from fastopt.optim.optimizer import Optimizer


def _as_tuple(betas):
    """betas as the tuple torch keeps; anything that is not a sequence of values is left for the
    hyperparameter check to name."""
    if isinstance(betas, (tuple, list, np.ndarray)):
        return tuple(betas)
    return betas


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
    state_dtype="float32", stochastic_rounding=False, seed=0)``

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq``:
    arrays of the params' dtype, or with ``state_dtype="bfloat16"`` (float32 params) ml_dtypes.bfloat16
    arrays, rounded to nearest-even, or stochastically with ``stochastic_rounding=True`` (random bits from
    ``seed`` and the step count: reproducible).
    """

    _kernel = staticmethod(adam_)
    _state_keys = ("step", "exp_avg", "exp_avg_sq")
    _lazy_state = ("max_exp_avg_sq",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, state_dtype="float32", stochastic_rounding=False, seed=0):
        self._precision = StatePrecision(state_dtype, stochastic_rounding, seed)
        super().__init__(params, dict(lr=lr, betas=_as_tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))
        self._precision.check_params(self._all_params())

    def _state_dtype(self, param):
        return self._precision.of(param)

    def _init_state(self, state, param, group):
        state["step"] = 0
        state["exp_avg"] = np.zeros(param.shape, self._state_dtype(param))
        state["exp_avg_sq"] = np.zeros(param.shape, self._state_dtype(param))

    def _update(self, group, params, grads, states, step, grad_scale=1.0):
        max_sqs = None
        if group["amsgrad"]:
            for state, p in zip(states, params):
                if "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = np.zeros(p.shape, self._state_dtype(p))
            max_sqs = [s["max_exp_avg_sq"] for s in states]
        beta1, beta2 = group["betas"]
        self._kernel(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                     max_sqs, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                     weight_decay=group["weight_decay"], amsgrad=group["amsgrad"],
                     maximize=group["maximize"], step=step, grad_scale=grad_scale,
                     **self._precision.kernel_kwargs())


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False)``

    As Adam, but the weight decay is decoupled: ``p *= 1 - lr * weight_decay`` before the Adam step.
    """

    _kernel = staticmethod(adamw_)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False, state_dtype="float32", stochastic_rounding=False, seed=0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, state_dtype=state_dtype, stochastic_rounding=stochastic_rounding,
                         seed=seed)
