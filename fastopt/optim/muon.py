"""Stateful Muon over 2-D NumPy arrays (torch.optim.Muon's hyperparameters and state: ``momentum_buffer``);
the step is fastopt._muon's: fused elementwise kernels around a NumPy Newton-Schulz iteration."""

from __future__ import annotations

import numpy as np

from fastopt import _muon
from fastopt.optim.optimizer import Optimizer


class Muon(Optimizer):
    """``Muon(params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
    ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None, maximize=False,
    ns_dtype=None)``

    torch.optim.Muon for 2-D float32/float64 NumPy arrays (see fastopt.muon_ for the update). Newton-Schulz
    runs through NumPy's matmul in ``ns_dtype`` (None: the parameter's dtype; torch runs it in bfloat16).
    ``maximize`` is fastopt's addition. State per parameter: ``momentum_buffer`` (zeros at first), as torch.
    """

    _state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None,
                 maximize=False, ns_dtype=None):
        self._ns_dtype = _muon.check_ns_dtype_numpy(ns_dtype)
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
        state["momentum_buffer"] = np.zeros_like(param)

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
        _muon.numpy_step(params, grads, [s["momentum_buffer"] for s in states], ns_dtype=self._ns_dtype,
                         grad_scale=grad_scale, **hyper)
