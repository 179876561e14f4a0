"""Bad input not covered by test_bad_input.py / test_loss_bad_input.py: eps <= 0 everywhere, misaligned
and zero-stride arrays, 0-d and partly overlapping loss arguments, list subclasses that lie about
their length, the optimizer classes' hyperparameters. Same contract: TypeError / ValueError naming the
argument, every array bit-identical afterwards.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastopt
from fastopt import optim
from test_bad_input import BY_NAME, KERNEL_ARGS, KA_IDS, LAST, SHAPES, assert_rejected, make_args, named

WITH_EPS = [BY_NAME[n] for n in ("adagrad", "rmsprop", "adam", "adamw")]


@pytest.mark.parametrize("value", [0.0, -0.0, -1e-12, 5e-324])
@pytest.mark.parametrize("kernel", WITH_EPS, ids=[k.name for k in WITH_EPS])
def test_eps_must_be_positive(kernel, value):
    """eps = 0 lets 0 / 0 turn a parameter NaN; the smallest subnormal is > 0 and allowed."""
    if value > 0:
        args = make_args(kernel)
        kernel.fn(*(args[a] for a in kernel.arrays), **{**kernel.kwargs, "eps": value})
        return
    assert_rejected(kernel, make_args(kernel), ValueError, "eps must be > 0", eps=value)


@pytest.mark.parametrize("name", ["Adagrad", "RMSprop", "Adam", "AdamW"])
def test_optimizer_eps_must_be_positive(name):
    with pytest.raises(ValueError, match="eps"):
        getattr(optim, name)([np.ones(3)], eps=0.0)


@pytest.mark.parametrize("value", [float("nan"), -0.5, float("inf")])
@pytest.mark.parametrize("hyper", ["lr", "weight_decay"])
@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_optimizer_hyperparameter_ranges(name, hyper, value):
    with pytest.raises(ValueError, match=hyper):
        getattr(optim, name)([np.ones(3)], **{hyper: value})


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_optimizer_hyperparameter_edited_to_bad_value_changes_nothing(name):
    params = [np.ones(4), np.ones(3)]
    opt = getattr(optim, name)(params, lr=0.1)
    opt.step([np.ones(4), np.ones(3)])
    before = [p.tobytes() for p in params], repr(opt.state)
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError, match="lr"):
        opt.step([np.ones(4), np.ones(3)])
    assert ([p.tobytes() for p in params], repr(opt.state)) == before


def misaligned(a):
    """A C-contiguous copy of `a` at an odd byte offset: NumPy's ALIGNED flag is off."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_misaligned_array_is_a_value_error(kernel, arg):
    args = make_args(kernel)
    args[arg][LAST] = misaligned(args[arg][LAST])
    assert_rejected(kernel, args, ValueError, named(arg) + ".*aligned")


@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_zero_stride_broadcast_is_a_value_error(kernel, arg):
    """np.broadcast_to gives a read-only view with stride 0: never contiguous, never written."""
    args = make_args(kernel)
    args[arg][LAST] = np.broadcast_to(args[arg][LAST][:1, :1], SHAPES[LAST])
    assert_rejected(kernel, args, ValueError, named(arg))


@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_list_subclass_lying_about_its_length(kernel, arg):
    """The native intake reads the list's real items, never its __len__ (this read out of bounds)."""
    class Lying(list):
        def __len__(self):
            return 1 << 20

    args = make_args(kernel)
    args[arg] = Lying(args[arg])
    twin = make_args(kernel)
    kernel.fn(*(args[a] for a in kernel.arrays), **kernel.kwargs)
    kernel.fn(*(twin[a] for a in kernel.arrays), **kernel.kwargs)
    assert [x.tobytes() for x in list.__iter__(args["params"])] == [x.tobytes() for x in twin["params"]]


class RaisingNumber:
    def __float__(self):
        raise ZeroDivisionError("from __float__")

    def __index__(self):
        raise ZeroDivisionError("from __index__")


@pytest.mark.parametrize("hyper", ["lr", "step"])
def test_raising_number_is_a_type_error_naming_the_argument(hyper):
    kernel = BY_NAME["adam"]
    args = make_args(kernel)
    before = [a.tobytes() for v in args.values() for a in v]
    with pytest.raises(TypeError, match=hyper) as info:
        kernel.fn(*(args[a] for a in kernel.arrays), **{**kernel.kwargs, hyper: RaisingNumber()})
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert [a.tobytes() for v in args.values() for a in v] == before


# --------------------------------------------------------------------------------------- losses


def rand(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape).astype(dtype)


def check_refused(fn, arrays, error, match):
    before = [(a, a.tobytes()) for a in arrays if isinstance(a, np.ndarray)]
    with pytest.raises(error, match=match):
        fn()
    assert all(a.tobytes() == b for a, b in before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_refuse_0d_and_misaligned_scores(dtype):
    x0 = np.array(1.5, dtype)
    labels = np.zeros(4, np.int64)
    check_refused(lambda: fastopt.softmax_cross_entropy(x0, labels), [x0], ValueError, r"\blogits\b")
    check_refused(lambda: fastopt.multiclass_svm_loss(x0, labels), [x0], ValueError, r"\bscores\b")
    bad = misaligned(rand((4, 3), dtype))
    check_refused(lambda: fastopt.softmax_cross_entropy(bad, labels), [bad], ValueError, "logits.*aligned")
    check_refused(lambda: fastopt.softmax(bad), [bad], ValueError, "x.*aligned")
    out = rand((4, 3), dtype)
    mis_out = misaligned(out)
    check_refused(lambda: fastopt.softmax_cross_entropy(out.copy(), labels, out=mis_out), [mis_out], ValueError,
                  "out.*aligned")
    mis_labels = misaligned(labels)
    check_refused(lambda: fastopt.softmax_cross_entropy(out.copy(), mis_labels), [mis_labels], ValueError,
                  "labels.*aligned")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_penalty_edges(dtype):
    # 0-d w is a valid single weight
    w0 = np.array(-2.0, dtype)
    g0 = np.array(0.5, dtype)
    assert fastopt.penalty(w0, l1=1.0, l2=1.0, out_grad=g0) == pytest.approx(6.0)
    assert g0 == dtype(0.5 - 1.0 - 4.0)
    # out_grad partly overlapping w: two views of one buffer, one element apart
    buf = rand(13, dtype)
    w, g = buf[:12].reshape(4, 3), buf[1:].reshape(4, 3)
    check_refused(lambda: fastopt.penalty(w, l2=1.0, out_grad=g), [buf], ValueError, "out_grad")
    mis = misaligned(rand((4, 3), dtype))
    check_refused(lambda: fastopt.penalty(mis, l2=1.0), [mis], ValueError, r"\bw\b.*aligned")
    grad = rand((4, 3), dtype)
    check_refused(lambda: fastopt.penalty(rand((4, 3), dtype), l2=1.0, out_grad=misaligned(grad)), [grad],
                  ValueError, "out_grad.*aligned")
    ro = np.broadcast_to(rand((1, 3), dtype), (4, 3))
    check_refused(lambda: fastopt.penalty(rand((4, 3), dtype), l1=1.0, out_grad=ro), [ro], ValueError, "out_grad")


@pytest.mark.parametrize("threads", [0, -1, 1025, 10**6])
def test_set_num_threads_range(threads):
    before = fastopt.build_info()["num_threads"]
    with pytest.raises(ValueError, match=re.escape("threads must be in [1, 1024]")):
        fastopt.set_num_threads(threads)
    assert fastopt.build_info()["num_threads"] == before


def test_found_nonfinite_input():
    with pytest.raises(ValueError, match=r"grads\[1\].*aligned"):
        fastopt._core._found_nonfinite([np.ones(3), misaligned(np.ones(3))])
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        fastopt._core._found_nonfinite([np.ones(3, np.int32)])
    with pytest.raises(ValueError, match="grad_scale"):
        fastopt._core._found_nonfinite([np.ones(3)], grad_scale=0.0)
    assert fastopt._core._found_nonfinite([]) is False
    assert fastopt._core._found_nonfinite([np.ones(3, np.float32), np.array([1.0, np.nan])]) is True
