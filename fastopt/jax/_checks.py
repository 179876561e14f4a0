"""Trace-time checks of fastopt.jax's inputs: everything JAX knows before a step runs (pytree
structure, shapes, dtypes, hyperparameters) is checked while jax.jit traces, and a refusal names the
argument and the leaf (``grads['dense']['w']``), as fastopt's other functions name the list index.
Nothing is ever converted: a float64 gradient for a float32 parameter is refused, not cast."""

from __future__ import annotations

import math
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
HALVES = (np.dtype(jnp.float16), np.dtype(jnp.bfloat16))
LABELS = (np.dtype(np.int32), np.dtype(np.int64))


def leaf_name(argument: str, path) -> str:
    return argument + jax.tree_util.keystr(path)


def as_array(x, name: str) -> jax.Array:
    """An array leaf: JAX arrays and tracers as they are; NumPy arrays and Python numbers as JAX
    arrays of their own dtype (a Python float is float32 unless jax_enable_x64, as JAX makes it)."""
    if isinstance(x, jax.Array):
        return x
    if isinstance(x, (np.ndarray, np.generic, float, int)) and not isinstance(x, bool):
        return jnp.asarray(x)
    raise TypeError(f"{name} must be an array, got {type(x).__name__}")


def flatten(tree, argument: str) -> Tuple[List[str], List[jax.Array], Any]:
    """(leaf names, leaves as arrays, treedef) of a pytree argument."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [leaf_name(argument, path) for path, _ in with_paths]
    leaves = [as_array(leaf, name) for name, (_, leaf) in zip(names, with_paths)]
    return names, leaves, treedef


def same_structure(treedef, reference, name: str, reference_name: str) -> None:
    if treedef != reference:
        raise ValueError(f"{name} has the tree structure {treedef} but {reference_name} has {reference}")


def halves_allowed() -> bool:
    """float16/bfloat16 parameters: the CUDA kernels take them (with float32 state), the CPU ones do
    not. Under jit the device is not known while tracing: the default backend decides."""
    return jax.default_backend() == "gpu"


def param_dtype(x: jax.Array, name: str) -> np.dtype:
    dtype = np.dtype(x.dtype)
    if dtype in FLOATS or (dtype in HALVES and halves_allowed()):
        return dtype
    allowed = "float32, float64, float16 or bfloat16" if halves_allowed() else \
        "float32 or float64 (float16/bfloat16 on a GPU only)"
    raise TypeError(f"{name} has dtype {dtype}; parameters must be {allowed}")


def state_dtype(param: np.dtype) -> np.dtype:
    """The optimizer state's dtype for a parameter's: its own, float32 for half parameters."""
    return np.dtype(np.float32) if param in HALVES else param


def check_like(x: jax.Array, name: str, dtype: np.dtype, shape, reference: str) -> None:
    """x has `dtype` and the shape of the leaf named `reference`."""
    if np.dtype(x.dtype) != dtype:
        raise TypeError(f"{name} has dtype {np.dtype(x.dtype)} but must be {dtype} (as {reference} needs); "
                        f"fastopt.jax converts nothing")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)} but {reference} has shape {tuple(shape)}")


class StepLeaves(NamedTuple):
    """The leaves of one update call, checked (step_leaves)."""

    grads: List[jax.Array]
    params: Optional[List[jax.Array]]  # None when update() was called without them
    treedef: Any                       # the params' (else the grads') structure, which the state follows
    names: List[str]                   # the leaves the state follows: the params' (else the grads')
    leaves: List[jax.Array]
    dtypes: List[np.dtype]


def step_leaves(grads, params, leaf_dtype: Callable[[jax.Array, str], np.dtype] = None) -> StepLeaves:
    """grads and params (or None) flattened: one structure, each gradient of its parameter's dtype
    (leaf_dtype's verdict, param_dtype by default) and shape."""
    leaf_dtype = leaf_dtype or param_dtype
    g_names, g_leaves, g_def = flatten(grads, "grads")
    if params is not None:
        p_names, p_leaves, p_def = flatten(params, "params")
        same_structure(g_def, p_def, "grads", "params")
        names, leaves = p_names, p_leaves
    else:
        p_leaves, p_def = None, g_def
        names, leaves = g_names, g_leaves
    dtypes = [leaf_dtype(x, name) for name, x in zip(names, leaves)]
    for name, g, dtype, ref, ref_name in zip(g_names, g_leaves, dtypes, leaves, names):
        if g is not ref:
            check_like(g, name, dtype, ref.shape, ref_name)
    return StepLeaves(g_leaves, p_leaves, p_def, names, leaves, dtypes)


def step_count(count) -> jax.Array:
    """state.count, a 0-d int32/int64 array."""
    count = as_array(count, "state.count")
    if np.dtype(count.dtype) not in LABELS or count.shape != ():
        raise TypeError(f"state.count must be a 0-d int32 or int64 array, got {count.dtype}{list(count.shape)}")
    return count


# ------------------------------------------------------------------ hyperparameters (optax's names)

def real(name: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def nonnegative(name: str, value) -> float:
    value = real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def positive(name: str, value) -> float:
    value = real(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def unit_interval(name: str, value, closed: bool = False) -> float:
    value = real(name, value)
    if not (0 <= value <= 1 if closed else 0 <= value < 1):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value!r}")
    return value


def only(name: str, value, allowed, why: str):
    """An optax argument fastopt accepts only at one value (say why otherwise)."""
    if value != allowed:
        raise ValueError(f"{name}={value!r} is not supported: {why}")
    return value
