"""The NumPy loss references (softmax, log_softmax, softmax_cross_entropy, multiclass_svm_loss,
penalty) checked three ways: against torch (torch.nn.functional.cross_entropy and autograd, in
float64) where torch is installed, against the course notes' worked examples, and against centered
finite differences. The torch tests skip one by one when torch is missing; the rest always run."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from fastopt import reference

TOL = dict(rtol=1e-10, atol=1e-12)
REDUCTIONS = ["mean", "sum", "none"]


def _torch():
    return pytest.importorskip("torch")


def _labels(rng, n, c, mode):
    """Labels for an ignore mode; returns (labels, ignore_index)."""
    labels = rng.integers(0, c, size=n)
    if mode == "no-ignored":
        return labels, -100
    if mode == "ignore-default":
        labels[[1, 4, n - 1]] = -100  # some rows carry torch's default ignore_index
        return labels, -100
    assert mode == "ignore-class-2"  # a custom ignore_index that is also a valid class
    labels[[0, 3]] = 2
    labels[[2, 5]] = 1  # at least some rows are counted
    return labels, 2


def torch_cross_entropy(logits, labels, *, weight=None, ignore_index=-100, label_smoothing=0.0,
                        reduction="mean", z_loss=0.0):
    """torch's loss (plus the z-loss built from torch.logsumexp) and its autograd gradient."""
    torch = _torch()
    F = torch.nn.functional
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(labels, dtype=torch.int64)
    wt = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    loss = F.cross_entropy(x, t, weight=wt, ignore_index=ignore_index,
                           label_smoothing=label_smoothing, reduction=reduction)
    if z_loss:
        counted = t != ignore_index
        zero = torch.zeros((), dtype=x.dtype)
        z_rows = torch.where(counted, z_loss * torch.logsumexp(x, 1) ** 2, zero)
        if reduction == "none":
            loss = loss + z_rows
        elif reduction == "sum":
            loss = loss + z_rows.sum()
        else:  # the same denominator as torch's weighted mean: sum of w[y] over counted rows
            w_y = torch.ones(int(counted.sum()), dtype=x.dtype) if wt is None else wt[t[counted]]
            loss = loss + z_rows.sum() / w_y.sum()
    (loss.sum() if reduction == "none" else loss).backward()
    value = loss.detach().numpy()
    if reduction != "none":
        value = float(value)
    return value, x.grad.numpy()


def check_against_torch(logits, labels, tol=TOL, **kw):
    loss, grad = reference.softmax_cross_entropy(logits, labels, **kw)
    t_loss, t_grad = torch_cross_entropy(logits, labels, **kw)
    if kw.get("reduction", "mean") == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == (logits.shape[0],)
    else:
        assert isinstance(loss, float)
    np.testing.assert_allclose(loss, t_loss, **tol)
    np.testing.assert_allclose(grad, t_grad, **tol)
    assert grad.shape == logits.shape and grad.dtype == logits.dtype
    return loss, grad


# --------------------------------------------------------------------------------------------------
# softmax_cross_entropy against torch
# --------------------------------------------------------------------------------------------------

GRID = list(itertools.product(REDUCTIONS, [False, True], [0.0, 0.1, 0.7],
                              ["no-ignored", "ignore-default", "ignore-class-2"], [0.0, 1e-2]))


@pytest.mark.parametrize("reduction,weighted,eps,mode,z", GRID,
                         ids=[f"{r}-{'w' if w else 'now'}-eps{e}-{m}-z{z}" for r, w, e, m, z in GRID])
def test_cross_entropy_matches_torch(reduction, weighted, eps, mode, z):
    rng = np.random.default_rng(zlib.crc32(repr((reduction, weighted, eps, mode, z)).encode()))
    n, c = 13, 7
    logits = rng.normal(size=(n, c)) * 3
    labels, ignore_index = _labels(rng, n, c, mode)
    weight = rng.uniform(0.2, 2.0, size=c) if weighted else None
    before = (logits.copy(), labels.copy(), None if weight is None else weight.copy())
    loss, grad = check_against_torch(logits, labels, weight=weight, ignore_index=ignore_index,
                                     label_smoothing=eps, reduction=reduction, z_loss=z)
    # pure: the inputs are untouched
    np.testing.assert_array_equal(logits, before[0])
    np.testing.assert_array_equal(labels, before[1])
    if weight is not None:
        np.testing.assert_array_equal(weight, before[2])
    ignored = labels == ignore_index
    assert np.all(grad[ignored] == 0)
    if reduction == "none":
        assert np.all(loss[ignored] == 0)


@pytest.mark.parametrize("scale", [1e4, 1e6])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps,z", [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-4), (0.1, 1e-4)])
def test_cross_entropy_extreme_logits(scale, reduction, eps, z):
    rng = np.random.default_rng(int(scale) + 7)
    logits = rng.normal(size=(6, 5)) * scale
    labels = np.array([0, 1, 2, 3, 4, -100])
    weight = rng.uniform(0.5, 1.5, size=5)
    loss, grad = check_against_torch(logits, labels, weight=weight, label_smoothing=eps,
                                     reduction=reduction, z_loss=z)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("z", [0.0, 1e-3])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_neg_inf_mask(reduction, z, weighted):
    """-inf in non-target classes (a mask) with no smoothing: finite, and torch's numbers."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 6))
    labels = np.array([0, 5, 2, -100, 3])
    logits[0, [1, 2, 5]] = -np.inf
    logits[1, :5] = -np.inf  # only the target is left
    logits[2, 0] = -np.inf
    logits[3, :] = -np.inf  # an ignored row may be anything
    logits[3, 1] = 0.0
    weight = rng.uniform(0.5, 1.5, size=6) if weighted else None
    loss, grad = check_against_torch(logits, labels, weight=weight, reduction=reduction, z_loss=z)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    masked = np.isneginf(logits) & (labels != -100)[:, None]
    assert np.all(grad[masked] == 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps,z", [(0.0, 0.0), (0.3, 0.0), (0.3, 1e-2)])
def test_cross_entropy_one_class(reduction, eps, z):
    logits = np.array([[0.5], [-3.0], [2.0]])
    labels = np.array([0, 0, -100])
    loss, grad = check_against_torch(logits, labels, label_smoothing=eps, reduction=reduction, z_loss=z)
    if z == 0:
        np.testing.assert_allclose(loss, 0.0, atol=0)  # log p = 0 for the only class
        np.testing.assert_allclose(grad, 0.0, atol=1e-15)  # (1 - eps) + eps - 1, up to rounding


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gpt2_vocabulary(reduction):
    rng = np.random.default_rng(50257)
    logits = rng.normal(size=(2, 50257)) * 4
    labels = np.array([50256, 17])
    weight = rng.uniform(0.5, 1.5, size=50257)
    check_against_torch(logits, labels, weight=weight, label_smoothing=0.1, reduction=reduction,
                        z_loss=1e-4)
    check_against_torch(logits[:1], labels[:1], reduction=reduction)


def test_cross_entropy_empty_batch():
    logits = np.zeros((0, 5))
    labels = np.zeros(0, dtype=np.int64)
    loss, grad = reference.softmax_cross_entropy(logits, labels, reduction="sum", label_smoothing=0.1)
    assert loss == 0.0 and grad.shape == (0, 5)
    loss, grad = reference.softmax_cross_entropy(logits, labels, reduction="none", z_loss=0.1)
    assert loss.shape == (0,) and grad.shape == (0, 5)
    loss, grad = reference.softmax_cross_entropy(logits, labels, reduction="mean")
    assert np.isnan(loss) and grad.shape == (0, 5)  # 0 / 0, as in torch


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_empty_batch_matches_torch(reduction):
    logits = np.zeros((0, 5))
    labels = np.zeros(0, dtype=np.int64)
    loss, grad = reference.softmax_cross_entropy(logits, labels, reduction=reduction, label_smoothing=0.1)
    t_loss, t_grad = torch_cross_entropy(logits, labels, reduction=reduction, label_smoothing=0.1)
    np.testing.assert_array_equal(loss, t_loss)  # nan == nan for the mean
    assert grad.shape == t_grad.shape == (0, 5)


def test_cross_entropy_all_ignored_mean_is_nan():
    logits = np.random.default_rng(0).normal(size=(3, 4))
    labels = np.full(3, -100)
    loss, grad = reference.softmax_cross_entropy(logits, labels, label_smoothing=0.1, z_loss=1e-2)
    assert np.isnan(loss) and np.all(grad == 0)
    t_loss, t_grad = torch_cross_entropy(logits, labels, label_smoothing=0.1)
    assert np.isnan(t_loss)
    np.testing.assert_array_equal(grad, t_grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_neg_inf_with_smoothing_is_inf_like_torch(reduction):
    """With smoothing, a -inf non-target logit makes the loss inf (in torch too); the gradient stays finite."""
    logits = np.array([[0.0, -np.inf, 1.0], [1.0, 2.0, 3.0]])
    labels = np.array([0, 2])
    loss, grad = reference.softmax_cross_entropy(logits, labels, label_smoothing=0.1, reduction=reduction)
    t_loss, t_grad = torch_cross_entropy(logits, labels, label_smoothing=0.1, reduction=reduction)
    np.testing.assert_array_equal(np.isinf(loss), np.isinf(t_loss))
    assert np.isinf(np.sum(loss))
    np.testing.assert_allclose(loss, t_loss, **TOL)
    np.testing.assert_allclose(grad, t_grad, **TOL)
    assert np.all(np.isfinite(grad))


# --------------------------------------------------------------------------------------------------
# softmax_cross_entropy without torch: the formula by hand, finite differences, errors, dtype
# --------------------------------------------------------------------------------------------------

def test_cross_entropy_plain_is_mean_negative_log_probability():
    logits = np.array([[3.2, 1.3, 2.2], [-2.85, 0.86, 0.28]])
    labels = np.array([0, 2])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.log(p[[0, 1], labels])  # L_i = -log(e^{s_y} / sum_j e^{s_j})
    loss, grad = reference.softmax_cross_entropy(logits, labels, reduction="none")
    np.testing.assert_allclose(loss, expected, **TOL)
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(grad, p - onehot, **TOL)
    loss, grad = reference.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, expected.mean(), **TOL)
    np.testing.assert_allclose(grad, (p - onehot) / 2, **TOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps,z,weighted", [(0.0, 0.0, False), (0.2, 0.0, True), (0.1, 0.05, True)])
def test_cross_entropy_gradient_finite_differences(reduction, eps, z, weighted):
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(5, 4))
    labels = np.array([1, -100, 3, 0, 1])
    weight = rng.uniform(0.5, 1.5, size=4) if weighted else None
    kw = dict(weight=weight, label_smoothing=eps, z_loss=z, reduction=reduction)

    def total(x):
        return float(np.sum(reference.softmax_cross_entropy(x, labels, **kw)[0]))

    _, grad = reference.softmax_cross_entropy(logits, labels, **kw)
    h = 1e-6
    numeric = np.zeros_like(logits)
    for index in np.ndindex(*logits.shape):
        step = np.zeros_like(logits)
        step[index] = h
        numeric[index] = (total(logits + step) - total(logits - step)) / (2 * h)  # centered difference
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_cross_entropy_errors():
    logits = np.zeros((3, 4))
    labels = np.array([0, 1, 2])
    with pytest.raises(ValueError):
        reference.softmax_cross_entropy(logits, labels, reduction="avg")
    for eps in (-0.1, 1.1):
        with pytest.raises(ValueError):
            reference.softmax_cross_entropy(logits, labels, label_smoothing=eps)
    with pytest.raises(IndexError, match=r"row 1.*\b4\b|\b4\b.*row 1"):
        reference.softmax_cross_entropy(logits, np.array([0, 4, 2]))
    with pytest.raises(IndexError, match=r"row 2.*-1|-1.*row 2"):
        reference.softmax_cross_entropy(logits, np.array([0, 1, -1]))
    with pytest.raises(IndexError):  # -100 is an ordinary bad label once ignore_index is 2
        reference.softmax_cross_entropy(logits, np.array([0, -100, 2]), ignore_index=2)
    reference.softmax_cross_entropy(logits, np.array([0, -100, 2]))  # fine with the default


def test_cross_entropy_float32():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(8, 6))
    labels = rng.integers(0, 6, size=8)
    weight = rng.uniform(0.5, 1.5, size=6)
    for reduction in REDUCTIONS:
        kw = dict(weight=weight, label_smoothing=0.1, z_loss=1e-3, reduction=reduction)
        loss32, grad32 = reference.softmax_cross_entropy(logits.astype(np.float32), labels, **kw)
        loss64, grad64 = reference.softmax_cross_entropy(logits, labels, **kw)
        assert grad32.dtype == np.float32
        if reduction == "none":
            assert loss32.dtype == np.float32
        else:
            assert isinstance(loss32, float)
        np.testing.assert_allclose(loss32, loss64, rtol=1e-5)
        np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# softmax / log_softmax
# --------------------------------------------------------------------------------------------------

SOFTMAX_SHAPES = [(7,), (4, 9), (2, 3, 5)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("with_inf", [False, True])
def test_softmax_matches_torch(shape, scale, with_inf):
    torch = _torch()
    rng = np.random.default_rng(len(shape))
    x = rng.normal(size=shape) * scale
    if with_inf:
        flat = x.reshape(-1, shape[-1])
        flat[:, 0] = -np.inf  # never a whole row
        flat[0, 2] = -np.inf
        x = flat.reshape(shape)
    before = x.copy()
    p = reference.softmax(x)
    logp = reference.log_softmax(x)
    np.testing.assert_array_equal(x, before)
    t = torch.tensor(x, dtype=torch.float64)
    np.testing.assert_allclose(p, torch.softmax(t, dim=-1).numpy(), **TOL)
    np.testing.assert_allclose(logp, torch.log_softmax(t, dim=-1).numpy(), **TOL)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    if with_inf:
        assert np.all(p[np.isneginf(x)] == 0) and np.all(np.isneginf(logp[np.isneginf(x)]))


def test_softmax_huge_scores_do_not_overflow():
    x = np.array([[1000.0, 999.0, -1000.0], [1e308, 1e308, 0.0]])
    p = reference.softmax(x)
    np.testing.assert_allclose(p[0], np.exp([0, -1, -2000]) / np.exp([0, -1, -2000]).sum(), **TOL)
    np.testing.assert_allclose(p[1], [0.5, 0.5, 0.0], **TOL)
    np.testing.assert_allclose(reference.log_softmax(x)[1, :2], -np.log(2), **TOL)
    assert reference.softmax(np.ones(3, dtype=np.float32)).dtype == np.float32


# --------------------------------------------------------------------------------------------------
# The course notes' worked examples
# --------------------------------------------------------------------------------------------------

def test_notes_softmax_worked_example():
    # ../shared/seeds/001_745e4d75bfb6610e.txt, "Worked Example - Softmax in Action":
    # scores [3.2, 1.3, 2.2]; exponentials [24.53, 3.67, 9.03]; sum 37.23;
    # probabilities [0.659, 0.099, 0.243].
    scores = np.array([3.2, 1.3, 2.2])
    np.testing.assert_allclose(np.round(np.exp(scores), 2), [24.53, 3.67, 9.03])
    np.testing.assert_allclose(np.round(np.exp(scores).sum(), 2), 37.23)
    p = reference.softmax(scores)
    np.testing.assert_array_equal(np.round(p[:2], 3), [0.659, 0.099])
    # The notes' 0.243 is 9.03 / 37.23 from the rounded intermediates; the exact value is
    # 0.24243..., which rounds to 0.242. So the third entry is checked to within 1e-3, not by rounding.
    np.testing.assert_allclose(p, [0.659, 0.099, 0.243], atol=1e-3)
    np.testing.assert_allclose(p[2], 9.0250135 / 37.2268404, rtol=1e-7)


def test_notes_hinge_worked_example():
    # ../shared/seeds/002_009bb3169aed01a1.txt, the cat/car/frog table (lines ~183 and ~244):
    # rows of the table are the classes and columns the images, so per image the scores are
    # cat image [3.2, 5.1, -1.7], car image [1.3, 4.9, 2.0], frog image [2.2, 2.5, -3.1].
    # The notes give "Losses: 2.9 0" (the car image's derivation: max(0, 1.3 - 4.9 + 1) +
    # max(0, 2.0 - 4.9 + 1) = 0). The frog image's 12.9 and the mean 5.27 are cut off in this copy of
    # the notes; they follow from the notes' formula L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + 1):
    # max(0, 2.2 + 3.1 + 1) + max(0, 2.5 + 3.1 + 1) = 6.3 + 6.6 = 12.9, and (2.9 + 0 + 12.9) / 3 = 5.27.
    scores = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    labels = np.array([0, 1, 2])
    losses, _ = reference.multiclass_svm_loss(scores, labels, margin=1.0, reduction="none")
    np.testing.assert_allclose(losses, [2.9, 0.0, 12.9], atol=1e-12)
    mean, _ = reference.multiclass_svm_loss(scores, labels)
    assert round(mean, 2) == 5.27
    total, _ = reference.multiclass_svm_loss(scores, labels, reduction="sum")
    np.testing.assert_allclose(total, 15.8, rtol=1e-12)


def test_notes_hinge_single_example():
    # ../shared/seeds/002_009bb3169aed01a1.txt, "Softmax vs. SVM" (line ~211): scores
    # [-2.85, 0.86, 0.28] with the third class correct: max(0, -2.85 - 0.28 + 1) + max(0, 0.86 - 0.28 + 1)
    # = 1.58.
    loss, grad = reference.multiclass_svm_loss(np.array([[-2.85, 0.86, 0.28]]), np.array([2]))
    np.testing.assert_allclose(loss, 1.58, rtol=1e-12)
    np.testing.assert_array_equal(grad, [[0.0, 1.0, -1.0]])


def test_notes_cross_entropy_of_one_percent():
    # ../shared/seeds/001_745e4d75bfb6610e.txt: "When P(correct) = 0.01, the loss is -log(0.01) = 4.6".
    logits = np.log(np.array([[0.01, 0.49, 0.5]]))
    loss, _ = reference.softmax_cross_entropy(logits, np.array([0]))
    assert round(loss, 1) == 4.6


# --------------------------------------------------------------------------------------------------
# multiclass_svm_loss and penalty: finite differences, edge cases
# --------------------------------------------------------------------------------------------------

def _numeric_gradient(f, x, h=1e-6):
    numeric = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[index] = h
        numeric[index] = (f(x + step) - f(x - step)) / (2 * h)  # centered difference
    return numeric


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [1.0, 0.3])
def test_svm_gradient_finite_differences(reduction, margin):
    rng = np.random.default_rng(21)
    n, c = 6, 5
    labels = rng.integers(0, c, size=n)
    while True:  # stay away from the kinks: every margin term at least 1e-3 from 0
        scores = rng.normal(size=(n, c))
        terms = scores - scores[np.arange(n), labels][:, None] + margin
        terms[np.arange(n), labels] = 1.0
        if np.min(np.abs(terms)) > 1e-3:
            break
    before = scores.copy()
    loss, grad = reference.multiclass_svm_loss(scores, labels, margin=margin, reduction=reduction)
    np.testing.assert_array_equal(scores, before)
    numeric = _numeric_gradient(
        lambda x: float(np.sum(reference.multiclass_svm_loss(x, labels, margin=margin, reduction=reduction)[0])),
        scores)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)  # each row's gradient sums to 0


def test_svm_kink_is_not_active_and_errors():
    # s_j - s_y + margin == 0 exactly: the term is 0 and contributes no gradient (strictly > 0)
    loss, grad = reference.multiclass_svm_loss(np.array([[1.0, 0.0]]), np.array([0]), reduction="sum")
    assert loss == 0.0 and np.all(grad == 0)
    loss, grad = reference.multiclass_svm_loss(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), reduction="sum")
    assert loss == 0.0 and grad.shape == (0, 3)
    ones32 = np.ones((2, 3), np.float32)
    f32, g32 = reference.multiclass_svm_loss(ones32, np.array([0, 1]), reduction="none")
    assert f32.dtype == np.float32 and g32.dtype == np.float32
    with pytest.raises(ValueError):
        reference.multiclass_svm_loss(np.zeros((2, 3)), np.array([0, 1]), reduction="avg")
    with pytest.raises(IndexError, match="row 1"):
        reference.multiclass_svm_loss(np.zeros((2, 3)), np.array([0, 3]))


def test_penalty_value_and_gradient():
    w = np.array([1.0, -2.0, 0.0])
    value, grad = reference.penalty(w, l1=0.1, l2=0.5)
    np.testing.assert_allclose(value, 0.1 * 3 + 0.5 * 5, rtol=1e-15)
    np.testing.assert_allclose(grad, [0.1 + 1.0, -0.1 - 2.0, 0.0], rtol=1e-15)  # sign(0) = 0
    assert isinstance(value, float)
    assert reference.penalty(w) == (0.0, pytest.approx(np.zeros(3)))

    rng = np.random.default_rng(8)
    w = rng.normal(size=(4, 5))
    w[np.abs(w) < 0.1] = 0.5  # away from the kink of |w| at 0
    before = w.copy()
    value, grad = reference.penalty(w, l1=0.3, l2=0.7)
    np.testing.assert_array_equal(w, before)
    numeric = _numeric_gradient(lambda x: reference.penalty(x, l1=0.3, l2=0.7)[0], w)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    g32 = reference.penalty(w.astype(np.float32), l1=0.3, l2=0.7)[1]
    assert g32.dtype == np.float32
