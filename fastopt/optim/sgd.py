"""Stateful SGD with momentum, dampening, Nesterov and weight decay (torch.optim.SGD's numbers)."""

from __future__ import annotations

import numpy as np

from fastopt._core import sgd_
from fastopt.optim.optimizer import Optimizer


class SGD(Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False)``

    Params: float32, float64, float16 or ml_dtypes.bfloat16 arrays (16-bit ones updated in float32 and
    rounded back to nearest-even). State per parameter: ``momentum_buffer`` (only when momentum != 0; float32
    for 16-bit params), created on the first step from the gradient itself, as torch does.
    """

    _state_keys = ("momentum_buffer",)
    _nullable_state = ("momentum_buffer",)
    _half_params = ("float16", "bfloat16")

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _init_state(self, state, param, group):
        state["momentum_buffer"] = None  # filled from the gradient on the first momentum step

    def _next_key(self, state):
        # torch's SGD keeps no step count: a missing buffer is what marks the first step.
        return state["momentum_buffer"] is None

    def _count(self, state, first):
        pass

    def _check_key(self):
        return True

    def _update(self, group, params, grads, states, first, grad_scale=1.0):
        buffers = None
        if group["momentum"] != 0:
            for state, p in zip(states, params):
                if state["momentum_buffer"] is None:
                    state["momentum_buffer"] = self._zeros(p)
            buffers = [s["momentum_buffer"] for s in states]
        sgd_(params, grads, buffers, lr=group["lr"], momentum=group["momentum"],
             dampening=group["dampening"], weight_decay=group["weight_decay"],
             nesterov=group["nesterov"], maximize=group["maximize"], step=1 if first else 2,
             grad_scale=grad_scale)
