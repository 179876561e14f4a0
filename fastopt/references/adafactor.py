"""Adafactor reference (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory
Cost"), torch.optim.Adafactor's semantics (torch's variant: no first moment, no relative-step warm-up
beyond ``min(lr, 1/sqrt(t))``).

Per parameter, with ``t`` the 1-based step and ``g`` the gradient (negated first when ``maximize``)::

    beta2_hat = 1 - t ** beta2_decay               (the weight of the new term: w = t ** beta2_decay)
    rho_t = min(lr, 1/sqrt(t))
    alpha = max(eps2, RMS(p)) * rho_t              (RMS(p) = ||p|| / sqrt(numel), before the decay)
    p = p * (1 - lr*wd)                            (decoupled weight decay, when wd != 0)
    p.ndim >= 2 (factored over the last two dims, rows R x columns C):
        row_var = (1 - w)*row_var + w * mean(g*g, axis=-1)     shape (..., R, 1)
        col_var = (1 - w)*col_var + w * mean(g*g, axis=-2)     shape (..., 1, C)
        V = (row_var @ col_var) / max(mean(row_var, axis=-2), eps1)   (outer product over R x C)
    else (vector or scalar):
        variance = (1 - w)*variance + w * g*g
        V = variance
    U = g / sqrt(max(V, eps1**2))
    p = p - (alpha / max(1, RMS(U) / d)) * U       (update clipping at threshold d)

Defaults lr=1e-2, beta2_decay=-0.8, eps1=None (the dtype's machine epsilon, as torch), eps2=1e-3,
d=1.0, weight_decay=0.0. torch's ``eps=(eps1, eps2)`` is split into two keywords.

Source: the "Algorithm" block of torch/optim/_adafactor.py and its single-tensor (foreach=False) loop.

Choices:
- The moving averages are written ``(1-w)*old + w*new``; torch uses ``lerp`` (the same in exact
  arithmetic; at t = 1, w = 1 and both give ``new`` exactly).
- RMS(p) and RMS(U) are Python floats accumulated in float64 (torch: ``norm().item()`` in the
  parameter's dtype); the elementwise arithmetic stays in the arrays' dtype.
- State: "row_var" and "col_var" (keepdim shapes, as torch stores them) for ndim >= 2, "variance"
  otherwise.
"""

from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "beta2_decay", "eps1", "eps2", "d", "weight_decay", "maximize")


def adafactor_init_state(param: np.ndarray, **hyper) -> dict:
    """The state torch creates on the first step (without "step")."""
    check_hyper_names("adafactor", hyper, _HYPER)
    if param.ndim >= 2:
        row_shape = param.shape[:-1] + (1,)
        col_shape = param.shape[:-2] + (1, param.shape[-1])
        return {"row_var": np.zeros(row_shape, param.dtype), "col_var": np.zeros(col_shape, param.dtype)}
    return {"variance": np.zeros_like(param)}


def _rms(array: np.ndarray) -> float:
    if array.size == 0:
        return 0.0
    return math.sqrt(float(np.sum(np.square(array, dtype=np.float64)))) / math.sqrt(array.size)


def adafactor_step(
    params: List[np.ndarray],
    grads: List[np.ndarray],
    states: List[dict],
    *,
    step: int,
    lr: float = 1e-2,
    beta2_decay: float = -0.8,
    eps1: Optional[float] = None,
    eps2: float = 1e-3,
    d: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    """One Adafactor update of every array in ``params`` (and its state), in place."""
    check_lists(params, grads, states)
    step = check_step(step)
    lr, beta2_decay, eps2, d, weight_decay = float(lr), float(beta2_decay), float(eps2), float(d), float(weight_decay)

    new_weight = float(step) ** beta2_decay  # 1 - beta2_hat
    rho = min(lr, 1.0 / math.sqrt(step))

    for param, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        eps = float(np.finfo(param.dtype).eps) if eps1 is None else float(eps1)
        alpha = max(eps2, _rms(param)) * rho

        if weight_decay != 0:
            param *= 1.0 - lr * weight_decay

        if param.ndim >= 2:
            row_var, col_var = state["row_var"], state["col_var"]
            squared = g * g
            row_var[...] = (1.0 - new_weight) * row_var + new_weight * (np.sum(squared, axis=-1, keepdims=True) / g.shape[-1])
            col_var[...] = (1.0 - new_weight) * col_var + new_weight * (np.sum(squared, axis=-2, keepdims=True) / g.shape[-2])
            row_scale = np.maximum(np.mean(row_var, axis=-2, keepdims=True), eps)
            var_estimate = (row_var * col_var) / row_scale  # (..., R, 1) * (..., 1, C): the outer product
        else:
            variance = state["variance"]
            variance[...] = (1.0 - new_weight) * variance + new_weight * (g * g)
            var_estimate = variance.copy()

        update = g / np.sqrt(np.maximum(var_estimate, eps * eps))
        denom = max(1.0, _rms(update) / d)
        param -= (alpha / denom) * update
