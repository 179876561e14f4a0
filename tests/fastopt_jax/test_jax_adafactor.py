"""fastopt.jax.adafactor under jax.jit (one XLA FFI call per dtype, csrc/jax/adafactor_handlers.cpp): the
same bits as fastopt.optim.Adafactor (parameters and factored state, fused_apply), torch.optim.Adafactor's
numbers in float64, in place under donation, and bad arguments, states and hand-made calls refused by name
with nothing written. Skipped without jax."""

from __future__ import annotations

import re

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
fj = pytest.importorskip("fastopt.jax")
import jax_steps  # noqa: E402
from fastopt import optim  # noqa: E402

STEPS = 6
LR = 0.015625
# a matrix, a batch of matrices, a vector, a scalar, a row, a matrix wider than one tile of the sums, and
# enough elements in all (over 2 x 131072) that the handler shares the tensors out over XLA's threads
SHAPES = {"batch": (2, 3, 5), "big": (40, 2600), "one": (), "row": (1, 7), "tall": (600, 300), "vec": (9,),
          "w": (6, 4)}
CASES = [
    dict(),
    dict(weight_decay=0.1),
    dict(beta2_decay=-0.5, eps=(1e-20, 1e-2), d=2.0, maximize=True),
]


def precision(dtype):
    return jax_steps.precision(jax, dtype)


def make(rng, dtype, shapes=SHAPES):
    return {key: np.asarray(rng.standard_normal(shape)).astype(dtype) for key, shape in shapes.items()}


def jitted(tx, fused):
    return jax_steps.jitted(jax, fj, tx, fused)


def run_both(kw, dtype, fused, seed=0):
    rng = np.random.default_rng(seed)
    start = make(rng, dtype)
    grads = [make(rng, dtype) for _ in range(STEPS)]
    keys = sorted(start)  # (the order jax flattens a dict in)
    ours = optim.Adafactor([start[k].copy() for k in keys], lr=LR, **kw)
    with precision(dtype):
        got, got_state = jax_steps.beside_optim(jax, fj, fj.adafactor(LR, **kw), ours, start, grads, fused)
    return got, got_state, keys, ours


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_apply_gives_fastopt_optim_bits(case, dtype):
    got, state, keys, ours = run_both(CASES[case], dtype, fused=True)
    for i, k in enumerate(keys):
        assert got[k].dtype == dtype
        np.testing.assert_array_equal(got[k], ours.param_groups[0]["params"][i], err_msg=f"params[{k!r}]")
        for field in ("row_var", "col_var", "variance"):
            held = getattr(state, field)[k]
            if field in ours.state[i]:
                np.testing.assert_array_equal(held, ours.state[i][field], err_msg=f"{field}[{k!r}]")
            else:
                assert held.shape == (0,), (field, k)
    assert int(state.count) == STEPS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_then_apply_updates_matches_fastopt_optim(dtype):
    got, _, keys, ours = run_both(CASES[1], dtype, fused=False)
    # params + (new - params) rounds back to new, or to within an ulp of it (fastopt/jax/_transforms.py)
    tol = dict(rtol=1e-13, atol=1e-15) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-7)
    for i, k in enumerate(keys):
        np.testing.assert_allclose(got[k], ours.param_groups[0]["params"][i], **tol, err_msg=f"params[{k!r}]")


def test_float64_steps_follow_torch_adafactor():
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Adafactor"):
        pytest.skip("torch.optim.Adafactor needs torch >= 2.5")
    rng = np.random.default_rng(1)
    shapes = {k: v for k, v in SHAPES.items() if k not in ("big", "tall")}
    start = make(rng, np.float64, shapes)
    keys = sorted(start)
    with precision(np.float64):
        params, state, theirs, ref = jax_steps.beside_torch(
            jax, fj, torch, fj.adafactor(0.02, weight_decay=0.05),
            lambda ps: torch.optim.Adafactor(ps, lr=0.02, weight_decay=0.05), start,
            [make(rng, np.float64, shapes) for _ in range(STEPS)])
        # (torch sums g^2 in another order than fastopt's fixed one: the last bits)
        for p, k in zip(theirs, keys):
            np.testing.assert_allclose(np.asarray(params[k]), p.detach().numpy(), rtol=1e-10, atol=1e-14,
                                       err_msg=f"params[{k!r}]")
            for field in ("row_var", "col_var", "variance"):
                if field in ref.state[p]:
                    np.testing.assert_allclose(np.asarray(getattr(state, field)[k]), ref.state[p][field].numpy(),
                                               rtol=1e-10, atol=1e-14, err_msg=f"{field}[{k!r}]")


def test_float32_and_float64_leaves_in_one_tree():
    rng = np.random.default_rng(6)
    with precision(np.float64):
        start = {"a": rng.standard_normal((5, 3)).astype(np.float32), "b": rng.standard_normal((4, 6))}
        g = {"a": rng.standard_normal((5, 3)).astype(np.float32), "b": rng.standard_normal((4, 6))}
        tx = fj.adafactor(LR)
        params = jax.tree.map(jnp.asarray, start)
        params, _ = jitted(tx, True)(jax.tree.map(jnp.asarray, g), tx.init(params), params)
        for k in start:
            alone = optim.Adafactor([start[k].copy()], lr=LR)
            alone.step([g[k]])
            assert params[k].dtype == start[k].dtype
            np.testing.assert_array_equal(np.asarray(params[k]), alone.param_groups[0]["params"][0], err_msg=k)


def test_a_schedule_gives_the_numbers_of_its_constant_value():
    rng = np.random.default_rng(4)
    start = {"w": jnp.asarray(rng.standard_normal((8, 5)).astype(np.float32)),
             "b": jnp.asarray(rng.standard_normal(5).astype(np.float32))}
    grads = jax.tree.map(lambda x: jnp.sin(x) + 0.25, start)
    results = []
    for learning_rate in (LR, lambda count: jnp.float32(LR)):
        tx = fj.adafactor(learning_rate, weight_decay=0.01)
        p, s = start, tx.init(start)
        for _ in range(3):
            p, s = jitted(tx, True)(grads, s, p)
        results.append(jax.tree.map(np.asarray, p))
    for k in start:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


def test_a_negative_traced_learning_rate_fails_the_step_by_name_changing_nothing():
    params = {"w": jnp.ones((3, 2), jnp.float32)}
    tx = fj.adafactor(lambda count: -0.25 * (count + 1))
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError), match=re.escape("lr must be >= 0, got -0.25")):
        jax.block_until_ready(jitted(tx, True)(params, tx.init(params), params))
    np.testing.assert_array_equal(np.asarray(params["w"]), np.ones((3, 2), np.float32))


def test_donated_params_and_state_are_updated_in_place():
    tx = fj.adafactor(1e-2)
    params = {"w": jnp.ones((64, 8), jnp.float32), "b": jnp.full(8, 0.5, jnp.float32)}
    grads = jax.tree.map(lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)), params)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: fj.fused_apply(tx, g, s, p), donate_argnums=(0, 1))

    def pointers(p, s):
        kept = [s.row_var["w"], s.col_var["w"], s.variance["b"]]
        return [x.unsafe_buffer_pointer() for x in jax.tree.leaves(p) + kept]

    before = pointers(params, state)
    new_params, new_state = step(params, state, grads)
    assert pointers(new_params, new_state) == before
    assert not np.array_equal(np.asarray(new_params["w"]), np.ones((64, 8), np.float32))


@pytest.mark.parametrize("make_tx, error, words", [
    (lambda: fj.adafactor(-1.0), ValueError, "learning_rate"),
    (lambda: fj.adafactor(1e-2, beta2_decay=0.5), ValueError, "beta2_decay must be <= 0, got 0.5"),
    (lambda: fj.adafactor(1e-2, d=0.5), ValueError, r"d must be >= 1 \(the clipping threshold\)"),
    (lambda: fj.adafactor(1e-2, weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    (lambda: fj.adafactor(1e-2, eps=1e-3), TypeError, r"eps must be a pair"),
    (lambda: fj.adafactor(1e-2, eps=(-1.0, 1e-3)), ValueError, r"eps\[0\] must be >= 0"),
    (lambda: fj.adafactor(1e-2, eps=(None, float("inf"))), ValueError, r"eps\[1\] must be a finite number"),
    (lambda: fj.adafactor(1e-2, d="big"), TypeError, "d must be a number"),
])
def test_bad_arguments_are_refused_by_name(make_tx, error, words):
    with pytest.raises(error, match=words):
        make_tx()


def test_step_refusals_name_the_argument():
    tx = fj.adafactor(1e-2)
    params = {"w": jnp.ones((4, 3), jnp.float32), "b": jnp.ones(3, jnp.float32)}
    state = tx.init(params)
    with pytest.raises(ValueError, match="reads the parameters"):
        tx.update(params, state)
    with pytest.raises(TypeError, match="AdafactorState"):
        fj.fused_apply(tx, params, fj.lion(1e-3).init(params), params)
    with pytest.raises(ValueError, match=r"state.row_var\['w'\] has shape \(4, 3\) but params\['w'\] of shape "
                                         r"\(4, 3\) needs \(4, 1\)"):
        fj.fused_apply(tx, params, state._replace(row_var={"w": jnp.ones((4, 3), jnp.float32),
                                                           "b": state.row_var["b"]}), params)
    with pytest.raises(ValueError, match=r"state.variance\['b'\] has shape \(0,\) but .* needs \(3,\)"):
        fj.fused_apply(tx, params, state._replace(variance={"w": state.variance["w"],
                                                            "b": jnp.zeros((0,), jnp.float32)}), params)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3, 4\)"):
        fj.fused_apply(tx, {"w": jnp.ones((3, 4), jnp.float32), "b": params["b"]}, state, params)
    with pytest.raises(TypeError, match=r"params\['w'\] has dtype int32"):
        tx.init({"w": jnp.ones((2, 2), jnp.int32)})


def test_a_hand_made_call_with_a_wrong_state_is_an_error_not_a_crash():
    """The handler's own checks (csrc/jax/adafactor_handlers.cpp), for calls fastopt.jax did not build."""
    from fastopt.jax._ffi import attributes
    p = jnp.ones((4, 3), jnp.float32)
    row_var, col_var = jnp.zeros((4, 3), jnp.float32), jnp.zeros((1, 3), jnp.float32)  # (row_var should be (4, 1))
    results = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (p, row_var, col_var)]
    call = jax.ffi.ffi_call("fastopt_adafactor", results, input_output_aliases={1: 0, 3: 1, 4: 2})
    attrs = attributes(lr=0.01, lr_operand=False, tensors=1, beta2_decay=-0.8, eps1=float("nan"), eps2=1e-3, d=1.0,
                       weight_decay=0.0, maximize=False)
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError), match=re.escape("row_var[0] has shape (4, 3)")):
        jax.block_until_ready(jax.jit(lambda *a: call(*a, **attrs))(jnp.int32(1), p, p, row_var, col_var))
