"""The losses (softmax_cross_entropy, softmax, log_softmax, multiclass_svm_loss, penalty) and gradcheck.

* The kernels against fastopt.reference on FRESH random data every run. The seed is printed with
  every test (shown when one fails); replay a run with FASTOPT_TEST_SEED=<seed> pytest ...
* softmax_cross_entropy against torch's F.cross_entropy + autograd (skipped without torch).
* Numerical stability, out=, thread-count independence, and gradcheck itself.

Tolerances. float64 kernels agree with the float64 reference to rtol 1e-10 (gradients: atol 1e-12 x
the row's gradient scale, max weight / mean denominator, for elements where terms cancel). float32
kernels are compared with the float64 reference run on the same (upcast) float32 data, so only
float32 rounding is measured: rtol 1e-5 on losses; rtol 1e-4 and atol 2e-5 x the gradient scale on
gradients. A row's loss is a sum of non-negative terms ((max - z) + log sum exp(z - max), ...), so
it is accurate relative to itself however large the logits; only log(sum), near 0 when one class
dominates, is rounded absolutely: per-row losses (and log_softmax) get an absolute allowance of
8 ulps of 1 (times the largest class weight), nothing that scales with |logits|.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

import fastopt
from fastopt import reference
from torch_losses import torch_ce_tensors

try:
    import torch
except ImportError:  # the torch comparisons are skipped
    torch = None

SEED = int(os.environ.get("FASTOPT_TEST_SEED") or np.random.SeedSequence().entropy)

REDUCTIONS = ("mean", "sum", "none")
SMOOTHINGS = (0.0, 0.1, 1.0)
IGNORE_MODES = ("no-ignored", "some-ignored", "ignore-valid-class")
Z_LOSSES = (0.0, 1e-3)
LABEL_DTYPES = (np.int32, np.int64)
EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}


@pytest.fixture
def rng(request):
    """A generator seeded from SEED and the test's id; prints how to replay it."""
    print(f"seed: FASTOPT_TEST_SEED={SEED} pytest '{request.node.nodeid}'")
    return np.random.default_rng([SEED, zlib.crc32(request.node.nodeid.encode())])


# --------------------------------------------------------------------------------------- helpers


def make_problem(rng, n, c, *, ignore="some-ignored", weighted=False, dtype=np.float64,
                 label_dtype=np.int64, scale=3.0):
    """(logits, labels, kwargs with weight and ignore_index) for one cross-entropy call."""
    logits = (rng.standard_normal((n, c)) * scale).astype(dtype)
    labels = rng.integers(0, c, n)
    ignore_index = -100
    few = rng.permutation(n)[: max(1, n // 4)] if n > 1 else []
    if ignore == "some-ignored":
        labels[few] = ignore_index
    elif ignore == "ignore-valid-class":
        ignore_index = c - 1
        labels[few] = ignore_index
    weight = rng.uniform(0.1, 2.0, c).astype(dtype) if weighted else None
    return logits, labels.astype(label_dtype), dict(weight=weight, ignore_index=ignore_index)


def ce_kwargs(kw, **more):
    return dict(weight=kw["weight"], ignore_index=kw["ignore_index"], **more)


def reference_ce(logits, labels, **kwargs):
    """The float64 reference on (upcast) inputs; every keyword passed explicitly."""
    full = dict(weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean", z_loss=0.0)
    full.update(kwargs)
    if full["weight"] is not None:
        full["weight"] = np.asarray(full["weight"], np.float64)
    return reference.softmax_cross_entropy(np.asarray(logits, np.float64), labels, **full)


def assert_loss_close(actual, expected, dtype, n_rows, what, scale=1.0):
    """`scale`: the largest weight (over the mean's denominator): sets the per-row absolute allowance."""
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    atol = 8 * EPS[dtype] * scale
    if np.ndim(expected) == 0:
        assert isinstance(actual, float), f"{what}: a reduced loss is a Python float, got {type(actual)}"
        atol *= max(n_rows, 1)
    else:
        assert isinstance(actual, np.ndarray) and actual.dtype == dtype and actual.shape == (n_rows,), what
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=f"{what} loss (seed {SEED})")


def assert_grad_close(actual, expected, dtype, what, scale=None):
    """`scale`: the size of a row's gradient terms (the largest weight, over the mean's denominator),
    which sets the absolute rounding where terms cancel (largest |expected| when not given)."""
    assert actual.dtype == dtype and actual.shape == expected.shape, what
    if expected.size == 0:
        return
    top = float(np.max(np.abs(expected))) if scale is None else scale
    tol = dict(rtol=1e-10, atol=1e-12 * top) if dtype == np.float64 else dict(rtol=1e-4, atol=2e-5 * top)
    np.testing.assert_allclose(actual, expected, err_msg=f"{what} gradient (seed {SEED})", **tol)


def check_against_reference(logits, labels, kw, **options):
    """Kernel and reference agree on the loss and the gradient; returns the kernel's result."""
    what = f"N={logits.shape[0]} C={logits.shape[1]} {logits.dtype} labels {labels.dtype} " \
           f"weighted={kw['weight'] is not None} ignore_index={kw['ignore_index']} {options}"
    loss, grad = fastopt.softmax_cross_entropy(logits, labels, **ce_kwargs(kw, **options))
    ref_loss, ref_grad = reference_ce(logits, labels, **ce_kwargs(kw, **options))
    scale = gradient_scale(labels, kw, options)
    assert_loss_close(loss, ref_loss, logits.dtype.type, logits.shape[0], what, scale)
    assert_grad_close(grad, ref_grad, logits.dtype.type, what, scale)
    return loss, grad


def gradient_scale(labels, kw, options):
    """The largest weight, divided by the mean's denominator (summed weights of the counted rows)."""
    weight = np.ones(1) if kw["weight"] is None else kw["weight"].astype(np.float64)
    scale = float(np.max(weight, initial=0.0))
    if options.get("reduction", "mean") == "mean":
        counted = labels[labels != kw["ignore_index"]]
        denominator = counted.size if kw["weight"] is None else float(np.sum(weight[counted]))
        if denominator > 0:
            scale /= denominator
    return scale


def ids(values):
    return [str(v) for v in values]


# ------------------------------------------------------------------------ cross-entropy vs reference

SIZES = [(n, c) for n in (0, 1, 7, 300) for c in (1, 2, 7, 1000)]
# The mean of no rows (N = 0) is nan: test_mean_of_no_counted_rows_is_nan.
GRID = [(n, c, r) for n, c in SIZES for r in REDUCTIONS if n > 0 or r != "mean"]


@pytest.mark.parametrize("n,c,reduction", GRID, ids=[f"N{n}-C{c}-{r}" for n, c, r in GRID])
def test_cross_entropy_matches_reference_float64(rng, n, c, reduction):
    """Every weight x smoothing x ignore x z-loss combination; int32 and int64 labels alternate."""
    combos = itertools.product((False, True), SMOOTHINGS, IGNORE_MODES, Z_LOSSES)
    for k, (weighted, smoothing, ignore, z_loss) in enumerate(combos):
        label_dtype = LABEL_DTYPES[k % 2]  # alternating: each dtype meets every option
        logits, labels, kw = make_problem(rng, n, c, ignore=ignore, weighted=weighted, label_dtype=label_dtype)
        check_against_reference(logits, labels, kw, label_smoothing=smoothing, reduction=reduction,
                                z_loss=z_loss)


@pytest.mark.parametrize("n,c", [(n, c) for n, c in SIZES if n > 0], ids=[f"N{n}-C{c}" for n, c in SIZES if n > 0])
def test_cross_entropy_float32_matches_float64_reference(rng, n, c):
    combos = itertools.product(REDUCTIONS, (False, True), SMOOTHINGS, IGNORE_MODES)
    for k, (reduction, weighted, smoothing, ignore) in enumerate(combos):
        z_loss = Z_LOSSES[k % 2]
        logits, labels, kw = make_problem(rng, n, c, ignore=ignore, weighted=weighted, dtype=np.float32,
                                          label_dtype=LABEL_DTYPES[k // 2 % 2])
        check_against_reference(logits, labels, kw, label_smoothing=smoothing, reduction=reduction,
                                z_loss=z_loss)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_mean_of_no_counted_rows_is_nan(dtype):
    """Like torch: 0 / 0. The gradient is all zeros (and empty for N = 0)."""
    loss, grad = fastopt.softmax_cross_entropy(np.zeros((0, 4), dtype), np.zeros(0, np.int64))
    assert isinstance(loss, float) and math.isnan(loss) and grad.shape == (0, 4) and grad.dtype == dtype
    for reduction, expected in (("sum", 0.0), ("none", np.zeros(0, dtype))):
        loss, grad = fastopt.softmax_cross_entropy(np.zeros((0, 4), dtype), np.zeros(0, np.int64),
                                                   reduction=reduction)
        np.testing.assert_array_equal(loss, expected)
    logits = np.arange(12, dtype=dtype).reshape(3, 4)
    loss, grad = fastopt.softmax_cross_entropy(logits, np.full(3, -100), weight=np.ones(4, dtype))
    assert math.isnan(loss)
    assert np.array_equal(grad, np.zeros((3, 4)))
    ref_loss, _ = reference_ce(logits, np.full(3, -100))
    assert math.isnan(ref_loss)


def test_cross_entropy_really_depends_on_every_option(rng):
    """A control: each option changes the loss (so the grid above is not comparing no-ops)."""
    logits, labels, kw = make_problem(rng, 7, 5, ignore="no-ignored", weighted=True)
    base, _ = fastopt.softmax_cross_entropy(logits, labels)
    variants = [dict(weight=kw["weight"]), dict(label_smoothing=0.1), dict(z_loss=1e-3),
                dict(ignore_index=int(labels[0])), dict(reduction="sum")]
    for options in variants:
        loss, _ = fastopt.softmax_cross_entropy(logits, labels, **options)
        assert loss != base, options


# ----------------------------------------------------------------------- cross-entropy vs torch


def torch_ce(logits, labels, *, weight=None, **options):
    """torch_ce_tensors on NumPy inputs (CPU), with NumPy results (a float unless reduction is 'none')."""
    x = torch.tensor(logits, requires_grad=True)
    y = torch.tensor(labels.astype(np.int64))
    w = None if weight is None else torch.tensor(weight)
    loss, grad = torch_ce_tensors(x, y, weight=w, **options)
    value = loss.numpy()
    return (float(value) if options.get("reduction", "mean") != "none" else value), grad.numpy()


TORCH_SIZES = [(0, 3), (1, 1), (1, 5), (7, 5), (64, 33)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n,c", TORCH_SIZES, ids=[f"N{n}-C{c}" for n, c in TORCH_SIZES])
@pytest.mark.skipif(torch is None, reason="needs torch")
def test_cross_entropy_matches_torch_float64(rng, n, c, reduction):
    combos = itertools.product((False, True), SMOOTHINGS, IGNORE_MODES)
    for k, (weighted, smoothing, ignore) in enumerate(combos):
        logits, labels, kw = make_problem(rng, n, c, ignore=ignore, weighted=weighted)
        options = dict(label_smoothing=smoothing, reduction=reduction, z_loss=Z_LOSSES[k % 2])
        what = f"N={n} C={c} weighted={weighted} ignore={ignore} {options}"
        loss, grad = fastopt.softmax_cross_entropy(logits, labels, **ce_kwargs(kw, **options))
        t_loss, t_grad = torch_ce(logits, labels, **ce_kwargs(kw, **options))
        scale = gradient_scale(labels, kw, options)
        assert_loss_close(loss, t_loss, np.float64, n, what, scale)  # nan == nan
        if reduction == "mean" and np.all(labels == kw["ignore_index"]):
            # Nothing counted: torch's gradient is 0/0 = nan; fastopt's documented zero gradient.
            assert np.all(grad == 0), what
            continue
        assert_grad_close(grad, t_grad, np.float64, what, scale)


# ------------------------------------------------------------------------------------- stability

SCALES = [(np.float64, 1e4), (np.float64, 1e6), (np.float32, 1e4), (np.float32, 3e4)]


@pytest.mark.parametrize("dtype,scale", SCALES, ids=[f"{np.dtype(d).name}-{s:g}" for d, s in SCALES])
def test_large_logits_are_finite_and_match(rng, dtype, scale):
    """Logits ~ N(0, scale^2): exp would overflow without the max subtraction."""
    for reduction, weighted, smoothing in itertools.product(REDUCTIONS, (False, True), (0.0, 0.1)):
        logits, labels, kw = make_problem(rng, 64, 50, weighted=weighted, dtype=dtype, scale=scale)
        loss, grad = check_against_reference(logits, labels, kw, label_smoothing=smoothing, reduction=reduction)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        if torch is not None and dtype == np.float64:
            t_loss, t_grad = torch_ce(logits, labels, **ce_kwargs(kw, label_smoothing=smoothing,
                                                                   reduction=reduction))
            grad_scale = gradient_scale(labels, kw, dict(reduction=reduction))
            assert_loss_close(loss, t_loss, dtype, 64, "torch", grad_scale)
            assert_grad_close(grad, t_grad, dtype, "torch", grad_scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_minus_inf_masked_logits(rng, dtype):
    """Some non-target classes at -inf (attention-style masks): finite loss, masked gradient exactly 0."""
    for reduction, weighted, z_loss in itertools.product(REDUCTIONS, (False, True), Z_LOSSES):
        logits, labels, kw = make_problem(rng, 40, 30, weighted=weighted, dtype=dtype)
        mask = rng.random(logits.shape) < 0.3
        mask[np.arange(40), np.where(labels >= 0, labels, 0)] = False
        logits[mask] = -np.inf
        loss, grad = check_against_reference(logits, labels, kw, reduction=reduction, z_loss=z_loss)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        assert np.all(grad[mask] == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_gpt2_vocabulary(rng, dtype):
    """C = 50257 (GPT-2's vocabulary) with a few rows."""
    logits, labels, kw = make_problem(rng, 4, 50257, ignore="no-ignored", weighted=True, dtype=dtype)
    for reduction in REDUCTIONS:
        check_against_reference(logits, labels, kw, label_smoothing=0.1, reduction=reduction, z_loss=1e-4)


HUGE = [(np.float64, 1e6), (np.float64, 1e300), (np.float32, 3e4), (np.float32, 1e30)]


@pytest.mark.parametrize("dtype,value", HUGE, ids=[f"{np.dtype(d).name}-{v:g}" for d, v in HUGE])
def test_row_of_equal_huge_values(dtype, value):
    """All C logits equal: softmax is exactly uniform, the loss exactly log(C), whatever the value.
    z - max is 0 exactly here, so a stable implementation loses nothing (torch gives log(C) to 1 ulp)."""
    c = 7
    logits = np.full((2, c), value, dtype)
    labels = np.array([2, 5])
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    uniform = np.full((2, c), 1.0 / c)
    onehot = np.zeros((2, c))
    onehot[[0, 1], labels] = 1
    np.testing.assert_allclose(fastopt.softmax(logits), uniform, rtol=rtol, err_msg="softmax")
    np.testing.assert_allclose(fastopt.log_softmax(logits), np.full((2, c), -np.log(c)), rtol=rtol,
                               err_msg="log_softmax")
    loss, grad = fastopt.softmax_cross_entropy(logits, labels, reduction="sum")
    np.testing.assert_allclose(loss, 2 * np.log(c), rtol=rtol, err_msg="loss")
    np.testing.assert_allclose(grad, uniform - onehot, rtol=rtol, atol=0, err_msg="dlogits")


# ------------------------------------------------------------------------------------------- out=


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_out_separate_buffer_and_in_place(rng, dtype, reduction):
    logits, labels, kw = make_problem(rng, 300, 257, weighted=True, dtype=dtype)
    options = ce_kwargs(kw, label_smoothing=0.1, reduction=reduction, z_loss=1e-3)
    expected_loss, expected_grad = fastopt.softmax_cross_entropy(logits, labels, **options)

    out = rng.standard_normal(logits.shape).astype(dtype)
    before = logits.copy()
    loss, grad = fastopt.softmax_cross_entropy(logits, labels, **options, out=out)
    assert grad is out
    assert logits.tobytes() == before.tobytes()
    np.testing.assert_array_equal(loss, expected_loss)
    assert out.tobytes() == expected_grad.tobytes()

    loss, grad = fastopt.softmax_cross_entropy(logits, labels, **options, out=logits)
    assert grad is logits
    np.testing.assert_array_equal(loss, expected_loss)
    assert logits.tobytes() == expected_grad.tobytes()


# ---------------------------------------------------------------------------- thread independence

THREAD_SCRIPT = textwrap.dedent("""
    import hashlib
    import numpy as np
    import fastopt

    rng = np.random.default_rng(1234)
    digest = hashlib.sha256()
    n, c = 2048, 1000
    logits = rng.standard_normal((n, c)).astype(np.float32) * 4
    labels = rng.integers(0, c, n)
    labels[rng.random(n) < 0.1] = -100
    weight = rng.uniform(0.1, 2.0, c).astype(np.float32)
    for reduction in ("mean", "none"):
        loss, grad = fastopt.softmax_cross_entropy(logits, labels, weight=weight, label_smoothing=0.1,
                                                   reduction=reduction, z_loss=1e-4)
        digest.update(np.float64(loss).tobytes() if reduction == "mean" else loss.tobytes())
        digest.update(grad.tobytes())
    for dtype in (np.float32, np.float64):
        w = rng.standard_normal(3_000_001).astype(dtype)
        grad = rng.standard_normal(w.size).astype(dtype)
        value = fastopt.penalty(w, l1=1e-3, l2=1e-2, out_grad=grad)
        digest.update(np.float64(value).tobytes())
        digest.update(grad.tobytes())
    print(fastopt.build_info()["num_threads"], digest.hexdigest())
""")


def run_with_threads(threads: int) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", THREAD_SCRIPT], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(__file__))
    return out.stdout.strip()


@pytest.mark.skipif(not fastopt.build_info()["openmp"], reason="built without OpenMP")
def test_losses_are_bit_identical_for_any_thread_count():
    results = {threads: run_with_threads(threads).split() for threads in (1, 2, 3)}
    assert all(int(used) == threads for threads, (used, _) in results.items()), results
    assert len({digest for _, digest in results.values()}) == 1, results


# ------------------------------------------------------------------------------ softmax, log_softmax

SOFTMAX_SHAPES = [(1,), (9,), (5, 7), (3, 4, 6), (4, 0), (2, 3, 0), (0, 5)]


def softmax_input(rng, shape, kind, dtype):
    x = rng.standard_normal(shape) * 3
    if kind == "minus-inf" and x.size:
        x[rng.random(shape) < 0.3] = -np.inf
        x[..., 0] = 1.0  # every row keeps a finite entry
    elif kind == "scale-1e4":
        x *= 1e4 / 3
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", ["plain", "minus-inf", "scale-1e4"])
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=ids(SOFTMAX_SHAPES))
def test_softmax_and_log_softmax(rng, shape, kind, dtype):
    x = softmax_input(rng, shape, kind, dtype)
    before = x.tobytes()
    p, logp = fastopt.softmax(x), fastopt.log_softmax(x)
    assert x.tobytes() == before
    for got in (p, logp):
        assert got.shape == x.shape and got.dtype == dtype and got is not x
    if x.size == 0:
        return
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    p_tol = dict(rtol=rtol, atol=2 * float(np.finfo(dtype).tiny))  # tiny p underflow in float32
    logp_tol = dict(rtol=rtol, atol=8 * EPS[dtype])  # log(sum) near 0 (see the module docstring)
    wide = x.astype(np.float64)
    np.testing.assert_allclose(p, reference.softmax(wide), err_msg=f"softmax (seed {SEED})", **p_tol)
    np.testing.assert_allclose(logp, reference.log_softmax(wide), err_msg=f"log_softmax (seed {SEED})",
                               **logp_tol)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=8 * EPS[dtype] * shape[-1])
    assert np.all(p[np.isneginf(x)] == 0) and np.all(np.isneginf(logp[np.isneginf(x)]))
    if torch is not None:
        t = torch.tensor(wide)
        np.testing.assert_allclose(p, torch.softmax(t, -1).numpy(), **p_tol)
        np.testing.assert_allclose(logp, torch.log_softmax(t, -1).numpy(), **logp_tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", ["plain", "minus-inf", "scale-1e4"])
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=ids(SOFTMAX_SHAPES))
def test_softmax_into_out_and_in_place_gives_the_new_arrays_bits(rng, shape, kind, dtype):
    """out= a separate buffer, and out=x itself (in place), write exactly what the new array holds
    and return the array written; a separate out leaves x alone."""
    x = softmax_input(rng, shape, kind, dtype)
    for fn in (fastopt.softmax, fastopt.log_softmax):
        expected = fn(x)
        before = x.tobytes()
        out = np.full_like(x, 7.0)
        assert fn(x, out=out) is out
        assert out.tobytes() == expected.tobytes(), fn.__name__
        assert x.tobytes() == before
        in_place = x.copy()
        assert fn(in_place, out=in_place) is in_place
        assert in_place.tobytes() == expected.tobytes(), fn.__name__


# ------------------------------------------------------------------------------ multiclass SVM

# The course notes' example: three images (cat, car, frog) and their scores for the three classes.
NOTES_SCORES = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
NOTES_LABELS = np.array([0, 1, 2])


def test_svm_course_notes_example():
    rows, _ = fastopt.multiclass_svm_loss(NOTES_SCORES, NOTES_LABELS, reduction="none")
    np.testing.assert_allclose(rows, [2.9, 0.0, 12.9], rtol=1e-12, atol=1e-12)
    mean, _ = fastopt.multiclass_svm_loss(NOTES_SCORES, NOTES_LABELS)
    assert round(mean, 2) == 5.27
    total, _ = fastopt.multiclass_svm_loss(NOTES_SCORES, NOTES_LABELS, reduction="sum")
    assert total == pytest.approx(15.8, rel=1e-12)


def svm_problem(rng, n, c, *, kind="grid", away_from_kinks=False):
    """Scores and labels. "grid": multiples of 1/8 (exact in float32, and with margins 0, 0.5, 1 every
    s_j - s_y + margin is exact: some are exactly 0, the kink, where both sides take slope 0).
    away_from_kinks: the other classes' scores shifted by 1/16, so every such term is >= 1/16 from 0."""
    labels = rng.integers(0, c, n)
    if kind == "continuous":
        return rng.standard_normal((n, c)), labels
    scores = rng.integers(-24, 25, (n, c)) / 8.0
    if away_from_kinks:
        scores += 1 / 16
        scores[np.arange(n), labels] -= 1 / 16
    return scores, labels


SVM_SIZES = [(0, 3), (1, 1), (1, 4), (7, 5), (300, 10), (50, 1000)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n,c", SVM_SIZES, ids=[f"N{n}-C{c}" for n, c in SVM_SIZES])
def test_svm_matches_reference(rng, n, c, dtype):
    kinds = ("grid", "continuous") if dtype == np.float64 else ("grid",)  # float32: exact data only
    for reduction, margin, label_dtype, kind in itertools.product(REDUCTIONS, (1.0, 0.5, 0.0), LABEL_DTYPES,
                                                                  kinds):
        scores, labels = svm_problem(rng, n, c, kind=kind)
        scores = scores.astype(dtype)
        labels = labels.astype(label_dtype)
        loss, grad = fastopt.multiclass_svm_loss(scores, labels, margin=margin, reduction=reduction)
        ref_loss, ref_grad = reference.multiclass_svm_loss(scores.astype(np.float64), labels, margin=margin,
                                                           reduction=reduction)
        rtol = 1e-12 if dtype == np.float64 else 1e-5
        what = f"N={n} C={c} {kind} {reduction} margin={margin} (seed {SEED})"
        if reduction == "none":
            assert isinstance(loss, np.ndarray) and loss.dtype == dtype and loss.shape == (n,)
        else:
            assert isinstance(loss, float)
        np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol * c, err_msg=what)
        assert grad.dtype == dtype and grad.shape == scores.shape
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=0, err_msg=what)


def test_svm_mean_of_no_rows_is_nan():
    loss, grad = fastopt.multiclass_svm_loss(np.zeros((0, 3)), np.zeros(0, np.int64))
    assert math.isnan(loss) and grad.shape == (0, 3)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_svm_gradient_passes_gradcheck(rng, reduction):
    scores, labels = svm_problem(rng, 6, 5, away_from_kinks=True)
    for s, y in ((scores, labels), (NOTES_SCORES.copy(), NOTES_LABELS)):
        _, grad = fastopt.multiclass_svm_loss(s, y, reduction=reduction)
        f = lambda x: fastopt.multiclass_svm_loss(x, y, reduction=reduction)[0]  # noqa: E731
        assert fastopt.gradcheck(f, s, grad) < 1e-6


# ------------------------------------------------------------------------------------- penalty

PENALTIES = [dict(l1=1e-2), dict(l2=1e-1), dict(l1=1e-2, l2=1e-1), dict()]


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 4, 5), (200_003,)], ids=ids)
@pytest.mark.parametrize("coefs", PENALTIES, ids=["l1", "l2", "l1+l2", "none"])
def test_penalty_matches_reference(rng, coefs, shape):
    w = rng.standard_normal(shape)
    w.flat[: min(w.size, 3)] = 0.0  # sign(0) = 0
    full = {"l1": 0.0, "l2": 0.0, **coefs}
    ref_value, ref_grad = reference.penalty(w, **full)
    assert fastopt.penalty(w, **coefs) == pytest.approx(ref_value, rel=1e-12, abs=0)
    start = rng.standard_normal(shape)
    out_grad = start.copy()
    value = fastopt.penalty(w, **coefs, out_grad=out_grad)
    assert isinstance(value, float) and value == pytest.approx(ref_value, rel=1e-12, abs=0)
    np.testing.assert_allclose(out_grad, start + ref_grad, rtol=1e-14, atol=1e-15)  # ADDED, not set
    value32 = fastopt.penalty(w.astype(np.float32), **coefs)
    assert value32 == pytest.approx(reference.penalty(w.astype(np.float32).astype(np.float64), **full)[0],
                                    rel=1e-5, abs=1e-30)


def test_penalty_known_values():
    w = np.array([-1.0, 0.0, 2.0])
    grad = np.ones(3)
    assert fastopt.penalty(w, l1=0.5, l2=0.25, out_grad=grad) == 0.5 * 3 + 0.25 * 5
    np.testing.assert_array_equal(grad, [1 - 0.5 - 0.5, 1.0, 1 + 0.5 + 1.0])
    fastopt.penalty(w, l1=0.5, l2=0.25, out_grad=grad)  # accumulates again
    np.testing.assert_array_equal(grad, [-1.0, 1.0, 4.0])


def test_penalty_passes_gradcheck(rng):
    w = rng.standard_normal((4, 5))
    w[np.abs(w) < 0.05] = 0.5  # away from the kink of |w| at 0
    grad = np.zeros_like(w)
    fastopt.penalty(w, l1=0.3, l2=0.7, out_grad=grad)
    assert fastopt.gradcheck(lambda x: fastopt.penalty(x, l1=0.3, l2=0.7), w, grad) < 1e-7


# ------------------------------------------------------------------------------------- gradcheck


def ce_problem(rng, tweak=lambda logits: None, **options):
    """(f, x, analytic gradient) of a weighted 5 x 6 cross-entropy; tweak(logits) edits x first.
    Logits ~ N(0, 1), drawn again while a non-zero gradient component is below 1e-3 in size: gradcheck's error is
    relative per coordinate, and with label smoothing a component p_j - smoothing / C can land next to 0
    (about 1 draw in 150), where the centered difference's own O(h^2) error is no longer small beside it."""
    for _ in range(100):
        logits, labels, kw = make_problem(rng, 5, 6, weighted=True, scale=1.0)
        tweak(logits)
        full = ce_kwargs(kw, **options)
        _, grad = fastopt.softmax_cross_entropy(logits, labels, **full)
        sizes = np.abs(grad[grad != 0])  # (an ignored row's gradient is exactly 0, and so is its difference)
        if sizes.size == 0 or sizes.min() >= 1e-3:
            break
    options = full

    def f(x):
        return float(np.sum(fastopt.softmax_cross_entropy(x, labels, **options)[0]))
    return f, logits, grad


CE_OPTIONS = [dict(), dict(reduction="sum"), dict(reduction="none"),
              dict(label_smoothing=0.1, z_loss=1e-2), dict(label_smoothing=1.0, reduction="none", z_loss=1e-3)]


@pytest.mark.parametrize("options", CE_OPTIONS, ids=ids)
def test_gradcheck_accepts_the_cross_entropy_gradient(rng, options):
    f, x, grad = ce_problem(rng, **options)
    before = x.tobytes()
    assert fastopt.gradcheck(f, x, grad) < 1e-6
    first = fastopt.gradcheck(f, x, grad, num_checks=10, seed=3)
    assert first < 1e-6
    assert fastopt.gradcheck(f, x, grad, num_checks=10, seed=3) == first  # the seed picks the coordinates
    assert x.tobytes() == before


WRONG = {
    "times-1.1": lambda g, rng: g * 1.1,
    "transposed": lambda g, rng: g.T.reshape(g.shape),
    "shuffled": lambda g, rng: rng.permutation(g.ravel()).reshape(g.shape),
    "sign-flipped": lambda g, rng: -g,
}


@pytest.mark.parametrize("wrong", list(WRONG))
def test_gradcheck_flags_a_wrong_gradient(rng, wrong):
    f, x, grad = ce_problem(rng, label_smoothing=0.1)
    bad = WRONG[wrong](grad, rng)
    assert not np.array_equal(bad, grad)
    before = x.tobytes()
    assert fastopt.gradcheck(f, x, bad) > 1e-2
    assert x.tobytes() == before


@pytest.mark.parametrize("fail_on_call", [7, 8], ids=["plus-side", "minus-side"])
def test_gradcheck_restores_x_when_f_raises(rng, fail_on_call):
    """f raises on coordinate 3's x + h (call 7) or x - h (call 8): x comes back bit for bit."""
    def tweak(x):  # the bits: -0.0, and 1.2e-8, where (x + h) - h != x for h = 1e-5
        x[0, 0], x[0, 3] = -0.0, 1.2e-8

    f, x, grad = ce_problem(rng, tweak)
    assert (x[0, 3] + 1e-5) - 1e-5 != x[0, 3]
    before = x.tobytes()
    calls = []

    def failing(y):
        calls.append(1)
        if len(calls) == fail_on_call:
            raise RuntimeError("boom")
        return f(y)

    with pytest.raises(RuntimeError, match="boom"):
        fastopt.gradcheck(failing, x, grad)
    assert x.tobytes() == before
    assert fastopt.gradcheck(f, x, grad) < 1e-6 and x.tobytes() == before


GRADCHECK_BAD = {
    "shape-mismatch": (ValueError, lambda x, g: ((x, g[:, :-1]), {})),
    "transposed-grad": (ValueError, lambda x, g: ((x, g.T), {})),
    "int-x": (TypeError, lambda x, g: ((x.astype(np.int64), g), {})),
    "list-x": (TypeError, lambda x, g: ((x.tolist(), g), {})),
    "h-zero": (ValueError, lambda x, g: ((x, g), dict(h=0.0))),
    "h-negative": (ValueError, lambda x, g: ((x, g), dict(h=-1e-5))),
    "h-nan": (ValueError, lambda x, g: ((x, g), dict(h=float("nan")))),
    "num-checks-0": (ValueError, lambda x, g: ((x, g), dict(num_checks=0))),
}


@pytest.mark.parametrize("bad", list(GRADCHECK_BAD))
def test_gradcheck_bad_arguments(rng, bad):
    f, x, grad = ce_problem(rng)
    error, make = GRADCHECK_BAD[bad]
    args, kwargs = make(x, grad)
    before = x.tobytes()
    with pytest.raises(error):
        fastopt.gradcheck(f, *args, **kwargs)
    assert x.tobytes() == before
