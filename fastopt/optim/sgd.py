"""Stateful SGD with momentum, dampening, Nesterov and weight decay (torch.optim.SGD's numbers)."""

from __future__ import annotations

from fastopt._core import sgd_
from fastopt.optim._state_dtype import CompactState
from fastopt.optim.optimizer import Optimizer


class SGD(CompactState, Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False,
    state_dtype=None, stochastic_rounding=False, seed=0)``

    Params: float32, float64, float16 or ml_dtypes.bfloat16 arrays (16-bit ones updated in float32 and
    rounded back to nearest-even). State per parameter: ``momentum_buffer`` (only when momentum != 0), created
    on the first step from the gradient itself, as torch does: of the params' dtype (``state_dtype=None``;
    float32 for 16-bit params), float32 (``"float32"``), ml_dtypes.bfloat16 (``"bfloat16"``, for float32 or
    bfloat16 params) or fastopt.QuantizedState (``"int8"``: 8-bit blockwise, the signed map, for float32 params
    of at least 4096 elements; float32 for smaller ones; without momentum there is no state to keep). Every
    bfloat16 value written is rounded to nearest-even, or stochastically with ``stochastic_rounding=True``
    (bits from ``seed``, the step count, the tensor and the element); the step count that needs is then kept
    as state ``step`` (torch's SGD keeps none).
    """

    _state_keys = ("momentum_buffer",)
    _nullable_state = ("momentum_buffer",)
    _lazy_state = ("step",)
    _half_params = ("float16", "bfloat16")

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False, state_dtype=None, stochastic_rounding=False, seed=0):
        self._set_precision(state_dtype, stochastic_rounding, seed)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))
        self._precision.check_rounding(self._all_params())

    def _init_state(self, state, param, group):
        state["momentum_buffer"] = None  # filled from the gradient on the first momentum step
        if self._precision.stochastic_rounding:
            state["step"] = 0

    def _next_key(self, state):
        # torch's SGD keeps no step count: a missing buffer is what marks the first step. Stochastic
        # rounding also needs the number of this update (its random bits change with it).
        first = state["momentum_buffer"] is None
        if self._precision.stochastic_rounding:
            return first, int(state.get("step", 0)) + 1
        return first

    def _count(self, state, key):
        if self._precision.stochastic_rounding:
            state["step"] = key[1]

    def _check_key(self):
        return (True, 1) if self._precision.stochastic_rounding else True

    def _update(self, group, params, grads, states, key, grad_scale=1.0):
        first, count = key if self._precision.stochastic_rounding else (key, None)
        momentum = group["momentum"] != 0
        if momentum:
            for state, p in zip(states, params):
                if state["momentum_buffer"] is None:  # (not read: step 1 starts it from the gradient)
                    state["momentum_buffer"] = self._new_state(p, "momentum_buffer")
        # sgd_'s step 1 starts the buffers from the gradient; with stochastic rounding the count is the
        # step otherwise (>= 2 once a buffer exists, whatever a loaded state's count says)
        if count is None:
            step = 1 if first else 2
        elif not momentum:
            step = count
        else:
            step = 1 if first else max(count, 2)
        for ps, gs, ss in self._by_form(params, grads, states, "momentum_buffer"):
            sgd_(ps, gs, [s["momentum_buffer"] for s in ss] if momentum else None, lr=group["lr"],
                 momentum=group["momentum"], dampening=group["dampening"], weight_decay=group["weight_decay"],
                 nesterov=group["nesterov"], maximize=group["maximize"], step=step, grad_scale=grad_scale,
                 **self._rounding(ps))
