"""Lion reference (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Program 1).

Per parameter, with ``g`` the gradient (negated first when ``maximize``)::

    c = beta1*m + (1 - beta1)*g                    (the interpolation that picks the direction)
    p = p * (1 - lr*wd)                            (decoupled weight decay)
    p = p - lr*sign(c)
    m = beta2*m + (1 - beta2)*g                    (state "exp_avg")

Defaults lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0 (the paper's; it suggests an lr 3-10x
smaller and a weight decay 3-10x larger than AdamW's).

Choices:
- sign(0) = 0: an element whose c is exactly zero does not move (beyond the weight decay).
- The decay multiplies p before the signed step, as in the paper's program (``update + wd*p`` times
  lr, i.e. ``p - lr*wd*p - lr*sign(c)``, written as one factor on p).
- There is no torch.optim.Lion; no state besides m, and ``step`` is accepted for a uniform
  signature only (Lion has no bias correction).
"""

from __future__ import annotations

from typing import List

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "beta1", "beta2", "weight_decay", "maximize")


def lion_init_state(param: np.ndarray, **hyper) -> dict:
    """Lion's state: the momentum m, zeros."""
    check_hyper_names("lion", hyper, _HYPER)
    return {"exp_avg": np.zeros_like(param)}


def lion_step(
    params: List[np.ndarray],
    grads: List[np.ndarray],
    states: List[dict],
    *,
    step: int,
    lr: float = 1e-4,
    beta1: float = 0.9,
    beta2: float = 0.99,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    """One Lion update of every array in ``params`` (and its state), in place."""
    check_lists(params, grads, states)
    check_step(step)
    lr, beta1, beta2, weight_decay = float(lr), float(beta1), float(beta2), float(weight_decay)

    for param, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        exp_avg = state["exp_avg"]
        direction = beta1 * exp_avg + (1.0 - beta1) * g
        if weight_decay != 0:
            param *= 1.0 - lr * weight_decay
        param -= lr * np.sign(direction)  # np.sign(0) == 0
        exp_avg[...] = beta2 * exp_avg + (1.0 - beta2) * g
