"""Adafactor inside jax.jit (torch.optim.Adafactor's numbers, fastopt.adafactor_'s kernel): one XLA FFI call
(csrc/jax/adafactor_handlers.cpp, "fastopt_adafactor") per dtype updates every leaf and its factored state.

The state is torch's, kept in pytrees shaped like the parameters: a leaf of ndim >= 2 has ``row_var`` (its
shape with the last axis 1) and ``col_var`` (with the second last axis 1), any other leaf ``variance`` (its
own shape); where a leaf has no such buffer its entry is an empty array of shape (0,), as optax's adafactor
keeps placeholders, so that the three trees keep the parameters' structure.

On CUDA the handler runs the CUDA backend's passes (the CPU's bits); it reads lr and step back to the host
first (the step's constants are made there, as on the CPU), which waits for XLA's stream once per call.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

import fastopt
from fastopt.jax import _checks as checks
from fastopt.jax._ffi import attributes
from fastopt.jax._transforms import GradientTransformation, _learning_rate, _lr


class AdafactorState(NamedTuple):
    count: jax.Array
    row_var: Any
    col_var: Any
    variance: Any


class _AdafactorSpec(NamedTuple):
    learning_rate: Any  # a float, a 0-d array, or a schedule count -> lr
    attrs: Dict[str, Any]  # beta2_decay, eps1 (NaN: None), eps2, d, weight_decay, maximize
    name: str = "adafactor"


def state_shapes(shape) -> Dict[str, Tuple[int, ...]]:
    """The state buffers a parameter of `shape` keeps, with their shapes (torch's); (0,) for the others."""
    shape = tuple(shape)
    if len(shape) >= 2:
        return {"row_var": shape[:-1] + (1,), "col_var": shape[:-2] + (1, shape[-1]), "variance": (0,)}
    return {"row_var": (0,), "col_var": (0,), "variance": shape}


def _leaf_dtype(x: jax.Array, name: str) -> np.dtype:
    dtype = np.dtype(x.dtype)
    if dtype not in checks.FLOATS:
        raise TypeError(f"{name} has dtype {dtype}; adafactor's parameters must be float32 or float64")
    return dtype


def _init(params) -> AdafactorState:
    names, leaves, treedef = checks.flatten(params, "params")
    buffers: Dict[str, List[jax.Array]] = {"row_var": [], "col_var": [], "variance": []}
    for name, p in zip(names, leaves):
        dtype = _leaf_dtype(p, name)
        for field, shape in state_shapes(p.shape).items():
            buffers[field].append(jnp.zeros(shape, dtype))
    return AdafactorState(count=jnp.zeros([], jnp.int32),
                          **{field: treedef.unflatten(values) for field, values in buffers.items()})


def _call(grouped_params: List[jax.Array], grouped_grads: List[jax.Array], grouped_states: List[List[jax.Array]],
          lr: float, lr_operand: Optional[jax.Array], step: jax.Array, attrs: Dict[str, Any],
          target: str = "fastopt_adafactor"):
    """One FFI call over k leaves of one dtype: their new params and their new states (in the order given).
    (`target`: the tests call the CUDA handler's code bound on the host under another name.)"""
    k = len(grouped_params)
    head = ([] if lr_operand is None else [lr_operand]) + [step]
    flat_states = [s for states in grouped_states for s in states]
    operands = head + list(grouped_params) + list(grouped_grads) + flat_states
    results = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in list(grouped_params) + flat_states]
    aliases = {len(head) + i: i for i in range(k)}
    aliases.update({len(head) + 2 * k + j: k + j for j in range(len(flat_states))})
    call = jax.ffi.ffi_call(target, results, input_output_aliases=aliases, vmap_method="sequential")
    flat = call(*operands, **attributes(lr=lr, lr_operand=lr_operand is not None, tensors=k, **attrs))
    new_params, rest = list(flat[:k]), list(flat[k:])
    new_states, at = [], 0
    for states in grouped_states:
        new_states.append(rest[at:at + len(states)])
        at += len(states)
    return new_params, new_states


def _step(spec: _AdafactorSpec, grads, state, params, fused: bool):
    if not isinstance(state, AdafactorState):
        raise TypeError(f"state must be the AdafactorState that adafactor's init returned, got "
                        f"{type(state).__name__}")
    if params is None:
        raise ValueError("adafactor reads the parameters (its step size is relative to their RMS): call "
                         "update(grads, state, params)")
    g_leaves, p_leaves, p_def, p_names, _, dtypes = checks.step_leaves(grads, params, _leaf_dtype)
    buffers: Dict[str, List[jax.Array]] = {}
    for field in ("row_var", "col_var", "variance"):
        label = f"state.{field}"
        names, leaves, treedef = checks.flatten(getattr(state, field), label)
        checks.same_structure(treedef, p_def, label, "params")
        for name, x, dtype, p, p_name in zip(names, leaves, dtypes, p_leaves, p_names):
            want = state_shapes(p.shape)[field]
            if np.dtype(x.dtype) != dtype:
                raise TypeError(f"{name} has dtype {np.dtype(x.dtype)} but must be {dtype} (as {p_name}); "
                                "fastopt.jax converts nothing")
            if tuple(x.shape) != want:
                raise ValueError(f"{name} has shape {tuple(x.shape)} but {p_name} of shape {tuple(p.shape)} needs "
                                 f"{want}")
        buffers[field] = leaves
    count = checks.step_count(state.count)

    lr_attr, lr_operand = _learning_rate(spec, count)
    step = jnp.where(count == jnp.iinfo(count.dtype).max, count, count + 1)
    new_params: List[Optional[jax.Array]] = [None] * len(p_leaves)
    new_buffers = {field: list(values) for field, values in buffers.items()}  # (the placeholders stay)
    for dtype in sorted(set(dtypes), key=str):
        members = [i for i, d in enumerate(dtypes) if d == dtype]
        kept = [("row_var", "col_var") if p_leaves[i].ndim >= 2 else ("variance",) for i in members]
        out_params, out_states = _call([p_leaves[i] for i in members], [g_leaves[i] for i in members],
                                       [[buffers[f][i] for f in fields] for i, fields in zip(members, kept)],
                                       lr_attr, lr_operand, step, spec.attrs)
        for i, fields, p_new, states in zip(members, kept, out_params, out_states):
            new_params[i] = p_new if fused else p_new - p_leaves[i]
            for field, s in zip(fields, states):
                new_buffers[field][i] = s
    return p_def.unflatten(new_params), AdafactorState(
        count=step, **{field: p_def.unflatten(values) for field, values in new_buffers.items()})


def adafactor(learning_rate=1e-2, beta2_decay: float = -0.8, eps=(None, 1e-3), d: float = 1.0,
              weight_decay: float = 0.0, *, maximize: bool = False) -> GradientTransformation:
    """torch.optim.Adafactor (its arguments, lr = learning_rate, and defaults), with t the update count::

        w = t^beta2_decay;  alpha = max(eps2, RMS(p)) * min(learning_rate, 1/sqrt(t))
        p *= 1 - learning_rate * weight_decay
        ndim >= 2, factored over the last two axes: row_var = lerp(row_var, mean(g^2, -1), w),
            col_var = lerp(col_var, mean(g^2, -2), w), V = row_var col_var / max(mean(row_var), eps1)
        else: variance = lerp(variance, g^2, w), V = variance
        U = g / sqrt(max(V, eps1^2));  p -= alpha / max(1, RMS(U) / d) * U

    eps = (eps1 or None: the dtype's machine epsilon, eps2). One kernel call per dtype (fastopt.adafactor_'s:
    sums in double in a fixed order, the same bits on any thread count and on a GPU as on the CPU); on the CPU
    a large list is shared out over XLA's threads by whole tensors; on CUDA, lr and step are read back to the
    host once per call. Its step size is relative to the parameters' RMS, so ``update`` needs them and returns
    ``new_params - params``; ``fastopt.jax.fused_apply`` writes them in place. optax.adafactor is another
    algorithm (Shazeer and Stern's with update clipping, a momentum option and factoring only from
    min_dim_size_to_factor=128 on): it does not give these numbers."""
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise TypeError(f"eps must be a pair (eps1 or None, eps2), got {eps!r}")
    eps1 = None if eps[0] is None else checks.nonnegative("eps[0]", eps[0])
    eps2 = checks.nonnegative("eps[1]", eps[1])
    learning_rate = _lr(learning_rate)
    values = dict(beta2_decay=checks.real("beta2_decay", beta2_decay), eps2=eps2, d=checks.real("d", d),
                  weight_decay=checks.real("weight_decay", weight_decay), maximize=bool(maximize))
    # The kernel's own rules (beta2_decay <= 0, d >= 1, ...) on an empty call, with its words.
    probe_lr = learning_rate if isinstance(learning_rate, float) else 1e-2
    fastopt.adafactor_([], [], step=1, lr=probe_lr, eps1=eps1, **values)
    attrs = dict(values, eps1=math.nan if eps1 is None else eps1)
    spec = _AdafactorSpec(learning_rate, attrs)

    def update(updates, state, params=None):
        return _step(spec, updates, state, params, fused=False)

    update._fastopt_fused = lambda grads, state, params: _step(spec, grads, state, params, fused=True)
    return GradientTransformation(_init, update)
