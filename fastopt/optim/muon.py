"""Stateful Muon over 2-D NumPy arrays (torch.optim.Muon's hyperparameters and state: ``momentum_buffer``);
the step is fastopt._muon's: fused elementwise kernels around a NumPy Newton-Schulz iteration."""

from __future__ import annotations

import numpy as np

from fastopt import _muon
from fastopt.optim._state_dtype import CompactState
from fastopt.optim.optimizer import Optimizer


class Muon(CompactState, Optimizer):
    """``Muon(params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
    ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None, maximize=False,
    ns_dtype=None, state_dtype=None)``

    torch.optim.Muon for 2-D float32/float64 NumPy arrays (see fastopt.muon_ for the update). Newton-Schulz
    runs through NumPy's matmul in ``ns_dtype`` (None: the parameter's dtype; torch runs it in bfloat16).
    ``maximize`` is fastopt's addition. State per parameter: ``momentum_buffer`` (zeros at first), as torch:
    of the params' dtype (``state_dtype=None``), float32 (``"float32"``), ml_dtypes.bfloat16 (``"bfloat16"``,
    for float32 params: half the memory, rounded to nearest-even; torch's Muon keeps no step count, so there is
    no stochastic rounding) or fastopt.QuantizedState (``"int8"``: 8-bit blockwise in the signed map, for float32
    params of at least 4096 elements; float32 for smaller ones).
    """

    _state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None,
                 maximize=False, ns_dtype=None, state_dtype=None):
        self._ns_dtype = _muon.check_ns_dtype_numpy(ns_dtype)
        self._set_precision(state_dtype, False, 0)
        if isinstance(ns_coefficients, list):
            ns_coefficients = tuple(ns_coefficients)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn, maximize=maximize))

    def add_param_group(self, group):
        params = group.get("params") if isinstance(group, dict) else None
        params = [params] if isinstance(params, np.ndarray) else params
        first = sum(len(g["params"]) for g in self.param_groups)
        for j, p in enumerate(params if isinstance(params, (list, tuple)) else ()):
            self._check_2d(p, first + j)
        super().add_param_group(group)

    @staticmethod
    def _check_2d(p, i):
        if isinstance(p, np.ndarray) and p.ndim != 2:
            raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: {p.shape} "
                             f"(params[{i}])")

    def step(self, grads, *, grad_scale=1.0, skip_nonfinite=False):
        # (the groups' lists are the caller's to edit: a parameter appended later is checked here)
        for i, p in enumerate(self._all_params()):
            self._check_2d(p, i)
        return super().step(grads, grad_scale=grad_scale, skip_nonfinite=skip_nonfinite)

    def _init_state(self, state, param, group):
        state["momentum_buffer"] = self._new_state(param, "momentum_buffer")

    # torch's Muon keeps no step count
    def _next_key(self, state):
        return None

    def _count(self, state, key):
        pass

    def _check_key(self):
        return None

    def _update(self, group, params, grads, states, key, grad_scale=1.0):
        hyper = {k: group[k] for k in ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps",
                                       "ns_steps", "adjust_lr_fn", "maximize")}
        real = [p for p in params if p.ndim == 2]
        _muon.check_all_numpy(real if real else params, grad_scale=grad_scale, **hyper)
        if not real:  # (the checking calls on empty stand-ins)
            return
        # (with state_dtype="int8", the params with 8-bit state and the small ones with float32 state: a step each)
        for ps, gs, ss in self._by_form(params, grads, states, "momentum_buffer"):
            _muon.numpy_step(ps, gs, [s["momentum_buffer"] for s in ss], ns_dtype=self._ns_dtype,
                             grad_scale=grad_scale, **hyper)
