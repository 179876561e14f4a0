"""The losses on CUDA tensors (PyTorch), against fastopt on the CPU and torch.nn.functional.

The CUDA losses reduce with fixed-order trees, not the CPU's loops, so they are compared with
tolerances (float32: 1e-5 relative, float64: 1e-12) and checked for determinism (the same input twice
gives the same bits). The reduced loss is a 0-d tensor on the device (nothing waits for the GPU); the
gradient, per-row losses and softmax are torch tensors on the device. out=logits computes the gradient
in place with the bits of a separate output. A bad label raises IndexError before anything is written.

Skipped without a GPU and a CUDA build of fastopt, or without torch with CUDA (cuda_support.py).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastopt
from cuda_support import CUDA_MARKS, to_cuda, to_numpy, torch_with_cuda
from torch_losses import torch_ce_tensors

pytestmark = CUDA_MARKS

REDUCTIONS = ["mean", "sum", "none"]
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]
# Relative tolerance, and the absolute one as a fraction of the largest magnitude of the result (the
# gradient's target entries p - 1 cancel, so their error is absolute).
CPU_TOLERANCE = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-14)}
TORCH_TOLERANCE = {np.float32: (1e-5, 1e-6), np.float64: (1e-10, 1e-12)}


@pytest.fixture(scope="module")
def torch():
    return torch_with_cuda()


def assert_close(got, want, dtype, what, table=CPU_TOLERANCE):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    rtol, atol = table[dtype]
    scale = max(1.0, float(np.nanmax(np.abs(want)))) if want.size and not np.all(np.isnan(want)) else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


def assert_loss_value(torch, loss, reduction, n, dtype):
    """The loss of a CUDA call: a 0-d tensor ('mean', 'sum') or (N,) tensor ('none') on the device."""
    assert isinstance(loss, torch.Tensor) and loss.is_cuda
    assert loss.dtype == getattr(torch, np.dtype(dtype).name)
    assert tuple(loss.shape) == ((n,) if reduction == "none" else ())


# -------------------------------------------------------------------------------- cross-entropy

OPTIONS = {
    "plain": dict(),
    "weight": dict(weighted=True),
    "smoothing": dict(label_smoothing=0.1),
    "ignore": dict(ignore=True),
    "ignore_index_3": dict(ignore_index=3),  # a real class, ignored
    "z_loss": dict(z_loss=1e-3),
    "all": dict(weighted=True, label_smoothing=0.2, ignore=True, z_loss=1e-2),
}


def ce_problem(option: str, dtype, n=67, c=37, seed=1000):
    """logits (numpy), labels (numpy, int32 for some options), and the keyword arguments."""
    spec = dict(OPTIONS[option])
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((n, c))).astype(dtype)
    labels = rng.integers(0, c, n)
    kwargs = {}
    if spec.pop("weighted", False):
        kwargs["weight"] = rng.uniform(0.2, 3.0, c).astype(dtype)
    if spec.pop("ignore", False):
        labels[rng.random(n) < 0.3] = -100
        labels[0] = -100
    if "ignore_index" in spec:
        labels[:3] = 3
    kwargs.update(spec)
    labels = labels.astype(np.int32 if option in ("ignore", "all", "weight") else np.int64)
    return logits, labels, kwargs


def cuda_kwargs(torch, kwargs):
    return {k: (to_cuda(torch, v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}


def torch_cross_entropy(torch, logits, labels, **options):
    """F.cross_entropy on CUDA (+ z_loss, as the CPU tests define it) and its autograd gradient."""
    return torch_ce_tensors(logits.detach().clone().requires_grad_(True), labels.long(), **options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_cross_entropy_matches_the_cpu_and_torch(torch, option, dtype, reduction):
    logits, labels, kwargs = ce_problem(option, dtype)
    kwargs["reduction"] = reduction
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, **kwargs)

    x, y = to_cuda(torch, logits), to_cuda(torch, labels)
    loss, grad = fastopt.softmax_cross_entropy(x, y, **cuda_kwargs(torch, kwargs))
    assert_loss_value(torch, loss, reduction, len(labels), dtype)
    assert isinstance(grad, torch.Tensor) and grad.is_cuda and grad.shape == x.shape and grad.dtype == x.dtype
    assert_close(to_numpy(loss), want_loss, dtype, "loss vs cpu")
    assert_close(to_numpy(grad), want_grad, dtype, "grad vs cpu")
    np.testing.assert_array_equal(x.cpu().numpy(), logits)  # not written

    t_loss, t_grad = torch_cross_entropy(torch, x, y, **cuda_kwargs(torch, kwargs))
    assert_close(to_numpy(loss), to_numpy(t_loss), dtype, "loss vs torch", TORCH_TOLERANCE)
    assert_close(to_numpy(grad), to_numpy(t_grad), dtype, "grad vs torch", TORCH_TOLERANCE)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cross_entropy_in_place_out_gives_the_bits_of_a_separate_output(torch, dtype, reduction):
    logits, labels, kwargs = ce_problem("all", dtype, n=300, c=1000)
    kwargs = cuda_kwargs(torch, {**kwargs, "reduction": reduction})
    x, y = to_cuda(torch, logits), to_cuda(torch, labels)
    loss, grad = fastopt.softmax_cross_entropy(x, y, **kwargs)
    pointer = x.data_ptr()
    loss_in_place, grad_in_place = fastopt.softmax_cross_entropy(x, y, out=x, **kwargs)
    assert grad_in_place is x and x.data_ptr() == pointer
    assert torch.equal(grad_in_place, grad)
    assert torch.equal(loss_in_place, loss)
    assert not np.array_equal(x.cpu().numpy(), logits)


DETERMINISM_SHAPES = [(2048, 1000), (8, 100003), (3, 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n,c", DETERMINISM_SHAPES, ids=[f"N{n}-C{c}" for n, c in DETERMINISM_SHAPES])
def test_losses_are_deterministic(torch, n, c, dtype):
    rng = np.random.default_rng(1100)
    logits = (4 * rng.standard_normal((n, c))).astype(dtype)
    labels = rng.integers(0, c, n)
    x, y = to_cuda(torch, logits), to_cuda(torch, labels)
    first = fastopt.softmax_cross_entropy(x, y, label_smoothing=0.1, z_loss=1e-4)
    second = fastopt.softmax_cross_entropy(x, y, label_smoothing=0.1, z_loss=1e-4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    want = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=0.1, z_loss=1e-4)
    assert_close(to_numpy(first[0]), want[0], dtype, "loss vs cpu")
    assert_close(to_numpy(first[1]), want[1], dtype, "grad vs cpu")

    for fn in (fastopt.softmax, fastopt.log_softmax):
        assert torch.equal(fn(x), fn(x)), fn.__name__
        in_place, separate = x.clone(), torch.empty_like(x)
        assert fn(in_place, out=in_place) is in_place and fn(x, out=separate) is separate
        assert torch.equal(in_place, fn(x)) and torch.equal(separate, fn(x)), fn.__name__
    svm = [fastopt.multiclass_svm_loss(x, y, reduction="sum") for _ in range(2)]
    assert torch.equal(svm[0][0], svm[1][0]) and torch.equal(svm[0][1], svm[1][1])
    assert torch.equal(fastopt.penalty(x, l1=0.5, l2=0.25), fastopt.penalty(x, l1=0.5, l2=0.25))


@pytest.mark.parametrize("label_dtype", ["int64", "int32"])
@pytest.mark.parametrize("bad", [-1, 37, 10**6])
def test_bad_label_raises_before_anything_is_written(torch, bad, label_dtype):
    logits, labels, _ = ce_problem("plain", np.float32)
    labels = labels.astype(label_dtype)
    labels[41] = bad
    x, y = to_cuda(torch, logits), to_cuda(torch, labels)
    message = f"labels[41] = {bad} is out of range for 37 classes (and is not ignore_index=-100)"
    with pytest.raises(IndexError, match=re.escape(message)):
        fastopt.softmax_cross_entropy(x, y, out=x)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(x.cpu().numpy(), logits)
    with pytest.raises(IndexError, match=re.escape(f"labels[41] = {bad} is out of range for 37 classes")):
        fastopt.multiclass_svm_loss(x, y)
    # The same labels are fine when the bad value is the ignore_index: that row counts nothing.
    loss, grad = fastopt.softmax_cross_entropy(x, y, ignore_index=bad)
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, ignore_index=bad)
    assert_close(loss.item(), want_loss, np.float32, "loss with the bad label ignored")
    assert_close(to_numpy(grad), want_grad, np.float32, "grad with the bad label ignored")
    assert torch.count_nonzero(grad[41]).item() == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cross_entropy_edges_agree_with_the_cpu(torch, dtype):
    # No rows, and every row ignored ('mean' divides by zero: NaN, with a zero gradient).
    for logits, labels in [(np.zeros((0, 5), dtype), np.zeros(0, np.int64)),
                           (np.ones((4, 5), dtype), np.full(4, -100, np.int64))]:
        for reduction in REDUCTIONS:
            want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, reduction=reduction)
            loss, grad = fastopt.softmax_cross_entropy(to_cuda(torch, logits), to_cuda(torch, labels),
                                                       reduction=reduction)
            assert_loss_value(torch, loss, reduction, len(labels), dtype)
            np.testing.assert_array_equal(to_numpy(loss), np.asarray(want_loss, dtype=dtype), err_msg=reduction)
            np.testing.assert_array_equal(to_numpy(grad), want_grad, err_msg=reduction)


# ------------------------------------------------------------------------------ softmax and co.

SOFTMAX_SHAPES = [(5,), (6, 9), (2, 3, 1000), (4, 40000), (3, 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=["x".join(map(str, s)) for s in SOFTMAX_SHAPES])
def test_softmax_and_log_softmax_match_the_cpu(torch, shape, dtype):
    values = (5 * np.random.default_rng(1200).standard_normal(shape)).astype(dtype)
    values.reshape(-1, shape[-1])[0, 0] = -np.inf  # probability 0
    x = to_cuda(torch, values)
    for fn in (fastopt.softmax, fastopt.log_softmax):
        got = fn(x)
        assert isinstance(got, torch.Tensor) and got.is_cuda and tuple(got.shape) == shape and got.dtype == x.dtype
        want = fn(values)
        finite = np.isfinite(want)
        np.testing.assert_array_equal(np.isfinite(to_numpy(got)), finite, err_msg=fn.__name__)
        np.testing.assert_array_equal(to_numpy(got)[~finite], want[~finite], err_msg=fn.__name__)
        assert_close(to_numpy(got)[finite], want[finite], dtype, fn.__name__)
    np.testing.assert_array_equal(x.cpu().numpy(), values)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_multiclass_svm_loss_matches_the_cpu(torch, dtype, reduction):
    rng = np.random.default_rng(1300)
    scores = rng.standard_normal((129, 33)).astype(dtype)
    labels = rng.integers(0, 33, 129).astype(np.int32)
    want_loss, want_grad = fastopt.multiclass_svm_loss(scores, labels, margin=0.5, reduction=reduction)
    loss, grad = fastopt.multiclass_svm_loss(to_cuda(torch, scores), to_cuda(torch, labels), margin=0.5,
                                             reduction=reduction)
    assert_loss_value(torch, loss, reduction, 129, dtype)
    assert isinstance(grad, torch.Tensor) and grad.is_cuda
    assert_close(to_numpy(loss), want_loss, dtype, "loss")
    assert_close(to_numpy(grad), want_grad, dtype, "dscores")


PENALTY_SHAPES = [(), (0,), (1,), (1000, 37)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", PENALTY_SHAPES, ids=["0d", "empty", "one", "1000x37"])
def test_penalty_matches_the_cpu(torch, shape, dtype):
    rng = np.random.default_rng(1400)
    w = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    want_grad = g.copy()
    want = fastopt.penalty(w, l1=0.3, l2=0.7, out_grad=want_grad)
    t_grad = to_cuda(torch, g)
    pointer = t_grad.data_ptr()
    value = fastopt.penalty(to_cuda(torch, w), l1=0.3, l2=0.7, out_grad=t_grad)
    assert isinstance(value, torch.Tensor) and value.is_cuda and value.dim() == 0
    assert value.dtype == getattr(torch, np.dtype(dtype).name)
    assert_close(value.item(), want, dtype, "value")
    assert t_grad.data_ptr() == pointer
    assert_close(to_numpy(t_grad), want_grad, dtype, "out_grad")
    assert_close(fastopt.penalty(to_cuda(torch, w), l2=2.0).item(), fastopt.penalty(w, l2=2.0), dtype, "l2 only")


# ------------------------------------------------------------------------------------- refusals


def test_loss_arguments_on_two_devices_are_refused(torch):
    logits, labels, _ = ce_problem("plain", np.float32)
    x = to_cuda(torch, logits)
    with pytest.raises(ValueError, match=re.escape("labels is on cpu but logits is on cuda:0")):
        fastopt.softmax_cross_entropy(x, torch.from_numpy(labels))
    with pytest.raises(ValueError, match=re.escape("weight is on cpu but logits is on cuda:0")):
        fastopt.softmax_cross_entropy(x, to_cuda(torch, labels), weight=torch.ones(37))
    out = torch.zeros(67, 37)
    with pytest.raises(ValueError, match=re.escape("out is on cpu but logits is on cuda:0")):
        fastopt.softmax_cross_entropy(x, to_cuda(torch, labels), out=out)
    assert torch.count_nonzero(out).item() == 0
    grad = torch.zeros(5)
    with pytest.raises(ValueError, match=re.escape("out_grad is on cpu but w is on cuda:0")):
        fastopt.penalty(torch.ones(5, device="cuda"), l1=1.0, out_grad=grad)
    assert torch.count_nonzero(grad).item() == 0
    np.testing.assert_array_equal(x.cpu().numpy(), logits)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_losses_are_refused(torch, half):
    x = torch.ones(4, 3, dtype=getattr(torch, half), device="cuda")
    y = torch.zeros(4, dtype=torch.int64, device="cuda")
    with pytest.raises(TypeError, match=rf"\blogits\b has dtype {half}"):
        fastopt.softmax_cross_entropy(x, y)
    with pytest.raises(TypeError, match=rf"\bx\b has dtype {half}"):
        fastopt.softmax(x)
    with pytest.raises(TypeError, match=rf"\bscores\b has dtype {half}"):
        fastopt.multiclass_svm_loss(x, y)
    with pytest.raises(TypeError, match=rf"\bw\b has dtype {half}"):
        fastopt.penalty(x, l1=1.0)
