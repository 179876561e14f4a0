"""Adamax reference (Kingma & Ba 2015, section 7.1: Adam with the infinity norm), torch.optim.Adamax's
semantics.

Per parameter, with ``t`` the 1-based step and ``g`` the gradient (negated first when ``maximize``)::

    g = g + wd*p                                   (L2 weight decay, when wd != 0)
    m = beta1*m + (1 - beta1)*g
    u = max(beta2*u, |g| + eps)                    (state "exp_inf")
    p = p - (lr / (1 - beta1**t)) * m / u

Source: the "Algorithm" block of torch/optim/adamax.py and its single-tensor (foreach=False) loop.

Choices:
- eps is added to |g| inside the max, as torch does (the paper adds none; torch's choice keeps u > 0
  from the first step, so the division never meets a zero).
- torch updates m with ``lerp``; this reference writes ``beta1*m + (1-beta1)*g`` (equal in exact
  arithmetic, an ulp apart in float32). The parameter update is ``p - (clr*m)/u`` as torch's
  ``addcdiv(value=-clr)`` forms it.
"""

from __future__ import annotations

from typing import List

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "beta1", "beta2", "eps", "weight_decay", "maximize")


def adamax_init_state(param: np.ndarray, **hyper) -> dict:
    """The state torch creates on the first step (without "step")."""
    check_hyper_names("adamax", hyper, _HYPER)
    return {"exp_avg": np.zeros_like(param), "exp_inf": np.zeros_like(param)}


def adamax_step(
    params: List[np.ndarray],
    grads: List[np.ndarray],
    states: List[dict],
    *,
    step: int,
    lr: float = 2e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    """One Adamax update of every array in ``params`` (and its state), in place."""
    check_lists(params, grads, states)
    step = check_step(step)
    lr, beta1, beta2, eps, weight_decay = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)
    clr = lr / (1.0 - beta1**step)

    for param, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        if weight_decay != 0:
            g = g + weight_decay * param

        exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
        exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
        exp_inf[...] = np.maximum(beta2 * exp_inf, np.abs(g) + eps)
        param -= clr * exp_avg / exp_inf
