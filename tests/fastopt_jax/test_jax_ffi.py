"""fastopt.jax: the kernels as XLA FFI calls inside jax.jit.

Every optimizer, run under jit for several steps on fresh random data, against fastopt's NumPy path
(the same kernels through fastopt.sgd_ & co.: bit for bit), the NumPy reference (float64 with
jax_enable_x64, and float32) and optax where installed; donation (no copy of parameters and state, by
buffer pointers); the loss and softmax against the NumPy kernel, the reference and optax under jit,
grad, value_and_grad and vmap; bad input refused while tracing, with the argument named.

Skipped without jax, or when fastopt was built without its FFI handlers (FASTOPT_JAX=OFF); the tests
that compare with optax skip without optax.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import reference

jax = pytest.importorskip("jax")
jnp = jax.numpy
try:
    import fastopt.jax as fj
except ImportError as error:  # the build has no handlers: say why, as a skip
    if "without fastopt.jax's XLA FFI handlers" not in str(error):
        raise
    pytest.skip(str(error), allow_module_level=True)
try:
    import optax
except ImportError:
    optax = None

needs_optax = pytest.mark.skipif(optax is None, reason="optax is not installed (pip install optax)")

STEPS = 20
DTYPES = [np.float32, np.float64]
# A value found wrong while the step runs fails it with the handler's message; JAX raises it as a
# JaxRuntimeError, or as a ValueError when its fast dispatch path (a jitted function called again) ran it.
RUNTIME_ERRORS = (jax.errors.JaxRuntimeError, ValueError)


def fresh_seed() -> int:
    seed = int(np.random.SeedSequence().entropy % (2**31))
    print(f"seed={seed}")
    return seed


def precision(dtype):
    """float64 needs jax_enable_x64 (without it JAX makes float32 of everything)."""
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def make_params(rng, dtype, big=False):
    shapes = {"b": (7,), "w": (3, 5), "one": (1,), "mid": (1000,)}
    if big:  # enough work for the handler to cut the list into pieces on XLA's threads (csrc/jax/xla_threads.h),
        shapes["big"] = (140_003,)  # one cut inside this leaf, the next piece spanning several leaves
        shapes["big2"] = (160_001,)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    # values that the steps carry across zero, where new_p - p is not exact in floating point
    params["tiny"] = (1e-4 * rng.standard_normal(200)).astype(dtype)
    return params


def to_jax(tree):
    return jax.tree.map(jnp.asarray, tree)


def to_numpy(tree):
    return jax.tree.map(lambda x: np.array(x), tree)  # writeable copies


# ------------------------------------------------------------------ the optimizers, two ways

# (id, kind, fastopt.jax keyword arguments); the same run through fastopt's NumPy path.
CASES = [
    ("sgd", "sgd", dict(learning_rate=0.05)),
    ("sgd-momentum", "sgd", dict(learning_rate=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("sgd-nesterov", "sgd", dict(learning_rate=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("adagrad", "adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.1)),
    ("adagrad-decay", "adagrad", dict(learning_rate=0.1, lr_decay=0.01, weight_decay=0.02, eps=1e-6)),
    ("rmsprop", "rmsprop", dict(learning_rate=0.01)),
    ("rmsprop-centered", "rmsprop", dict(learning_rate=0.01, decay=0.9, centered=True, momentum=0.5,
                                         weight_decay=0.01, initial_scale=0.5)),
    ("adam", "adam", dict(learning_rate=0.01)),
    ("adam-l2-amsgrad", "adam", dict(learning_rate=0.01, b1=0.8, b2=0.99, weight_decay=0.01, amsgrad=True)),
    ("adamw", "adamw", dict(learning_rate=0.01)),
    ("adamw-amsgrad", "adamw", dict(learning_rate=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("adamw-no-decay", "adamw", dict(learning_rate=0.01, weight_decay=0.0)),
]
CASE_IDS = [c[0] for c in CASES]
FIELDS = {"sgd": ["momentum_buffer"], "adagrad": ["sum"], "rmsprop": ["square_avg", "momentum_buffer", "grad_avg"],
          "adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"], "adamw": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]}
RENAME = {"learning_rate": "lr", "decay": "alpha", "b1": "beta1", "b2": "beta2"}
INITIAL_VALUES = ("initial_accumulator_value", "initial_scale")  # fastopt.jax's init fills the state with them


def torch_kwargs(kw):
    return {RENAME.get(k, k): v for k, v in kw.items() if k not in INITIAL_VALUES}


def decays(kind, kw):
    return kw.get("weight_decay", 1e-2 if kind == "adamw" else 0.0) != 0.0


class NumpyPath:
    """The same steps through fastopt's NumPy entry points (one list call per step) and through the
    NumPy reference (per array), from the state fastopt.jax's init made."""

    def __init__(self, kind, kw, params, state):
        self.kind, self.kwargs = kind, torch_kwargs(kw)
        self.keys = sorted(params)  # the leaf order of a dict pytree
        self.params = [np.array(params[k]) for k in self.keys]
        self.states = {f: [np.array(getattr(state, f)[k]) for k in self.keys]
                       for f in FIELDS[kind] if getattr(state, f) is not None}
        self.ref_params = [p.copy() for p in self.params]
        self.ref_states = {f: [a.copy() for a in arrays] for f, arrays in self.states.items()}

    def step(self, grads, t):
        g = [np.asarray(grads[k]) for k in self.keys]
        step = {} if self.kind == "rmsprop" else {"step": t}
        getattr(fastopt, self.kind + "_")(self.params, g, *[self.states.get(f) for f in FIELDS[self.kind]],
                                          **self.kwargs, **step)
        for i in range(len(self.keys)):
            args = [self.ref_states[f][i] if f in self.ref_states else None for f in FIELDS[self.kind]]
            out = getattr(reference, self.kind)(self.ref_params[i], g[i], *args, **self.kwargs, **step)
            self.ref_params[i] = out[0]
            for f, new in zip(FIELDS[self.kind], out[1:]):
                if f in self.ref_states:
                    self.ref_states[f][i] = new


def tolerance(dtype, ref):
    """As tests/kernels/test_kernels_vs_reference.py: atol scaled by the largest magnitude."""
    tol = dict(rtol=1e-10, atol=1e-12) if np.dtype(dtype) == np.float64 else dict(rtol=2e-5, atol=2e-6)
    tol["atol"] *= max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    return tol


def assert_bits(got, want, what):
    assert got.dtype == want.dtype, what
    np.testing.assert_array_equal(got, want, err_msg=what)


def run_both(case, dtype, fused, big=False):
    """STEPS jitted steps of one case through fastopt.jax (fused_apply, or update + p + u) and the
    NumPy path; returns (params, state, NumpyPath)."""
    _, kind, kw = case
    rng = np.random.default_rng(fresh_seed())
    params = make_params(rng, dtype, big)
    tx = getattr(fj, kind)(**kw)
    state = tx.init(to_jax(params))
    numpy_path = NumpyPath(kind, kw, params, state)
    if fused:
        step = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p))
    else:
        def step(p, s, g):
            updates, s = tx.update(g, s, p)
            return jax.tree.map(lambda a, u: a + u, p, updates), s  # optax.apply_updates
        step = jax.jit(step)
    p = to_jax(params)
    for t in range(1, STEPS + 1):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        p, state = step(p, state, to_jax(grads))
        numpy_path.step(grads, t)
    assert int(state.count) == STEPS
    return to_numpy(p), state, numpy_path


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fused_apply_under_jit_gives_the_numpy_path_bits_and_the_reference(case, dtype):
    with precision(dtype):
        params, state, numpy_path = run_both(case, dtype, fused=True, big=dtype == np.float32)
    for i, k in enumerate(numpy_path.keys):
        assert_bits(params[k], numpy_path.params[i], f"params[{k!r}]")
        np.testing.assert_allclose(params[k], numpy_path.ref_params[i], err_msg=f"reference params[{k!r}]",
                                   **tolerance(dtype, numpy_path.ref_params[i]))
        for f, arrays in numpy_path.states.items():
            assert_bits(np.asarray(getattr(state, f)[k]), arrays[i], f"state.{f}[{k!r}]")
            np.testing.assert_allclose(np.asarray(getattr(state, f)[k]), numpy_path.ref_states[f][i],
                                       err_msg=f"reference state.{f}[{k!r}]",
                                       **tolerance(dtype, numpy_path.ref_states[f][i]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_update_then_apply_updates_matches_the_numpy_path(case, dtype):
    """Without weight decay the kernel runs on a zero buffer and returns the exact step, so p + u gives
    the fused bits; with decay it returns new_p - p, which p + u rounds back to within an ulp or so."""
    with precision(dtype):
        params, state, numpy_path = run_both(case, dtype, fused=False)
    exact = not decays(case[1], case[2])
    for i, k in enumerate(numpy_path.keys):
        want = numpy_path.params[i]
        if exact:
            assert_bits(params[k], want, f"params[{k!r}]")
        else:
            eps = np.finfo(dtype).eps
            np.testing.assert_allclose(params[k], want, rtol=8 * eps, atol=8 * eps * np.abs(want).max(),
                                       err_msg=f"params[{k!r}]")


def test_update_without_params_when_nothing_decays():
    rng = np.random.default_rng(fresh_seed())
    params = make_params(rng, np.float32)
    grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    tx = fj.adam(1e-2)
    state = tx.init(to_jax(params))
    with_params = jax.jit(tx.update)(to_jax(grads), state, to_jax(params))
    without = jax.jit(tx.update)(to_jax(grads), state)
    for a, b in zip(jax.tree.leaves(with_params), jax.tree.leaves(without)):
        assert_bits(np.asarray(a), np.asarray(b), "updates")
    with pytest.raises(ValueError, match=re.escape("adamw with weight_decay != 0 reads the parameters")):
        fj.adamw(1e-2).update(to_jax(grads), fj.adamw(1e-2).init(to_jax(params)))


def test_a_schedule_gives_a_traced_learning_rate_read_when_the_step_runs():
    # Values exact in float32 and float64, so that the NumPy path with the same numbers gives the same bits.
    def schedule(count):
        return jnp.where(count < 3, 2.0**-6, 2.0**-8)

    rng = np.random.default_rng(fresh_seed())
    params = make_params(rng, np.float32)
    tx = fj.adamw(schedule, weight_decay=0.05)
    state = tx.init(to_jax(params))
    numpy_path = NumpyPath("adamw", dict(learning_rate=2.0**-6, weight_decay=0.05), params, state)
    step = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p))
    p = to_jax(params)
    for t in range(1, 7):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        p, state = step(p, state, to_jax(grads))
        numpy_path.kwargs["lr"] = 2.0**-6 if t <= 3 else 2.0**-8
        numpy_path.step(grads, t)
    for i, k in enumerate(numpy_path.keys):
        assert_bits(np.asarray(p[k]), numpy_path.params[i], f"params[{k!r}]")


def test_a_negative_traced_learning_rate_fails_the_step_by_name():
    params = {"w": jnp.ones(3, jnp.float32)}
    tx = fj.sgd(lambda count: -0.1 * (count + 1))
    step = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p))
    with pytest.raises(RUNTIME_ERRORS, match=re.escape("lr must be >= 0, got -0.10000000149011612")):
        jax.block_until_ready(step(params, tx.init(params), params))


def test_adamw_mask_decays_only_the_masked_leaves():
    rng = np.random.default_rng(fresh_seed())
    params = make_params(rng, np.float32)
    mask = {k: k in ("w", "mid") for k in params}
    tx = fj.adamw(1e-2, weight_decay=0.1, mask=lambda p: mask)
    state = tx.init(to_jax(params))
    decayed = NumpyPath("adamw", dict(learning_rate=1e-2, weight_decay=0.1), params, state)
    kept = NumpyPath("adamw", dict(learning_rate=1e-2, weight_decay=0.0), params, state)
    step = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p))
    p = to_jax(params)
    for t in range(1, 6):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        p, state = step(p, state, to_jax(grads))
        decayed.step(grads, t)
        kept.step(grads, t)
    for i, k in enumerate(decayed.keys):
        want = (decayed if mask[k] else kept).params[i]
        assert_bits(np.asarray(p[k]), want, f"params[{k!r}]")


def test_optax_chain_runs_a_fastopt_transform():
    if optax is None:
        pytest.skip("optax is not installed (pip install optax)")
    rng = np.random.default_rng(fresh_seed())
    params = to_jax(make_params(rng, np.float32))
    grads = to_jax({k: 3 * rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()})
    clip, adam = optax.clip_by_global_norm(1.0), fj.adam(1e-2)
    chained = optax.chain(clip, adam)

    @jax.jit  # one program, so that XLA computes the clipping once for both
    def both(g, p):
        updates, _ = chained.update(g, chained.init(p), p)
        clipped, _ = clip.update(g, clip.init(p))
        return updates, adam.update(clipped, adam.init(p), p)[0]

    updates, want = both(grads, params)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(want)):
        assert_bits(np.asarray(a), np.asarray(b), "updates")


def test_fused_apply_under_vmap_equals_one_call_per_member():
    rng = np.random.default_rng(fresh_seed())
    params = {"w": rng.standard_normal((4, 30)).astype(np.float32)}  # 4 members of an ensemble
    grads = {"w": rng.standard_normal((4, 30)).astype(np.float32)}
    tx = fj.adam(1e-2)
    state = jax.vmap(tx.init)(to_jax(params))
    new, _ = jax.jit(jax.vmap(lambda p, s, g: fj.fused_apply(tx, g, s, p)))(to_jax(params), state, to_jax(grads))
    for i in range(4):
        one = {"w": params["w"][i]}
        want, _ = fj.fused_apply(tx, {"w": jnp.asarray(grads["w"][i])}, tx.init(to_jax(one)), to_jax(one))
        assert_bits(np.asarray(new["w"][i]), np.asarray(want["w"]), f"member {i}")


def test_empty_leaves_and_an_empty_tree():
    tx = fj.adamw(1e-2)
    params = {"e": jnp.zeros((0, 3), jnp.float32), "x": jnp.ones(5, jnp.float32)}
    new, state = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p))(params, tx.init(params), params)
    assert new["e"].shape == (0, 3) and int(state.count) == 1
    want = [np.ones(5, np.float32)]
    fastopt.adamw_(want, [np.ones(5, np.float32)], [np.zeros(5, np.float32)], [np.zeros(5, np.float32)],
                   lr=1e-2, step=1)
    assert_bits(np.asarray(new["x"]), want[0], "params['x']")
    new, state = jax.jit(lambda s: fj.fused_apply(tx, {}, s, {}))(tx.init({}))
    assert new == {} and int(state.count) == 1


# ------------------------------------------------------------------ against optax

def optax_cases():
    def schedule(count):
        return 0.01 * 0.9 ** count

    return [
        ("sgd", lambda: fj.sgd(0.05), lambda: optax.sgd(0.05)),
        ("sgd-momentum", lambda: fj.sgd(0.05, momentum=0.9), lambda: optax.sgd(0.05, momentum=0.9)),
        ("sgd-nesterov", lambda: fj.sgd(0.05, 0.9, True), lambda: optax.sgd(0.05, 0.9, True)),
        # optax's eps sits inside the square root: with eps=0 there and a negligible one here they agree
        ("adagrad", lambda: fj.adagrad(0.1, initial_accumulator_value=0.1, eps=1e-30),
         lambda: optax.adagrad(0.1, initial_accumulator_value=0.1, eps=0.0)),
        ("rmsprop", lambda: fj.rmsprop(0.01, decay=0.9),
         lambda: optax.rmsprop(0.01, decay=0.9, eps_in_sqrt=False)),
        ("rmsprop-centered-momentum", lambda: fj.rmsprop(0.01, decay=0.9, centered=True, momentum=0.9),
         lambda: optax.rmsprop(0.01, decay=0.9, eps_in_sqrt=False, centered=True, momentum=0.9)),
        ("adam", lambda: fj.adam(0.01), lambda: optax.adam(0.01)),
        ("adam-l2", lambda: fj.adam(0.01, weight_decay=0.01),
         lambda: optax.chain(optax.add_decayed_weights(0.01), optax.adam(0.01))),
        ("adamw", lambda: fj.adamw(0.01, weight_decay=0.05), lambda: optax.adamw(0.01, weight_decay=0.05)),
        ("adamw-schedule", lambda: fj.adamw(schedule), lambda: optax.adamw(schedule, weight_decay=1e-2)),
    ]


# float32: both sides round each step in a different order (XLA compiles optax's); after 20 steps the Adam
# cases differ by up to about 1.2e-6 beyond rtol 1e-5 in an element of 1000 (0.9e-6 the worst over 25 seeds of
# each case, 1.2e-6 seen once), so atol 5e-6; a wrong formula (bias correction, decay, eps) moves the
# parameters by 1e-4 or more at these learning rates.
OPTAX_TOLERANCE = {np.float32: dict(rtol=1e-5, atol=5e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", range(10), ids=lambda i: ["sgd", "sgd-momentum", "sgd-nesterov", "adagrad",
                                                            "rmsprop", "rmsprop-centered-momentum", "adam",
                                                            "adam-l2", "adamw", "adamw-schedule"][i])
def test_twenty_jitted_steps_equal_optax(index, dtype):
    name, ours, theirs = optax_cases()[index]
    with precision(dtype):
        rng = np.random.default_rng(fresh_seed())
        params = to_jax(make_params(rng, dtype))
        tx, peer = ours(), theirs()

        @jax.jit
        def both(p, q, s, r, g):
            p, s = fj.fused_apply(tx, g, s, p)
            u, r = peer.update(g, r, q)
            return p, optax.apply_updates(q, u), s, r

        p, q, s, r = params, params, tx.init(params), peer.init(params)
        for _ in range(STEPS):
            g = to_jax({k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()})
            p, q, s, r = both(p, q, s, r, g)
        for k in params:
            assert np.asarray(p[k]).dtype == dtype
            np.testing.assert_allclose(np.asarray(p[k]), np.asarray(q[k]), err_msg=f"{name} params[{k!r}]",
                                       **OPTAX_TOLERANCE[dtype])


# ------------------------------------------------------------------ donation: in place

def pointers(tree):
    return [x.unsafe_buffer_pointer() for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_donated_params_and_state_are_updated_in_place(kind):
    kw = {"sgd": dict(momentum=0.9), "rmsprop": dict(centered=True, momentum=0.9),
          "adam": dict(amsgrad=True)}.get(kind, {})
    tx = getattr(fj, kind)(1e-2, **kw)
    rng = np.random.default_rng(fresh_seed())
    params = to_jax(make_params(rng, np.float32))
    grads = to_jax({k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()})
    state = tx.init(params)
    # jit matches donated inputs to outputs of the same shape in order: params and state first, in the
    # order fused_apply returns them.
    step = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p), donate_argnums=(0, 1))
    before_p, before_s = pointers(params), pointers(state)[1:]  # (count is a new 0-d int)
    new_params, new_state = step(params, state, grads)
    assert pointers(new_params) == before_p
    assert pointers(new_state)[1:] == before_s
    # the donated arrays are gone: nothing can read them after the kernel wrote their memory
    assert all(x.is_deleted() for x in jax.tree.leaves(params) + jax.tree.leaves(state)[1:])
    with pytest.raises(RuntimeError, match="deleted"):
        np.asarray(jax.tree.leaves(params)[0])
    # and the numbers are those of a call without donation
    again = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p))(new_params, new_state, grads)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(again))


def test_without_donation_the_inputs_stay_as_they_were():
    tx = fj.adamw(1e-2)
    params = {"w": jnp.arange(6, dtype=jnp.float32)}
    state = tx.init(params)
    kept_p, kept_s = np.array(params["w"]), np.array(state.exp_avg["w"])
    new, _ = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p))(params, state, params)
    assert not np.array_equal(np.asarray(new["w"]), kept_p)
    np.testing.assert_array_equal(np.asarray(params["w"]), kept_p)
    np.testing.assert_array_equal(np.asarray(state.exp_avg["w"]), kept_s)


# ------------------------------------------------------------------ the loss and softmax

LOSS_CONFIGS = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(weight=True, label_smoothing=0.1),
    dict(ignore_index=2, z_loss=1e-3),
    dict(weight=True, reduction="none", label_smoothing=0.2, z_loss=1e-4, ignore_index=0),
]


def loss_inputs(rng, dtype, config, n=37, c=129):
    logits = (3 * rng.standard_normal((n, c))).astype(dtype)
    labels = rng.integers(0, c, n).astype(np.int64 if dtype == np.float64 else np.int32)
    if "ignore_index" in config:
        labels[::5] = config["ignore_index"]
    weight = rng.random(c).astype(dtype) + 0.5 if config.get("weight") else None
    kwargs = {k: v for k, v in config.items() if k != "weight"}
    return logits, labels, weight, kwargs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", LOSS_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "mean")
def test_loss_and_its_gradient_give_the_numpy_kernel_bits(config, dtype):
    with precision(dtype):
        logits, labels, weight, kwargs = loss_inputs(np.random.default_rng(fresh_seed()), dtype, config)
        want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, weight=weight, **kwargs)
        ref_loss, ref_grad = reference.softmax_cross_entropy(logits.astype(np.float64), labels,
                                                             weight=None if weight is None else weight.astype(np.float64),
                                                             **kwargs)

        def f(x):
            return fj.softmax_cross_entropy(x, jnp.asarray(labels), weight=weight, **kwargs)

        loss = np.asarray(jax.jit(f)(jnp.asarray(logits)))
        # the cotangent: 1 for a reduced loss; random per row for 'none' (the gradient scales each row)
        none = kwargs.get("reduction") == "none"
        cot = np.random.default_rng(1).standard_normal(len(labels)).astype(dtype) if none else np.ones((), dtype)
        value, vjp = jax.vjp(jax.jit(f), jnp.asarray(logits))
        (grad,) = vjp(jnp.asarray(cot))
        if none:
            assert_bits(loss, want_loss, "row losses")
        else:
            assert loss.dtype == dtype and loss == dtype(want_loss)
        assert_bits(np.asarray(value), loss, "value of vjp")
        assert_bits(np.asarray(grad), want_grad * (cot[:, None] if none else cot), "dlogits")
        rtol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(np.asarray(grad), ref_grad * (cot[:, None] if none else 1), rtol=rtol,
                                   atol=rtol * np.abs(ref_grad).max())
        if not none:
            v, g = jax.jit(jax.value_and_grad(f))(jnp.asarray(logits))
            assert np.asarray(v) == loss
            assert_bits(np.asarray(g), want_grad, "value_and_grad")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_under_vmap_is_one_kernel_call_per_member(reduction):
    rng = np.random.default_rng(fresh_seed())
    logits = rng.standard_normal((3, 6, 11)).astype(np.float32)
    labels = rng.integers(0, 11, (3, 6)).astype(np.int32)
    weight = rng.random(11).astype(np.float32) + 0.5

    def f(x, y):
        return fj.softmax_cross_entropy(x, y, weight=weight, reduction=reduction, label_smoothing=0.05)

    losses = np.asarray(jax.jit(jax.vmap(f))(logits, labels))
    grads = np.asarray(jax.jit(jax.vmap(jax.grad(lambda x, y: f(x, y).sum())))(logits, labels))
    for i in range(3):
        want_loss, want_grad = fastopt.softmax_cross_entropy(logits[i], labels[i], weight=weight,
                                                             reduction=reduction, label_smoothing=0.05)
        np.testing.assert_array_equal(losses[i], np.asarray(want_loss, np.float32))
        assert_bits(grads[i], want_grad, f"member {i}")


def test_no_gradient_flows_to_the_weight_or_the_labels():
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32))
    labels, weight = jnp.asarray([0, 1, 2, 3]), jnp.ones(5, jnp.float32)
    g = jax.grad(lambda w: fj.softmax_cross_entropy(logits, labels, weight=w))(weight)
    np.testing.assert_array_equal(np.asarray(g), np.zeros(5, np.float32))


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_equals_optax_under_jit_and_grad(dtype):
    with precision(dtype):
        logits, labels, _, _ = loss_inputs(np.random.default_rng(fresh_seed()), dtype, {})
        x, y = jnp.asarray(logits), jnp.asarray(labels)
        ours = jax.jit(lambda x: fj.softmax_cross_entropy(x, y, reduction="none"))(x)
        theirs = jax.jit(lambda x: optax.softmax_cross_entropy_with_integer_labels(x, y))(x)
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), **tol)
        g_ours = jax.jit(jax.grad(lambda x: fj.softmax_cross_entropy(x, y)))(x)
        g_theirs = jax.jit(jax.grad(lambda x: optax.softmax_cross_entropy_with_integer_labels(x, y).mean()))(x)
        np.testing.assert_allclose(np.asarray(g_ours), np.asarray(g_theirs), **tol)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(9,), (4, 33), (2, 3, 17), (300, 1001)])  # (the last: rows on XLA's threads)
def test_softmax_gives_the_numpy_kernel_bits_and_jax_gradients(shape, log):
    rng = np.random.default_rng(fresh_seed())
    x = (4 * rng.standard_normal(shape)).astype(np.float32)
    ours, want = (fj.log_softmax, fastopt.log_softmax) if log else (fj.softmax, fastopt.softmax)
    assert_bits(np.asarray(jax.jit(ours)(x)), want(x), "values")
    peer = jax.nn.log_softmax if log else jax.nn.softmax
    cot = rng.standard_normal(shape).astype(np.float32)
    g = jax.jit(jax.grad(lambda v: jnp.sum(ours(v) * cot)))(x)
    g_peer = jax.grad(lambda v: jnp.sum(peer(v) * cot))(x)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_peer), rtol=1e-5, atol=1e-5)
    if len(shape) > 1:
        batched = np.asarray(jax.jit(jax.vmap(ours))(x))
        assert_bits(batched, want(x), "vmap")


def test_a_bad_label_fails_the_step_naming_it():
    logits = jnp.zeros((4, 7), jnp.float32)
    labels = jnp.asarray([1, 2, 9, 3], jnp.int32)  # a value: JAX knows it only when the step runs
    with pytest.raises(RUNTIME_ERRORS,
                       match=re.escape("labels[2] = 9 is out of range for 7 classes (and is not ignore_index=-100)")):
        jax.block_until_ready(jax.jit(fj.softmax_cross_entropy)(logits, labels))


# ------------------------------------------------------------------ bad input, refused while tracing

def lower(fn, *args):
    """Traces and lowers without running: an error here is a trace-time error."""
    return jax.jit(fn).lower(*args)


P32 = {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def adam_step(params, grads, state=None, tx=None):
    tx = tx or fj.adam(1e-2)
    state = tx.init(params) if state is None else state
    return lower(lambda p, s, g: fj.fused_apply(tx, g, s, p), params, state, grads)


@pytest.mark.parametrize("grads,error,message", [
    ({"w": np.ones((2, 3), np.float16), "b": np.zeros(3, np.float32)}, TypeError,
     "grads['w'] has dtype float16 but must be float32"),
    ({"w": np.ones((3, 2), np.float32), "b": np.zeros(3, np.float32)}, ValueError,
     "grads['w'] has shape (3, 2) but params['w'] has shape (2, 3)"),
    ({"w": np.ones((2, 3), np.float32)}, ValueError, "grads has the tree structure"),
    ({"w": np.ones((2, 3), np.int32), "b": np.zeros(3, np.float32)}, TypeError,
     "grads['w'] has dtype int32 but must be float32"),
], ids=["dtype", "shape", "structure", "integer"])
def test_bad_grads_are_refused_at_trace_time(grads, error, message):
    with pytest.raises(error, match=re.escape(message)):
        adam_step(P32, grads)


def test_bad_params_and_state_are_refused_at_trace_time():
    with pytest.raises(TypeError, match=re.escape("params['w'] has dtype int32; parameters must be float32 or "
                                                  "float64")):
        fj.adam(1e-2).init({"w": np.ones(3, np.int32)})
    with pytest.raises(TypeError, match=re.escape("state must be the AdamState that adam's init returned, got "
                                                  "SgdState")):
        adam_step(P32, P32, fj.sgd(1e-2).init(P32))
    state = fj.adam(1e-2).init(P32)
    bad = state._replace(exp_avg={"w": jnp.zeros((2, 3), jnp.float32), "b": jnp.zeros(4, jnp.float32)})
    with pytest.raises(ValueError, match=re.escape("state.exp_avg['b'] has shape (4,) but params['b'] has shape (3,)")):
        adam_step(P32, P32, bad)
    bad = state._replace(exp_avg_sq=None)
    with pytest.raises(ValueError, match=re.escape("state.exp_avg_sq is None but adam keeps it")):
        adam_step(P32, P32, bad)
    with pytest.raises(TypeError, match=re.escape("tx must be a transform made by fastopt.jax")):
        fj.fused_apply(optax.adam(1e-2) if optax else fj.GradientTransformation(None, None), P32, state, P32)


@pytest.mark.parametrize("make,error,message", [
    (lambda: fj.adam(-1.0), ValueError, "learning_rate must be >= 0, got -1.0"),
    (lambda: fj.adam(1e-3, b1=1.0), ValueError, "b1 must be in [0, 1), got 1.0"),
    (lambda: fj.adamw(1e-3, eps=0.0), ValueError, "eps must be > 0, got 0.0"),
    (lambda: fj.adam(1e-3, eps_root=1e-8), ValueError, "eps_root=1e-08 is not supported"),
    (lambda: fj.adam(1e-3, nesterov=True), ValueError, "nesterov=True is not supported"),
    (lambda: fj.rmsprop(1e-3, eps_in_sqrt=True), ValueError, "eps_in_sqrt=True is not supported"),
    (lambda: fj.rmsprop(1e-3, decay=1.5), ValueError, "decay must be in [0, 1], got 1.5"),
    (lambda: fj.sgd(1e-3, nesterov=True), ValueError, "nesterov=True requires momentum > 0"),
    (lambda: fj.adagrad(1e-3, lr_decay=float("nan")), ValueError, "lr_decay must be a finite number"),
    (lambda: fj.sgd("0.1"), TypeError, "learning_rate must be a number, got str"),
], ids=["lr", "b1", "eps", "eps_root", "nesterov", "eps_in_sqrt", "decay", "sgd-nesterov", "lr_decay", "lr-type"])
def test_bad_hyperparameters_are_refused_with_optax_names(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


@pytest.mark.parametrize("call,error,message", [
    (lambda x, y: fj.softmax_cross_entropy(x.astype(jnp.int32), y), TypeError,
     "logits must be float32 or float64, got dtype int32"),
    (lambda x, y: fj.softmax_cross_entropy(x[0], y), ValueError, "logits must be 2-d (N, C), got shape (7,)"),
    (lambda x, y: fj.softmax_cross_entropy(x, y.astype(jnp.float32)), TypeError,
     "labels must be int32 or int64, got dtype float32"),
    (lambda x, y: fj.softmax_cross_entropy(x, y[:3]), ValueError, "labels has shape (3,) but logits has 4 rows"),
    (lambda x, y: fj.softmax_cross_entropy(x, y, weight=jnp.ones(6)), ValueError,
     "weight has shape (6,) but logits has 7 classes"),
    (lambda x, y: fj.softmax_cross_entropy(x, y, weight=jnp.ones(7, jnp.int32)), TypeError,
     "weight has dtype int32 but logits has float32"),
    (lambda x, y: fj.softmax_cross_entropy(x, y, reduction="avg"), ValueError,
     "reduction must be 'mean', 'sum' or 'none', got 'avg'"),
    (lambda x, y: fj.softmax_cross_entropy(x, y, label_smoothing=1.5), ValueError,
     "label_smoothing must be in [0, 1], got 1.5"),
    (lambda x, y: fj.softmax_cross_entropy(x, y, z_loss=-1.0), ValueError, "z_loss must be >= 0, got -1.0"),
    (lambda x, y: fj.softmax(x.astype(jnp.int32)), TypeError, "x must be float32 or float64, got dtype int32"),
], ids=["logits-dtype", "logits-rank", "labels-dtype", "labels-shape", "weight-shape", "weight-dtype",
        "reduction", "label_smoothing", "z_loss", "softmax-dtype"])
def test_bad_loss_input_is_refused_at_trace_time(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        lower(call, jnp.zeros((4, 7), jnp.float32), jnp.zeros(4, jnp.int32))


# ------------------------------------------------------------------ the CUDA handlers' code, on the host

def parse_record(line):
    head, *fields = line.split()
    return head, dict(field.split("=", 1) for field in fields)


@pytest.fixture(scope="module")
def cuda_code_on_host():
    """The CUDA handlers' code bound as CPU targets that record what they would launch (XLA's CPU
    runtime has no GPU context for the real ones): csrc/jax/host_test.h."""
    from fastopt import _core

    for name, capsule in _core._jax_ffi_host_test_targets().items():
        jax.ffi.register_ffi_target(name + "_on_host", capsule, platform="cpu")
    _core._jax_ffi_host_test_records()  # (start empty)
    return lambda: [parse_record(line) for line in _core._jax_ffi_host_test_records()]


def cuda_update_on_host(target, blocks, lr=None, **attrs):
    from fastopt.jax._ffi import update_call

    out = update_call(target + "_on_host", blocks, [True, False] + [True] * (len(blocks) - 2), lr=lr,
                      step=jnp.int32(3), attrs=dict({"lr": 0.0 if lr is not None else 1e-3}, **attrs))
    return jax.block_until_ready(out)


ADAM_ATTRS = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=True, decoupled=True, maximize=False)


def test_cuda_update_handlers_pass_the_list_and_leave_lr_and_step_on_the_device(cuda_code_on_host):
    a, b = jnp.ones(5, jnp.float32), jnp.ones((3, 2), jnp.float32)
    cuda_code_on_host()
    cuda_update_on_host("fastopt_adam", [[a, b]] * 5, **ADAM_ATTRS)
    cuda_update_on_host("fastopt_sgd", [[a, b]] * 3, lr=jnp.float32(0.1), momentum=0.9, dampening=0.0,
                        weight_decay=0.0, nesterov=False, maximize=False)
    cuda_update_on_host("fastopt_rmsprop", [[a]] * 4, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                        centered=True, maximize=False)
    (adam, f_adam), (sgd, f_sgd), (rmsprop, f_rms) = cuda_code_on_host()
    assert adam == "fastopt_adamw" and f_adam["sizes"] == "5,6" and f_adam["slots"] == "11111,11111"
    assert f_adam["param"] == f_adam["state"] == "float32"
    # a constant lr is a double on the host; the step (a traced count) stays on the device
    assert float(f_adam["lr"]) == 1e-3 and f_adam["device_lr"] == "none" and f_adam["device_step"] == "int32"
    # a traced lr too: the host rules see the placeholder 0
    assert sgd == "fastopt_sgd" and f_sgd["slots"] == "111,111" and f_sgd["device_lr"] == "float32"
    assert float(f_sgd["lr"]) == 0.0 and f_sgd["device"] == "0"
    assert rmsprop == "fastopt_rmsprop" and f_rms["slots"] == "11101"  # centered, no momentum buffer


def test_cuda_update_handlers_take_half_params_with_float32_state(cuda_code_on_host):
    p = jnp.ones(4, jnp.bfloat16)
    cuda_code_on_host()
    cuda_update_on_host("fastopt_adam", [[p], [p]] + [[jnp.zeros(4, jnp.float32)]] * 3, **ADAM_ATTRS)
    ((_, fields),) = cuda_code_on_host()
    assert fields["param"] == "bfloat16" and fields["state"] == "float32"
    with pytest.raises(RUNTIME_ERRORS, match=re.escape("exp_avgs[0] has dtype bfloat16 but must be "
                                                                   "float32")):
        cuda_update_on_host("fastopt_adam", [[p]] * 5, **ADAM_ATTRS)
    with pytest.raises(RUNTIME_ERRORS, match=re.escape("beta1 must be in [0, 1), got 1.5")):
        cuda_update_on_host("fastopt_adam", [[jnp.ones(4)]] * 5, **dict(ADAM_ATTRS, beta1=1.5))
    assert cuda_code_on_host() == []  # refused before any launch


def rule_values(name, **given):
    """A rule's values array (csrc/jax/rule_handlers.cpp): the registry's defaults in spec order, None as NaN."""
    from fastopt import _core

    (rule,) = [r for r in _core._rule_registry() if r["name"] == name]
    values = [given.get(h[0], h[2]) for h in rule["hypers"]]
    return np.asarray([np.nan if v is None else float(v) for v in values], np.float64)


def test_cuda_rule_handlers_pass_the_list_and_leave_lr_and_step_on_the_device(cuda_code_on_host):
    a, b = jnp.ones(5, jnp.float32), jnp.ones((3, 2), jnp.float32)
    cuda_code_on_host()
    cuda_update_on_host("fastopt_rule_lion", [[a, b]] * 3, values=rule_values("lion", lr=1e-3, beta1=0.8))
    cuda_update_on_host("fastopt_rule_nadam", [[a]] * 4, lr=jnp.float32(0.1), values=rule_values("nadam"))
    cuda_update_on_host("fastopt_rule_muon_apply", [[b], [b]], values=rule_values("muon_apply"))
    (lion, f_lion), (nadam, f_nadam), (muon, f_muon) = cuda_code_on_host()
    assert lion == "fastopt_rule_lion" and f_lion["sizes"] == "5,6" and f_lion["slots"] == "111,111"
    assert f_lion["param"] == f_lion["state"] == "float32"
    # a constant lr is a double on the host; the step (a traced count) stays on the device
    assert float(f_lion["lr"]) == 1e-3 and f_lion["device_lr"] == "none" and f_lion["device_step"] == "int32"
    # a traced lr too: the host rules see the placeholder 0 (NAdam's mu_product comes from the device step)
    assert nadam == "fastopt_rule_nadam" and f_nadam["slots"] == "1111" and f_nadam["device_lr"] == "float32"
    assert float(f_nadam["lr"]) == 0.0
    assert muon == "fastopt_rule_muon_apply" and f_muon["slots"] == "11" and f_muon["sizes"] == "6"


def test_cuda_rule_handlers_take_half_params_and_refuse_by_name(cuda_code_on_host):
    p = jnp.ones(4, jnp.bfloat16)
    cuda_code_on_host()
    cuda_update_on_host("fastopt_rule_adamax", [[p], [p]] + [[jnp.zeros(4, jnp.float32)]] * 2,
                        values=rule_values("adamax", lr=1e-3))
    ((_, fields),) = cuda_code_on_host()
    assert fields["param"] == "bfloat16" and fields["state"] == "float32"
    with pytest.raises(RUNTIME_ERRORS, match=re.escape("exp_avgs[0] has dtype bfloat16 but must be float32")):
        cuda_update_on_host("fastopt_rule_lion", [[p]] * 3, values=rule_values("lion", lr=1e-3))
    with pytest.raises(RUNTIME_ERRORS, match=re.escape("beta1 must be in [0, 1), got 1.5")):
        cuda_update_on_host("fastopt_rule_lion", [[jnp.ones(4)]] * 3, values=rule_values("lion", lr=1e-3, beta1=1.5))
    assert cuda_code_on_host() == []  # refused before any launch
    # LAMB (per-tensor norms: its own passes in the CUDA backend) is launched like the others, with the step
    # left on the device (its constants and trust ratios are computed there)
    cuda_update_on_host("fastopt_rule_lamb", [[jnp.ones(4), jnp.ones(3)]] * 4,
                        values=rule_values("lamb", lr=1e-3, max_grad_norm=1.0))
    ((lamb, fields),) = cuda_code_on_host()
    assert lamb == "fastopt_rule_lamb" and fields["sizes"] == "4,3" and fields["device_step"] == "int32"


def test_cuda_adafactor_handler_reads_lr_and_step_then_launches_every_tensor(cuda_code_on_host):
    # The CUDA handler reads lr (an operand here) and step back to the host (the step's constants are made
    # there, as on the CPU), checks them by the kernel's rules, and hands every tensor to the CUDA backend.
    from fastopt.jax._adafactor import _call

    p, g = jnp.ones((2, 3, 4), jnp.float32), jnp.ones((2, 3, 4), jnp.float32)
    v = jnp.ones(5, jnp.float32)
    states = [[jnp.zeros((2, 3, 1), jnp.float32), jnp.zeros((2, 1, 4), jnp.float32)], [jnp.zeros(5, jnp.float32)]]
    attrs = dict(beta2_decay=-0.8, eps1=float("nan"), eps2=1e-3, d=1.0, weight_decay=0.0, maximize=False)
    cuda_code_on_host()
    jax.block_until_ready(_call([p, v], [g, v], states, 0.0, jnp.float32(0.25), jnp.int32(7), attrs,
                                target="fastopt_adafactor_on_host"))
    ((name, fields),) = cuda_code_on_host()
    assert name == "adafactor" and fields == dict(dtype="float32", shapes="2x3x4,5", lr="0.25", step="7",
                                                  device="0")
    with pytest.raises(RUNTIME_ERRORS, match="step"):  # (the kernel's rule: step >= 1)
        jax.block_until_ready(_call([p], [g], states[:1], 1e-2, None, jnp.int32(0), attrs,
                                    target="fastopt_adafactor_on_host"))
    assert cuda_code_on_host() == []

@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cuda_loss_handler_checks_labels_then_launches_each_batch_member(cuda_code_on_host, reduction):
    from fastopt.jax._ffi import attributes

    logits = jnp.zeros((2, 4, 7), jnp.float32)  # a batch of 2 (as vmap's broadcast_all gives it)
    labels, weight = jnp.ones((2, 4), jnp.int32), jnp.ones((2, 7), jnp.float32)
    lead = (2, 4) if reduction == "none" else (2,)

    @jax.jit
    def call(y):
        results = (jax.ShapeDtypeStruct(lead, jnp.float32), jax.ShapeDtypeStruct(logits.shape, jnp.float32))
        return jax.ffi.ffi_call("fastopt_cross_entropy_on_host", results)(
            logits, y, weight, **attributes(ignore_index=-100, label_smoothing=0.1, z_loss=0.0, reduction=reduction))

    cuda_code_on_host()
    jax.block_until_ready(call(labels))
    records = cuda_code_on_host()
    assert [r[0] for r in records] == ["find_bad_label"] * 2 + ["cross_entropy"] * 2
    (_, b0), (_, b1) = records[2:]
    step = {k: int(b1[k]) - int(b0[k]) for k in ("logits", "labels", "weight", "dlogits", "row_losses", "loss")}
    assert step == {"logits": 4 * 7 * 4, "labels": 4 * 4, "weight": 7 * 4, "dlogits": 4 * 7 * 4,
                    "row_losses": 4 * 4 if reduction == "none" else 0, "loss": 0 if reduction == "none" else 4}
    assert (int(b0["row_losses"]) == 0) == (reduction != "none") and (int(b0["loss"]) == 0) == (reduction == "none")
    assert b0["n"] == "4" and b0["c"] == "7" and float(b0["label_smoothing"]) == 0.1
    with pytest.raises(RUNTIME_ERRORS, match=re.escape("labels[1, 2] = 9 is out of range for 7 classes")):
        jax.block_until_ready(call(labels.at[1, 2].set(9)))
    assert [r[0] for r in cuda_code_on_host()] == ["find_bad_label"] * 2  # nothing launched


def test_cuda_softmax_handler_launches_over_all_rows(cuda_code_on_host):
    from fastopt.jax._ffi import attributes

    x = jnp.zeros((2, 3, 5), jnp.float32)
    cuda_code_on_host()
    jax.block_until_ready(jax.ffi.ffi_call("fastopt_softmax_on_host", jax.ShapeDtypeStruct(x.shape, x.dtype))(
        x, **attributes(log=True)))
    ((head, fields),) = cuda_code_on_host()
    assert head == "softmax" and fields["rows"] == "6" and fields["c"] == "5" and fields["log"] == "1"


# ------------------------------------------------------------------ jax stays optional

def run(code: str) -> subprocess.CompletedProcess:
    # From tests/, not the repository root, where the source folder fastopt/ would shadow the install.
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=here)


def test_import_fastopt_does_not_import_jax():
    result = run("import sys, fastopt, fastopt.optim, fastopt.reference; print('jax' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_thread_count_changes_no_bit():
    """Inside XLA the kernels run on XLA's threads whatever fastopt.set_num_threads says for calls from
    Python (csrc/jax/kernel_threads.h); either way, the same bits. In a child process: the count is global."""
    result = run(
        "import numpy as np, jax, jax.numpy as jnp, fastopt, fastopt.jax as fj\n"
        "rng = np.random.default_rng(5)\n"
        "p = {'w': jnp.asarray(rng.standard_normal(300_001), jnp.float32)}\n"
        "g = {'w': jnp.asarray(rng.standard_normal(300_001), jnp.float32)}\n"
        "x, y = jnp.asarray(rng.standard_normal((300, 1000)), jnp.float32), jnp.zeros(300, jnp.int32)\n"
        "def run():\n"
        "    tx = fj.adamw(1e-2)\n"
        "    new, _ = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p))(p, tx.init(p), g)\n"
        "    grad = jax.jit(jax.grad(fj.softmax_cross_entropy))(x, y)\n"
        "    return np.asarray(new['w']), np.asarray(grad)\n"
        "one = run()\n"
        "fastopt.set_num_threads(2)\n"
        "two = run()\n"
        "print(all(np.array_equal(a, b) for a, b in zip(one, two)))\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_fastopt_jax_without_jax_or_without_handlers_is_a_clear_import_error():
    result = run("import sys; sys.modules['jax'] = None\n"
                 "try:\n    import fastopt.jax\n"
                 "except ImportError as e:\n    print('ImportError:', e)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ImportError: fastopt.jax needs JAX"), result.stdout
    # a build without the handlers (FASTOPT_JAX=OFF): _core has no _jax_ffi_targets
    result = run("import fastopt._core as c; del c._jax_ffi_targets\n"
                 "try:\n    import fastopt.jax\n"
                 "except ImportError as e:\n    print('ImportError:', e)\n")
    assert result.returncode == 0, result.stderr
    assert "built without fastopt.jax's XLA FFI handlers" in result.stdout
    assert "FASTOPT_JAX=ON pip install ." in result.stdout
