"""ASGD reference (averaged SGD: Polyak & Juditsky 1992; the step-size schedule of Bottou 2012,
"Stochastic Gradient Descent Tricks"), torch.optim.ASGD's semantics.

Per parameter, with ``t`` the 1-based step and ``g`` the gradient (negated first when ``maximize``)::

    g = g + wd*p                                   (L2 weight decay, when wd != 0)
    p = p * (1 - lambd*eta)                        (decay term, eta = the state's current eta)
    p = p - eta*g
    ax = ax + (p - ax)*mu    if mu != 1   else   ax = p      (the running average of p)
    eta = lr / (1 + lambd*lr*t) ** alpha           (state, for the next step)
    mu  = 1 / max(1, t - t0)                       (state, for the next step)

State: eta (starts at lr), mu (starts at 1.0), ax (starts at zeros).

Source: the "Algorithm" block of torch/optim/asgd.py and its single-tensor (foreach=False) loop.

Choices:
- eta and mu are Python floats (double). torch keeps them as 0-dim tensors of its default dtype
  (float32 unless changed): it rounds each new eta/mu to that dtype and reads eta back with
  ``.item()``. The float64 comparison test sets torch's default dtype to float64, so both agree to
  rounding; the float32 test keeps float32 (a ~1e-7 relative difference in eta, inside float32's
  tolerance).
- ``ax = p`` (a copy) while mu == 1 exactly, as torch does; with the default t0 = 1e6 that is every
  step of a short run, so averaging only shows with a small t0.
"""

from __future__ import annotations

from typing import List

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "lambd", "alpha", "t0", "weight_decay", "maximize")


def asgd_init_state(param: np.ndarray, **hyper) -> dict:
    """The state torch creates on the first step (without "step"): eta = lr, mu = 1, ax = 0."""
    check_hyper_names("asgd", hyper, _HYPER)
    return {"eta": float(hyper.get("lr", 1e-2)), "mu": 1.0, "ax": np.zeros_like(param)}


def asgd_step(
    params: List[np.ndarray],
    grads: List[np.ndarray],
    states: List[dict],
    *,
    step: int,
    lr: float = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    """One ASGD update of every array in ``params`` (and its state), in place."""
    check_lists(params, grads, states)
    step = check_step(step)
    lr, lambd, alpha, t0, weight_decay = float(lr), float(lambd), float(alpha), float(t0), float(weight_decay)

    # The schedule for the next step depends only on t.
    next_eta = lr / ((1.0 + lambd * lr * step) ** alpha)
    next_mu = 1.0 / max(1.0, step - t0)

    for param, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        if weight_decay != 0:
            g = g + weight_decay * param

        eta, mu = float(state["eta"]), float(state["mu"])
        param *= 1.0 - lambd * eta
        param -= eta * g

        ax = state["ax"]
        if mu != 1.0:
            ax[...] = ax + (param - ax) * mu
        else:
            ax[...] = param

        state["eta"] = next_eta
        state["mu"] = next_mu
