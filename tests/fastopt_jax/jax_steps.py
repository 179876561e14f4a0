"""What the fastopt.jax optimizer tests share: float64 on demand, and one jitted step of a transform."""

from __future__ import annotations

import numpy as np


def precision(jax, dtype):
    """A context with jax_enable_x64 on for float64 (so float64 arrays stay float64), off otherwise."""
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def jitted(jax, fj, tx, fused):
    """step(grads, state, params) -> (params, state) under jax.jit: fastopt.jax.fused_apply, or tx.update
    followed by params + updates (optax.apply_updates' arithmetic)."""
    if fused:
        return jax.jit(lambda g, s, p: fj.fused_apply(tx, g, s, p))

    def step(g, s, p):
        updates, s = tx.update(g, s, p)
        return jax.tree.map(lambda a, b: a + b, p, updates), s
    return jax.jit(step)


def beside_torch(jax, fj, torch, tx, make_torch_optimizer, start, grads):
    """The same steps, jitted fused_apply of `tx` over a dict of NumPy arrays `start` and torch's optimizer
    (make_torch_optimizer(list of Parameters)) over copies of them, fed the gradients in `grads` (a list of
    dicts). Returns (jax's params, jax's state, torch's parameters in sorted key order, torch's optimizer)."""
    keys = sorted(start)
    theirs = [torch.nn.Parameter(torch.from_numpy(start[k].copy())) for k in keys]
    ref = make_torch_optimizer(theirs)
    params = jax.tree.map(jax.numpy.asarray, start)
    state = tx.init(params)
    step = jitted(jax, fj, tx, True)
    for g in grads:
        params, state = step(jax.tree.map(jax.numpy.asarray, g), state, params)
        for p, k in zip(theirs, keys):
            p.grad = torch.from_numpy(g[k].copy())
        ref.step()
    return params, state, theirs, ref


def beside_optim(jax, fj, tx, ours, start, grads, fused):
    """The same steps through `tx` under jax.jit (fused_apply, or update then params + updates) and through
    fastopt.optim's `ours` (made over copies of `start`'s arrays in sorted key order, the order jax flattens
    a dict in), fed the gradients in `grads` (a list of dicts). Returns jax's params and state as NumPy."""
    keys = sorted(start)
    params = jax.tree.map(jax.numpy.asarray, start)
    state = tx.init(params)
    step = jitted(jax, fj, tx, fused)
    for g in grads:
        params, state = step(jax.tree.map(jax.numpy.asarray, g), state, params)
        ours.step([g[k] for k in keys])
    return jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, state)
