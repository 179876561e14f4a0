"""Adadelta reference (Zeiler 2012, "ADADELTA: An Adaptive Learning Rate Method", Algorithm 1),
torch.optim.Adadelta's semantics.

Per parameter, with ``g`` the gradient (negated first when ``maximize``)::

    g = g + wd*p                                   (L2 weight decay, when wd != 0)
    E[g^2]  = rho*E[g^2] + (1 - rho)*g*g           (state "square_avg")
    delta   = sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g
    E[dx^2] = rho*E[dx^2] + (1 - rho)*delta*delta  (state "acc_delta")
    p = p - lr*delta

Source: the "Algorithm" block of torch/optim/adadelta.py and its single-tensor (foreach=False) loop.

Choices:
- torch's ``lr`` scales the update (the paper has none: lr=1.0, torch's default, is the paper).
- ``delta`` is formed as torch does: ``(sqrt(acc + eps) / sqrt(sq + eps)) * g``.
- ``step`` is accepted for a uniform signature; Adadelta does not depend on it.
"""

from __future__ import annotations

from typing import List

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "rho", "eps", "weight_decay", "maximize")


def adadelta_init_state(param: np.ndarray, **hyper) -> dict:
    """The state torch creates on the first step (without "step")."""
    check_hyper_names("adadelta", hyper, _HYPER)
    return {"square_avg": np.zeros_like(param), "acc_delta": np.zeros_like(param)}


def adadelta_step(
    params: List[np.ndarray],
    grads: List[np.ndarray],
    states: List[dict],
    *,
    step: int,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    """One Adadelta update of every array in ``params`` (and its state), in place."""
    check_lists(params, grads, states)
    check_step(step)
    lr, rho, eps, weight_decay = float(lr), float(rho), float(eps), float(weight_decay)

    for param, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        if weight_decay != 0:
            g = g + weight_decay * param

        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg[...] = rho * square_avg + (1.0 - rho) * g * g
        std = np.sqrt(square_avg + eps)
        delta = np.sqrt(acc_delta + eps) / std * g
        acc_delta[...] = rho * acc_delta + (1.0 - rho) * delta * delta
        param -= lr * delta
