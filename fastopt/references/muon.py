"""Muon reference (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks",
kellerjordan.github.io/posts/muon), torch.optim.Muon's semantics, with the Newton-Schulz iteration in
float32.

Per 2-D parameter (rows A, columns B), with ``g`` the gradient (negated first when ``maximize``)::

    buf = momentum*buf + (1 - momentum)*g                 (state "momentum_buffer")
    U = (1 - momentum)*g + momentum*buf   if nesterov   else   U = buf
    O = NewtonSchulz(U)                                   (approximately orthogonalised U)
    p = p * (1 - lr*wd)                                   (decoupled weight decay)
    p = p - lr_adj * O
    lr_adj = lr * sqrt(max(1, A/B))          adjust_lr_fn None or "original"
           = lr * 0.2 * sqrt(max(A, B))      adjust_lr_fn "match_rms_adamw"

    NewtonSchulz(G), in float32, with (a, b, c) = ns_coefficients:
        X = G (transposed when A > B, so X is wide);  X = X / max(||X||_F, eps)
        ns_steps times:  S = X X^T;  X = a*X + (b*S + c*S S) X
        transposed back; the result is cast to the parameter's dtype.

Defaults lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None.

Source: torch/optim/_muon.py (its "Algorithm" block, ``_zeropower_via_newtonschulz`` and the
single-tensor loop).

Choices:
- Newton-Schulz runs in float32 (torch 2.13 runs it in bfloat16): the reference is the accurate
  witness; a kernel's bfloat16 iteration is compared against it at a bfloat16 tolerance. The
  momentum buffer and the parameter update stay in the arrays' dtype.
- ``maximize`` (negate g first) is an addition: torch.optim.Muon has none.
- Only 2-D parameters, as torch (ValueError otherwise, naming the list index).
- The moving averages are written ``beta*old + (1-beta)*new``; torch uses ``lerp``.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

from fastopt.references._lists import check_hyper_names, check_lists, check_step

_HYPER = ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps", "adjust_lr_fn",
          "maximize")


def muon_init_state(param: np.ndarray, **hyper) -> dict:
    """Muon's state: the momentum buffer, zeros."""
    check_hyper_names("muon", hyper, _HYPER)
    if param.ndim != 2:
        raise ValueError(f"Muon takes 2-D parameters only, got shape {param.shape}")
    return {"momentum_buffer": np.zeros_like(param)}


def newton_schulz_float32(
    matrix: np.ndarray, ns_coefficients: Sequence[float] = (3.4445, -4.7750, 2.0315), ns_steps: int = 5,
    eps: float = 1e-7,
) -> np.ndarray:
    """The quintic Newton-Schulz iteration of ``matrix`` in float32 (returns a new float32 array)."""
    a, b, c = (float(x) for x in ns_coefficients)
    x = np.array(matrix, dtype=np.float32)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / max(float(np.linalg.norm(x.astype(np.float64))), eps)  # spectral norm <= Frobenius norm <= 1
    x = x.astype(np.float32)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return np.ascontiguousarray(x.T if tall else x)


def _adjusted_lr(lr: float, adjust_lr_fn: Optional[str], shape) -> float:
    rows, cols = shape
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")


def muon_step(
    params: List[np.ndarray],
    grads: List[np.ndarray],
    states: List[dict],
    *,
    step: int,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: Sequence[float] = (3.4445, -4.7750, 2.0315),
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: Optional[str] = None,
    maximize: bool = False,
) -> None:
    """One Muon update of every (2-D) array in ``params`` (and its state), in place."""
    check_lists(params, grads, states)
    check_step(step)
    for i, param in enumerate(params):
        if param.ndim != 2:
            raise ValueError(f"params[{i}] must be 2-D for Muon, got shape {param.shape}")
    if len(tuple(ns_coefficients)) != 3:
        raise ValueError("ns_coefficients must hold exactly 3 values")
    if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
        raise ValueError(f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")
    lr, weight_decay, momentum = float(lr), float(weight_decay), float(momentum)

    for param, grad, state in zip(params, grads, states):
        g = -grad if maximize else grad
        buf = state["momentum_buffer"]
        buf[...] = momentum * buf + (1.0 - momentum) * g
        update = (1.0 - momentum) * g + momentum * buf if nesterov else buf
        ortho = newton_schulz_float32(update, ns_coefficients, ns_steps, eps).astype(param.dtype)
        param *= 1.0 - lr * weight_decay
        param -= _adjusted_lr(lr, adjust_lr_fn, param.shape) * ortho
