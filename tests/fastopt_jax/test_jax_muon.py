"""fastopt.jax.muon under jax.jit: its fused passes are fastopt.optim.Muon's kernels (momentum buffers bit for
bit; parameters to the last bits that XLA's and NumPy's matrix products order differently), it follows the
NumPy reference and torch.optim.Muon (in bfloat16, as torch runs it), flax's layout gives torch's step on the
transposed kernel, it composes with optax, and bad arguments are refused by name. Skipped without jax."""

from __future__ import annotations

import re

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
fj = pytest.importorskip("fastopt.jax")
import jax_steps  # noqa: E402
from fastopt import optim, references  # noqa: E402

STEPS = 6
LR = 0.015625
# wide, tall, square, a row, a column, and one large enough to be cut into pieces on the threads
SHAPES = {"big": (300, 500), "col": (6, 1), "row": (1, 9), "sq": (5, 5), "tall": (17, 4), "wide": (3, 11)}
CASES = [
    dict(),
    dict(weight_decay=0.0),
    dict(beta=0.9, nesterov=False, weight_decay=0.05),
    dict(adjust_lr_fn="match_rms_adamw", ns_steps=3, maximize=True),
    dict(adjust_lr_fn="original", eps=1e-3, ns_coeffs=(3.0, -3.2, 1.2)),
]


def optim_kwargs(kw):
    """fastopt.optim.Muon's (torch's) names for fastopt.jax.muon's (optax's) arguments."""
    names = dict(beta="momentum", ns_coeffs="ns_coefficients")
    return {names.get(k, k): v for k, v in kw.items()}


def precision(dtype):
    return jax_steps.precision(jax, dtype)


def make(rng, dtype, shapes=SHAPES):
    return {key: rng.standard_normal(shape).astype(dtype) for key, shape in shapes.items()}


def jitted(tx, fused):
    return jax_steps.jitted(jax, fj, tx, fused)


def run_both(kw, dtype, fused, seed=0):
    rng = np.random.default_rng(seed)
    start = make(rng, dtype)
    grads = [make(rng, dtype) for _ in range(STEPS)]
    keys = sorted(start)  # (the order jax flattens a dict in)
    ours = optim.Muon([start[k].copy() for k in keys], lr=LR, **optim_kwargs(kw))
    with precision(dtype):
        got, state = jax_steps.beside_optim(jax, fj, fj.muon(LR, **kw), ours, start, grads, fused)
    buffers, count = state.momentum_buffer, int(state.count)
    return got, buffers, count, keys, ours


@pytest.mark.parametrize("fused", [True, False], ids=["fused_apply", "update"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_jitted_steps_match_fastopt_optim(case, dtype, fused):
    got, buffers, count, keys, ours = run_both(CASES[case], dtype, fused)
    # Newton-Schulz's products sum in another order in XLA than in NumPy's BLAS; the fused passes are the
    # same kernels, so the momentum buffer (which does not see the products) is the same bits.
    tol = dict(rtol=1e-11, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-6)
    for i, k in enumerate(keys):
        assert got[k].dtype == dtype
        np.testing.assert_allclose(got[k], ours.param_groups[0]["params"][i], **tol, err_msg=f"params[{k!r}]")
        np.testing.assert_array_equal(buffers[k], ours.state[i]["momentum_buffer"], err_msg=f"buffer[{k!r}]")
    assert count == STEPS


@pytest.mark.parametrize("case", range(len(CASES)))
def test_float32_follows_the_reference(case):
    kw = CASES[case]
    hyper = dict(dict(lr=LR, weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=(3.4445, -4.7750, 2.0315),
                      eps=1e-7, ns_steps=5, adjust_lr_fn=None, maximize=False), **optim_kwargs(kw))
    rng = np.random.default_rng(3)
    shapes = {k: v for k, v in SHAPES.items() if k != "big"}
    start = make(rng, np.float32, shapes)
    keys = sorted(start)
    ref = [start[k].copy() for k in keys]
    states = [references.muon_init_state(a) for a in ref]
    tx = fj.muon(LR, **kw)
    params = jax.tree.map(jnp.asarray, start)
    state = tx.init(params)
    step = jitted(tx, True)
    for t in range(1, STEPS + 1):
        g = make(rng, np.float32, shapes)
        params, state = step(jax.tree.map(jnp.asarray, g), state, params)
        references.muon_step(ref, [g[k] for k in keys], states, step=t, **hyper)
    for i, k in enumerate(keys):
        np.testing.assert_allclose(np.asarray(params[k]), ref[i], rtol=1e-4, atol=1e-5, err_msg=f"params[{k!r}]")


def test_bfloat16_iteration_follows_torch_muon():
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    rng = np.random.default_rng(5)
    shapes = {k: v for k, v in SHAPES.items() if k != "big"}
    start = make(rng, np.float32, shapes)
    keys = sorted(start)
    params, state, theirs, ref = jax_steps.beside_torch(
        jax, fj, torch, fj.muon(0.02, ns_dtype=jnp.bfloat16), lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.1),
        start, [make(rng, np.float32, shapes) for _ in range(STEPS)])
    # The same bfloat16 iteration as torch's, its input differing in the last bits (torch's lerp) and its
    # reductions summed in other orders: O agrees to a few bfloat16 ulps (2^-8) of its entries (at most about
    # 1), and a step moves a parameter by lr * scale * O. A wrong iteration would be off by O itself.
    for p, k in zip(theirs, keys):
        bound = STEPS * 0.02 * fj._muon._muon.lr_scale(None, shapes[k]) * 2.0 ** -6
        np.testing.assert_allclose(np.asarray(params[k]), p.detach().numpy(), rtol=0, atol=bound,
                                   err_msg=f"params[{k!r}]")
        np.testing.assert_allclose(np.asarray(state.momentum_buffer[k]), ref.state[p]["momentum_buffer"].numpy(),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_flax_layout_is_the_torch_step_of_the_transposed_kernel(adjust_lr_fn):
    rng = np.random.default_rng(11)
    kernels = {"down": rng.standard_normal((12, 4)), "up": rng.standard_normal((4, 12))}  # (input, output)
    grads = [{k: rng.standard_normal(v.shape) for k, v in kernels.items()} for _ in range(3)]
    flax_tx = fj.muon(LR, layout="flax", adjust_lr_fn=adjust_lr_fn)
    torch_tx = fj.muon(LR, adjust_lr_fn=adjust_lr_fn)
    with precision(np.float64):
        p = jax.tree.map(jnp.asarray, kernels)
        q = jax.tree.map(lambda a: jnp.asarray(a.T), kernels)
        s, t = flax_tx.init(p), torch_tx.init(q)
        for g in grads:
            p, s = jitted(flax_tx, True)(jax.tree.map(jnp.asarray, g), s, p)
            q, t = jitted(torch_tx, True)(jax.tree.map(lambda a: jnp.asarray(a.T), g), t, q)
        # (XLA may order a transposed product's sums otherwise: the same numbers to the last bits)
        for k in kernels:
            np.testing.assert_allclose(np.asarray(p[k]), np.asarray(q[k]).T, rtol=1e-13, atol=1e-15, err_msg=k)
        # Read the torch way, a non-square kernel takes another step under the original adjustment
        # (sqrt(max(1, rows / cols))); match_rms_adamw's 0.2 * sqrt(max(rows, cols)) reads both ways alike.
        r, u = jax.tree.map(jnp.asarray, kernels), torch_tx.init(jax.tree.map(jnp.asarray, kernels))
        for g in grads:
            r, u = jitted(torch_tx, True)(jax.tree.map(jnp.asarray, g), u, r)
        for k in kernels:
            gap = np.max(np.abs(np.asarray(r[k]) - np.asarray(p[k])))
            assert gap > 1e-3 if adjust_lr_fn is None else gap < 1e-14, (k, gap)


def test_weight_decay_mask_leaves_masked_leaves_undecayed():
    rng = np.random.default_rng(2)
    start = make(rng, np.float32, {"a": (4, 6), "b": (5, 3)})
    g = make(rng, np.float32, {"a": (4, 6), "b": (5, 3)})
    results = {}
    for name, tx in (("masked", fj.muon(LR, weight_decay=0.1, weight_decay_mask={"a": True, "b": False})),
                     ("decayed", fj.muon(LR, weight_decay=0.1)), ("none", fj.muon(LR, weight_decay=0.0))):
        p = jax.tree.map(jnp.asarray, start)
        p, _ = jitted(tx, True)(jax.tree.map(jnp.asarray, g), tx.init(p), p)
        results[name] = {k: np.asarray(v) for k, v in p.items()}
    np.testing.assert_array_equal(results["masked"]["a"], results["decayed"]["a"])
    np.testing.assert_array_equal(results["masked"]["b"], results["none"]["b"])
    assert not np.array_equal(results["decayed"]["b"], results["none"]["b"])


def test_a_schedule_gives_the_numbers_of_its_constant_value():
    rng = np.random.default_rng(4)
    start = {"w": jnp.asarray(rng.standard_normal((8, 5)).astype(np.float32))}
    grads = {"w": jnp.asarray(rng.standard_normal((8, 5)).astype(np.float32))}
    results = []
    for learning_rate in (LR, lambda count: jnp.float32(LR)):
        tx = fj.muon(learning_rate)
        p, s = start, tx.init(start)
        for _ in range(3):
            p, s = jitted(tx, True)(grads, s, p)
        results.append(np.asarray(p["w"]))
    np.testing.assert_array_equal(results[0], results[1])


def test_a_negative_traced_learning_rate_fails_the_step_by_name_changing_nothing():
    params = {"w": jnp.ones((3, 2), jnp.float32)}
    tx = fj.muon(lambda count: -0.25 * (count + 1))
    step = jitted(tx, True)
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError), match=re.escape("lr must be >= 0, got -0.25")):
        jax.block_until_ready(step(params, tx.init(params), params))
    np.testing.assert_array_equal(np.asarray(params["w"]), np.ones((3, 2), np.float32))


def test_donated_params_and_state_are_updated_in_place():
    tx = fj.muon(1e-2)
    params = {"w": jnp.ones((64, 8), jnp.float32), "v": jnp.full((8, 16), 0.5, jnp.float32)}
    grads = jax.tree.map(lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)), params)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p), donate_argnums=(0, 1))
    before = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(params) + jax.tree.leaves(state.momentum_buffer)]
    new_params, new_state = step(params, state, grads)
    after = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(new_params) + jax.tree.leaves(new_state.momentum_buffer)]
    assert after == before
    assert not np.array_equal(np.asarray(new_params["w"]), np.ones((64, 8), np.float32))


def test_muon_for_matrices_and_adamw_for_the_rest_through_optax():
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(9)
    params = {"w": jnp.asarray(rng.standard_normal((6, 4)).astype(np.float32)),
              "b": jnp.asarray(rng.standard_normal(4).astype(np.float32))}
    labels = {"w": "muon", "b": "adamw"}
    tx = optax.multi_transform({"muon": fj.muon(LR), "adamw": fj.adamw(LR)}, labels)
    alone = fj.muon(LR)
    g = {k: jnp.asarray(rng.standard_normal(v.shape).astype(np.float32)) for k, v in params.items()}

    @jax.jit
    def step(p, s):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    p, s = step(params, tx.init(params))
    w, _ = jitted(alone, False)({"w": g["w"]}, alone.init({"w": params["w"]}), {"w": params["w"]})
    np.testing.assert_array_equal(np.asarray(p["w"]), np.asarray(w["w"]))
    assert not np.array_equal(np.asarray(p["b"]), np.asarray(params["b"]))


@pytest.mark.parametrize("make_tx, error, words", [
    (lambda: fj.muon(-1.0), ValueError, "learning_rate"),
    (lambda: fj.muon(1e-3, beta=-0.5), ValueError, "beta"),
    (lambda: fj.muon(1e-3, weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda: fj.muon(1e-3, ns_coeffs=(1.0, 2.0)), ValueError, r"ns_coeffs must hold exactly 3"),
    (lambda: fj.muon(1e-3, ns_coeffs=(1.0, float("nan"), 2.0)), ValueError, r"ns_coeffs\[1\]"),
    (lambda: fj.muon(1e-3, ns_steps=100), ValueError, "less than 100"),
    (lambda: fj.muon(1e-3, ns_steps=2.0), TypeError, "ns_steps"),
    (lambda: fj.muon(1e-3, eps=0.0), ValueError, "eps"),
    (lambda: fj.muon(1e-3, adjust_lr_fn="spectral"), ValueError, "adjust_lr_fn"),
    (lambda: fj.muon(1e-3, layout="jax"), ValueError, "layout"),
    (lambda: fj.muon(1e-3, mu_dtype=jnp.bfloat16), ValueError, "mu_dtype"),
    (lambda: fj.muon(1e-3, adaptive=True), ValueError, "adaptive"),
    (lambda: fj.muon(1e-3, ns_dtype=jnp.float16), ValueError, "ns_dtype"),
    (lambda: fj.muon(1e-3, ns_dtype="matrix"), TypeError, "ns_dtype"),
])
def test_bad_arguments_are_refused_by_name(make_tx, error, words):
    with pytest.raises(error, match=words):
        make_tx()


@pytest.mark.parametrize("params, error, words", [
    ({"w": jnp.ones((2, 3, 4), jnp.float32)}, ValueError, r"params\['w'\] has shape \(2, 3, 4\): muon takes 2-D"),
    ({"b": jnp.ones(4, jnp.float32)}, ValueError, r"params\['b'\] has shape \(4,\)"),
    ({"w": jnp.ones((2, 3), jnp.int32)}, TypeError, r"params\['w'\] has dtype int32"),
])
def test_leaves_muon_cannot_take_are_refused_by_name(params, error, words):
    with pytest.raises(error, match=words):
        fj.muon(1e-3).init(params)


def test_step_refusals_name_the_argument():
    tx = fj.muon(1e-3)
    params = {"w": jnp.ones((4, 3), jnp.float32)}
    state = tx.init(params)
    with pytest.raises(ValueError, match="reads the parameters"):
        tx.update(params, state)
    with pytest.raises(TypeError, match="MuonState"):
        fj.fused_apply(tx, params, fj.lion(1e-3).init(params), params)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3, 4\)"):
        fj.fused_apply(tx, {"w": jnp.ones((3, 4), jnp.float32)}, state, params)
    with pytest.raises(TypeError, match=r"state.momentum_buffer\['w'\] has dtype float16"):
        fj.fused_apply(tx, params, state._replace(momentum_buffer={"w": jnp.ones((4, 3), jnp.float16)}), params)
    with pytest.raises(TypeError, match="weight_decay_mask leaves must be Python bools"):
        masked = fj.muon(1e-3, weight_decay_mask={"w": jnp.asarray(True)})
        fj.fused_apply(masked, params, masked.init(params), params)
