"""fastopt's fused softmax cross-entropy, softmax and log_softmax as differentiable JAX functions.

softmax_cross_entropy is one FFI call that writes the loss and its gradient (the kernel of
fastopt.softmax_cross_entropy); a custom VJP keeps that gradient as the residual, so jax.grad costs a
multiplication by the incoming cotangent and nothing else: no softmax is recomputed. The gradient
buffer is the logits' own (input_output_aliases): when nothing else needs the logits after the loss,
as in a training step, XLA lets the kernel overwrite them and allocates nothing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fastopt.jax import _checks as checks
from fastopt.jax._ffi import attributes

REDUCTIONS = ("mean", "sum", "none")


@functools.lru_cache(maxsize=None)
def _cross_entropy_fn(reduction: str, ignore_index: int, label_smoothing: float, z_loss: float, weighted: bool):
    attrs = attributes(ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
                       reduction=reduction)

    def call(logits, labels, *weight):
        lead = logits.shape[:-1] if reduction == "none" else logits.shape[:-2]
        results = (jax.ShapeDtypeStruct(lead, logits.dtype), jax.ShapeDtypeStruct(logits.shape, logits.dtype))
        # broadcast_all: under vmap every operand gets the batch axis; the handler loops over it.
        return jax.ffi.ffi_call("fastopt_cross_entropy", results, vmap_method="broadcast_all",
                                input_output_aliases={0: 1})(logits, labels, *weight, **attrs)

    def bwd(dlogits, g):
        scale = g[..., None] if reduction == "none" else g
        return dlogits * scale.astype(dlogits.dtype)

    if weighted:
        @jax.custom_vjp
        def loss(logits, labels, weight):
            return call(logits, labels, weight)[0]

        def fwd(logits, labels, weight):
            value, dlogits = call(logits, labels, weight)
            return value, dlogits

        # labels (integers) and weight get no gradient: the weight is a constant here, as torch does
        # not differentiate F.cross_entropy's weight either.
        loss.defvjp(fwd, lambda dlogits, g: (bwd(dlogits, g), None, None))
    else:
        @jax.custom_vjp
        def loss(logits, labels):
            return call(logits, labels)[0]

        def fwd(logits, labels):
            value, dlogits = call(logits, labels)
            return value, dlogits

        loss.defvjp(fwd, lambda dlogits, g: (bwd(dlogits, g), None))
    return loss


def softmax_cross_entropy(logits, labels, *, weight=None, ignore_index: int = -100, label_smoothing: float = 0.0,
                          reduction: str = "mean", z_loss: float = 0.0) -> jax.Array:
    """torch.nn.functional.cross_entropy's numbers, as fastopt.softmax_cross_entropy computes them,
    differentiable under jax.jit, grad, value_and_grad and vmap.

    logits (N, C) float32/float64, labels (N,) int32/int64, weight (C,) of the logits' dtype (a constant:
    no gradient flows to it); rows labelled ignore_index count nothing; label_smoothing in [0, 1];
    reduction 'mean' (divides by the summed weights of the counted rows), 'sum' or 'none' (an (N,)
    array); z_loss adds ``z_loss * logsumexp(row)**2`` per counted row. Returns the loss in the logits'
    dtype. Shapes, dtypes and arguments are checked while tracing; a label out of range (a value, known
    only when the step runs) makes the step fail with an error naming it (a JaxRuntimeError, or a
    ValueError where JAX's fast path dispatched the call).

    optax.softmax_cross_entropy_with_integer_labels(logits, labels) gives the per-row losses of
    reduction='none' (without weights, smoothing or z-loss).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    label_smoothing = checks.unit_interval("label_smoothing", label_smoothing, closed=True)
    z_loss = checks.nonnegative("z_loss", z_loss)
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    logits = checks.as_array(logits, "logits")
    labels = checks.as_array(labels, "labels")
    if np.dtype(logits.dtype) not in checks.FLOATS:
        raise TypeError(f"logits must be float32 or float64, got dtype {logits.dtype}")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-d (N, C), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 0:
        raise ValueError("logits has C = 0 classes")
    if np.dtype(labels.dtype) not in checks.LABELS:
        raise TypeError(f"labels must be int32 or int64, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels has shape {tuple(labels.shape)} but logits has {logits.shape[0]} rows")
    fn = _cross_entropy_fn(reduction, int(ignore_index), label_smoothing, z_loss, weight is not None)
    if weight is None:
        return fn(logits, labels)
    weight = checks.as_array(weight, "weight")
    if weight.dtype != logits.dtype:
        raise TypeError(f"weight has dtype {weight.dtype} but logits has {logits.dtype}")
    if weight.shape != logits.shape[1:]:
        raise ValueError(f"weight has shape {tuple(weight.shape)} but logits has {logits.shape[1]} classes")
    return fn(logits, labels, jax.lax.stop_gradient(weight))


@functools.lru_cache(maxsize=None)
def _softmax_fn(log: bool):
    def call(x):
        # expand_dims: leading axes are more rows to the kernel, so a vmapped x is one call
        return jax.ffi.ffi_call("fastopt_softmax", jax.ShapeDtypeStruct(x.shape, x.dtype),
                                vmap_method="expand_dims")(x, **attributes(log=log))

    @jax.custom_vjp
    def f(x):
        return call(x)

    def fwd(x):
        y = call(x)
        return y, y

    def bwd(y, g):
        # the backward passes are not kernels of fastopt: written here in JAX, from the output
        if log:
            return (g - jnp.exp(y) * jnp.sum(g, axis=-1, keepdims=True),)
        return (y * (g - jnp.sum(g * y, axis=-1, keepdims=True)),)

    f.defvjp(fwd, bwd)
    return f


def _softmax_input(x) -> jax.Array:
    x = checks.as_array(x, "x")
    if np.dtype(x.dtype) not in checks.FLOATS:
        raise TypeError(f"x must be float32 or float64, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError("x must have at least one axis, got a 0-d array")
    return x


def softmax(x) -> jax.Array:
    """Numerically stable softmax over the last axis (fastopt's kernel), differentiable."""
    return _softmax_fn(False)(_softmax_input(x))


def log_softmax(x) -> jax.Array:
    """Numerically stable log-softmax over the last axis (fastopt's kernel), differentiable."""
    return _softmax_fn(True)(_softmax_input(x))
