"""Muon inside jax.jit (torch.optim.Muon's numbers, fastopt.optim.Muon's kernels): the two elementwise
passes are the registry's rules muon_momentum and muon_apply (their XLA FFI targets,
csrc/jax/rule_handlers.cpp), and the Newton-Schulz iteration between them is JAX's own matrix products,
which XLA runs on the device the arrays live on. Per 2-D leaf::

    buf = beta*buf + (1 - beta)*g;  U = nesterov ? (1 - beta)*g + beta*buf : buf      (one FFI call)
    O = NewtonSchulz(U)                                                                (jnp.matmul)
    p = p*(1 - lr*weight_decay) - lr*lr_scale(shape)*O                                 (one FFI call per scale)

as fastopt/_muon.py does it for NumPy arrays and torch tensors.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fastopt import _muon
from fastopt.jax import _checks as checks
from fastopt.jax._ffi import update_call
from fastopt.jax._rules import _checked
from fastopt.jax._transforms import GradientTransformation, _learning_rate, _lr, leaf_decays

LAYOUTS = ("torch", "flax")
NS_DTYPES = (np.dtype(jnp.bfloat16), np.dtype(np.float32), np.dtype(np.float64))


class MuonState(NamedTuple):
    count: jax.Array
    momentum_buffer: Any


class _MuonSpec(NamedTuple):
    """What a muon transform's calls need besides the arrays (checked when the transform is made)."""

    learning_rate: Any             # a float, a 0-d array, or a schedule count -> lr
    weight_decay: float
    mask: Any                      # weight_decay_mask
    momentum: Dict[str, Any]       # the muon_momentum rule's values: momentum, nesterov, maximize
    coefficients: Tuple[float, float, float]
    eps: float
    ns_steps: int
    adjust_lr_fn: Optional[str]
    layout: str
    ns_dtype: Optional[np.dtype]
    name: str = "muon"             # (for messages)


def newton_schulz(update: jax.Array, coefficients, steps: int, eps: float, dtype) -> jax.Array:
    """The quintic Newton-Schulz iteration of a 2-D array in `dtype`, as torch.optim.Muon's
    _zeropower_via_newtonschulz: X = U (transposed when tall) / max(||U||_F, eps); `steps` times
    S = X X^T, X = a X + (b S + c S S) X. Each product and combination is rounded to `dtype` once, as
    torch's matmul and addmm do: in bfloat16 the products accumulate in float32 (a bfloat16 sum would lose
    the iteration), and float32 products run at full float32 precision (XLA's default on a GPU is TF32)."""
    a, b, c = coefficients
    dtype = np.dtype(dtype)
    wide = np.dtype(np.float32) if dtype == np.dtype(jnp.bfloat16) else dtype  # (accumulation)

    def product(left, right):
        return jnp.matmul(left, right, precision=jax.lax.Precision.HIGHEST, preferred_element_type=wide)

    x = update.astype(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(wide)))).astype(dtype)
    x = x / jnp.maximum(norm, jnp.asarray(eps, dtype))
    for _ in range(steps):
        gram = product(x, x.T).astype(dtype)
        gram_update = (b * gram.astype(wide) + c * product(gram, gram)).astype(dtype)  # torch's addmm
        x = (a * x.astype(wide) + product(gram_update, x)).astype(dtype)  # torch's addmm
    return x.T if tall else x


def lr_scale(spec: _MuonSpec, shape) -> float:
    """torch's shape adjustment of the step, on (rows = output features, cols = input features): a flax
    kernel is (input, output), so layout="flax" reads its shape the other way round."""
    return _muon.lr_scale(spec.adjust_lr_fn, tuple(shape) if spec.layout == "torch" else tuple(shape)[::-1])


def _init(params) -> MuonState:
    names, leaves, treedef = checks.flatten(params, "params")
    for name, p in zip(names, leaves):
        _check_leaf(p, name)
    return MuonState(count=jnp.zeros([], jnp.int32),
                     momentum_buffer=treedef.unflatten([jnp.zeros(p.shape, p.dtype) for p in leaves]))


def _check_leaf(x: jax.Array, name: str) -> np.dtype:
    dtype = np.dtype(x.dtype)
    if dtype not in checks.FLOATS:
        raise TypeError(f"{name} has dtype {dtype}; muon's parameters must be float32 or float64")
    if x.ndim != 2:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: muon takes 2-D leaves only, as torch.optim.Muon "
                         "(give the others another optimizer with optax.multi_transform)")
    return dtype


def _step(spec: _MuonSpec, grads, state, params, fused: bool):
    if not isinstance(state, MuonState):
        raise TypeError(f"state must be the MuonState that muon's init returned, got {type(state).__name__}")
    g_leaves, p_leaves, p_def, ref_names, ref_leaves, dtypes = checks.step_leaves(grads, params, _check_leaf)
    if state.momentum_buffer is None:
        raise ValueError("state.momentum_buffer is None: pass the state muon's init returned")
    b_names, buffers, b_def = checks.flatten(state.momentum_buffer, "state.momentum_buffer")
    checks.same_structure(b_def, p_def, "state.momentum_buffer", "params" if params is not None else "grads")
    for name, x, dtype, ref, ref_name in zip(b_names, buffers, dtypes, ref_leaves, ref_names):
        checks.check_like(x, name, dtype, ref.shape, ref_name)
    count = checks.step_count(state.count)
    if params is None and spec.weight_decay != 0.0:
        raise ValueError("muon with weight_decay != 0 reads the parameters: call update(grads, state, params)")
    decays = leaf_decays(spec.mask, spec.weight_decay, params, p_def, len(g_leaves), "weight_decay_mask")
    scales = [lr_scale(spec, ref.shape) for ref in ref_leaves]
    lr_attr, lr_operand = _learning_rate(spec, count)
    if lr_operand is None:  # (the kernels' range rules, e.g. lr * weight_decay, for the values known now)
        for dtype in sorted(set(dtypes), key=str):
            _muon.check_kernel_values(lambda: np.empty(0, dtype), lr_attr, max(decays, default=0.0),
                                      spec.momentum["momentum"], spec.momentum["nesterov"],
                                      spec.momentum["maximize"], max(scales, default=1.0))
    step = jnp.where(count == jnp.iinfo(count.dtype).max, count, count + 1)

    # The momentum pass: one call per dtype; `updates` (U) is written, not read.
    updates: List[Optional[jax.Array]] = [None] * len(g_leaves)
    new_buffers: List[Optional[jax.Array]] = [None] * len(g_leaves)
    for dtype in sorted(set(dtypes), key=str):
        members = [i for i, d in enumerate(dtypes) if d == dtype]
        values = [float(spec.momentum[key]) for key in ("momentum", "nesterov", "maximize")]
        out = update_call("fastopt_rule_muon_momentum",
                          [[jnp.zeros(g_leaves[i].shape, dtype) for i in members], [g_leaves[i] for i in members],
                           [buffers[i] for i in members]],
                          [True, False, True], lr=None, step=step,
                          attrs=dict(lr=0.0, values=np.asarray(values, np.float64)))
        for i, u, b in zip(members, out[0], out[1]):
            updates[i], new_buffers[i] = u, b

    outputs = [newton_schulz(u, spec.coefficients, spec.ns_steps, spec.eps,
                             dtypes[i] if spec.ns_dtype is None else spec.ns_dtype).astype(dtypes[i])
               for i, u in enumerate(updates)]

    # The apply pass: one call per (dtype, step scale, weight decay). Without weight decay update() runs it
    # on zeros, whose result is the step itself; otherwise on the parameters (see _transforms.py).
    new_params: List[Optional[jax.Array]] = [None] * len(g_leaves)
    groups: Dict[Tuple[np.dtype, float, float], List[int]] = {}
    for i in range(len(g_leaves)):
        groups.setdefault((dtypes[i], scales[i], decays[i]), []).append(i)
    for (dtype, scale, decay), members in groups.items():
        reads_params = fused or decay != 0.0
        base = [p_leaves[i] if reads_params else jnp.zeros(g_leaves[i].shape, dtype) for i in members]
        out = update_call("fastopt_rule_muon_apply", [base, [outputs[i] for i in members]], [True, False],
                          lr=lr_operand, step=step,
                          attrs=dict(lr=lr_attr, values=np.asarray([lr_attr, decay, scale], np.float64)))
        for i, new in zip(members, out[0]):
            new_params[i] = new if fused or not reads_params else new - p_leaves[i]
    return p_def.unflatten(new_params), MuonState(count=step, momentum_buffer=p_def.unflatten(new_buffers))


def _ns_dtype(ns_dtype) -> Optional[np.dtype]:
    if ns_dtype is None:
        return None
    try:
        dtype = np.dtype(ns_dtype)
    except TypeError:
        raise TypeError(f"ns_dtype must be None, jnp.bfloat16, jnp.float32 or jnp.float64, got {ns_dtype!r}") \
            from None
    if dtype not in NS_DTYPES:
        raise ValueError(f"ns_dtype must be None, jnp.bfloat16, jnp.float32 or jnp.float64, got {dtype}")
    return dtype


def muon(learning_rate=1e-3, ns_coeffs=(3.4445, -4.7750, 2.0315), ns_steps: int = 5, beta: float = 0.95,
         eps: float = 1e-7, weight_decay: float = 0.1, weight_decay_mask=None, mu_dtype=None, *,
         nesterov: bool = True, adaptive: bool = False, adjust_lr_fn: Optional[str] = None, layout: str = "torch",
         maximize: bool = False, ns_dtype=None) -> GradientTransformation:
    """torch.optim.Muon (its arguments: lr = learning_rate, momentum = beta, ns_coefficients = ns_coeffs;
    its defaults) for 2-D leaves: ``buf = beta * buf + (1 - beta) * g``; ``U = (1 - beta) * g + beta * buf``
    (nesterov) or ``buf``; ``O`` = ns_steps quintic Newton-Schulz iterations of ``U / max(||U||_F, eps)``;
    ``p = p * (1 - learning_rate * weight_decay) - learning_rate * s * O`` with ``s = sqrt(max(1, rows /
    cols))`` (adjust_lr_fn None or "original") or ``0.2 * sqrt(max(rows, cols))`` ("match_rms_adamw").

    - The elementwise passes are fastopt's fused kernels (fastopt.optim.Muon's bits); Newton-Schulz is
      jnp.matmul in ``ns_dtype``: None is the parameter's dtype (float32 products at full precision);
      jnp.bfloat16 runs it as torch does, to bfloat16's precision.
    - ``layout``: which way a leaf's shape reads for ``s``. "torch" (the default): (output, input), torch's
      Linear weight. "flax": (input, output), a flax Dense kernel, so the same model gets torch's step.
    - optax.contrib.muon computes another update: it bias-corrects the momentum, adds eps to the norm
      instead of clamping, scales by ``sqrt(max(1, fan_out / fan_in))`` on its own axes, decays
      ``lr * weight_decay * p`` after the step, and defaults to eps=1e-8, weight_decay=0. Its mu_dtype and
      adaptive are taken only at their defaults; non-2-D leaves are refused (optax.contrib.muon hands them
      to Adam; here give them another optimizer with optax.multi_transform).
    - weight_decay_mask (optax's): a pytree of bools like the parameters, or a function giving one.

    ``fastopt.jax.fused_apply(tx, ...)`` updates parameters and state with the two kernel calls (per dtype
    and step size) and the products between; on a GPU the passes are the CUDA backend's."""
    checks.only("mu_dtype", mu_dtype, None, "the momentum buffer has the parameter's dtype")
    checks.only("adaptive", adaptive, False, "torch's Muon does not scale by the dual norm")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'torch' (rows = outputs) or 'flax' (rows = inputs), got {layout!r}")
    coefficients, eps, steps = _muon.check_ns(ns_coeffs, eps, ns_steps, adjust_lr_fn, coefficients_name="ns_coeffs")
    momentum = _checked("muon_momentum", dict(momentum=("beta", beta), nesterov=("nesterov", nesterov),
                                              maximize=("maximize", maximize)))
    decay = _checked("muon_apply", dict(weight_decay=("weight_decay", weight_decay)))["weight_decay"]
    spec = _MuonSpec(_lr(learning_rate), decay, weight_decay_mask, momentum, coefficients, eps, steps, adjust_lr_fn,
                     layout, _ns_dtype(ns_dtype))

    def update(updates, state, params=None):
        return _step(spec, updates, state, params, fused=False)

    update._fastopt_fused = lambda grads, state, params: _step(spec, grads, state, params, fused=True)
    return GradientTransformation(_init, update)
