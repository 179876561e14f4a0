"""Argument checks shared by the reference optimizers (no math lives here).

Every ``<name>_step`` takes three parallel lists (params, grads, states) and updates the first and
the arrays of the third in place; every ``<name>_init_state`` takes the same hyperparameter keywords
as its step and uses only those it needs. A mismatch is the caller's error and is reported before
anything is written.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np


def check_lists(params: Sequence, grads: Sequence, states: Sequence) -> None:
    """Raise ValueError/TypeError (naming the argument and index) unless the three lists line up."""
    if len(grads) != len(params):
        raise ValueError(f"grads has {len(grads)} arrays but params has {len(params)}")
    if len(states) != len(params):
        raise ValueError(f"states has {len(states)} entries but params has {len(params)}")
    for i, (p, g) in enumerate(zip(params, grads)):
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
            raise TypeError(f"params[{i}] must be a floating-point numpy array")
        if not isinstance(g, np.ndarray) or g.shape != p.shape:
            raise ValueError(f"grads[{i}] must be a numpy array of shape {p.shape}")
        if not p.flags.writeable:
            raise ValueError(f"params[{i}] is read-only")


def check_step(step: int) -> int:
    """Return ``step`` as a Python int (a NumPy integer would make ``beta**step`` a float64 scalar,
    which upcasts float32 arrays)."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be the 1-based number of this update, got {step!r}")
    return int(step)


def check_hyper_names(optimizer: str, hyper: Mapping, known: Iterable[str]) -> None:
    """``<name>_init_state(param, **hyper)`` accepts the step's keywords; anything else is a typo."""
    unknown = sorted(set(hyper) - set(known))
    if unknown:
        raise TypeError(f"{optimizer}_init_state got unknown hyperparameter(s): {', '.join(unknown)}")
