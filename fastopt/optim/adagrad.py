"""Stateful Adagrad with lr decay and weight decay (torch.optim.Adagrad's numbers)."""

from __future__ import annotations

import numpy as np

from fastopt._core import adagrad_
from fastopt._quantized import QuantizedState
from fastopt.optim._state_dtype import SIGNED_MAP_OF, CompactState
from fastopt.optim.optimizer import Optimizer


class Adagrad(CompactState, Optimizer):
    """``Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, maximize=False,
    state_dtype=None, stochastic_rounding=False, seed=0)``

    Params: float32, float64, float16 or ml_dtypes.bfloat16 arrays (16-bit ones updated in float32 and
    rounded back to nearest-even). State per parameter: ``step`` and ``sum`` (starting at
    initial_accumulator_value): of the params' dtype (``state_dtype=None``; float32 for 16-bit params), float32
    (``"float32"``), ml_dtypes.bfloat16 (``"bfloat16"``, for float32 or bfloat16 params) or
    fastopt.QuantizedState (``"int8"``: 8-bit blockwise in the unsigned map, a sum of squares being never
    negative, for float32 params of at least 4096 elements; float32 for smaller ones). Every bfloat16 value
    written is rounded to nearest-even, or stochastically with ``stochastic_rounding=True`` (as Adam's).
    """

    _state_keys = ("step", "sum")
    _half_params = ("float16", "bfloat16")

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, maximize=False, state_dtype=None, stochastic_rounding=False, seed=0):
        self._set_precision(state_dtype, stochastic_rounding, seed)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))
        self._precision.check_rounding(self._all_params())

    def _check_group(self, group):
        super()._check_group(group)
        # (a group's own value: fastopt.optim fills each group's sums from it, where torch uses the default)
        value, largest = group["initial_accumulator_value"], float(np.finfo(np.float32).max)
        if not value >= 0:
            raise ValueError(f"initial_accumulator_value must be >= 0, got {value}")
        # The sum starts at initial_accumulator_value in its dtype (float32 for float32 and 16-bit params): an
        # inf there would freeze them.
        if not value <= largest and any(self._state_dtype(p) == np.float32 for p in group.get("params", ())
                                        if isinstance(p, np.ndarray)):
            raise ValueError(f"initial_accumulator_value must be at most {largest} (the largest float32) for float32 "
                             f"parameters, got {value}")

    def _init_state(self, state, param, group):
        state["step"] = 0
        # (errstate: _check_group's probe state is made here before it refuses a value beyond the state's range)
        with np.errstate(over="ignore"):
            state["sum"] = np.full(param.shape, group["initial_accumulator_value"], self._state_dtype(param))
        if self._precision.quantizes(param):  # (the value exactly: absmax, and the code of 1 in each block)
            state["sum"] = QuantizedState.quantize(state["sum"], signed=SIGNED_MAP_OF["sum"])

    def _update(self, group, params, grads, states, step, grad_scale=1.0):
        for ps, gs, ss in self._by_form(params, grads, states, "sum"):
            adagrad_(ps, gs, [s["sum"] for s in ss], lr=group["lr"], lr_decay=group["lr_decay"],
                     weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                     step=step, grad_scale=grad_scale, **self._rounding(ps))
