"""Muon (Jordan et al. 2024; torch.optim.Muon's semantics), shared by fastopt.muon_, fastopt.optim.Muon and
fastopt.torch.Muon. Per 2-D parameter::

    buf = momentum*buf + (1 - momentum)*g;  U = nesterov ? (1 - momentum)*g + momentum*buf : buf
    O = NewtonSchulz(U);  p = p*(1 - lr*weight_decay) - lr*lr_scale(shape)*O

The elementwise passes are fused kernels (csrc/include/fastopt/muon.h: fastopt.muon_momentum_ over the whole
list in one call, fastopt.muon_apply_ once per distinct lr_scale); the Newton-Schulz iteration is matrix
products through the arrays' own framework: NumPy's matmul (float32 by default, float64 for float64
arrays) or torch's (bfloat16 by default, exactly torch.optim.Muon's ops, so the twin gives torch's numbers).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fastopt import _core, _hyper
from fastopt._overlap import check_disjoint

DEFAULTS: Dict[str, Any] = dict(lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                                ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None)
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
MAX_NS_STEPS = 100  # torch refuses ns_steps >= 100


def lr_scale(adjust_lr_fn: Optional[str], shape: Sequence[int]) -> float:
    """Muon's shape adjustment of the step (torch's _adjust_lr, divided by lr): the update's step is
    lr * lr_scale."""
    rows, cols = int(shape[0]), int(shape[1])
    if cols == 0:  # (an empty matrix: no update to scale; torch divides by zero here)
        return 1.0
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def check_ns(ns_coefficients: Any, eps: Any, ns_steps: Any, adjust_lr_fn: Any, *,
             coefficients_name: str = "ns_coefficients") -> Tuple[Tuple[float, ...], float, int]:
    """The Newton-Schulz options and adjust_lr_fn, checked (TypeError / ValueError naming each, torch's
    words where torch has some); returns (a, b, c), eps and ns_steps as Python numbers. coefficients_name:
    the caller's name of the coefficients (fastopt.jax.muon takes optax's ``ns_coeffs``)."""
    _hyper.triple(ns_coefficients, coefficients_name)
    coefficients = tuple(_hyper.real(c, f"{coefficients_name}[{k}]") for k, c in enumerate(ns_coefficients))
    for k, c in enumerate(coefficients):
        if not math.isfinite(c):
            raise ValueError(f"{coefficients_name}[{k}] must be finite, got {c}")
    eps = _hyper.real(eps, "eps")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be > 0 and finite, got {eps}")
    steps = _hyper.count(ns_steps, "ns_steps")
    if steps >= MAX_NS_STEPS:
        raise ValueError(f"Number of steps must be less than 100 for computational efficiency (ns_steps={steps})")
    if steps < 0:
        raise ValueError(f"ns_steps must be >= 0, got {steps}")
    if adjust_lr_fn is not None and not isinstance(adjust_lr_fn, str):
        raise TypeError(f"adjust_lr_fn must be None or a string, got {_hyper.describe(adjust_lr_fn)}")
    if adjust_lr_fn not in ADJUST_LR_FNS:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported (adjust_lr_fn must be "
                         "None, 'original' or 'match_rms_adamw')")
    return coefficients, eps, steps


def check_kernel_values(empty: Callable[[], Any], lr: Any, weight_decay: Any, momentum: Any, nesterov: Any,
                        maximize: Any, largest_scale: float, grad_scale: Any = 1.0) -> None:
    """The elementwise kernels' own checks of their hyperparameters (ranges, the arithmetic's range for the
    dtype of `empty()`), on empty operands: nothing is written."""
    _core.muon_momentum_([empty()], [empty()], [empty()], momentum=momentum, nesterov=nesterov, maximize=maximize,
                         grad_scale=grad_scale)
    _core.muon_apply_([empty()], [empty()], lr=lr, weight_decay=weight_decay, lr_scale=largest_scale)


# ---------------------------------------------------------------------------------------- Newton-Schulz
def newton_schulz_numpy(update: np.ndarray, coefficients: Sequence[float], steps: int, eps: float,
                        dtype: Any) -> np.ndarray:
    """The quintic Newton-Schulz iteration of a 2-D NumPy array in `dtype` (a new array of that dtype):
    X = U (transposed when tall) / max(||U||_F, eps); `steps` times S = X X^T, X = a X + (b S + c S S) X."""
    a, b, c = coefficients
    x = np.array(update, dtype=dtype)  # (a copy: U is not changed)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    # The norm accumulated in float64 (no overflow or loss for a float32 matrix), then one division.
    norm = math.sqrt(float(np.einsum("ij,ij->", x, x, dtype=np.float64)))
    x = x / x.dtype.type(max(norm, eps))
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def newton_schulz_torch(update, coefficients: Sequence[float], steps: int, eps: float, dtype):
    """The same iteration with torch's ops, as torch.optim.Muon's _zeropower_via_newtonschulz runs it (which
    is bfloat16): the same casts, norm, clamp and addmm calls, so the same numbers. Returns a tensor of
    `dtype`."""
    import torch

    a, b, c = coefficients
    x = update.to(dtype)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x = x.div(x.norm().clamp(min=eps))  # (x may be `update` itself when dtype matches: not in place)
    for _ in range(steps):
        gram = x @ x.T
        gram_update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, gram_update, x, beta=a)
    return x.T if tall else x


# ---------------------------------------------------------------------------------------- the step
def run_step(params: list, grads: list, buffers: list, shapes: List[Tuple[int, int]], *, lr: float,
             weight_decay: float, momentum: float, nesterov: bool, adjust_lr_fn: Optional[str],
             maximize: bool, grad_scale: Any = 1.0, new_updates: Callable, orthogonalise: Callable) -> None:
    """One Muon step over checked operands (what the kernels take: arrays, or flat views of tensors).
    new_updates(k) makes parameter k's U buffer as (kernel operand, 2-D matrix over the same memory);
    orthogonalise(k, U matrix) returns O as a kernel operand of the parameter's dtype."""
    if not params:
        return
    updates = [new_updates(k) for k in range(len(params))]
    _core.muon_momentum_([u for u, _ in updates], grads, buffers, momentum=momentum, nesterov=nesterov,
                         maximize=maximize, grad_scale=grad_scale)
    outputs = [orthogonalise(k, matrix) for k, (_, matrix) in enumerate(updates)]
    del updates
    # One fused call per distinct step size (shapes of one aspect share it).
    by_scale: Dict[float, List[int]] = {}
    for k, shape in enumerate(shapes):
        by_scale.setdefault(lr_scale(adjust_lr_fn, shape), []).append(k)
    for scale, members in by_scale.items():
        _core.muon_apply_([params[k] for k in members], [outputs[k] for k in members], lr=lr,
                          weight_decay=weight_decay, lr_scale=scale)


def _check_arrays(params, grads, buffers) -> None:
    for name, values in (("params", params), ("grads", grads), ("momentum_buffers", buffers)):
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"{name} must be a list of numpy arrays, got {type(values).__name__}")
    if not len(params) == len(grads) == len(buffers):
        raise ValueError(f"params, grads and momentum_buffers must be lists of one length, got {len(params)}, "
                         f"{len(grads)} and {len(buffers)}")
    spans = []
    for i, p in enumerate(params):
        if type(p) is not np.ndarray:
            raise TypeError(f"params[{i}] must be a numpy.ndarray, got {type(p).__name__} (torch tensors: "
                            "fastopt.torch.Muon)")
        if p.ndim != 2:
            raise ValueError(f"params[{i}] must be 2-D for Muon, got shape {p.shape}")
        if p.dtype not in (np.float32, np.float64):
            raise TypeError(f"params[{i}] must be float32 or float64, got {p.dtype}")
        if not (p.flags.c_contiguous and p.flags.writeable):
            raise ValueError(f"params[{i}] must be a writeable C-contiguous array")
        for name, a in ((f"grads[{i}]", grads[i]), (f"momentum_buffers[{i}]", buffers[i])):
            if type(a) is not np.ndarray:
                raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
            if a.dtype != p.dtype:
                raise TypeError(f"{name} has dtype {a.dtype} but params[{i}] has {p.dtype}")
            if a.shape != p.shape:
                raise ValueError(f"{name} has shape {a.shape} but params[{i}] has shape {p.shape}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{name} is not C-contiguous")
        if not buffers[i].flags.writeable:
            raise ValueError(f"momentum_buffers[{i}] is read-only")
        for name, a, written in ((f"params[{i}]", p, True), (f"grads[{i}]", grads[i], False),
                                 (f"momentum_buffers[{i}]", buffers[i], True)):
            if a.nbytes:
                start = a.__array_interface__["data"][0]
                spans.append((start, start + a.nbytes, name, written))
    check_disjoint(spans, "array")


def numpy_step(params, grads, buffers, *, lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps,
               adjust_lr_fn, maximize, ns_dtype=None, grad_scale=1.0) -> None:
    """One step over NumPy arrays already checked by _check_arrays (and hyperparameters by check_all)."""
    coefficients, eps, steps = check_ns(ns_coefficients, eps, ns_steps, adjust_lr_fn)

    def new_updates(k):
        u = np.empty_like(params[k])
        return u, u

    def orthogonalise(k, u):
        dtype = params[k].dtype if ns_dtype is None else ns_dtype
        out = newton_schulz_numpy(u, coefficients, steps, eps, dtype)
        return np.ascontiguousarray(out, dtype=params[k].dtype)

    run_step(params, grads, buffers, [p.shape for p in params], lr=lr, weight_decay=weight_decay, momentum=momentum,
             nesterov=nesterov, adjust_lr_fn=adjust_lr_fn, maximize=maximize, grad_scale=grad_scale,
             new_updates=new_updates, orthogonalise=orthogonalise)


def check_ns_dtype_numpy(ns_dtype: Any) -> Any:
    if ns_dtype is None:
        return None
    try:
        dtype = np.dtype(ns_dtype)
    except TypeError:
        raise TypeError(f"ns_dtype must be None, numpy.float32 or numpy.float64, got {_hyper.describe(ns_dtype)}") \
            from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"ns_dtype must be None, numpy.float32 or numpy.float64, got {dtype}")
    return dtype


def check_all_numpy(params, *, lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn,
                    maximize, grad_scale=1.0) -> None:
    """Every hyperparameter of a NumPy step: kinds, the Newton-Schulz options, then the kernels' rules for
    each dtype among `params` (float64 when none)."""
    hyper = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                 ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
                 maximize=maximize)
    _hyper.check_hyperparameters(hyper)
    check_ns(ns_coefficients, eps, ns_steps, adjust_lr_fn)
    largest = max([lr_scale(adjust_lr_fn, p.shape) for p in params if getattr(p, "ndim", 0) == 2], default=1.0)
    dtypes = sorted({p.dtype for p in params if isinstance(p, np.ndarray)}, key=str) or [np.dtype(np.float64)]
    for dtype in dtypes:
        if dtype in (np.float32, np.float64):
            check_kernel_values(lambda: np.empty(0, dtype), lr, weight_decay, momentum, nesterov, maximize, largest,
                                grad_scale)


def muon_(params: List[np.ndarray], grads: List[np.ndarray], momentum_buffers: List[np.ndarray], *,
          lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95, nesterov: bool = True,
          ns_coefficients: Tuple[float, float, float] = (3.4445, -4.7750, 2.0315), eps: float = 1e-7,
          ns_steps: int = 5, adjust_lr_fn: Optional[str] = None, maximize: bool = False,
          ns_dtype: Any = None) -> None:
    """One Muon step (torch.optim.Muon's semantics) of 2-D float32/float64 NumPy arrays, in place::

        buf = momentum*buf + (1 - momentum)*g            (g = -grad when maximize)
        U = (1 - momentum)*g + momentum*buf if nesterov else buf
        O = NewtonSchulz(U)                              (ns_steps quintic iterations, ns_coefficients)
        p = p*(1 - lr*weight_decay) - lr*s*O             s = sqrt(max(1, rows/cols)) (adjust_lr_fn None or
                                                         "original"), 0.2*sqrt(max(rows, cols)) ("match_rms_adamw")

    The elementwise passes are fused kernels (fastopt.muon_momentum_, fastopt.muon_apply_); Newton-Schulz runs
    through NumPy's matmul in ns_dtype: None (the default) is the arrays' dtype (torch.optim.Muon uses
    bfloat16, which NumPy lacks: fastopt.torch.Muon gives those numbers). momentum_buffers start at zero.
    Everything is checked before anything is written."""
    _check_arrays(params, grads, momentum_buffers)
    dtype = check_ns_dtype_numpy(ns_dtype)
    check_all_numpy(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                    ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
                    maximize=maximize)
    numpy_step(list(params), list(grads), list(momentum_buffers), lr=float(lr), weight_decay=float(weight_decay),
               momentum=float(momentum), nesterov=bool(nesterov), ns_coefficients=ns_coefficients, eps=eps,
               ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn, maximize=bool(maximize), ns_dtype=dtype)
