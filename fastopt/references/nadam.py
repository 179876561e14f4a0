"""NAdam reference (Dozat 2016, "Incorporating Nesterov Momentum into Adam"), torch.optim.NAdam's semantics.

Per parameter, with ``t`` the 1-based step and ``g`` the gradient (negated first when ``maximize``)::

    weight decay:  decoupled: p = p * (1 - lr*wd)      else (L2): g = g + wd*p
    mu_t      = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_{t+1}  = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = mu_product * mu_t                    (state, starts at 1.0)
    m = beta1*m + (1 - beta1)*g
    v = beta2*v + (1 - beta2)*g*g
    denom = sqrt(v / (1 - beta2**t)) + eps
    p = p - lr*(1 - mu_t)/(1 - mu_product) * g/denom
          - lr*mu_{t+1}/(1 - mu_product*mu_{t+1}) * m/denom

Source: the "Algorithm" block of torch/optim/nadam.py and its single-tensor (foreach=False) loop.

Choices:
- ``mu_product`` is a Python float (double), multiplied once per step. torch keeps it as a 0-dim
  tensor of its default dtype (float32 unless changed) and reads it back with ``.item()``; the
  float64 comparison test sets torch's default dtype to float64 so both agree to rounding, and the
  float32 test leaves it float32 (its ~1e-7 relative rounding is within the float32 tolerance).
- torch updates m with ``lerp`` (``m + (1-beta1)*(g - m)``); this reference writes the textbook
  ``beta1*m + (1-beta1)*g``. Equal in exact arithmetic; in float32 they differ by an ulp or so.
- The two parameter terms are subtracted in torch's order (g-term first, then m-term), each as
  ``(c * x) / denom``.
"""

from __future__ import annotations

from typing import List

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "beta1", "beta2", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay", "maximize")


def nadam_init_state(param: np.ndarray, **hyper) -> dict:
    """The state torch creates on the first step (without "step")."""
    check_hyper_names("nadam", hyper, _HYPER)
    return {
        "mu_product": 1.0,
        "exp_avg": np.zeros_like(param),
        "exp_avg_sq": np.zeros_like(param),
    }


def nadam_step(
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
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> None:
    """One NAdam update of every array in ``params`` (and its state), in place."""
    check_lists(params, grads, states)
    step = check_step(step)
    lr, beta1, beta2, eps = float(lr), float(beta1), float(beta2), float(eps)
    weight_decay, momentum_decay = float(weight_decay), float(momentum_decay)

    # Per-step scalars, in Python float (double), as torch computes them.
    bias_correction2 = 1.0 - beta2**step
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))

    for param, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        if weight_decay != 0:
            if decoupled_weight_decay:
                param *= 1.0 - lr * weight_decay
            else:
                g = g + weight_decay * param

        mu_product = state["mu_product"] * mu
        state["mu_product"] = mu_product
        mu_product_next = mu_product * mu_next

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
        exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * g * g
        denom = np.sqrt(exp_avg_sq / bias_correction2) + eps

        grad_coef = lr * (1.0 - mu) / (1.0 - mu_product)
        avg_coef = lr * mu_next / (1.0 - mu_product_next)
        param -= grad_coef * g / denom
        param -= avg_coef * exp_avg / denom
