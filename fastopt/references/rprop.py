"""Rprop reference (Riedmiller & Braun 1993, "A Direct Adaptive Method for Faster Backpropagation
Learning: The RPROP Algorithm"; the iRprop- variant), torch.optim.Rprop's semantics.

Per parameter, elementwise, with ``g`` the gradient (negated first when ``maximize``)::

    s = sign(g * prev)
    step_size = clamp(step_size * (etaplus if s > 0, etaminus if s < 0, 1 if s == 0),
                      step_size_min, step_size_max)
    g = 0 where s < 0                              (a sign flip: no move, and forget this gradient)
    p = p - sign(g) * step_size
    prev = g

State: prev (starts at zeros), step_size (starts at lr everywhere).

Source: the "Algorithm" block of torch/optim/rprop.py and its single-tensor (foreach=False) loop.

Choices:
- The sign test is on the product ``g * prev`` in the array's dtype, as torch computes it: a
  product that underflows to 0 counts as "no sign information" (factor 1), not as a flip.
- torch's ``etas=(etaminus, etaplus)`` and ``step_sizes=(step_size_min, step_size_max)`` are split
  into four keywords. Factors and bounds are rounded to the array's dtype, as torch's do.
- ``step`` is accepted for a uniform signature; Rprop does not depend on it.
"""

from __future__ import annotations

from typing import List

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "etaminus", "etaplus", "step_size_min", "step_size_max", "maximize")


def rprop_init_state(param: np.ndarray, **hyper) -> dict:
    """The state torch creates on the first step (without "step"): prev = 0, step_size = lr."""
    check_hyper_names("rprop", hyper, _HYPER)
    return {"prev": np.zeros_like(param), "step_size": np.full_like(param, float(hyper.get("lr", 1e-2)))}


def rprop_step(
    params: List[np.ndarray],
    grads: List[np.ndarray],
    states: List[dict],
    *,
    step: int,
    lr: float = 1e-2,
    etaminus: float = 0.5,
    etaplus: float = 1.2,
    step_size_min: float = 1e-6,
    step_size_max: float = 50.0,
    maximize: bool = False,
) -> None:
    """One Rprop update of every array in ``params`` (and its state), in place.

    ``lr`` only sets the initial step size (in ``rprop_init_state``); it is accepted here so both
    functions take the same keywords.
    """
    check_lists(params, grads, states)
    check_step(step)
    if not 0.0 < etaminus < 1.0 < etaplus:
        raise ValueError(f"need 0 < etaminus < 1 < etaplus, got etaminus={etaminus}, etaplus={etaplus}")

    for param, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        prev, step_size = state["prev"], state["step_size"]

        agreement = np.sign(g * prev)
        factor = np.ones_like(param)
        factor[agreement > 0] = etaplus
        factor[agreement < 0] = etaminus
        step_size[...] = np.minimum(np.maximum(step_size * factor, step_size_min), step_size_max)

        g = np.where(agreement < 0, np.zeros_like(g), g)
        param -= np.sign(g) * step_size
        prev[...] = g
