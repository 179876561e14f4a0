"""LAMB reference (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76
minutes", Algorithm 2), with the trust ratio and the global gradient clipping of NVIDIA apex's FusedLAMB.

With ``t`` the 1-based step, over the whole list of parameters::

    g_i = -g_i for every i                                       (when maximize)
    max_grad_norm given:  G = sqrt(sum_i ||g_i||^2)              (one norm over the whole list)
                          g_i = g_i / (G / max_grad_norm)  for every i, when G > max_grad_norm

then per parameter tensor::

    m = beta1*m + (1 - beta1)*g
    v = beta2*v + (1 - beta2)*g*g
    m_hat = m / (1 - beta1**t),  v_hat = v / (1 - beta2**t)     (both divisors 1 when bias_correction=False)
    u = m_hat / (sqrt(v_hat) + eps) + wd*p
    r = ||p|| / ||u||          (r = 1 when ||p|| == 0 or ||u|| == 0)
    p = p - (lr*r) * u

Defaults lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01, bias_correction=True,
max_grad_norm=None (no clipping).

Choices (apex apex/optimizers/fused_lamb.py + csrc/multi_tensor_lamb.cu, adam_w_mode=True, read for
the conventions, no code shared):
- Clipping: apex divides every gradient by ``G / max_grad_norm`` when ``G > max_grad_norm`` (the same
  factor for the whole list, before the moments; nothing when G <= max_grad_norm). This reference does
  exactly that, the factor a Python float. ``max_grad_norm=None`` or ``0`` disables it (apex's default is
  1.0; here clipping is opt-in). maximize negates first (the norm is unaffected).
- Weight decay is decoupled into the update u (apex's adam_w_mode=True), so it is also scaled by r.
- The trust ratio is applied to every tensor (the paper's Algorithm 2, apex's ``use_nvlamb=True``);
  apex's default ``use_nvlamb=False`` skips it (r = 1) for tensors whose weight_decay is 0. The norm of
  p is taken before this step's update, as apex does.
- Norms (G, ||p||, ||u||) are accumulated in float64 whatever the arrays' dtype (the reference is the
  accurate witness; apex accumulates in float32); r and the clip factor are Python floats, so the
  elementwise arithmetic stays in the arrays' dtype.
- The moments update as written (textbook ``beta*m + (1-beta)*g``), the direction as
  ``m_hat / (sqrt(v_hat) + eps)`` with m_hat and v_hat divided (not multiplied by reciprocals).
"""

from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "beta1", "beta2", "eps", "weight_decay", "bias_correction", "max_grad_norm", "maximize")


def lamb_init_state(param: np.ndarray, **hyper) -> dict:
    """LAMB's state: Adam's two moments, zeros."""
    check_hyper_names("lamb", hyper, _HYPER)
    return {"exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param)}


def _norm(array: np.ndarray) -> float:
    """The L2 norm, accumulated in float64."""
    return math.sqrt(float(np.sum(np.square(array, dtype=np.float64))))


def lamb_step(
    params: List[np.ndarray],
    grads: List[np.ndarray],
    states: List[dict],
    *,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    bias_correction: bool = True,
    max_grad_norm: Optional[float] = None,
    maximize: bool = False,
) -> None:
    """One LAMB update of every array in ``params`` (and its state), in place."""
    check_lists(params, grads, states)
    step = check_step(step)
    if max_grad_norm is not None and not max_grad_norm >= 0:
        raise ValueError(f"max_grad_norm must be None or >= 0, got {max_grad_norm!r}")
    lr, beta1, beta2, eps, weight_decay = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)

    gs = [-g if maximize else g for g in grads]
    if max_grad_norm:
        global_norm = math.sqrt(sum(_norm(g) ** 2 for g in gs))
        if global_norm > max_grad_norm:
            clip = global_norm / float(max_grad_norm)
            gs = [g / clip for g in gs]

    if bias_correction:
        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
    else:
        bias_correction1 = bias_correction2 = 1.0

    for param, g, state in zip(params, gs, states):
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
        exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * g * g

        update = (exp_avg / bias_correction1) / (np.sqrt(exp_avg_sq / bias_correction2) + eps)
        if weight_decay != 0:
            update = update + weight_decay * param

        param_norm, update_norm = _norm(param), _norm(update)
        trust_ratio = param_norm / update_norm if param_norm != 0 and update_norm != 0 else 1.0
        param -= (lr * trust_ratio) * update
