"""LAMB (fastopt.lamb_, fastopt.optim.LAMB, fastopt.torch.LAMB) against a NumPy reference written here from
the paper (You et al. 2020, Algorithm 2) with apex FusedLAMB's conventions (eps outside the square root of
the bias-corrected v, decoupled weight decay inside the trust ratio, ratio 1 where a norm is 0, clipping
by dividing the gradients by norm / max_grad_norm when the global norm exceeds it); its per-tensor norms
give the same bits for any thread count and instruction set."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fastopt
from fastopt import _core

SUPPORTED = fastopt.build_info()["cpu_isas_supported"]

# Sizes that hit SIMD tails (1, 7, 33), the fixed blocks of the norms (65536 elements: 65537 is one block
# and one element) and the thread split of a large call (more than 131072 elements in all).
SIZES = (1, 7, 33, 1000, 65537, 140003)


def reference_step(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay,
                   bias_correction, max_grad_norm, step, grad_scale=1.0):
    """One LAMB step, in place, in the arrays' own dtype, written from the paper."""
    dtype = params[0].dtype.type if params else np.float64
    grads = [g / dtype(grad_scale) for g in grads]
    if max_grad_norm is not None:
        # Clipping of the global gradient norm (apex: divide by norm / max_grad_norm when above it).
        norm = np.sqrt(sum(np.sum(np.square(g), dtype=dtype) for g in grads))
        if norm > max_grad_norm:
            grads = [g / dtype(norm / dtype(max_grad_norm)) for g in grads]
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        m *= dtype(beta1)
        m += dtype(1 - beta1) * g
        v *= dtype(beta2)
        v += dtype(1 - beta2) * (g * g)
        m_hat = m / dtype(1 - beta1 ** step) if bias_correction else m
        v_hat = v / dtype(1 - beta2 ** step) if bias_correction else v
        update = m_hat / (np.sqrt(v_hat) + dtype(eps)) + dtype(weight_decay) * p
        p_norm = np.linalg.norm(p.ravel())
        u_norm = np.linalg.norm(update.ravel())
        trust = p_norm / u_norm if p_norm > 0 and u_norm > 0 else 1.0
        p -= dtype(lr * trust) * update


def draw_hyper(rng, clipping):
    return dict(lr=float(rng.uniform(1e-3, 5e-2)), beta1=float(rng.uniform(0.5, 0.99)),
                beta2=float(rng.uniform(0.9, 0.9999)), eps=float(10 ** rng.uniform(-8, -3)),
                weight_decay=float(rng.choice([0.0, rng.uniform(0.0, 0.1)])),
                bias_correction=bool(rng.integers(2)),
                # the global norm of these gradients is about sqrt(n): some steps clip, some do not
                max_grad_norm=float(rng.uniform(50, 600)) if clipping else None)


def make_lists(rng, sizes, dtype, zero=()):
    """Params of mixed shapes (the sizes as 1-d, 2-d and 3-d arrays); tensors in `zero` start at zero."""
    shapes = []
    for k, n in enumerate(sizes):
        shapes.append((n,) if k % 3 == 0 or n < 4 else ((1, n) if k % 3 == 1 else (1, 1, n)))
    params = [np.zeros(s, dtype) if k in zero else rng.standard_normal(s).astype(dtype) for k, s in enumerate(shapes)]
    return params, [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]


def grads_like(rng, params, zero_grads=()):
    return [np.zeros_like(p) if k in zero_grads else rng.standard_normal(p.shape).astype(p.dtype)
            for k, p in enumerate(params)]


@pytest.mark.parametrize("clipping", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_float64_matches_the_reference_over_40_steps(seed, clipping):
    rng = np.random.default_rng(seed)
    hyper = draw_hyper(rng, clipping)
    sizes = SIZES + (5, 12)
    # tensor 6 starts at zero (||p|| = 0: ratio 1); tensor 7 is zero with zero gradients (stays zero)
    params, ms, vs = make_lists(rng, sizes, np.float64, zero=(6, 7))
    ref = [copy.deepcopy(x) for x in (params, ms, vs)]
    clipped = 0
    for step in range(1, 41):
        if step % 10 == 0:  # a change of hyperparameters mid-run (the switch included)
            hyper = draw_hyper(rng, clipping)
        grads = grads_like(rng, params, zero_grads=(7,))
        if clipping:
            clipped += np.sqrt(sum(np.sum(g * g) for g in grads)) > hyper["max_grad_norm"]
        assert fastopt.lamb_(params, grads, ms, vs, **hyper, step=step) is False
        reference_step(*ref[:1], grads, *ref[1:], **hyper, step=step)
    for got, want in zip(params + ms + vs, ref[0] + ref[1] + ref[2]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    assert not params[7].any()
    assert params[6].any()  # moved from zero by the ratio-1 step
    if clipping:
        assert 0 < clipped < 40  # both branches of the clip ran


def test_bias_correction_off_and_weight_decay_zero_match_the_reference():
    rng = np.random.default_rng(5)
    params, ms, vs = make_lists(rng, (3, 17, 64), np.float64)
    ref = [copy.deepcopy(x) for x in (params, ms, vs)]
    hyper = dict(lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.0, bias_correction=False,
                 max_grad_norm=None)
    for step in range(1, 6):
        grads = grads_like(rng, params)
        fastopt.lamb_(params, grads, ms, vs, **hyper, step=step)
        reference_step(*ref[:1], grads, *ref[1:], **hyper, step=step)
    for got, want in zip(params + ms + vs, ref[0] + ref[1] + ref[2]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_the_trust_ratio_is_per_tensor():
    # Two tensors of the same gradients but params 100 times apart move 100 times apart.
    g = np.array([0.3, -1.0, 2.0])
    p = [np.array([1.0, 2.0, 3.0]), np.array([100.0, 200.0, 300.0])]
    fastopt.lamb_(p, [g, g.copy()], [np.zeros(3), np.zeros(3)], [np.zeros(3), np.zeros(3)], lr=0.1,
                  weight_decay=0.0, step=1)
    np.testing.assert_allclose(100 * (np.array([1.0, 2.0, 3.0]) - p[0]), np.array([100.0, 200.0, 300.0]) - p[1],
                               rtol=1e-12)


@pytest.mark.parametrize("clipping", [False, True])
def test_float32_matches_the_reference_in_float32(clipping):
    rng = np.random.default_rng(11)
    hyper = draw_hyper(rng, clipping)
    params, ms, vs = make_lists(rng, SIZES + (9,), np.float32, zero=(6,))
    ref = [copy.deepcopy(x) for x in (params, ms, vs)]
    for step in range(1, 11):
        grads = grads_like(rng, params)
        fastopt.lamb_(params, grads, ms, vs, **hyper, step=step)
        reference_step(*ref[:1], grads, *ref[1:], **hyper, step=step)
    for got, want in zip(params + ms + vs, ref[0] + ref[1] + ref[2]):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)


def test_grad_scale_divides_the_gradients_first():
    rng = np.random.default_rng(3)
    params, ms, vs = make_lists(rng, (100, 7), np.float64)
    ref = [copy.deepcopy(x) for x in (params, ms, vs)]
    grads = grads_like(rng, params)
    hyper = dict(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-6, weight_decay=0.01, bias_correction=True,
                 max_grad_norm=1.0)
    fastopt.lamb_(params, [g * 1024.0 for g in grads], ms, vs, **hyper, step=1, grad_scale=1024.0)
    reference_step(*ref[:1], grads, *ref[1:], **hyper, step=1)
    for got, want in zip(params + ms + vs, ref[0] + ref[1] + ref[2]):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def digest_of_run(dtype, clipping):
    rng = np.random.default_rng(21)
    params, ms, vs = make_lists(rng, (300007, 65537, 7, 33, 0), dtype, zero=(3,))
    hyper = draw_hyper(rng, clipping)
    if clipping:
        hyper["max_grad_norm"] = 400.0  # below the norm (about 605): clips every step
    for step in range(1, 4):
        fastopt.lamb_(params, grads_like(rng, params), ms, vs, **hyper, step=step)
    return b"".join(a.tobytes() for a in params + ms + vs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clipping", [False, True])
def test_same_bits_for_one_and_two_threads(dtype, clipping, restore_settings):
    fastopt.set_num_threads(1)
    one = digest_of_run(dtype, clipping)
    fastopt.set_num_threads(2)
    assert fastopt.get_num_threads() == 2
    assert digest_of_run(dtype, clipping) == one


@pytest.mark.skipif(len(SUPPORTED) < 2, reason="this CPU supports a single instruction set")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_at_every_instruction_set(dtype, restore_settings):
    results = {}
    for isa in SUPPORTED:
        assert fastopt.set_cpu_isa(isa) == isa
        results[isa] = digest_of_run(dtype, clipping=True)
    assert len(set(results.values())) == 1, [isa for isa in results if results[isa] != results[SUPPORTED[-1]]]


def test_a_tensor_does_not_depend_on_its_neighbours():
    # Without clipping, the norms of a tensor are its own fixed blocks: alone or in a list, the same bits.
    rng = np.random.default_rng(4)
    p = rng.standard_normal(200003)
    g = rng.standard_normal(200003)
    alone = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    fastopt.lamb_(alone[0], g, alone[1], alone[2], step=1)
    other = rng.standard_normal(70001)
    listed = [[other.copy(), p.copy()], [np.zeros_like(other), np.zeros_like(p)],
              [np.zeros_like(other), np.zeros_like(p)]]
    fastopt.lamb_(listed[0], [rng.standard_normal(70001), g], listed[1], listed[2], step=1)
    for a, b in zip(alone, listed):
        assert a.tobytes() == b[1].tobytes()


def test_skip_nonfinite_writes_nothing():
    rng = np.random.default_rng(6)
    params, ms, vs = make_lists(rng, (10, 5), np.float64)
    grads = grads_like(rng, params)
    grads[1].flat[2] = np.inf
    before = [a.copy() for a in params + ms + vs]
    assert fastopt.lamb_(params, grads, ms, vs, step=1, max_grad_norm=1.0, skip_nonfinite=True) is True
    for a, b in zip(params + ms + vs, before):
        assert a.tobytes() == b.tobytes()
    assert fastopt.lamb_(params, grads_like(rng, params), ms, vs, step=1, skip_nonfinite=True) is False


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(max_grad_norm=0.0), ValueError, "max_grad_norm"),
    (dict(max_grad_norm=-1.0), ValueError, "max_grad_norm"),
    (dict(max_grad_norm=float("inf")), ValueError, "max_grad_norm"),
    (dict(max_grad_norm="1"), TypeError, "max_grad_norm"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(beta1=1.0), ValueError, "beta1"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(bias_correction=2), TypeError, "bias_correction"),
    (dict(step=0), ValueError, "step"),
    (dict(grad_scale=0.0), ValueError, "grad_scale"),
])
def test_bad_hyperparameters_are_refused_and_nothing_written(kwargs, error, words):
    rng = np.random.default_rng(8)
    params, ms, vs = make_lists(rng, (10, 5), np.float64)
    grads = grads_like(rng, params)
    before = [a.copy() for a in params + ms + vs]
    call = dict(step=1)
    call.update(kwargs)
    with pytest.raises(error, match=words):
        fastopt.lamb_(params, grads, ms, vs, **call)
    for a, b in zip(params + ms + vs, before):
        assert a.tobytes() == b.tobytes()


def test_bad_arrays_are_refused_and_nothing_written():
    rng = np.random.default_rng(9)
    params, ms, vs = make_lists(rng, (10, 5), np.float64)
    grads = grads_like(rng, params)
    before = [a.copy() for a in params + ms + vs]
    with pytest.raises(ValueError, match=r"exp_avg_sqs\[1\]"):
        fastopt.lamb_(params, grads, ms, [vs[0], np.zeros(4)], step=1)
    with pytest.raises(TypeError, match=r"exp_avgs\[0\]"):
        fastopt.lamb_(params, grads, [ms[0].astype(np.float32), ms[1]], vs, step=1)
    with pytest.raises(TypeError, match="step"):
        fastopt.lamb_(params, grads, ms, vs)
    with pytest.raises(TypeError, match="exp_avg_sqs"):
        fastopt.lamb_(params, grads, ms, step=1)
    for a, b in zip(params + ms + vs, before):
        assert a.tobytes() == b.tobytes()


def test_signature_and_defaults():
    import inspect

    doc = _core.lamb_.__doc__
    for text in ("lr (0.001)", "beta1 (0.9)", "beta2 (0.999)", "eps (1e-06)", "weight_decay (0.01)",
                 "bias_correction (True)", "max_grad_norm (None)"):
        assert text in doc
    # the defaults are the ones the kernel uses: a call without them equals one that spells them out
    rng = np.random.default_rng(10)
    a = make_lists(rng, (20,), np.float64)
    b = copy.deepcopy(a)
    g = grads_like(rng, a[0])
    fastopt.lamb_(a[0], g, a[1], a[2], step=1)
    fastopt.lamb_(b[0], g, b[1], b[2], lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01,
                  bias_correction=True, max_grad_norm=None, step=1)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a[0] + a[1] + a[2], b[0] + b[1] + b[2]))
    params = inspect.signature(fastopt.optim.LAMB).parameters
    assert {k: params[k].default for k in ("lr", "betas", "eps", "weight_decay", "bias_correction",
                                           "max_grad_norm")} == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, bias_correction=True, max_grad_norm=None)


# ---------------------------------------------------------------------------------- the classes


def class_hyper():
    return dict(lr=0.02, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.05, bias_correction=True, max_grad_norm=3.0)


def kernel_hyper(h):
    return dict(lr=h["lr"], beta1=h["betas"][0], beta2=h["betas"][1], eps=h["eps"], weight_decay=h["weight_decay"],
                bias_correction=h["bias_correction"], max_grad_norm=h["max_grad_norm"])


def test_optim_class_matches_the_reference_and_round_trips_its_state():
    rng = np.random.default_rng(12)
    params, _, _ = make_lists(rng, (10, 40, 6), np.float64)
    ref = [copy.deepcopy(params), [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]]
    opt = fastopt.optim.LAMB(params, **class_hyper())
    grads = [grads_like(rng, params) for _ in range(5)]
    for step in range(1, 4):
        opt.step(grads[step - 1])
        reference_step(ref[0], grads[step - 1], ref[1], ref[2], **kernel_hyper(class_hyper()), step=step)
    for got, want in zip(params, ref[0]):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    # a copy of the params and the state dict, loaded into a new optimizer, continues with the same bits
    saved = copy.deepcopy(opt.state_dict())
    twin_params = [p.copy() for p in params]
    again = fastopt.optim.LAMB(twin_params, **class_hyper())
    again.load_state_dict(saved)
    for step in (4, 5):
        opt.step(grads[step - 1])
        again.step(grads[step - 1])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(params, twin_params))
    assert opt.state_dict()["state"][1]["step"] == 5


def test_torch_twin_matches_the_optim_class_and_round_trips_its_state():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fastopt.torch")
    rng = np.random.default_rng(13)
    arrays, _, _ = make_lists(rng, (10, 40, 6), np.float64)
    weights = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    twin = fastopt.torch.LAMB(weights, **class_hyper())
    mine = fastopt.optim.LAMB(arrays, **class_hyper())
    grads = [grads_like(rng, arrays) for _ in range(5)]
    for step in range(3):
        for w, g in zip(weights, grads[step]):
            w.grad = torch.from_numpy(g.copy())
        twin.step()
        mine.step(grads[step])
    for w, a in zip(weights, arrays):
        assert w.detach().numpy().tobytes() == a.tobytes()
    state = twin.state_dict()
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert state["param_groups"][0]["max_grad_norm"] == 3.0
    copies = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    again = fastopt.torch.LAMB(copies, **class_hyper())
    again.load_state_dict(copy.deepcopy(state))
    for step in (3, 4):
        for w, c, g in zip(weights, copies, grads[step]):
            w.grad = torch.from_numpy(g.copy())
            c.grad = torch.from_numpy(g.copy())
        twin.step()
        again.step()
    assert all(torch.equal(w, c) for w, c in zip(weights, copies))


def test_torch_twin_without_clipping_and_bad_arguments():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fastopt.torch")
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    p0 = w.detach().numpy().copy()
    g = np.linspace(-1.0, 1.0, 5)
    w.grad = torch.from_numpy(g.copy())
    fastopt.torch.LAMB([w]).step()  # the defaults (max_grad_norm=None)
    ref = [[p0], [np.zeros(5)], [np.zeros(5)]]
    reference_step(ref[0], [g], ref[1], ref[2], lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01,
                   bias_correction=True, max_grad_norm=None, step=1)
    np.testing.assert_allclose(w.detach().numpy(), ref[0][0], rtol=1e-12)
    with pytest.raises(ValueError, match="max_grad_norm"):
        fastopt.torch.LAMB([w], max_grad_norm=0.0)
    with pytest.raises(TypeError, match="bias_correction"):
        fastopt.torch.LAMB([w], bias_correction="yes")
