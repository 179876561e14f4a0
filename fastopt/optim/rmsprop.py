"""Stateful RMSprop, plain or centered, with momentum (torch.optim.RMSprop's numbers)."""

from __future__ import annotations

from fastopt._core import rmsprop_
from fastopt._quantized import QuantizedState
from fastopt.optim._state_dtype import CompactState
from fastopt.optim.optimizer import Optimizer


class RMSprop(CompactState, Optimizer):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, maximize=False,
    state_dtype=None, stochastic_rounding=False, seed=0)``

    Params: float32, float64, float16 or ml_dtypes.bfloat16 arrays (16-bit ones updated in float32 and
    rounded back to nearest-even). State per parameter: ``step``, ``square_avg``, and ``momentum_buffer``
    (momentum > 0) and ``grad_avg`` (centered) when used: of the params' dtype (``state_dtype=None``; float32
    for 16-bit params), float32 (``"float32"``), ml_dtypes.bfloat16 (``"bfloat16"``, for float32 or bfloat16
    params) or fastopt.QuantizedState (``"int8"``: 8-bit blockwise, square_avg in the unsigned map, the others
    in the signed one, for float32 params of at least 4096 elements; float32 for smaller ones). Every bfloat16
    value written is rounded to nearest-even, or stochastically with ``stochastic_rounding=True`` (as Adam's).
    """

    _state_keys = ("step", "square_avg")
    _lazy_state = ("momentum_buffer", "grad_avg")
    _half_params = ("float16", "bfloat16")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, maximize=False, state_dtype=None, stochastic_rounding=False, seed=0):
        self._set_precision(state_dtype, stochastic_rounding, seed)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))
        self._precision.check_rounding(self._all_params())

    def _init_state(self, state, param, group):
        state["step"] = 0
        state["square_avg"] = self._new_state(param, "square_avg")

    def _update(self, group, params, grads, states, step, grad_scale=1.0):
        # Buffers appear when first needed, so momentum or centering may be switched on mid-run.
        momentum, centered = group["momentum"] > 0, group["centered"]
        if momentum:
            self._ensure(states, params, "momentum_buffer")
        if centered:
            self._ensure(states, params, "grad_avg")
        for ps, gs, ss in self._by_form(params, grads, states, "square_avg"):
            rmsprop_(ps, gs, [s["square_avg"] for s in ss], [s["momentum_buffer"] for s in ss] if momentum else None,
                     [s["grad_avg"] for s in ss] if centered else None, lr=group["lr"], alpha=group["alpha"],
                     eps=group["eps"], weight_decay=group["weight_decay"], momentum=group["momentum"],
                     centered=centered, maximize=group["maximize"], step=step, grad_scale=grad_scale,
                     **self._rounding(ps))

    def _ensure(self, states, params, key):
        for state, p in zip(states, params):
            if key not in state:  # (in the form of the square_avg beside it)
                state[key] = self._new_state(p, key, isinstance(state["square_avg"], QuantizedState))
