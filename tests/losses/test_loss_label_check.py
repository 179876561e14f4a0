"""check_labels= of the losses: when the labels' values are checked before the kernels run.

None (the default) and True check on the CPU (a bad label raises IndexError and nothing is written);
False leaves it to the kernels' guard: a bad label is never used as an index, its row gets a zero
gradient and a NaN loss, and every other row is what the checked call gives. (On a CUDA device None
skips the check inside a CUDA-graph capture: tests/gpu/test_cuda_capture.py.)
"""
import numpy as np
import pytest

import fastopt
from fastopt import reference

N, C = 9, 7


def case(seed, label_dtype=np.int64):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((N, C))
    labels = rng.integers(0, C, N).astype(label_dtype)
    return logits, labels


@pytest.mark.parametrize("check_labels", [None, True, np.bool_(True)])
@pytest.mark.parametrize("loss", ["cross_entropy", "svm"])
def test_a_checked_bad_label_raises_and_writes_nothing(loss, check_labels):
    logits, labels = case(1)
    labels[4] = C + 3
    out = np.full_like(logits, 5.0)
    before = logits.copy()
    with pytest.raises(IndexError, match=r"labels\[4\] = 10"):
        if loss == "cross_entropy":
            fastopt.softmax_cross_entropy(logits, labels, out=out, check_labels=check_labels)
        else:
            fastopt.multiclass_svm_loss(logits, labels, check_labels=check_labels)
    np.testing.assert_array_equal(logits, before)
    assert (out == 5.0).all()


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("bad", [-1, C, 1 << 30])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_unchecked_cross_entropy_guards_the_bad_row(bad, reduction, label_dtype):
    logits, labels = case(2, label_dtype)
    labels[3] = bad
    loss, grad = fastopt.softmax_cross_entropy(logits, labels, reduction=reduction, check_labels=False)
    assert (grad[3] == 0).all()
    if reduction == "none":
        assert np.isnan(loss[3])
        # The other rows: the reference's per-row losses and gradients, with row 3 ignored.
        keep = np.arange(N) != 3
        want_loss, want_grad = reference.softmax_cross_entropy(logits[keep], labels[keep].astype(np.int64),
                                                               reduction="none")
        np.testing.assert_allclose(loss[keep], want_loss, rtol=1e-12)
        np.testing.assert_allclose(grad[keep], want_grad, rtol=1e-12, atol=1e-15)
    else:
        assert np.isnan(loss)
        # The bad row counts nothing: the gradient of the others is the one with that row ignored.
        ignored = labels.astype(np.int64)
        ignored[3] = -100
        _, want_grad = fastopt.softmax_cross_entropy(logits, ignored, reduction=reduction)
        np.testing.assert_array_equal(grad, want_grad)


def test_unchecked_svm_guards_the_bad_row():
    scores, labels = case(3)
    labels[0] = -7
    loss, grad = fastopt.multiclass_svm_loss(scores, labels, reduction="none", check_labels=False)
    assert np.isnan(loss[0]) and (grad[0] == 0).all()
    want_loss, want_grad = fastopt.multiclass_svm_loss(scores[1:], labels[1:], reduction="none")
    np.testing.assert_array_equal(loss[1:], want_loss)
    np.testing.assert_array_equal(grad[1:], want_grad)


@pytest.mark.parametrize("check_labels", [None, True, False])
def test_good_labels_give_the_same_bits_whatever_check_labels(check_labels):
    logits, labels = case(4)
    want = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=0.1)
    got = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=0.1, check_labels=check_labels)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("value", [0, 1, "yes", 1.0])
@pytest.mark.parametrize("loss", ["cross_entropy", "svm"])
def test_check_labels_takes_only_none_true_or_false(loss, value):
    logits, labels = case(5)
    out = np.full_like(logits, 5.0)
    with pytest.raises(TypeError, match=r"check_labels \(None, True or False\) must be a bool, got"):
        if loss == "cross_entropy":
            fastopt.softmax_cross_entropy(logits, labels, out=out, check_labels=value)
        else:
            fastopt.multiclass_svm_loss(logits, labels, check_labels=value)
    assert (out == 5.0).all()
