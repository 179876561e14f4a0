"""RAdam reference (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond"),
torch.optim.RAdam's semantics.

Per parameter, with ``t`` the 1-based step and ``g`` the gradient (negated first when ``maximize``)::

    weight decay:  decoupled: p = p * (1 - lr*wd)      else (L2): g = g + wd*p
    m = beta1*m + (1 - beta1)*g
    v = beta2*v + (1 - beta2)*g*g
    m_hat   = m / (1 - beta1**t)
    rho_inf = 2/(1 - beta2) - 1
    rho_t   = rho_inf - 2*t*beta2**t / (1 - beta2**t)
    if rho_t > 5:                                  (variance is tractable: rectify)
        r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        p = p - m_hat * lr * (sqrt(1 - beta2**t) / (sqrt(v) + eps)) * r
    else:                                          (plain SGD with momentum)
        p = p - m_hat * lr

Source: the "Algorithm" block of torch/optim/radam.py and its single-tensor (foreach=False) loop.

Choices:
- The switch is torch's strict ``rho_t > 5``; it depends only on (t, beta2), so it is the same for
  every parameter of a step. With beta2 <= 2/3, rho_inf <= 5 and RAdam never rectifies.
- The scalars (rho_t, r, sqrt(bias correction 2)) are Python floats (``math.sqrt``; torch writes
  ``** 0.5``, equal to within an ulp of a double).
- torch updates m with ``lerp``; this reference writes ``beta1*m + (1-beta1)*g`` (equal in exact
  arithmetic, an ulp apart in float32). The update product is formed left to right as torch does.
"""

from __future__ import annotations

import math
from typing import List

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "beta1", "beta2", "eps", "weight_decay", "decoupled_weight_decay", "maximize")


def radam_init_state(param: np.ndarray, **hyper) -> dict:
    """The state torch creates on the first step (without "step")."""
    check_hyper_names("radam", hyper, _HYPER)
    return {"exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param)}


def radam_rectifies(step: int, beta2: float) -> bool:
    """Whether step ``step`` (1-based) takes the rectified branch: rho_t > 5."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2**step / (1.0 - beta2**step)
    return rho_t > 5.0


def radam_step(
    params: List[np.ndarray],
    grads: List[np.ndarray],
    states: List[dict],
    *,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> None:
    """One RAdam update of every array in ``params`` (and its state), in place."""
    check_lists(params, grads, states)
    step = check_step(step)
    lr, beta1, beta2, eps, weight_decay = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)

    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2**step / bias_correction2
    rectify = rho_t > 5.0
    if rectify:
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        sqrt_bias_correction2 = math.sqrt(bias_correction2)

    for param, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        if weight_decay != 0:
            if decoupled_weight_decay:
                param *= 1.0 - lr * weight_decay
            else:
                g = g + weight_decay * param

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
        exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * g * g

        m_hat = exp_avg / bias_correction1
        if rectify:
            adaptive_lr = sqrt_bias_correction2 / (np.sqrt(exp_avg_sq) + eps)
            param -= m_hat * lr * adaptive_lr * rect
        else:
            param -= m_hat * lr
