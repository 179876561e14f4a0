"""References for Muon's two elementwise passes (fastopt.muon_momentum_ and fastopt.muon_apply_), written from
the formulas of Muon's step (see fastopt/references/muon.py, whose step is their composition around the
Newton-Schulz iteration). In the table form of the other references: ``params`` are the arrays a pass
writes, ``grads`` those it reads.

muon_momentum (params: the Newton-Schulz input U, written; state "momentum_buffer")::

    g = -grad if maximize else grad
    buf = momentum*buf + (1 - momentum)*g
    U = (1 - momentum)*g + momentum*buf   if nesterov   else   U = buf

muon_apply (grads: the orthogonalised update O; no state)::

    p = p*(1 - lr*weight_decay) - (lr*lr_scale)*O
"""

from __future__ import annotations

from typing import List

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step


def muon_momentum_init_state(param: np.ndarray, **hyper) -> dict:
    check_hyper_names("muon_momentum", hyper, ("momentum", "nesterov", "maximize"))
    return {"momentum_buffer": np.zeros_like(param)}


def muon_momentum_step(params: List[np.ndarray], grads: List[np.ndarray], states: List[dict], *, step: int,
                       momentum: float = 0.95, nesterov: bool = True, maximize: bool = False) -> None:
    check_lists(params, grads, states)
    check_step(step)
    momentum = float(momentum)
    for u, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        buf = state["momentum_buffer"]
        buf[...] = momentum * buf + (1.0 - momentum) * g
        u[...] = (1.0 - momentum) * g + momentum * buf if nesterov else buf


def muon_apply_init_state(param: np.ndarray, **hyper) -> dict:
    check_hyper_names("muon_apply", hyper, ("lr", "weight_decay", "lr_scale"))
    return {}


def muon_apply_step(params: List[np.ndarray], grads: List[np.ndarray], states: List[dict], *, step: int,
                    lr: float = 1e-3, weight_decay: float = 0.1, lr_scale: float = 1.0) -> None:
    check_lists(params, grads, states)
    check_step(step)
    lr, weight_decay, lr_scale = float(lr), float(weight_decay), float(lr_scale)
    for p, update in zip(params, grads):
        p *= 1.0 - lr * weight_decay
        p -= (lr * lr_scale) * update
