"""fastopt.jax's optimizers described as rules (lion, nadam, radam, adamax, adadelta, asgd, rprop, lamb: one
XLA FFI target per rule, csrc/jax/rule_handlers.cpp): under jax.jit they give fastopt.optim's classes'
numbers bit for bit (the same kernels through the NumPy path, which tests/optim/test_rule_optimizers_vs_torch.py
holds against torch.optim), through fused_apply and through update + optax.apply_updates; optax's where
optax computes the same quantity; bad arguments are refused by name. Skipped without jax."""

from __future__ import annotations

import re

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
fj = pytest.importorskip("fastopt.jax")
from fastopt import optim  # noqa: E402

DTYPES = [np.float32, np.float64]
STEPS = 6
LR = 0.015625  # (2^-6: the same number as a double attribute and as a float32 schedule value)

# (fastopt.jax name, its keyword arguments, fastopt.optim's class, its keyword arguments): the same optimizer
CASES = [
    ("lion", dict(b1=0.8, b2=0.95, weight_decay=0.1), "Lion", dict(betas=(0.8, 0.95), weight_decay=0.1)),
    ("nadam", dict(b1=0.85, b2=0.99, weight_decay=0.01, momentum_decay=5e-3), "NAdam",
     dict(betas=(0.85, 0.99), weight_decay=0.01, momentum_decay=5e-3)),
    ("nadam", dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True), "NAdam",
     dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("radam", dict(b1=0.8, weight_decay=0.01), "RAdam", dict(betas=(0.8, 0.999), weight_decay=0.01)),
    ("radam", dict(weight_decay=0.1, decoupled_weight_decay=True), "RAdam",
     dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("adamax", dict(b1=0.85, eps=1e-6, weight_decay=0.01), "Adamax", dict(betas=(0.85, 0.999), eps=1e-6,
                                                                         weight_decay=0.01)),
    ("adadelta", dict(rho=0.85, weight_decay=0.01), "Adadelta", dict(rho=0.85, weight_decay=0.01)),
    ("asgd", dict(lambd=1e-3, alpha=0.7, t0=2.0), "ASGD", dict(lambd=1e-3, alpha=0.7, t0=2.0)),
    ("rprop", dict(eta_minus=0.4, eta_plus=1.3, min_step_size=1e-5, max_step_size=1.0), "Rprop",
     dict(etas=(0.4, 1.3), step_sizes=(1e-5, 1.0))),
    ("lamb", dict(weight_decay=0.01, max_grad_norm=1.0), "LAMB", dict(weight_decay=0.01, max_grad_norm=1.0)),
    ("lamb", dict(weight_decay=0.0, bias_correction=False), "LAMB", dict(weight_decay=0.0, bias_correction=False)),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]
SHAPES = {"b": (7,), "big": (140_003,), "mid": (1000,), "one": (1,), "w": (3, 5)}  # (big: cut into pieces)


def precision(dtype):
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def make(rng, dtype):
    return {key: rng.standard_normal(shape).astype(dtype) for key, shape in SHAPES.items()}


def run_both(case, dtype, fused, seed=0):
    """STEPS jitted steps of fastopt.jax's transform and of fastopt.optim's class on the same numbers:
    (jax's params and state as NumPy, fastopt.optim's params in the same leaf order, its state)."""
    name, kw, cls, optim_kw = case
    rng = np.random.default_rng(seed)
    start = make(rng, dtype)
    grads = [make(rng, dtype) for _ in range(STEPS)]
    keys = sorted(start)  # (the order jax flattens a dict in)
    ours = getattr(optim, cls)([start[k].copy() for k in keys], lr=LR, **optim_kw)
    tx = getattr(fj, name)(LR, **kw)
    with precision(dtype):
        params = jax.tree.map(jnp.asarray, start)
        state = tx.init(params)
        if fused:
            step = jax.jit(lambda g, s, p: fj.fused_apply(tx, g, s, p))
        else:
            def step(g, s, p):
                updates, s = tx.update(g, s, p)
                return jax.tree.map(lambda a, b: a + b, p, updates), s
            step = jax.jit(step)
        for g in grads:
            params, state = step(jax.tree.map(jnp.asarray, g), state, params)
            ours.step([g[k] for k in keys])
        got = {k: np.asarray(v) for k, v in params.items()}
        got_state = jax.tree.map(np.asarray, state)
    return got, [ours.param_groups[0]["params"][i] for i in range(len(keys))], keys, got_state, ours


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fused_apply_under_jit_gives_fastopt_optim_bits(case, dtype):
    got, want, keys, state, ours = run_both(case, dtype, fused=True)
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(got[k], want[i], err_msg=f"params[{k!r}]")
        assert got[k].dtype == dtype
    for field in state._fields[1:]:
        for i, k in enumerate(keys):
            np.testing.assert_array_equal(getattr(state, field)[k], ours.state[i][field], err_msg=f"{field}[{k!r}]")
    assert int(state.count) == STEPS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_update_then_apply_updates_matches_fastopt_optim(case, dtype):
    got, want, keys, _, _ = run_both(case, dtype, fused=False)
    # params + (new - params) rounds back to new, or to within an ulp of it (fastopt/jax/_transforms.py)
    tol = dict(rtol=1e-13, atol=1e-15) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-7)
    for i, k in enumerate(keys):
        np.testing.assert_allclose(got[k], want[i], **tol, err_msg=f"params[{k!r}]")


@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_lamb_over_a_list_shared_out_by_whole_tensors_gives_fastopt_optim_bits(max_grad_norm):
    """Over 2 x 131072 elements the handler shares the list out over XLA's threads, LAMB's by whole tensors
    (each tensor's norms on one thread), and as one call when a global gradient norm is clipped."""
    rng = np.random.default_rng(8)
    shapes = {"a": (150_000,), "b": (400, 350), "c": (1000,), "d": (3, 5)}
    start = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
    grads = [{k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()} for _ in range(3)]
    keys = sorted(start)
    ours = optim.LAMB([start[k].copy() for k in keys], lr=LR, weight_decay=0.01, max_grad_norm=max_grad_norm)
    tx = fj.lamb(LR, weight_decay=0.01, max_grad_norm=max_grad_norm)
    params = jax.tree.map(jnp.asarray, start)
    state = tx.init(params)
    step = jax.jit(lambda g, s, p: fj.fused_apply(tx, g, s, p))
    for g in grads:
        params, state = step(jax.tree.map(jnp.asarray, g), state, params)
        ours.step([g[k] for k in keys])
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(np.asarray(params[k]), ours.param_groups[0]["params"][i], err_msg=k)


def test_a_schedule_gives_the_numbers_of_its_constant_value():
    params = {"w": jnp.linspace(-1.0, 1.0, 50, dtype=jnp.float32)}
    grads = {"w": jnp.cos(jnp.arange(50, dtype=jnp.float32))}
    results = []
    for learning_rate in (LR, lambda count: jnp.float32(LR)):
        tx = fj.radam(learning_rate, weight_decay=0.01)
        state = tx.init(params)
        p = params
        for _ in range(3):
            p, state = jax.jit(lambda g, s, q: fj.fused_apply(tx, g, s, q))(grads, state, p)
        results.append(np.asarray(p["w"]))
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("name", ["lion", "nadam", "lamb"])
def test_a_negative_traced_learning_rate_fails_the_step_by_name_changing_nothing(name):
    """The handler checks the values it reads when the step runs (csrc/jax/rule_handlers.cpp)."""
    params = {"w": jnp.ones(3, jnp.float32)}
    tx = getattr(fj, name)(lambda count: -0.25 * (count + 1))
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p))
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError), match=re.escape("lr must be >= 0, got -0.25")):
        jax.block_until_ready(step(params, state, params))
    np.testing.assert_array_equal(np.asarray(params["w"]), np.ones(3, np.float32))


def test_donated_params_and_state_are_updated_in_place():
    tx = fj.lion(1e-3, weight_decay=0.1)
    params = {"w": jnp.ones((64, 8), jnp.float32), "b": jnp.zeros(8, jnp.float32)}
    grads = jax.tree.map(lambda x: x + 0.5, params)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p), donate_argnums=(0, 1))
    before = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(params) + jax.tree.leaves(state.exp_avg)]
    new_params, new_state = step(params, state, grads)
    after = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(new_params) + jax.tree.leaves(new_state.exp_avg)]
    assert after == before
    np.testing.assert_allclose(np.asarray(new_params["w"]), 1.0 * (1 - 1e-4) - 1e-3, rtol=1e-6)


@pytest.mark.parametrize("make_tx, error, words", [
    (lambda: fj.lion(1e-3, b1=1.5), ValueError, "b1"),
    (lambda: fj.lion(-1.0), ValueError, "learning_rate"),
    (lambda: fj.lion(1e-3, mask={"w": True}), ValueError, "mask"),
    (lambda: fj.nadam(1e-3, eps_root=1e-8), ValueError, "eps_root"),
    (lambda: fj.radam(1e-3, threshold=4.0), ValueError, "threshold"),
    (lambda: fj.adamax(1e-3, eps=0.0), ValueError, "eps"),
    (lambda: fj.adadelta(rho=1.5), ValueError, "rho"),
    (lambda: fj.rprop(1e-2, eta_plus=0.9), ValueError, "etaplus"),
    (lambda: fj.rprop(1e-2, eta_minus=1.5), ValueError, "etaminus"),
    (lambda: fj.rprop(lambda count: 1e-2), TypeError, "learning_rate"),
    (lambda: fj.lamb(1e-3, max_grad_norm=-1.0), ValueError, "max_grad_norm"),
])
def test_bad_arguments_are_refused_by_name(make_tx, error, words):
    with pytest.raises(error, match=words):
        make_tx()


def test_lamb_update_needs_the_params():
    tx = fj.lamb(1e-3, weight_decay=0.0)
    params = {"w": jnp.ones(4, jnp.float32)}
    with pytest.raises(ValueError, match="reads the parameters"):
        tx.update(params, tx.init(params))


def test_a_wrong_state_is_refused_by_name():
    params = {"w": jnp.ones(4, jnp.float32)}
    with pytest.raises(TypeError, match="LionState"):
        fj.fused_apply(fj.lion(1e-3), params, fj.radam(1e-3).init(params), params)


# ------------------------------------------------------------------ optax, where it computes the same quantity

def optax_cases(optax):
    return [
        ("lion", fj.lion(LR, b1=0.8, b2=0.95, weight_decay=0.1), optax.lion(LR, b1=0.8, b2=0.95, weight_decay=0.1)),
        ("adadelta", fj.adadelta(0.5, rho=0.9, eps=1e-6), optax.adadelta(0.5, rho=0.9, eps=1e-6)),
        # (eps is added to sqrt(v) by torch and to sqrt(v_hat) by optax: the same to about eps / sqrt(v))
        ("radam", fj.radam(LR, eps=1e-14), optax.radam(LR, eps=1e-14)),
        ("lamb", fj.lamb(LR, weight_decay=0.01), optax.lamb(LR, weight_decay=0.01)),
        ("adamax", fj.adamax(LR, b1=0.85), optax.adamax(LR, b1=0.85)),
    ]


@pytest.mark.parametrize("index", range(5), ids=["lion", "adadelta", "radam", "lamb", "adamax"])
def test_jitted_steps_equal_optax(index):
    optax = pytest.importorskip("optax")
    name, ours, theirs = optax_cases(optax)[index]
    rng = np.random.default_rng(7)
    with precision(np.float64):
        params = {k: jnp.asarray(v) for k, v in make(rng, np.float64).items() if k != "big"}
        grads = [{k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()} for _ in range(10)]
        p, s = params, ours.init(params)
        q, t = params, theirs.init(params)
        step = jax.jit(lambda g, s, p: fj.fused_apply(ours, g, s, p))

        @jax.jit
        def optax_step(g, t, q):
            updates, t = theirs.update(g, t, q)
            return optax.apply_updates(q, updates), t

        for g in grads:
            p, s = step(g, s, p)
            q, t = optax_step(g, t, q)
        for k in params:
            np.testing.assert_allclose(np.asarray(p[k]), np.asarray(q[k]), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name}: params[{k!r}]")
