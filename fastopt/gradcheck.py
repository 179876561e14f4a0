"""Numerical gradient check: centered differences of a scalar function, compared with an analytic
gradient, as in the course notes (relative error |a - n| / max(|a| + |n|, tiny))."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np


def gradcheck(f: Callable[[np.ndarray], float], x: np.ndarray, analytic_grad: np.ndarray, *,
              h: float = 1e-5, num_checks: Optional[int] = None, seed: Optional[int] = None) -> float:
    """Largest relative error between `analytic_grad` and the centered difference
    (f(x + h e_i) - f(x - h e_i)) / (2h), over every coordinate or `num_checks` random ones.

    `f` is called with `x` itself, perturbed in place one coordinate at a time; every coordinate is
    restored afterwards, even when `f` raises. Use float64 for meaningful errors: around 1e-7 or less
    means the gradient is right; float32 rounding alone gives errors near 1e-2 at h = 1e-5.
    """
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError("x must be a floating-point numpy.ndarray")
    if not x.flags.writeable:
        raise ValueError("x must be writeable: gradcheck perturbs it in place and restores it")
    analytic_grad = np.asarray(analytic_grad)
    if analytic_grad.shape != x.shape:
        raise ValueError(f"analytic_grad has shape {analytic_grad.shape} but x has shape {x.shape}")
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"h must be a positive finite number, got {h}")
    if num_checks is not None and num_checks < 1:
        raise ValueError(f"num_checks must be >= 1, got {num_checks}")

    if num_checks is None:
        indices = list(np.ndindex(x.shape))
    else:
        rng = np.random.default_rng(seed)
        indices = [tuple(int(rng.integers(0, d)) for d in x.shape) for _ in range(num_checks)]
    if x.size == 0:
        return 0.0

    tiny = np.finfo(np.float64).tiny
    worst = 0.0
    for index in indices:
        old = x[index]
        try:
            x[index] = old + h
            f_plus = float(f(x))
            x[index] = old - h
            f_minus = float(f(x))
        finally:
            x[index] = old
        numeric = (f_plus - f_minus) / (2 * h)
        analytic = float(analytic_grad[index])
        error = abs(analytic - numeric) / max(abs(analytic) + abs(numeric), tiny)
        worst = max(worst, error)
    return worst
